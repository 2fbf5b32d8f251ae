package render

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Masterminds/sprig/v3"

	"matchbox.dev/matchbox"
)

// testMaxBytes is the value and output bound of these tests.
const testMaxBytes = 1 << 20

// limitFixture serves src as the generic template of profile p.
func limitFixture(src string) (*matchbox.Snapshot, matchbox.Selection) {
	snap := matchbox.NewSnapshot(matchbox.Objects{
		Profiles: []*matchbox.Profile{{ID: "p", GenericID: "t.tmpl"}},
		Templates: []*matchbox.Template{{Kind: matchbox.KindGeneric, Name: "t.tmpl",
			Content: []byte(src), Origin: "generic/t.tmpl"}},
	})
	p, _ := snap.Profile("p")
	return snap, matchbox.Selection{Group: &matchbox.Group{ID: "g"}, Profile: p}
}

func renderGeneric(ctx context.Context, e *Engine, src string) ([]byte, error) {
	snap, sel := limitFixture(src)
	return e.Template(ctx, snap, sel, matchbox.KindGeneric, Data(sel.Group, Request{}))
}

// stopsWithin runs render and fails the test if it has not returned after
// a minute: without the limits these renders never return.
func stopsWithin(t *testing.T, render func() ([]byte, error)) ([]byte, error) {
	t.Helper()
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := render()
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		return r.out, r.err
	case <-time.After(time.Minute):
		t.Fatal("the render did not stop")
		return nil, nil
	}
}

// wantLimit checks that err is a render error stopped by a limit of kind,
// whose message names the setting that raises it and says what.
func wantLimit(t *testing.T, err error, kind string, says ...string) {
	t.Helper()
	var rerr *Error
	if !errors.As(err, &rerr) {
		t.Fatalf("err = %v; want a *render.Error", err)
	}
	var le *LimitError
	if !errors.As(err, &le) {
		t.Fatalf("err = %v; want a *render.LimitError", err)
	}
	if le.Kind != kind {
		t.Errorf("limit kind %q, want %q (%v)", le.Kind, kind, err)
	}
	want := map[string]string{LimitTimeout: settingTimeout, LimitSize: settingMaxBytes, LimitNesting: ""}[kind]
	if le.Setting != want {
		t.Errorf("setting %q, want %q", le.Setting, want)
	}
	for _, s := range append(says, want) {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a limit is not a context error: %v", err)
	}
}

// busyTemplates never end, or end after longer than anyone waits, without
// making anything large.
var busyTemplates = []struct{ name, src string }{
	{"range with an empty body", `{{range 1000000000000}}{{end}}`},
	{"nested ranges", `{{range 1000000}}{{range 1000000}}{{end}}{{end}}`},
	{"range over a list", `{{range $i := until 1000000}}{{range until 1000000}}{{end}}{{end}}`},
	// 2^48 template calls, 48 deep, no range.
	{"branching template calls", `{{define "r"}}{{if .}}{{template "r" (slice . 1)}}{{template "r" (slice . 1)}}{{end}}{{end}}` +
		`{{template "r" "` + strings.Repeat("x", 48) + `"}}`},
	{"break and continue", `{{range 1000000000000}}{{if false}}{{break}}{{end}}{{continue}}{{end}}`},
	{"quadratic uniq", `{{uniq (until 1000000)}}`},
}

func TestRenderDeadline(t *testing.T) {
	for _, tt := range busyTemplates {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEngine(Options{RenderTimeout: 20 * time.Millisecond, RenderMaxBytes: 16 << 20})
			_, err := stopsWithin(t, func() ([]byte, error) { return renderGeneric(t.Context(), e, tt.src) })
			wantLimit(t, err, LimitTimeout, "deadline of 20ms", `template "generic/t.tmpl"`)
			if s := e.Stats(); s.LimitTimeout != 1 {
				t.Errorf("Stats = %+v; want one render stopped at its deadline", s)
			}
		})
	}
}

// TestRenderDeadlineBetweenSlowCalls: a template without loops that calls
// slow functions one after the other stops at the first call past its
// deadline.
func TestRenderDeadlineBetweenSlowCalls(t *testing.T) {
	e := NewEngine(Options{RenderTimeout: time.Millisecond})
	_, err := stopsWithin(t, func() ([]byte, error) {
		return renderGeneric(t.Context(), e, strings.Repeat(`{{bcrypt "x"}}`, 100))
	})
	wantLimit(t, err, LimitTimeout, "error calling bcrypt", "deadline of 1ms")
}

