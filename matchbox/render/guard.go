package render

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"unicode/utf8"
)

// A function a template calls is guarded when its result can be large
// (a string, a list, a map, anything): its result is measured against
// RenderMaxBytes and counted in the render's total, and for the functions
// whose result can be far larger than their arguments (repeat 3000000000,
// printf "%1000000d", print $x $x), the size is worked out from the
// arguments before the function runs.

var errorType = reflect.TypeFor[error]()

// mutators change a map in place: a value measured when it was made may
// have grown since, so templates calling them are checked strictly (every
// guarded function's arguments and every printed value are measured).
var mutators = map[string]bool{
	"set": true, "unset": true, "merge": true, "mergeOverwrite": true,
	"mustMerge": true, "mustMergeOverwrite": true,
}

// guardedBuiltins are the text/template built-ins whose result can be
// large. A template calling one executes a wrapped version, which its
// clone's function map puts in place of the built-in, with the same
// function underneath.
var guardedBuiltins = map[string]any{
	"print":    fmt.Sprint,
	"printf":   fmt.Sprintf,
	"println":  fmt.Sprintln,
	"html":     template.HTMLEscaper,
	"js":       template.JSEscaper,
	"urlquery": template.URLQueryEscaper,
}

// guardable reports whether calls of the template function named name get
// checks.
func guardable(name string) bool {
	if _, ok := guardedBuiltins[name]; ok {
		return true
	}
	fn, ok := funcs[name]
	if !ok {
		return false
	}
	if _, ok := prechecks[name]; ok {
		return true
	}
	switch reflect.TypeOf(fn).Out(0).Kind() {
	case reflect.String, reflect.Slice, reflect.Array, reflect.Map, reflect.Interface, reflect.Pointer, reflect.Struct:
		return true
	}
	return false
}

// guardedFunc is the function a guard wraps: the built-in, the engine's
// own version (uniq, which must look at the clock), or sprig's.
func (b *budget) guardedFunc(name string) any {
	switch name {
	case "uniq":
		return b.uniq
	case "mustUniq":
		return b.mustUniq
	}
	if fn, ok := guardedBuiltins[name]; ok {
		return fn
	}
	return funcs[name]
}

// guard wraps fn, the function a template calls as name, in the checks of
// b. The wrapper takes the same arguments (so text/template converts them
// the same way) and returns an error besides fn's result. The common
// signatures get wrappers of their own type; the others one made with
// reflect, which costs about twice a plain call.
func (b *budget) guard(name string, fn any) any {
	pre := prechecks[name]
	if !b.strict {
		if w := b.guardTyped(name, fn, pre); w != nil {
			return w
		}
	}
	fv := reflect.ValueOf(fn)
	ft := fv.Type()
	in := make([]reflect.Type, ft.NumIn())
	for i := range in {
		in[i] = ft.In(i)
	}
	wt := reflect.FuncOf(in, []reflect.Type{ft.Out(0), errorType}, ft.IsVariadic())
	zero, noError := reflect.Zero(ft.Out(0)), reflect.Zero(errorType)
	return reflect.MakeFunc(wt, func(args []reflect.Value) []reflect.Value {
		fail := func(err error) []reflect.Value {
			return []reflect.Value{zero, reflect.ValueOf(&err).Elem()}
		}
		flat := args
		if ft.IsVariadic() {
			flat = spread(args)
		}
		vals := make([]any, len(flat))
		for i, a := range flat {
			vals[i] = a.Interface()
		}
		if err := b.stopped(); err != nil {
			return fail(err)
		}
		if err := b.before(name, pre, vals); err != nil {
			return fail(err)
		}
		var out []reflect.Value
		if ft.IsVariadic() {
			out = fv.CallSlice(args)
		} else {
			out = fv.Call(args)
		}
		if len(out) == 2 && !out[1].IsNil() {
			return out
		}
		if err := b.after(name, out[0].Interface(), vals); err != nil {
			return fail(err)
		}
		return []reflect.Value{out[0], noError}
	}).Interface()
}

