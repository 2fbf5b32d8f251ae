package omaha

import "testing"

func TestVersion(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"3815.2.0", "3815.2.0", 0},
		{"3815.2.0", "3815.10.0", -1},
		{"3815.2.1", "3815.2.0", 1},
		{"999.99.99", "1000.0.0", -1},
		{"3850.0.0+nightly-20240101-2100", "3850.0.0", 0},
		{"04.1.0", "4.1.0", 0},
	}
	for _, tc := range cases {
		a, err := ParseVersion(tc.a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ParseVersion(tc.b)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.Compare(b); got != tc.want {
			t.Errorf("%s vs %s: %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
	if v, _ := ParseVersion("3850.0.0+nightly"); v.String() != "3850.0.0+nightly" {
		t.Errorf("String() = %q", v)
	}
	for _, bad := range []string{"", "0.0.0.0", "3815.2", "3815.2.0.1", "3815.x.0", "3815..0", "-1.2.3", "1.2.3+", "1234567890.0.0", " 1.2.3", "1.2.3-rc1"} {
		if v, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) = %v, want an error", bad, v)
		}
	}
}
