package matchbox

import (
	"strconv"
	"unicode/utf8"
)

// MaxQuoted is how many bytes of a client-supplied string Quote keeps.
const MaxQuoted = 96

// Quote quotes a string that came from the network (a path, a MAC, a
// header) for an error or a log line: Go-quoted, so control characters and
// invalid UTF-8 show escaped, and cut to MaxQuoted bytes with the full
// length noted, so a client cannot make one request write a megabyte of
// log.
func Quote(s string) string {
	if len(s) <= MaxQuoted {
		return strconv.Quote(s)
	}
	cut := MaxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…(" + strconv.Itoa(len(s)) + " bytes)"
}
