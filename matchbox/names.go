package matchbox

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Identifiers, names and labels are shown in tables, logs and terminals,
// and compared byte for byte. A newline in a group id would forge a row of
// `matchbox group list`; an escape sequence would drive the operator's
// terminal; a right-to-left override makes "\u202etluafed" display as
// "default". So what names and single-line values may hold is printable
// text that shows as what it is.

// CheckName checks an identifier or name: a group, profile or template id
// or name, a token name, a label or selector key. field names it in the
// error ("group id", "selector key"). A name is not empty, is valid UTF-8,
// and every character in it is printable (unicode.IsPrint: letters, marks,
// numbers, punctuation, symbols and the ASCII space) and visible. That
// rules out control characters (C0, DEL, C1), spaces other than U+0020,
// line and paragraph separators, format characters (Cf: the bidirectional
// overrides, embeddings, isolates and marks, zero-width spaces and
// joiners, U+FEFF), other invisible characters (default-ignorable, such as
// U+3164) and U+FFFD, which stands for bytes that were not UTF-8. The
// error wraps ErrInvalid.
func CheckName(field, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, field)
	}
	return checkText(field, s, false)
}

// CheckValue checks a value: of a label or selector (multiline false) or a
// string in group metadata (multiline true). A value may be empty. A
// label or selector value holds what a name may hold: it is compared with
// what machines send and shown on one line. Metadata is free text rendered
// into configs (keys, certificates, scripts), so it may also hold tabs,
// line breaks (\n, \r), any Unicode space and U+FFFD; never other control
// characters or the invisible and format characters CheckName refuses,
// which would make a config read differently from what it does. The
// error wraps ErrInvalid.
func CheckValue(field, s string, multiline bool) error {
	return checkText(field, s, multiline)
}

func checkText(field, s string, multiline bool) error {
	at := firstBad(s, multiline)
	if at < 0 {
		return nil
	}
	r, n := utf8.DecodeRuneInString(s[at:])
	if r == utf8.RuneError && n == 1 {
		return fmt.Errorf("%w: %s %s is not valid UTF-8 (byte %d)", ErrInvalid, field, Quote(s), at)
	}
	return badRune(field, s, r, at)
}

// firstBad returns the byte offset of the first character s may not hold,
// or -1 when there is none. It does not allocate: it runs on every label
// of every boot request.
func firstBad(s string, multiline bool) int {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if ' ' <= c && c < 0x7f || multiline && (c == '\t' || c == '\n' || c == '\r') {
				i++
				continue
			}
			return i
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || !visible(r, multiline) {
			return i
		}
		i += n
	}
	return -1
}

// CheckLabel checks a label or selector (what says which): its key holds
// what a name may hold, its value is a single-line value (CheckValue). An
// empty key is taken, as poseidon/matchbox takes "?=x" (callers that
// store labels refuse it). The error names the key; CheckLabel allocates
// only when it fails, since it runs on every label of every boot request.
func CheckLabel(what, k, v string) error {
	if firstBad(k, false) >= 0 {
		return CheckName(what+" key", k)
	}
	if firstBad(v, false) >= 0 {
		return CheckValue(what+" "+Quote(k), v, false)
	}
	return nil
}

// visible reports whether a non-ASCII rune may be in a name or value.
func visible(r rune, multiline bool) bool {
	if multiline && (r == utf8.RuneError || unicode.In(r, unicode.Zs)) {
		return true
	}
	return unicode.IsPrint(r) && r != utf8.RuneError && !unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r)
}

func badRune(field, s string, r rune, at int) error {
	what := "unprintable character"
	switch {
	case unicode.IsControl(r):
		what = "control character"
	case unicode.Is(unicode.Cf, r):
		what = "format character (changes how text displays)"
	case r == utf8.RuneError:
		what = "replacement character (the text was not UTF-8)"
	case unicode.IsSpace(r):
		what = "space other than U+0020"
	case unicode.IsPrint(r):
		what = "invisible character"
	}
	return fmt.Errorf("%w: %s %s holds a %s, U+%04X, at byte %d", ErrInvalid, field, Quote(s), what, r, at)
}

// Printable returns s as a table cell or a line of output shows it: s
// itself when CheckName would take it and it holds no quote or backslash,
// otherwise s Go-quoted with every character CheckName refuses escaped.
// Data stored before names were checked, or text a machine sent (a DHCP
// host name, a TFTP file name), then cannot forge rows, drive the
// terminal or display as something else, and quoted text is never taken
// for plain.
func Printable(s string) string {
	if s != "" && firstBad(s, false) < 0 && !strings.ContainsAny(s, `"\`) {
		return s
	}
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	b = appendEscaped(b, s, true)
	return string(append(b, '"'))
}

// EscapeLine returns s with every character a single-line value may not
// hold escaped (\n, \x1b, \u202e, \xff for a byte that is not UTF-8), and
// nothing else changed: a message that quotes text of its own stays
// readable, and stays one line.
func EscapeLine(s string) string {
	if firstBad(s, false) < 0 {
		return s
	}
	return string(appendEscaped(make([]byte, 0, len(s)+8), s, false))
}

// appendEscaped appends s with the characters firstBad refuses escaped as
// Go spells them, and with quotes, also `"` and `\`.
func appendEscaped(b []byte, s string, quotes bool) []byte {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b = append(b, `\x`...)
			b = append(b, "0123456789abcdef"[s[i]>>4], "0123456789abcdef"[s[i]&15])
		case r < utf8.RuneSelf && ' ' <= r && r < 0x7f, r >= utf8.RuneSelf && visible(r, false):
			if quotes && (r == '"' || r == '\\') {
				b = append(b, '\\')
			}
			b = append(b, s[i:i+n]...)
		default:
			// strconv spells the escape (\n, \x1b, \u202e, \U000e0001).
			q := strconv.QuoteRuneToASCII(r)
			b = append(b, q[1:len(q)-1]...)
		}
		i += n
	}
	return b
}
