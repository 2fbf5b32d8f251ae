package render

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"time"
	"unsafe"
)

// Defaults of the render limits (Options).
const (
	DefaultRenderTimeout  = 5 * time.Second
	DefaultRenderMaxBytes = 16 << 20
)

// Fixed limits. Go's fmt and text/template recurse once per level of a
// value or of nested template calls; without these, one template would
// take the server down with a fatal stack overflow.
const (
	// madeFactor: the values the template functions of one render make
	// may add up to this many times RenderMaxBytes.
	madeFactor = 4
	// maxValueDepth bounds the nesting of a value a function returns
	// (a value that contains itself has no bound).
	maxValueDepth = 1000
	// maxTemplateDepth bounds nested {{template}} calls.
	maxTemplateDepth = 1000
)

// The settings that raise a limit, named as matchbox serve's and
// matchbox validate's flags.
const (
	settingTimeout  = "-render-timeout"
	settingMaxBytes = "-render-max-mb"
)

// Kinds of LimitError, for metrics.
const (
	LimitTimeout = "timeout"
	LimitSize    = "size"
	LimitNesting = "nesting"
)

// LimitError is a render stopped by one of the engine's limits: a template
// that loops for ever or makes more than any machine's config needs. Renders
// that fail with it are render errors like any other (an *Error wraps it).
type LimitError struct {
	// Kind is LimitTimeout, LimitSize or LimitNesting.
	Kind string
	// Setting is the flag that raises the limit; empty for fixed limits.
	Setting string
	Reason  string
}

func (e *LimitError) Error() string {
	if e.Setting == "" {
		return "render limit: " + e.Reason
	}
	return "render limit: " + e.Reason + " (" + e.Setting + " sets the limit)"
}

// limits are an engine's render limits, defaults applied.
type limits struct {
	timeout  time.Duration
	maxBytes int
}

// budget is what one execution of a template may still spend. The checks
// bound into a template's clone (ticks, function wrappers) close over one.
type budget struct {
	ctx      context.Context
	deadline time.Time
	lim      limits
	// made is the size of the values template functions made so far.
	made  int
	depth int
	// strict: the template may change maps in place (set, merge …), so
	// a value checked when it was made may have grown since.
	strict bool
}

func (b *budget) reset(ctx context.Context, lim limits) {
	*b = budget{ctx: ctx, deadline: time.Now().Add(lim.timeout), lim: lim, strict: b.strict}
}

// stopped reports why the render must stop now: its context ended or its
// deadline passed. It runs at every loop iteration, template call and
// guarded function call: a loop whose iterations are slow (a function
// that takes a second) must not run many of them past the deadline.
func (b *budget) stopped() error {
	if err := b.ctx.Err(); err != nil {
		return fmt.Errorf("render stopped: %w", err)
	}
	if time.Now().After(b.deadline) {
		return b.timeoutError()
	}
	return nil
}

func (b *budget) timeoutError() error {
	return &LimitError{Kind: LimitTimeout, Setting: settingTimeout,
		Reason: fmt.Sprintf("the render ran past its deadline of %v", b.lim.timeout)}
}

// tick runs at the start of every range iteration.
func (b *budget) tick() (bool, error) { return false, b.stopped() }

// enter runs at the start of every template body, leave at its end (a
// body has no other way out but an error, which ends the render).
func (b *budget) enter() (bool, error) {
	if b.depth++; b.depth > maxTemplateDepth {
		return false, &LimitError{Kind: LimitNesting, Reason: fmt.Sprintf("templates nested more than %d deep", maxTemplateDepth)}
	}
	return false, b.stopped()
}

func (b *budget) leave() (bool, error) {
	b.depth--
	return false, nil
}

// printed checks a value an action is about to print (strict templates
// only): fmt builds the whole text of a value before writing any of it.
func (b *budget) printed(v reflect.Value) (reflect.Value, error) {
	return v, b.checkSize(v, "the value printed is")
}

// tooBig is the error of n bytes, more than a value may have; subject
// says whose ("repeat would make").
func (b *budget) tooBig(subject string, n uint64) error {
	return &LimitError{Kind: LimitSize, Setting: settingMaxBytes,
		Reason: fmt.Sprintf("%s %s, more than %s", subject, sizeString(n), sizeString(uint64(b.lim.maxBytes)))}
}

// checkSize measures v against the bound of one value; subject says what
// v is ("toJson made").
func (b *budget) checkSize(v reflect.Value, subject string) error {
	n, ok := sizeOf(v, b.lim.maxBytes)
	return b.sizeError(n, ok, subject)
}

// checkSizeOf is checkSize of x.
func (b *budget) checkSizeOf(x any, subject string) error {
	s := sizer{limit: b.lim.maxBytes}
	s.any(x, 0)
	return b.sizeError(s.n, !s.deep, subject)
}

func (b *budget) sizeError(n int, ok bool, subject string) error {
	if !ok {
		return &LimitError{Kind: LimitNesting,
			Reason: fmt.Sprintf("%s a value nested more than %d deep (or one that contains itself)", subject, maxValueDepth)}
	}
	if n > b.lim.maxBytes {
		return b.tooBig(subject, uint64(n))
	}
	return nil
}

// addMade counts n bytes made by a function against the render's total.
func (b *budget) addMade(n int) error {
	b.made += n
	if total := madeFactor * b.lim.maxBytes; b.made > total {
		return &LimitError{Kind: LimitSize, Setting: settingMaxBytes,
			Reason: fmt.Sprintf("template functions made more than %s in this render (%d times the limit of one value)", sizeString(uint64(total)), madeFactor)}
	}
	return nil
}