// guardTyped is guard for the signatures most template functions have,
// or nil.
func (b *budget) guardTyped(name string, fn any, pre precheck) any {
	switch f := fn.(type) {
	case func(string) string:
		return func(s string) (string, error) {
			if err := b.stopped(); err != nil {
				return "", err
			}
			if pre != nil {
				if err := b.before(name, pre, []any{s}); err != nil {
					return "", err
				}
			}
			r := f(s)
			return r, b.afterString(name, r, s)
		}
	case func(string, string) string:
		return func(s, t string) (string, error) {
			if err := b.stopped(); err != nil {
				return "", err
			}
			if pre != nil {
				if err := b.before(name, pre, []any{s, t}); err != nil {
					return "", err
				}
			}
			r := f(s, t)
			return r, b.afterString(name, r, s, t)
		}
	case func(string, string, string) string:
		return func(s, t, u string) (string, error) {
			if err := b.stopped(); err != nil {
				return "", err
			}
			if pre != nil {
				if err := b.before(name, pre, []any{s, t, u}); err != nil {
					return "", err
				}
			}
			r := f(s, t, u)
			return r, b.afterString(name, r, s, t, u)
		}
	case func(int, string) string:
		return func(n int, s string) (string, error) {
			if err := b.stopped(); err != nil {
				return "", err
			}
			if pre != nil {
				if err := b.before(name, pre, []any{n, s}); err != nil {
					return "", err
				}
			}
			r := f(n, s)
			return r, b.afterString(name, r, s)
		}
	case func(any) string:
		return func(v any) (string, error) {
			if err := b.stopped(); err != nil {
				return "", err
			}
			if pre != nil {
				if err := b.before(name, pre, []any{v}); err != nil {
					return "", err
				}
			}
			r := f(v)
			return r, b.afterString(name, r, stringOf(v))
		}
	case func(string, any) string:
		return func(s string, v any) (string, error) {
			if err := b.stopped(); err != nil {
				return "", err
			}
			if name == "join" {
				if n := joinSize(s, v, b.lim.maxBytes); n > uint64(b.lim.maxBytes) {
					return "", b.tooBig(name+" would make", n)
				}
			} else if pre != nil {
				if err := b.before(name, pre, []any{s, v}); err != nil {
					return "", err
				}
			}
			r := f(s, v)
			return r, b.afterString(name, r, s, stringOf(v))
		}
	case func(...any) string:
		return func(args ...any) (string, error) {
			if err := b.stopped(); err != nil {
				return "", err
			}
			if err := b.before(name, pre, args); err != nil {
				return "", err
			}
			r := f(args...)
			return r, b.afterStrings(name, r, args)
		}
	case func(string, ...any) string:
		return func(format string, args ...any) (string, error) {
			if err := b.stopped(); err != nil {
				return "", err
			}
			if name == "printf" {
				if n := printfEstimate(format, args, b.lim.maxBytes); n > uint64(b.lim.maxBytes) {
					return "", b.tooBig(name+" would make", n)
				}
			} else if pre != nil {
				if err := b.before(name, pre, append([]any{format}, args...)); err != nil {
					return "", err
				}
			}
			r := f(format, args...)
			return r, b.afterStrings(name, r, args)
		}
	case func(any, ...any) any:
		if pre != nil {
			return nil
		}
		return func(v any, vs ...any) (any, error) {
			if err := b.stopped(); err != nil {
				return nil, err
			}
			r := f(v, vs...)
			if madeSize(r, []any{v}) == 0 {
				return r, nil // v itself (default's default)
			}
			if err := b.after(name, r, vs); err != nil {
				return nil, err
			}
			return r, nil
		}
	}
	return nil
}

// stringOf is v if it is a string, else "".
func stringOf(v any) string {
	s, _ := v.(string)
	return s
}

// spread returns the arguments of a variadic call with the variadic slice
// spread out.
func spread(args []reflect.Value) []reflect.Value {
	last := args[len(args)-1]
	flat := make([]reflect.Value, 0, len(args)-1+last.Len())
	flat = append(flat, args[:len(args)-1]...)
	for i := range last.Len() {
		flat = append(flat, last.Index(i))
	}
	return flat
}

// before runs the checks of a call before the function does.
func (b *budget) before(name string, pre precheck, args []any) error {
	if b.strict {
		if n := argsSize(args, b.lim.maxBytes); n > uint64(b.lim.maxBytes) {
			return b.tooBig("the arguments of "+name+" are", n)
		}
	}
	if pre != nil {
		if n := pre(args, b.lim.maxBytes); n > uint64(b.lim.maxBytes) {
			return b.tooBig(name+" would make", n)
		}
	}
	return nil
}

// after checks what a function returned, r, made from args.
func (b *budget) after(name string, r any, args []any) error {
	if s, ok := r.(string); ok {
		if wordsSize+len(s) > b.lim.maxBytes {
			return b.tooBig(name+" made", uint64(wordsSize+len(s)))
		}
	} else if err := b.checkSizeOf(r, name+" made"); err != nil {
		return err
	}
	return b.addMade(madeSize(r, args))
}

