package storage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"matchbox.dev/matchbox"
)

// maxIDLen bounds object ids (database keys, file names).
const maxIDLen = 1024

// ParseGroup decodes a group in poseidon/matchbox's JSON format, normalises
// a "mac" selector and validates it as the admin API stores groups: an id
// and a profile are required. Unknown keys are ignored, as
// poseidon/matchbox does, and returned so that validation can report them.
func ParseGroup(data []byte) (*matchbox.Group, []string, error) {
	g, unknown, err := decodeGroup(data)
	if err != nil {
		return nil, nil, err
	}
	if err := NormalizeGroup(g); err != nil {
		return nil, nil, err
	}
	return g, unknown, nil
}

// ParseGroupFile decodes a group file of a data dir as poseidon/matchbox
// serves it: a file without an id takes its name without ".json" (stem)
// as the id, and a group without a profile loads (the machines it selects
// are told it has none, rather than given another group).
func ParseGroupFile(data []byte, stem string) (*matchbox.Group, []string, error) {
	g, unknown, err := decodeGroup(data)
	if err != nil {
		return nil, nil, err
	}
	if g.ID == "" {
		g.ID = stem
	}
	if err := normalizeSelectors(g); err != nil {
		return nil, nil, err
	}
	return g, unknown, nil
}

func decodeGroup(data []byte) (*matchbox.Group, []string, error) {
	var g matchbox.Group
	unknown, err := decodeObject(data, &g, "id", "name", "profile", "selector", "metadata")
	if err != nil {
		return nil, nil, err
	}
	return &g, unknown, nil
}

// NormalizeGroup validates g and normalises its "mac" selector.
func NormalizeGroup(g *matchbox.Group) error {
	if g.ID == "" {
		return fmt.Errorf("%w: group has no id", matchbox.ErrInvalid)
	}
	if g.Profile == "" {
		return fmt.Errorf("%w: group %q has no profile", matchbox.ErrInvalid, g.ID)
	}
	return normalizeSelectors(g)
}

// normalizeSelectors checks the id's length and the metadata's depth and
// normalises a "mac" selector.
func normalizeSelectors(g *matchbox.Group) error {
	if len(g.ID) > maxIDLen {
		return fmt.Errorf("%w: group id longer than %d bytes", matchbox.ErrInvalid, maxIDLen)
	}
	if err := matchbox.CheckMetadataDepth(g.Metadata); err != nil {
		return fmt.Errorf("group %q: %w", g.ID, err)
	}
	for k, v := range g.Selector {
		if strings.EqualFold(k, "mac") {
			mac, err := matchbox.NormalizeMAC(v)
			if err != nil {
				return fmt.Errorf("group %q: selector %q: %w", g.ID, k, err)
			}
			g.Selector[k] = mac
		}
	}
	return nil
}

// SalvageClaim reads what a group file that does not load still says about
// the machines it selects (see matchbox.Claim). When the file is JSON, its
// selector object is read as far as it can be: a value that is not a
// string, or a "mac" that is not a MAC address, becomes an unknown
// selector. When the file is not JSON, a selector object that parses on
// its own is taken only if the file names exactly one: anything less
// certain claims every machine.
func SalvageClaim(data []byte, origin, reason string) matchbox.Claim {
	c := matchbox.Claim{Origin: origin, Reason: reason}
	var raw json.RawMessage
	var whole map[string]json.RawMessage
	if json.Unmarshal(data, &whole) == nil {
		n := 0
		for k, v := range whole {
			// encoding/json matches keys case-insensitively.
			if strings.EqualFold(k, "selector") {
				raw, n = v, n+1
			}
		}
		switch n {
		case 0:
			c.Known = true // no selectors: a default group
			return c
		case 1:
		default:
			return c
		}
	} else {
		at := selectorKeys.FindAllIndex(data, -1)
		if len(at) != 1 {
			return c
		}
		dec := json.NewDecoder(bytes.NewReader(data[at[0][1]:]))
		if dec.Decode(&raw) != nil {
			return c
		}
	}
	var sel map[string]json.RawMessage
	if json.Unmarshal(raw, &sel) != nil {
		if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			c.Known = true
		}
		return c
	}
	c.Known = true
	c.Selector = make(map[string]string, len(sel))
	for k, v := range sel {
		var s string
		if json.Unmarshal(v, &s) != nil {
			c.Unknown = append(c.Unknown, k)
			continue
		}
		if strings.EqualFold(k, "mac") {
			mac, err := matchbox.NormalizeMAC(s)
			if err != nil {
				c.Unknown = append(c.Unknown, k)
				continue
			}
			s = mac
		}
		c.Selector[k] = s
	}
	slices.Sort(c.Unknown)
	return c
}

// selectorKeys finds a "selector" key and its colon in text that is not
// JSON (keys match case-insensitively, as encoding/json matches them).
var selectorKeys = regexp.MustCompile(`(?i)"selector"\s*:`)

// ParseProfile decodes a profile in poseidon/matchbox's JSON format.
func ParseProfile(data []byte) (*matchbox.Profile, []string, error) {
	var p matchbox.Profile
	unknown, err := decodeObject(data, &p, "id", "name", "boot", "ignition_id", "cloud_id", "generic_id")
	if err != nil {
		return nil, nil, err
	}
	if err := ValidateProfile(&p); err != nil {
		return nil, nil, err
	}
	return &p, unknown, nil
}

// ValidateProfile checks the fields every profile needs.
func ValidateProfile(p *matchbox.Profile) error {
	if p.ID == "" {
		return fmt.Errorf("%w: profile has no id", matchbox.ErrInvalid)
	}
	if len(p.ID) > maxIDLen {
		return fmt.Errorf("%w: profile id longer than %d bytes", matchbox.ErrInvalid, maxIDLen)
	}
	return nil
}

// decodeObject decodes one JSON object into v, refusing trailing data and
// reporting syntax and type errors with their line and column. Keys other
// than known are ignored and returned. The common case (no unknown keys)
// decodes once.
func decodeObject(data []byte, v any, known ...string) ([]string, error) {
	if err := strictDecode(data, v, true); err == nil {
		return nil, nil
	}
	if err := strictDecode(data, v, false); err != nil {
		return nil, err
	}
	return unknownKeys(data, known...), nil
}

func strictDecode(data []byte, v any, disallowUnknown bool) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if disallowUnknown {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return jsonError(data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: trailing data after the JSON object", matchbox.ErrInvalid)
	}
	return nil
}

func jsonError(data []byte, err error) error {
	var off int64 = -1
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		// The offset counts the offending character.
		off = max(se.Offset-1, 0)
	case errors.As(err, &te):
		off = te.Offset
	case errors.Is(err, io.ErrUnexpectedEOF):
		off = int64(len(data))
	}
	if off < 0 {
		return fmt.Errorf("%w: bad JSON: %v", matchbox.ErrInvalid, err)
	}
	line, col := 1, 1
	for _, c := range data[:min(int(off), len(data))] {
		if c == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return fmt.Errorf("%w: bad JSON at line %d, column %d: %v", matchbox.ErrInvalid, line, col, err)
}

func unknownKeys(data []byte, known ...string) []string {
	var m map[string]json.RawMessage
	if json.Unmarshal(data, &m) != nil {
		return nil
	}
	var out []string
	for k := range m {
		// encoding/json matches keys case-insensitively.
		if !slices.ContainsFunc(known, func(kn string) bool { return strings.EqualFold(k, kn) }) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
