package matchbox_test

import (
	"testing"

	"matchbox.dev/matchbox"
)

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"3815.2.0", "3815.2.0", 0},
		{"3815.2.0", "3815.2.1", -1},
		{"3815.10.0", "3815.9.0", 1},   // numeric, not textual
		{"3815.2.0", "3815.2.0.0", -1}, // equal numerically: the spelling decides, stably
		{"3815.2.0.1", "3815.2.0", 1},
		{"not-a-version", "1.0.0", -1},
		{"1.0.0", "x", 1},
	} {
		if got := matchbox.CompareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
	for _, bad := range []string{"", "1.2", "1.2.3.4.5", "01.2.3", "1..3", "1.2.x", "1234567890.0.0"} {
		if _, ok := matchbox.ParseVersion(bad); ok {
			t.Errorf("ParseVersion(%q) accepted", bad)
		}
	}
}