// leavingClient is the context of a request whose client goes away while
// its answer is rendered: it ends the n-th time anyone looks at it.
type leavingClient struct {
	context.Context
	cancel context.CancelFunc
	looks  atomic.Int64
	n      int64
}

func newLeavingClient(t *testing.T, n int64) *leavingClient {
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	return &leavingClient{Context: ctx, cancel: cancel, n: n}
}

func (c *leavingClient) Err() error {
	if c.looks.Add(1) == c.n {
		c.cancel()
	}
	return c.Context.Err()
}

func TestRenderStopsWhenContextEnds(t *testing.T) {
	for _, tt := range busyTemplates {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEngine(Options{RenderTimeout: time.Hour})
			ctx := newLeavingClient(t, 100)
			_, err := stopsWithin(t, func() ([]byte, error) { return renderGeneric(ctx, e, tt.src) })
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v; want the render stopped by its context", err)
			}
			if ctx.looks.Load() < 100 {
				t.Errorf("the render ended before its context did")
			}
		})
	}
	t.Run("ended before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := renderGeneric(ctx, NewEngine(Options{}), `x`); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v; want context.Canceled", err)
		}
	})
}

// TestKernelArgsWithinLimits: boot arguments are templates too.
func TestKernelArgsWithinLimits(t *testing.T) {
	e := NewEngine(Options{RenderTimeout: 20 * time.Millisecond, RenderMaxBytes: testMaxBytes})
	data := Data(&matchbox.Group{}, Request{})
	for _, tt := range []struct {
		args []string
		kind string
	}{
		{[]string{"a={{range 1000000000000}}{{end}}"}, LimitTimeout},
		{[]string{"a={{repeat 3000000000 `x`}}"}, LimitSize},
		// Each under the bound, together over it.
		{[]string{"a={{repeat 600000 `x`}}", "b={{repeat 600000 `x`}}"}, LimitSize},
	} {
		p := &matchbox.Profile{ID: "p", Boot: matchbox.Boot{Kernel: "/k", Args: tt.args}}
		for name, render := range map[string]func(context.Context, matchbox.Selection, map[string]any) ([]byte, error){"ipxe": e.IPXE, "grub": e.GRUB} {
			_, err := stopsWithin(t, func() ([]byte, error) { return render(t.Context(), selection(p), data) })
			t.Run(name, func(t *testing.T) { wantLimit(t, err, tt.kind, "boot.args") })
		}
	}
}

