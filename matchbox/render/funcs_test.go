package render

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"text/template"

	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox"
)

// textTemplateBuiltins is the function list of text/template's package
// documentation in Go 1.26 ("Functions"). break and continue are keywords,
// not functions.
var textTemplateBuiltins = []string{
	"and", "call", "html", "index", "slice", "js", "len", "not", "or",
	"print", "printf", "println", "urlquery",
	"eq", "ge", "gt", "le", "lt", "ne",
}

// builtinCases exercise every built-in, including the error paths, with
// data shaped like a machine's (metadata decoded from JSON, selectors,
// request labels).
var builtinCases = []struct{ builtin, src string }{
	{"and", `{{and .yes .name}}`},
	{"and", `{{and 1 0 2}}`},
	{"and", `{{and .no (index .list 99)}}`}, // short-circuits: index is never called
	{"or", `{{or .empty .name}}`},
	{"or", `{{or "" 0}}`},
	{"or", `{{or .yes (index .list 99)}}`},
	{"call", `{{call .double 21}}`},
	{"call", `{{call .fails}}`},
	{"call", `{{call .name}}`},
	{"html", `{{html .markup}}`},
	{"html", `{{.markup | html}}`},
	{"index", `{{index .list 1}}`},
	{"index", `{{index .dict "k"}}`},
	{"index", `{{index .dict "absent"}}`},
	{"index", `{{index .request.query "mac"}}`},
	{"index", `{{index .nested 1 0}}`},
	{"index", `{{index .list 9}}`},
	{"index", `{{index .name 0}}`},
	{"slice", `{{slice .mac 0 8}}`},
	{"slice", `{{slice .mac 9}}`},
	{"slice", `{{slice .mac}}`},
	{"slice", `{{slice .list 1 3}}`},
	{"slice", `{{slice .list 0 1 2}}`},
	{"slice", `{{slice .mac 3 1}}`},
	{"slice", `{{slice .mac 0 1 2}}`},
	{"slice", `{{slice .list 0 9}}`},
	{"slice", `{{slice .dict 0}}`},
	{"js", `{{js .script}}`},
	{"js", `{{js .markup}}`},
	{"len", `{{len .list}}`},
	{"len", `{{len .mac}}`},
	{"len", `{{len .dict}}`},
	{"len", `{{len .n}}`},
	{"not", `{{not .yes}}`},
	{"not", `{{not ""}}`},
	{"not", `{{not .list}}`},
	{"print", `{{print .n .name 1 2 .list}}`},
	{"printf", `{{printf "%s-%05.1f-%v-%d" .name .count .list 7}}`},
	{"printf", `{{printf "%d" .name}}`},
	{"println", `{{println .name .n}}`},
	{"urlquery", `{{urlquery .request.raw_query}}`},
	{"urlquery", `{{urlquery "a b&c=d" "/e"}}`},
	{"eq", `{{eq .name "node1"}}`},
	{"eq", `{{eq .name "x" "y" "node1"}}`},
	{"eq", `{{eq .n 1e6}}`},
	{"eq", `{{eq .n 1000000}}`},
	{"eq", `{{eq .list .list}}`},
	{"ne", `{{ne .name "x"}}`},
	{"ne", `{{ne .yes .no}}`},
	{"lt", `{{lt .count 2.5}}`},
	{"lt", `{{lt "a" "b"}}`},
	{"lt", `{{lt .yes .no}}`},
	{"le", `{{le .count .count}}`},
	{"le", `{{le .count 2}}`},
	{"gt", `{{gt .n 999999.5}}`},
	{"gt", `{{gt 3 2}}`},
	{"ge", `{{ge .name "node"}}`},
	{"ge", `{{ge .n .name}}`},
}

