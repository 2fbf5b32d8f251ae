package matchbox

import (
	"strconv"
	"strings"
)

// ParseVersion reads a Flatcar version, X.Y.Z or X.Y.Z.W: decimal numbers
// without leading zeros (so each version has one spelling), each below
// 10^9.
func ParseVersion(s string) ([]uint64, bool) {
	parts := strings.Split(s, ".")
	if len(parts) < 3 || len(parts) > 4 {
		return nil, false
	}
	v := make([]uint64, len(parts))
	for i, p := range parts {
		if p == "" || len(p) > 9 || (len(p) > 1 && p[0] == '0') {
			return nil, false
		}
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return nil, false
		}
		v[i] = n
	}
	return v, true
}

// CompareVersions compares two Flatcar versions numerically, component by
// component (a missing fourth component counts as 0); versions that do
// not parse sort before those that do, and among themselves as strings.
func CompareVersions(a, b string) int {
	va, oka := ParseVersion(a)
	vb, okb := ParseVersion(b)
	switch {
	case !oka && !okb:
		return strings.Compare(a, b)
	case !oka:
		return -1
	case !okb:
		return 1
	}
	for i := range max(len(va), len(vb)) {
		var x, y uint64
		if i < len(va) {
			x = va[i]
		}
		if i < len(vb) {
			y = vb[i]
		}
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
	}
	return strings.Compare(a, b)
}