// allocated returns the bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestRenderSizeLimits(t *testing.T) {
	x := func(n int) string { return `(repeat ` + fmt.Sprint(n) + ` "x")` }
	// The functions checked before they run fail having allocated little
	// (the render's own allocations per loop iteration aside).
	checkedBefore := map[string]bool{"repeat": true, "repeat assigned": true, "until": true, "until negative": true,
		"untilStep": true, "seq": true, "seq step": true, "indent": true, "nindent of many lines": true,
		"printf width": true, "printf precision": true, "printf width argument": true, "printf reused argument": true,
		"print doubling": true, "println doubling": true, "printf doubling": true, "cat doubling": true,
		"join separator": true, "replace empty": true, "regexReplaceAll": true, "wrapWith": true,
		"splitList": true, "split": true, "regexFindAll": true, "fromJson": true, "randAlpha": true}
	tests := []struct {
		name, src, kind string
		says            []string
	}{
		{"output", `{{range 1000000000000}}xxxxxxxx{{end}}`, LimitSize, []string{"output would be more than 1 MiB"}},
		{"output of values", `{{$x := ` + x(600000) + `}}{{$x}}{{$x}}`, LimitSize, []string{"output would be more than 1 MiB"}},
		{"repeat", `{{repeat 3000000000 "x"}}`, LimitSize, []string{"repeat would make 3000000000 bytes, more than 1 MiB"}},
		{"repeat assigned", `{{$x := repeat 3000000000 "xyz"}}`, LimitSize, []string{"repeat would make"}},
		{"until", `{{range until 3000000000}}{{end}}`, LimitSize, []string{"until would make"}},
		{"until negative", `{{range until -3000000000}}{{end}}`, LimitSize, []string{"until would make"}},
		{"untilStep", `{{range untilStep 0 3000000000 2}}{{end}}`, LimitSize, []string{"untilStep would make"}},
		{"seq", `{{seq 3000000000}}`, LimitSize, []string{"seq would make"}},
		{"seq step", `{{seq 1 2 3000000000}}`, LimitSize, []string{"seq would make"}},
		{"indent", `{{indent 3000000000 "x"}}`, LimitSize, []string{"indent would make"}},
		{"nindent of many lines", `{{nindent 1000 (repeat 10000 "\n")}}`, LimitSize, []string{"nindent would make"}},
		{"printf width", `{{printf "%999999d%999999d" 1 2}}`, LimitSize, []string{"printf would make"}},
		{"printf precision", `{{printf "%.999999f%.999999f" 1.0 2.0}}`, LimitSize, []string{"printf would make"}},
		{"printf width argument", `{{printf "%*d%*d" 999999 1 999999 2}}`, LimitSize, []string{"printf would make"}},
		{"printf reused argument", `{{printf (repeat 100 "%[1]s") ` + x(100000) + `}}`, LimitSize, []string{"printf would make"}},
		{"print doubling", `{{$x := "x"}}{{range 100}}{{$x = print $x $x}}{{end}}`, LimitSize, []string{"print would make"}},
		{"println doubling", `{{$x := "x"}}{{range 100}}{{$x = println $x $x}}{{end}}`, LimitSize, []string{"println would make"}},
		{"printf doubling", `{{$x := "x"}}{{range 100}}{{$x = printf "%s%s" $x $x}}{{end}}`, LimitSize, []string{"printf would make"}},
		{"cat doubling", `{{$x := "x"}}{{range 100}}{{$x = cat $x $x}}{{end}}`, LimitSize, []string{"cat would make"}},
		{"html growth", `{{$x := "<"}}{{range 100}}{{$x = html $x $x}}{{end}}`, LimitSize, []string{"html"}},
		{"b64enc growth", `{{$x := "x"}}{{range 100}}{{$x = b64enc $x}}{{end}}`, LimitSize, []string{"b64enc made"}},
		{"list doubling", `{{$l := list 1}}{{range 100}}{{$l = concat $l $l}}{{end}}`, LimitSize, []string{"concat made"}},
		{"join separator", `{{join ` + x(1000) + ` (until 10000)}}`, LimitSize, []string{"join would make"}},
		{"replace empty", `{{replace "" ` + x(1000) + ` ` + x(10000) + `}}`, LimitSize, []string{"replace would make"}},
		{"regexReplaceAll", `{{regexReplaceAll "x" ` + x(10000) + ` (repeat 100 "$0")}}`, LimitSize, []string{"regexReplaceAll would make"}},
		{"wrapWith", `{{wrapWith 1 ` + x(1000) + ` ` + x(10000) + `}}`, LimitSize, []string{"wrapWith would make"}},
		{"splitList", `{{splitList "" ` + x(100000) + `}}`, LimitSize, []string{"splitList would make"}},
		{"split", `{{split "" ` + x(100000) + `}}`, LimitSize, []string{"split would make"}},
		{"regexFindAll", `{{regexFindAll "x" ` + x(100000) + ` -1}}`, LimitSize, []string{"regexFindAll would make"}},
		{"fromJson", `{{fromJson (printf "[%s0]" (repeat 100000 "0,"))}}`, LimitSize, []string{"fromJson would make"}},
		{"randAlpha", `{{randAlpha 3000000000}}`, LimitSize, []string{"randAlpha would make"}},
		{"made in total", `{{range 100}}{{$x := repeat 900000 "x"}}{{end}}`, LimitSize, []string{"template functions made more than 4 MiB"}},
		{"kept on nested template calls", `{{define "r"}}{{$x := repeat 900000 "x"}}{{template "r" .}}{{end}}{{template "r" .}}`,
			LimitSize, []string{"template functions made more than 4 MiB"}},
		{"map filled in a loop", `{{$d := dict}}{{range $i := until 100}}{{$_ := set $d (toString $i) (repeat 100000 "x")}}{{end}}`,
			LimitSize, []string{"the arguments of set are"}},
		{"map shared and grown", `{{$m := dict}}{{$l := list}}{{range 200}}{{$l = append $l $m}}{{end}}` +
			`{{$_ := set $m "big" ` + x(10000) + `}}{{$l}}`, LimitSize, []string{"the value printed is"}},
		{"map shared, grown and encoded", `{{$m := dict}}{{$l := list}}{{range 200}}{{$l = append $l $m}}{{end}}` +
			`{{$_ := set $m "big" ` + x(10000) + `}}{{toJson $l}}`, LimitSize, []string{"the arguments of toJson"}},
		{"map that contains itself", `{{$a := dict}}{{$_ := set $a "self" $a}}{{$a}}`, LimitNesting, []string{"set made a value nested more than 1000 deep"}},
		{"maps that contain each other", `{{$a := dict}}{{$b := dict "a" $a}}{{$_ := set $a "b" $b}}{{toJson $a}}`, LimitNesting, []string{"set made"}},
		{"deep list", `{{$l := list}}{{range 2000}}{{$l = list $l}}{{end}}{{$l}}`, LimitNesting, []string{"list made a value nested"}},
		{"template recursion", `{{define "r"}}{{template "r" .}}{{end}}{{template "r" .}}`, LimitNesting, []string{"templates nested more than 1000 deep"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEngine(Options{RenderTimeout: time.Hour, RenderMaxBytes: testMaxBytes})
			var out []byte
			var err error
			n := allocated(func() {
				out, err = stopsWithin(t, func() ([]byte, error) { return renderGeneric(t.Context(), e, tt.src) })
			})
			if err == nil {
				t.Fatalf("rendered %d bytes; want a limit error", len(out))
			}
			wantLimit(t, err, tt.kind, tt.says...)
			// A value up to the bound, made in a buffer that doubled its
			// way up, and the values made before it.
			if bound := uint64(8 * testMaxBytes); checkedBefore[tt.name] && n > bound {
				t.Errorf("the render allocated %d bytes; want at most %d", n, bound)
			}
		})
	}
}

