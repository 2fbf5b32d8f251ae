// Package secrettest is the secret that tests of redaction hide: one with
// every character that escaping changes, between fragments it does not.
package secrettest

import "encoding/json"

// Secret has every character escaping changes (quotes, backslash,
// percent, space, ampersand, non-ASCII, an emoji, angle brackets), between
// fragments it does not: no fragment may survive redaction either.
const Secret = `Qx7"Lm\Rv%41 Zp&Kw'Ét€Yb😀Hn<Jc>`

// Fragments are the parts of Secret that escaping leaves as they are.
var Fragments = []string{"Qx7", "Lm", "Rv", "Zp", "Kw", "Yb", "Hn", "Jc"}

// JSONText is s as a JSON string.
func JSONText(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