// afterStrings is after for a string made from args.
func (b *budget) afterStrings(name, r string, args []any) error {
	if wordsSize+len(r) > b.lim.maxBytes {
		return b.tooBig(name+" made", uint64(wordsSize+len(r)))
	}
	for _, a := range args {
		if s, ok := a.(string); ok && within(r, s) {
			return nil
		}
	}
	return b.addMade(len(r))
}

// afterString is after for a string made from strings.
func (b *budget) afterString(name, r string, args ...string) error {
	if wordsSize+len(r) > b.lim.maxBytes {
		return b.tooBig(name+" made", uint64(wordsSize+len(r)))
	}
	for _, a := range args {
		if within(r, a) {
			return nil
		}
	}
	return b.addMade(len(r))
}

// A precheck estimates from a call's arguments, from above, the memory the
// function will take to make its result (limit: counting may stop past
// it). The arguments have the types of the function's parameters.
type precheck func(args []any, limit int) uint64

// prechecks are the functions whose result can be far larger than their
// arguments, or which use far more memory than their result takes.
var prechecks = map[string]precheck{
	"repeat": func(a []any, _ int) uint64 {
		n, s := a[0].(int), a[1].(string)
		if n <= 0 {
			return 0
		}
		return mulSat(uint64(n), uint64(len(s)))
	},
	"indent":  indentSize,
	"nindent": indentSize,
	"until": func(a []any, _ int) uint64 {
		n := a[0].(int)
		if n < 0 {
			n = -n
		}
		return mulSat(uint64(n), 8)
	},
	"untilStep": func(a []any, _ int) uint64 {
		return mulSat(stepCount(a[0].(int), a[1].(int), a[2].(int)), 8)
	},
	"seq": func(a []any, _ int) uint64 {
		params := make([]int, len(a))
		for i, v := range a {
			params[i] = v.(int)
		}
		start, stop, step, ok := seqSteps(params)
		if !ok {
			return 0
		}
		// Each number: up to 20 digits and a space, printed and split.
		return mulSat(stepCount(start, stop, step), 64)
	},
	"join": func(a []any, limit int) uint64 { return joinSize(a[0].(string), a[1], limit) },
	"replace": func(a []any, _ int) uint64 {
		old, repl, src := a[0].(string), a[1].(string), a[2].(string)
		if len(repl) <= len(old) {
			return uint64(len(src))
		}
		return addSat(uint64(len(src)), mulSat(uint64(strings.Count(src, old)), uint64(len(repl)-len(old))))
	},
	"regexReplaceAll":            regexReplaceSize(false),
	"mustRegexReplaceAll":        regexReplaceSize(false),
	"regexReplaceAllLiteral":     regexReplaceSize(true),
	"mustRegexReplaceAllLiteral": regexReplaceSize(true),
	"wrapWith": func(a []any, _ int) uint64 {
		width, with, s := max(a[0].(int), 1), len(a[1].(string)), len(a[2].(string))
		return addSat(uint64(s), mulSat(uint64(s)/uint64(width)+1, uint64(with)))
	},
	// A string header per part; a map entry per part for split(n).
	"splitList": func(a []any, _ int) uint64 {
		return mulSat(parts(a[0].(string), a[1].(string)), wordsSize)
	},
	"split": func(a []any, _ int) uint64 {
		return mulSat(parts(a[0].(string), a[1].(string)), 64)
	},
	"splitn": func(a []any, _ int) uint64 {
		n, p := a[1].(int), parts(a[0].(string), a[2].(string))
		if n == 0 {
			return 0
		}
		if n > 0 && uint64(n) < p {
			p = uint64(n)
		}
		return mulSat(p, 64)
	},
	// At most as many matches as there are places in the string.
	"regexFindAll":     regexPartsSize,
	"mustRegexFindAll": regexPartsSize,
	"regexSplit":       regexPartsSize,
	"mustRegexSplit":   regexPartsSize,
	"fromJson":         jsonSize,
	"mustFromJson":     jsonSize,
	"randAlpha":        randSize,
	"randAlphaNum":     randSize,
	"randAscii":        randSize,
	"randNumeric":      randSize,
	"randBytes": func(a []any, _ int) uint64 {
		return mulSat(uint64(max(a[0].(int), 0)), 3)
	},
	"toPrettyJson":     prettyJSONSize,
	"mustToPrettyJson": prettyJSONSize,
	"print":            argsSize,
	"println":          argsSize,
	"cat":              argsSize,
	"html":             argsSize,
	"js":               argsSize,
	"urlquery":         argsSize,
	"quote":            argsSize,
	"squote":           argsSize,
	"printf":           printfSize,
}