// TestTemplatesWithinLimitsRender: templates that loop, nest and call the
// guarded functions within the limits render as with plain text/template
// and sprig, in both the plain and the strict (map-changing) mode.
func TestTemplatesWithinLimitsRender(t *testing.T) {
	tests := []struct{ src, want string }{
		{`{{range 3}}{{.}}{{end}}`, "012"},
		{`{{range $i, $e := until 3}}{{if eq $i 1}}{{continue}}{{end}}{{$e}}{{end}}`, "02"},
		{`{{range 5}}{{if eq . 2}}{{break}}{{end}}{{.}}{{end}}`, "01"},
		{`{{define "r"}}{{if .}}{{len .}}{{template "r" (slice . 1)}}{{end}}{{end}}{{template "r" "abc"}}`, "321"},
		{`{{block "b" .}}in block{{end}}`, "in block"},
		{`{{repeat 3 "ab"}}|{{indent 2 "a\nb"}}|{{nindent 1 "c"}}`, "ababab|  a\n  b|\n c"},
		{`{{printf "%5d|%-4s|%.2f|%*d|%[1]d" 42 "x" 3.14159 3 7}}`, "   42|x   |3.14|  7|42"},
		{`{{print 1 "a" 2}}|{{println "a" "b"}}|{{html "<&>"}}|{{js "'"}}|{{urlquery "a b"}}`, "1a2|a b\n|&lt;&amp;&gt;|\\'|a+b"},
		{`{{until 3}} {{untilStep 10 0 -4}} {{seq 3}} {{seq 5 -2 1}} {{seq 2 4}}`, "[0 1 2] [10 6 2] 1 2 3 5 3 1 2 3 4"},
		{`{{join "," (list "a" "b")}} {{replace "a" "xy" "banana"}} {{regexReplaceAll "(a)n" "banana" "${1}N"}}`, "a,b bxynxynxy baNaNa"},
		{`{{splitList "," "a,b"}} {{(split "," "a,b")._1}} {{regexFindAll "a" "banana" -1}} {{regexSplit "n" "banana" 2}}`, "[a b] b [a a a] [ba ana]"},
		{`{{wrapWith 3 "|" "abc def"}} {{toPrettyJson (list 1 (dict "a" 2))}}`, "abc|def [\n  1,\n  {\n    \"a\": 2\n  }\n]"},
		{`{{uniq (list 1 2 1 3 2)}} {{mustUniq (list "a" "a")}} {{(fromJson "[1,{\"a\":2}]")}}`, "[1 2 3] [a] [1 map[a:2]]"},
		{`{{$d := dict "a" 1}}{{$_ := set $d "b" (list 2 3)}}{{$_ := unset $d "a"}}{{$d}} {{merge (dict "x" 1) (dict "y" 2)}}`, "map[b:[2 3]] map[x:1 y:2]"},
		{`{{$d := dict}}{{range $i := until 3}}{{$_ := set $d (toString $i) $i}}{{end}}{{toJson $d}} {{.missing | default "d"}}`, `{"0":0,"1":1,"2":2} d`},
		{`{{$x := "ab"}}{{range 3}}{{$x = print $x $x}}{{end}}{{len $x}}`, "16"},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			e := NewEngine(Options{RenderMaxBytes: testMaxBytes})
			snap, sel := limitFixture(tt.src)
			data := Data(sel.Group, Request{})
			data["missing"] = ""
			// Twice: the second render runs on a pooled clone.
			for range 2 {
				out, err := e.Template(t.Context(), snap, sel, matchbox.KindGeneric, data)
				if err != nil || string(out) != tt.want {
					t.Fatalf("= %q, %v; want %q", out, err, tt.want)
				}
			}
		})
	}
}