func sizeString(n uint64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// limitWriter is the output of a render: a buffer that refuses to grow
// past max bytes.
type limitWriter struct {
	buf      *bytes.Buffer
	max      int
	maxBytes int // the limit as configured, for the error
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if len(p) > w.max-w.buf.Len() {
		return 0, &LimitError{Kind: LimitSize, Setting: settingMaxBytes,
			Reason: fmt.Sprintf("the output would be more than %s", sizeString(uint64(w.maxBytes)))}
	}
	return w.buf.Write(p)
}

// Sizes in the estimate of a value's memory: the header of a string, an
// interface or a number, a slice's header, a map's and each map entry's
// overhead.
const (
	wordsSize    = 16
	sliceSize    = 24
	mapSize      = 48
	mapEntrySize = 16
)

// sizeOf estimates the memory v holds, counting what is shared as often as
// it is reachable (that is what printing it costs). It stops counting once
// the total passes limit; ok is false for a value nested more than
// maxValueDepth deep.
func sizeOf(v reflect.Value, limit int) (n int, ok bool) {
	s := sizer{limit: limit}
	s.value(v, 0)
	return s.n, !s.deep
}

// sizer walks a value for sizeOf; indent adds that many bytes per level of
// nesting to every element (an indented JSON encoding).
type sizer struct {
	n, limit int
	indent   int
	deep     bool
}

func (s *sizer) done() bool { return s.n > s.limit || s.deep }

func (s *sizer) value(v reflect.Value, depth int) {
	if s.done() {
		return
	}
	if depth > maxValueDepth {
		s.deep = true
		return
	}
	switch k := v.Kind(); {
	case k == reflect.Interface && !v.IsNil() && v.CanInterface():
		// The common types without reflection on every element.
		s.any(v.Interface(), depth)
		return
	case k == reflect.Interface && !v.IsNil():
		s.value(v.Elem(), depth)
		return
	case k == reflect.Pointer && !v.IsNil():
		s.value(v.Elem(), depth+1)
		return
	}
	s.n += s.indent * depth
	switch v.Kind() {
	case reflect.String:
		s.n += wordsSize + v.Len()
	case reflect.Slice, reflect.Array:
		s.n += sliceSize
		if flat(v.Type().Elem()) {
			s.n += v.Len() * int(v.Type().Elem().Size())
			return
		}
		for i := 0; i < v.Len() && !s.done(); i++ {
			s.value(v.Index(i), depth+1)
		}
	case reflect.Map:
		s.n += mapSize
		it := v.MapRange()
		for it.Next() && !s.done() {
			s.n += mapEntrySize
			s.value(it.Key(), depth+1)
			s.value(it.Value(), depth+1)
		}
	case reflect.Struct:
		for i := 0; i < v.NumField() && !s.done(); i++ {
			s.value(v.Field(i), depth+1)
		}
	default:
		s.n += wordsSize
	}
}

// any is value for the types template data and sprig's functions are
// made of.
func (s *sizer) any(x any, depth int) {
	switch x := x.(type) {
	case string:
		s.n += wordsSize + len(x) + s.indent*depth
	case float64, int, int64, bool, nil:
		s.n += wordsSize + s.indent*depth
	case []any:
		if depth+1 > maxValueDepth {
			s.deep = true
			return
		}
		s.n += sliceSize + s.indent*depth
		for _, e := range x {
			if s.done() {
				return
			}
			s.any(e, depth+1)
		}
	case map[string]any:
		if depth+1 > maxValueDepth {
			s.deep = true
			return
		}
		s.n += mapSize + s.indent*depth
		for k, e := range x {
			if s.done() {
				return
			}
			s.n += mapEntrySize + wordsSize + len(k) + s.indent*(depth+1)
			s.any(e, depth+1)
		}
	default:
		s.value(reflect.ValueOf(x), depth)
	}
}

// flat reports whether values of t hold no references: a slice of them is
// as big as its length says.
func flat(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return true
	}
	return false
}

// madeSize is the memory a function's result r holds that none of its
// arguments did: a string that is (part of) an argument, or the argument
// map that set or merge changed, was not made by it. Only the top level
// counts; what a new list holds was counted when it was made.
func madeSize(r any, args []any) int {
	if s, ok := r.(string); ok {
		for _, a := range args {
			if t, ok := a.(string); ok && within(s, t) {
				return 0
			}
		}
		return len(s)
	}
	rv := reflect.ValueOf(r)
	switch rv.Kind() {
	case reflect.Slice, reflect.Map:
		for _, a := range args {
			if av := reflect.ValueOf(a); av.Kind() == rv.Kind() && av.Pointer() == rv.Pointer() {
				return 0
			}
		}
		if rv.Kind() == reflect.Slice {
			return sliceSize + rv.Len()*int(rv.Type().Elem().Size())
		}
		return mapSize + rv.Len()*(mapEntrySize+int(rv.Type().Key().Size()+rv.Type().Elem().Size()))
	case reflect.String:
		return rv.Len()
	}
	return 0
}

// within reports whether s is a substring of t in memory (not a copy).
func within(s, t string) bool {
	if len(s) == 0 {
		return true
	}
	if len(t) == 0 {
		return false
	}
	sp, tp := uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(unsafe.Pointer(unsafe.StringData(t)))
	return sp >= tp && sp+uintptr(len(s)) <= tp+uintptr(len(t))
}