// argsSize is the memory of the arguments together.
func argsSize(a []any, limit int) uint64 {
	s := sizer{limit: limit}
	for _, v := range a {
		if s.any(v, 0); s.done() {
			break
		}
	}
	if s.deep {
		return math.MaxUint64
	}
	return uint64(s.n)
}

// joinSize: the list's elements, and the separator between each two.
func joinSize(sep string, list any, limit int) uint64 {
	n := 1
	if l := reflect.ValueOf(list); l.Kind() == reflect.Slice || l.Kind() == reflect.Array {
		n = l.Len()
	}
	return addSat(argsSize([]any{list}, limit), mulSat(uint64(n), uint64(len(sep))))
}

func indentSize(a []any, _ int) uint64 {
	spaces, s := a[0].(int), a[1].(string)
	if spaces <= 0 {
		return uint64(len(s)) + 1
	}
	return addSat(uint64(len(s))+1, mulSat(uint64(spaces), uint64(strings.Count(s, "\n"))+1))
}

// regexReplaceSize runs the regular expression once to bound the result of
// replacing each match (a $ in the replacement may stand for a submatch,
// which is no longer than the match).
func regexReplaceSize(literal bool) precheck {
	return func(a []any, _ int) uint64 {
		re, err := regexp.Compile(a[0].(string))
		if err != nil {
			return 0 // the function reports it
		}
		s, repl := a[1].(string), a[2].(string)
		refs := uint64(0)
		if !literal {
			refs = uint64(strings.Count(repl, "$"))
		}
		total := uint64(len(s))
		re.ReplaceAllStringFunc(s, func(m string) string {
			total = addSat(total, addSat(uint64(len(repl)), mulSat(refs, uint64(len(m)))))
			return ""
		})
		return total
	}
}

// regexPartsSize bounds regexFindAll and regexSplit: a string header per
// part, n parts at most, and no more than one per byte of the string.
func regexPartsSize(a []any, _ int) uint64 {
	p := uint64(len(a[1].(string))) + 1
	if n := a[2].(int); n >= 0 && uint64(n) < p {
		p = uint64(n)
	}
	return mulSat(p, wordsSize)
}

// parts is how many strings splitting s at sep makes.
func parts(sep, s string) uint64 {
	if sep == "" {
		return uint64(utf8.RuneCountInString(s))
	}
	return uint64(strings.Count(s, sep)) + 1
}

// jsonSize bounds the memory of the decoded JSON text: each comma or
// opening bracket or brace begins at most one value.
func jsonSize(a []any, _ int) uint64 {
	s := a[0].(string)
	values := uint64(1)
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ',', '[', '{':
			values++
		}
	}
	return addSat(uint64(len(s)), mulSat(values, 64))
}

// randSize: sprig's random strings are built as runes.
func randSize(a []any, _ int) uint64 {
	return mulSat(uint64(max(a[0].(int), 0)), 5)
}

// prettyJSONSize counts the indentation of every element too.
func prettyJSONSize(a []any, limit int) uint64 {
	s := sizer{limit: limit, indent: 2}
	s.any(a[0], 0)
	if s.deep {
		return math.MaxUint64
	}
	return uint64(s.n)
}

// fmtMaxWidth is fmt's bound on a width or precision: larger ones are
// reported as %!(BADWIDTH) or %!(BADPREC) rather than padded to.
const fmtMaxWidth = 1e6

// printfSize bounds fmt.Sprintf's result from its format: the format
// itself, each verb's width and precision and the argument it prints, and
// the arguments left over (printed after %!(EXTRA ...)).
func printfSize(a []any, limit int) uint64 { return printfEstimate(a[0].(string), a[1:], limit) }

