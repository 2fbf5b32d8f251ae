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
// the same way) and returns an error besides fn's result.
func (b *budget) guard(name string, fn any) any {
	fv := reflect.ValueOf(fn)
	ft := fv.Type()
	in := make([]reflect.Type, ft.NumIn())
	for i := range in {
		in[i] = ft.In(i)
	}
	wt := reflect.FuncOf(in, []reflect.Type{ft.Out(0), errorType}, ft.IsVariadic())
	zero, noError := reflect.Zero(ft.Out(0)), reflect.Zero(errorType)
	pre := prechecks[name]
	return reflect.MakeFunc(wt, func(args []reflect.Value) []reflect.Value {
		fail := func(err error) []reflect.Value {
			return []reflect.Value{zero, reflect.ValueOf(&err).Elem()}
		}
		flat := args
		if ft.IsVariadic() {
			flat = spread(args)
		}
		if err := b.before(name, pre, flat); err != nil {
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
		if err := b.checkSize(out[0], name+" made"); err != nil {
			return fail(err)
		}
		if err := b.addMade(madeSize(out[0], flat)); err != nil {
			return fail(err)
		}
		return []reflect.Value{out[0], noError}
	}).Interface()
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
func (b *budget) before(name string, pre precheck, args []reflect.Value) error {
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

// A precheck estimates from a call's arguments, from above, the memory the
// function will take to make its result (limit: counting may stop past it).
type precheck func(args []reflect.Value, limit int) uint64

// prechecks are the functions whose result can be far larger than their
// arguments, or which use far more memory than their result takes.
var prechecks = map[string]precheck{
	"repeat": func(a []reflect.Value, _ int) uint64 {
		if a[0].Int() <= 0 {
			return 0
		}
		return mulSat(uint64(a[0].Int()), uint64(a[1].Len()))
	},
	"indent":  indentSize,
	"nindent": indentSize,
	"until": func(a []reflect.Value, _ int) uint64 {
		n := a[0].Int()
		if n < 0 {
			n = -n
		}
		return mulSat(uint64(n), 8)
	},
	"untilStep": func(a []reflect.Value, _ int) uint64 {
		return mulSat(stepCount(int(a[0].Int()), int(a[1].Int()), int(a[2].Int())), 8)
	},
	"seq": func(a []reflect.Value, _ int) uint64 {
		params := make([]int, len(a))
		for i, v := range a {
			params[i] = int(v.Int())
		}
		start, stop, step, ok := seqSteps(params)
		if !ok {
			return 0
		}
		// Each number: up to 20 digits and a space, printed and split.
		return mulSat(stepCount(start, stop, step), 64)
	},
	"join": func(a []reflect.Value, limit int) uint64 {
		n := 1
		if l := concrete(a[1]); l.Kind() == reflect.Slice || l.Kind() == reflect.Array {
			n = l.Len()
		}
		return addSat(argsSize(a[1:], limit), mulSat(uint64(n), uint64(a[0].Len())))
	},
	"replace": func(a []reflect.Value, _ int) uint64 {
		old, repl, src := a[0].String(), a[1].String(), a[2].String()
		if len(repl) <= len(old) {
			return uint64(len(src))
		}
		return addSat(uint64(len(src)), mulSat(uint64(strings.Count(src, old)), uint64(len(repl)-len(old))))
	},
	"regexReplaceAll":            regexReplaceSize(false),
	"mustRegexReplaceAll":        regexReplaceSize(false),
	"regexReplaceAllLiteral":     regexReplaceSize(true),
	"mustRegexReplaceAllLiteral": regexReplaceSize(true),
	"wrapWith": func(a []reflect.Value, _ int) uint64 {
		width, with, s := max(a[0].Int(), 1), a[1].Len(), a[2].Len()
		return addSat(uint64(s), mulSat(uint64(s)/uint64(width)+1, uint64(with)))
	},
	// A string header per part; a map entry per part for split(n).
	"splitList": func(a []reflect.Value, _ int) uint64 {
		return mulSat(parts(a[0].String(), a[1].String()), wordsSize)
	},
	"split": func(a []reflect.Value, _ int) uint64 {
		return mulSat(parts(a[0].String(), a[1].String()), 64)
	},
	"splitn": func(a []reflect.Value, _ int) uint64 {
		n, p := a[1].Int(), parts(a[0].String(), a[2].String())
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
	"randBytes": func(a []reflect.Value, _ int) uint64 {
		return mulSat(uint64(max(a[0].Int(), 0)), 3)
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
func argsSize(a []reflect.Value, limit int) uint64 {
	var total uint64
	for _, v := range a {
		n, ok := sizeOf(v, limit)
		if !ok {
			return math.MaxUint64
		}
		if total = addSat(total, uint64(n)); total > uint64(limit) {
			break
		}
	}
	return total
}

func indentSize(a []reflect.Value, _ int) uint64 {
	spaces, s := a[0].Int(), a[1].String()
	if spaces <= 0 {
		return uint64(len(s)) + 1
	}
	return addSat(uint64(len(s))+1, mulSat(uint64(spaces), uint64(strings.Count(s, "\n"))+1))
}

// regexReplaceSize runs the regular expression once to bound the result of
// replacing each match (a $ in the replacement may stand for a submatch,
// which is no longer than the match).
func regexReplaceSize(literal bool) precheck {
	return func(a []reflect.Value, _ int) uint64 {
		re, err := regexp.Compile(a[0].String())
		if err != nil {
			return 0 // the function reports it
		}
		s, repl := a[1].String(), a[2].String()
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
func regexPartsSize(a []reflect.Value, _ int) uint64 {
	p := uint64(a[1].Len()) + 1
	if n := a[2].Int(); n >= 0 && uint64(n) < p {
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
func jsonSize(a []reflect.Value, _ int) uint64 {
	s := a[0].String()
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
func randSize(a []reflect.Value, _ int) uint64 {
	return mulSat(uint64(max(a[0].Int(), 0)), 5)
}

// prettyJSONSize counts the indentation of every element too.
func prettyJSONSize(a []reflect.Value, limit int) uint64 {
	s := sizer{limit: limit, indent: 2}
	s.value(a[0], 0)
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
func printfSize(a []reflect.Value, limit int) uint64 {
	format, args := a[0].String(), a[1:]
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
				switch v := concrete(args[argNum]); {
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
	items:
		for i := range l.Len() {
			item := l.Index(i).Interface()
			for _, d := range dest {
				if err := b.stopped(); err != nil {
					return nil, err
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