// builtinData is the data every case renders with, on both engines.
func builtinData() map[string]any {
	g := &matchbox.Group{
		ID:       "node1",
		Selector: map[string]string{"mac": "52:54:00:a1:9c:ae"},
		Metadata: map[string]any{
			"name": "node1", "n": 1e6, "count": 2.0, "yes": true, "no": false, "empty": "",
			"list":   []any{"a", "b", "c"},
			"nested": []any{[]any{"x"}, []any{"y", "z"}},
			"dict":   map[string]any{"k": "v"},
			"markup": `<b class="x">&'</b>`,
			"script": `alert('x')</script>`,
		},
	}
	data := Data(g, Request{
		Labels:   map[string]string{"mac": "52:54:00:a1:9c:ae", "os": "flatcar"},
		RawQuery: "mac=52-54-00-a1-9c-ae&os=flatcar",
		Host:     "matchbox.example:8080",
	})
	// Functions cannot come from a data dir's JSON; call needs one.
	data["double"] = func(i int) int { return 2 * i }
	data["fails"] = func() (string, error) { return "", errors.New("called and failed") }
	return data
}

// TestBuiltinsAsInTextTemplate renders each case through the engine and
// through a plain text/template (what poseidon/matchbox uses) with the same
// data and options: output and errors must be the same.
func TestBuiltinsAsInTextTemplate(t *testing.T) {
	var objs matchbox.Objects
	for i, c := range builtinCases {
		name := fmt.Sprintf("case%02d.tmpl", i)
		objs.Profiles = append(objs.Profiles, &matchbox.Profile{ID: name, GenericID: name})
		objs.Templates = append(objs.Templates, &matchbox.Template{
			Kind: matchbox.KindGeneric, Name: name, Content: []byte(c.src), Origin: "generic/" + name,
		})
	}
	snap := matchbox.NewSnapshot(objs)
	e := NewEngine(Options{})
	covered := map[string]bool{}
	for i, c := range builtinCases {
		covered[c.builtin] = true
		name := fmt.Sprintf("case%02d.tmpl", i)
		t.Run(c.builtin+"/"+c.src, func(t *testing.T) {
			var want bytes.Buffer
			var wantErr error
			plain, err := template.New(name).Option("missingkey=error").Parse(c.src)
			if err == nil {
				err = plain.Execute(&want, builtinData())
			}
			wantErr = err

			p, _ := snap.Profile(name)
			got, err := e.Template(t.Context(), snap, matchbox.Selection{Group: &matchbox.Group{ID: "node1"}, Profile: p}, matchbox.KindGeneric, builtinData())
			var rerr *Error
			if errors.As(err, &rerr) {
				err = rerr.Err
			}
			switch {
			case wantErr != nil && err == nil:
				t.Fatalf("engine rendered %q; text/template fails: %v", got, wantErr)
			case wantErr == nil && err != nil:
				t.Fatalf("engine fails: %v; text/template renders %q", err, want.String())
			case wantErr != nil:
				if err.Error() != wantErr.Error() {
					t.Errorf("engine error %q, text/template error %q", err, wantErr)
				}
			default:
				if string(got) != want.String() {
					t.Errorf("engine renders %q, text/template %q", got, want.String())
				}
			}
		})
	}
	for _, b := range textTemplateBuiltins {
		if !covered[b] {
			t.Errorf("no case calls built-in %s", b)
		}
	}
}

// TestBuiltinsNotShadowed: no function the engine adds is named like a
// built-in, and the built-in list above is Go's (each parses without a
// FuncMap).
func TestBuiltinsNotShadowed(t *testing.T) {
	for _, b := range textTemplateBuiltins {
		if _, err := template.New("").Parse("{{" + b + "}}"); err != nil {
			t.Errorf("%s is not a text/template built-in: %v", b, err)
		}
		if _, ok := funcs[b]; ok {
			t.Errorf("template functions replace built-in %s", b)
		}
	}
	for name := range funcs {
		if _, err := template.New("").Parse("{{" + name + "}}"); err == nil {
			t.Errorf("template function %s shadows a text/template built-in", name)
		}
	}
}