// printfEstimate is printfSize of format and args.
func printfEstimate(format string, args []any, limit int) uint64 {
	argSize := func(i int) uint64 {
		if i < 0 || i >= len(args) {
			return 16
		}
		return argsSize(args[i:i+1], limit)
	}
	total := uint64(len(format))
	argNum, reordered := 0, false
	index := func(i int) int {
		if i < len(format) && format[i] == '[' {
			reordered = true
			end := strings.IndexByte(format[i:], ']')
			if end < 0 {
				return len(format)
			}
			if n, err := strconv.Atoi(format[i+1 : i+end]); err == nil {
				argNum = n - 1
			}
			return i + end + 1
		}
		return i
	}
	number := func(i int) (int, uint64) {
		if i < len(format) && format[i] == '*' {
			var w uint64
			if argNum >= 0 && argNum < len(args) {
				switch v := reflect.ValueOf(args[argNum]); {
				case v.CanInt():
					w = min(uint64(math.Abs(float64(v.Int()))), fmtMaxWidth)
				case v.CanUint():
					w = min(v.Uint(), fmtMaxWidth)
				}
			}
			argNum++
			return i + 1, w
		}
		var w uint64
		for ; i < len(format) && '0' <= format[i] && format[i] <= '9'; i++ {
			w = min(w*10+uint64(format[i]-'0'), fmtMaxWidth)
		}
		return i, w
	}
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		i++
		for i < len(format) && strings.IndexByte("+-# 0", format[i]) >= 0 {
			i++
		}
		i = index(i)
		i, width := number(i)
		var prec uint64
		if i < len(format) && format[i] == '.' {
			i = index(i + 1)
			i, prec = number(i)
		}
		i = index(i)
		if i >= len(format) {
			break
		}
		if format[i] == '%' {
			continue
		}
		// 32: what fmt adds around a value it cannot print with the
		// verb (%!d(string=…)).
		total = addSat(total, width+prec+argSize(argNum)+32)
		argNum++
	}
	if !reordered && argNum < len(args) {
		total = addSat(total, argsSize(args[max(argNum, 0):], limit)+32)
	}
	return total
}

func mulSat(a, b uint64) uint64 {
	if a != 0 && b > math.MaxUint64/a {
		return math.MaxUint64
	}
	return a * b
}

func addSat(a, b uint64) uint64 {
	if a+b < a {
		return math.MaxUint64
	}
	return a + b
}

// stepCount is how many numbers untilStep(start, stop, step) makes.
func stepCount(start, stop, step int) uint64 {
	switch {
	case stop > start && step > 0:
		return (uint64(stop)-uint64(start)-1)/uint64(step) + 1
	case stop < start && step < 0:
		return (uint64(start)-uint64(stop)-1)/(uint64(-(step+1))+1) + 1
	}
	return 0
}

// untilStep is sprig's untilStep (the numbers from start towards stop,
// step apart, stop excluded), computed from the count: sprig's loop never
// ends when adding step overflows.
func untilStep(start, stop, step int) []int {
	n := stepCount(start, stop, step)
	v := make([]int, 0, n)
	for i := uint64(0); i < n; i++ {
		v = append(v, start)
		start += step
	}
	return v
}

// until is sprig's until: 0 to count, count excluded.
func until(count int) []int {
	step := 1
	if count < 0 {
		step = -1
	}
	return untilStep(0, count, step)
}

// seqSteps is the untilStep call sprig's seq makes for params (ok false
// when it makes none and returns "").
func seqSteps(params []int) (start, stop, step int, ok bool) {
	switch len(params) {
	case 1:
		start, end, inc := 1, params[0], 1
		if end < start {
			inc = -1
		}
		return start, end + inc, inc, true
	case 2:
		start, end, inc := params[0], params[1], 1
		if end < start {
			inc = -1
		}
		return start, end + inc, inc, true
	case 3:
		start, step, end, inc := params[0], params[1], params[2], 1
		if end < start {
			inc = -1
			if step > 0 {
				return 0, 0, 0, false
			}
		}
		return start, end + inc, step, true
	}
	return 0, 0, 0, false
}

// seq is sprig's seq (like the Unix command: seq LAST, seq FIRST LAST, seq
// FIRST STEP LAST), on untilStep.
func seq(params ...int) string {
	start, stop, step, ok := seqSteps(params)
	if !ok {
		return ""
	}
	var b strings.Builder
	for i, n := range untilStep(start, stop, step) {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(n))
	}
	return b.String()
}

// mustUniq is sprig's mustUniq (the list without repeats, compared with
// reflect.DeepEqual), which takes time quadratic in the list's length:
// this one stops when the render must.
func (b *budget) mustUniq(list any) ([]any, error) {
	tp := reflect.TypeOf(list).Kind()
	switch tp {
	case reflect.Slice, reflect.Array:
		l := reflect.ValueOf(list)
		dest := []any{}
		compared := 0
	items:
		for i := range l.Len() {
			item := l.Index(i).Interface()
			for _, d := range dest {
				if compared++; compared%256 == 0 {
					if err := b.stopped(); err != nil {
						return nil, err
					}
				}
				if reflect.DeepEqual(item, d) {
					continue items
				}
			}
			dest = append(dest, item)
		}
		return dest, nil
	default:
		return nil, fmt.Errorf("Cannot find uniq on type %s", tp)
	}
}

// uniq is mustUniq that panics, as sprig's does (text/template reports a
// panicking function's error).
func (b *budget) uniq(list any) []any {
	l, err := b.mustUniq(list)
	if err != nil {
		panic(err)
	}
	return l
}
