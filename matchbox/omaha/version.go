package omaha

import (
	"cmp"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Version is a Flatcar version, MAJOR.MINOR.PATCH with an optional
// "+build" suffix (developer builds: 3850.0.0+nightly-20240101-2100).
type Version struct {
	Major, Minor, Patch int
	Build               string // after '+'; not compared
}

// ParseVersion reads a Flatcar version. update_engine's "0.0.0.0" (no
// previous version) is not one.
func ParseVersion(s string) (Version, error) {
	core, build, hasBuild := strings.Cut(s, "+")
	if hasBuild && build == "" {
		return Version{}, fmt.Errorf("omaha: version %q: empty build after '+'", s)
	}
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return Version{}, fmt.Errorf("omaha: version %q is not MAJOR.MINOR.PATCH", s)
	}
	var n [3]int
	for i, p := range parts {
		v, err := versionNumber(p)
		if err != nil {
			return Version{}, fmt.Errorf("omaha: version %q: %w", s, err)
		}
		n[i] = v
	}
	return Version{Major: n[0], Minor: n[1], Patch: n[2], Build: build}, nil
}

// versionNumber reads one component: decimal digits only, at most 9 so
// that it fits any int.
func versionNumber(p string) (int, error) {
	if p == "" || len(p) > 9 {
		return 0, errors.New("each component must be 1 to 9 digits")
	}
	for _, c := range []byte(p) {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("component %q is not a number", p)
		}
	}
	return strconv.Atoi(p)
}

// Compare orders versions numerically by major, minor and patch: -1 if v
// is older than w, 0 if they are the same release, +1 if v is newer.
func (v Version) Compare(w Version) int {
	return cmp.Or(cmp.Compare(v.Major, w.Major), cmp.Compare(v.Minor, w.Minor), cmp.Compare(v.Patch, w.Patch))
}

// String writes the version as ParseVersion reads it.
func (v Version) String() string {
	s := fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
	if v.Build != "" {
		s += "+" + v.Build
	}
	return s
}
