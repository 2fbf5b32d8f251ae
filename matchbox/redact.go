package matchbox

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Redacted replaces a secret in text.
const Redacted = "********"

// RedactSecret replaces secret in text in every form text may carry it in:
// as it is, JSON-escaped (with and without HTML escaping, with non-ASCII
// as \u escapes in either case), Go-quoted (%q, also ASCII-only),
// URL-encoded for a query or a path (either hex case, with or without the
// reserved characters), HTML-escaped, shell-quoted (single or double
// quotes), and each of these escaped once more by any of them, as when a
// JSON error body is quoted into a log line. Longer forms are replaced
// first, so no part of a form is left behind.
func RedactSecret(text, secret string) string {
	if secret == "" || text == "" {
		return text
	}
	for _, f := range secretForms(secret) {
		text = strings.ReplaceAll(text, f, Redacted)
	}
	return text
}

// RedactError returns err with secret redacted from its text (see
// RedactSecret); errors.Is still sees what err wraps.
func RedactError(err error, secret string) error {
	if err == nil || secret == "" {
		return err
	}
	msg := err.Error()
	if red := RedactSecret(msg, secret); red != msg {
		return &redactedError{msg: red, err: err}
	}
	return err
}

// redactedError carries a redacted text; it answers errors.Is for the
// error it replaces but does not unwrap to it, so the text with the secret
// cannot be printed from it.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string        { return e.msg }
func (e *redactedError) Is(target error) bool { return errors.Is(e.err, target) }

// secretForms returns the forms of s (see RedactSecret), longest first.
func secretForms(s string) []string {
	seen := map[string]bool{}
	var out []string
	add := func(f string) {
		if f != "" && !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	first := escapes(s)
	for _, f := range first {
		add(f)
	}
	for _, f := range first {
		for _, g := range escapes(f) {
			add(g)
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	return out
}

// escapes returns s and s escaped each way text carries strings, without
// the quotes around them.
func escapes(s string) []string {
	jsonHTML, _ := json.Marshal(s)
	var plain strings.Builder
	enc := json.NewEncoder(&plain)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	jsonPlain := strings.TrimSuffix(plain.String(), "\n")
	goq := strconv.Quote(s)
	goqASCII := strconv.QuoteToASCII(s)
	query, path := url.QueryEscape(s), url.PathEscape(s)
	all := percentAll(s, "%20")
	return []string{
		s,
		unquote(string(jsonHTML)),
		unquote(jsonPlain),
		jsonASCII(s, "%04x"),
		jsonASCII(s, "%04X"),
		unquote(goq),
		unquote(goqASCII),
		query, lowerHex(query),
		path, lowerHex(path),
		all, lowerHex(all),
		percentAll(s, "+"), lowerHex(percentAll(s, "+")),
		html.EscapeString(s),
		strings.ReplaceAll(s, "'", `'\''`),
		strings.ReplaceAll(s, "'", `'"'"'`),
		shellDouble(s),
	}
}

func unquote(q string) string {
	if len(q) >= 2 {
		return q[1 : len(q)-1]
	}
	return q
}

// jsonASCII escapes s as JSON with every non-ASCII character as \u escapes
// (surrogate pairs beyond the BMP), as encoders that keep output ASCII do.
func jsonASCII(s, hexFormat string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == utf8.RuneError:
			fmt.Fprintf(&b, `\u`+hexFormat, r)
		case r < 0x80:
			b.WriteRune(r)
		case r > 0xffff:
			r -= 0x10000
			fmt.Fprintf(&b, `\u`+hexFormat+`\u`+hexFormat, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
		default:
			fmt.Fprintf(&b, `\u`+hexFormat, r)
		}
	}
	return b.String()
}

// percentAll percent-encodes every byte of s but letters, digits and
// -._~ (as encodeURIComponent and most form encoders do), a space as
// space.
func percentAll(s, space string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			b.WriteByte(c)
		case c == ' ':
			b.WriteString(space)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// lowerHex lowers the hex digits of the percent escapes in s.
func lowerHex(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			for j := i + 1; j <= i+2; j++ {
				if 'A' <= b[j] && b[j] <= 'F' {
					b[j] += 'a' - 'A'
				}
			}
			i += 2
		}
	}
	return string(b)
}

// shellDouble escapes s for a double-quoted shell word.
func shellDouble(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune("\\\"$`", r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