// TestRangeFunctionsAsSprig: until, untilStep and seq (the engine's own)
// return what sprig's do.
func TestRangeFunctionsAsSprig(t *testing.T) {
	sp := sprig.TxtFuncMap()
	sUntil, sStep, sSeq := sp["until"].(func(int) []int), sp["untilStep"].(func(int, int, int) []int), sp["seq"].(func(...int) string)
	nums := []int{-7, -3, -2, -1, 0, 1, 2, 3, 5, 10}
	for _, a := range nums {
		if got, want := fmt.Sprint(until(a)), fmt.Sprint(sUntil(a)); got != want {
			t.Errorf("until %d = %s, sprig %s", a, got, want)
		}
		if got, want := seq(a), sSeq(a); got != want {
			t.Errorf("seq %d = %q, sprig %q", a, got, want)
		}
		for _, b := range nums {
			if got, want := seq(a, b), sSeq(a, b); got != want {
				t.Errorf("seq %d %d = %q, sprig %q", a, b, got, want)
			}
			for _, c := range nums {
				if got, want := fmt.Sprint(untilStep(a, b, c)), fmt.Sprint(sStep(a, b, c)); got != want {
					t.Errorf("untilStep %d %d %d = %s, sprig %s", a, b, c, got, want)
				}
				if got, want := seq(a, b, c), sSeq(a, b, c); got != want {
					t.Errorf("seq %d %d %d = %q, sprig %q", a, b, c, got, want)
				}
			}
		}
	}
	if got := seq(); got != "" {
		t.Errorf("seq = %q", got)
	}
	// sprig's never returns: adding the step overflows.
	if got := fmt.Sprint(untilStep(1<<62, 1<<63-1, 1<<62)); got != fmt.Sprint([]int{1 << 62}) {
		t.Errorf("untilStep near the largest int = %s", got)
	}
}

// FuzzRenderLimits: whatever the template, a render returns, within the
// bound of its output.
func FuzzRenderLimits(f *testing.F) {
	for _, tt := range busyTemplates {
		f.Add(tt.src)
	}
	for _, src := range []string{
		`{{repeat 3000000000 "x"}}`, `{{$x := "x"}}{{range 100}}{{$x = print $x $x}}{{end}}{{$x}}`,
		`{{$a := dict}}{{$_ := set $a "self" $a}}{{$a}}`, `{{printf "%*d" 999999 1}}`,
		`{{range $i := until 50}}{{$i | toString | repeat 50000}}{{end}}`,
	} {
		f.Add(src)
	}
	e := NewEngine(Options{RenderTimeout: 10 * time.Millisecond, RenderMaxBytes: 64 << 10})
	f.Fuzz(func(t *testing.T, src string) {
		out, err := renderGeneric(t.Context(), e, src)
		if err == nil && len(out) > 64<<10 {
			t.Fatalf("rendered %d bytes, more than the bound", len(out))
		}
	})
}
