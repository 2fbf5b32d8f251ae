package matchbox

import (
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	long := strings.Repeat("é", 600) // 1200 bytes
	for _, tc := range []struct{ in, want string }{
		{"ab", `"ab"`},
		{"a\nb\x00", `"a\nb\x00"`},
		{"\xff", `"\xff"`},
		{long, `"` + strings.Repeat("é", MaxQuoted/2) + `"…(1200 bytes)`},
		{strings.Repeat("x", MaxQuoted), `"` + strings.Repeat("x", MaxQuoted) + `"`},
		{"a" + long, `"a` + strings.Repeat("é", MaxQuoted/2-1) + `"…(1201 bytes)`},
	} {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%.20q…) = %.60s…, want %.60s…", tc.in, got, tc.want)
		}
	}
}