// TestSliceInEveryTemplatePlace: {{slice .mac 0 8}}, which failed with
// sprig's slice, works in kernel arguments and in each kind of template.
func TestSliceInEveryTemplatePlace(t *testing.T) {
	const src = "{{slice .mac 0 8}}"
	snap := matchbox.NewSnapshot(matchbox.Objects{
		Profiles: []*matchbox.Profile{{
			ID: "p", GenericID: "g.tmpl", CloudID: "c.yaml", IgnitionID: "i.yaml",
			Boot: matchbox.Boot{Kernel: "/k", Args: []string{"oui=" + src}},
		}},
		Templates: []*matchbox.Template{
			{Kind: matchbox.KindGeneric, Name: "g.tmpl", Content: []byte("oui=" + src + "\n")},
			{Kind: matchbox.KindCloud, Name: "c.yaml", Content: []byte("#cloud-config\nhostname: oui-" + src + "\n")},
			{Kind: matchbox.KindIgnition, Name: "i.yaml", Content: []byte("variant: flatcar\nversion: 1.1.0\nstorage:\n  files:\n    - path: /etc/oui\n      contents:\n        inline: " + src + "\n")},
		},
	})
	p, _ := snap.Profile("p")
	sel := matchbox.Selection{Group: &matchbox.Group{ID: "g"}, Profile: p}
	data := builtinData()
	e := NewEngine(Options{})

	ipxe, err := e.IPXE(t.Context(), sel, data)
	if err != nil || !strings.Contains(string(ipxe), "kernel /k oui=52:54:00\n") {
		t.Errorf("IPXE = %q, %v", ipxe, err)
	}
	gen, err := e.Template(t.Context(), snap, sel, matchbox.KindGeneric, data)
	if err != nil || string(gen) != "oui=52:54:00\n" {
		t.Errorf("generic = %q, %v", gen, err)
	}
	cloud, err := e.Template(t.Context(), snap, sel, matchbox.KindCloud, data)
	if err != nil || string(cloud) != "#cloud-config\nhostname: oui-52:54:00\n" {
		t.Errorf("cloud = %q, %v", cloud, err)
	}
	ign, err := e.Ignition(t.Context(), snap, sel, data)
	if err != nil || !strings.Contains(string(ign), `"data:,52%3A54%3A00"`) {
		t.Errorf("ignition = %s, %v", ign, err)
	}
	if err := CheckTemplate(snap.Templates()[0]); err != nil {
		t.Errorf("CheckTemplate: %v", err)
	}
}

// TestSprigExtensionRenders: sprig functions that are not built-ins stay.
func TestSprigExtensionRenders(t *testing.T) {
	tests := []struct{ src, want string }{
		{`{{.name | upper}}`, "NODE1"},
		{`{{.absent | default "d"}}`, "d"},
		{`{{.list | toJson}}`, `["a","b","c"]`},
		{`{{mustSlice .list 1}}`, "[b c]"},
		{`{{.name | quote}}`, `"node1"`},
	}
	for _, tt := range tests {
		tmpl, err := newTemplate("t").Parse(tt.src)
		if err != nil {
			t.Fatalf("%s: %v", tt.src, err)
		}
		data := builtinData()
		data["absent"] = ""
		var b bytes.Buffer
		if err := tmpl.Execute(&b, data); err != nil || b.String() != tt.want {
			t.Errorf("%s = %q, %v; want %q", tt.src, b.String(), err, tt.want)
		}
	}
}

// TestSprigExtensionDocumented: docs/compatibility.md lists exactly the
// functions templates get besides the built-ins.
func TestSprigExtensionDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/compatibility.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)<!-- sprig functions -->(.*)<!-- /sprig functions -->`).FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/compatibility.md has no <!-- sprig functions --> list")
	}
	var listed []string
	for _, n := range regexp.MustCompile("`([A-Za-z0-9_]+)`").FindAllSubmatch(m[1], -1) {
		listed = append(listed, string(n[1]))
	}
	if diff := cmp.Diff(ExtensionFuncs(), listed); diff != "" {
		t.Errorf("documented sprig functions (-offered +listed):\n%s", diff)
	}
}

// TestServerEnvironmentNotExposed: no template can read the server's
// environment (or make it look up host names).
func TestServerEnvironmentNotExposed(t *testing.T) {
	t.Setenv("MATCHBOX_PASSPHRASE", "secret")
	for _, src := range []string{`{{env "MATCHBOX_PASSPHRASE"}}`, `{{expandenv "$MATCHBOX_PASSPHRASE"}}`, `{{getHostByName "localhost"}}`} {
		if _, err := newTemplate("t").Parse(src); err == nil || !strings.Contains(err.Error(), "not defined") {
			t.Errorf("%s parses (%v); want function not defined", src, err)
		}
	}
}
