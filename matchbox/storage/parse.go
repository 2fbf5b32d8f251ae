package storage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"matchbox.dev/matchbox"
)

// maxIDLen bounds object ids (database keys, file names).
const maxIDLen = 1024

// ParseGroup decodes a group in poseidon/matchbox's JSON format, normalises
// a "mac" selector and validates it. Unknown keys are ignored, as
// poseidon/matchbox does, and returned so that validation can report them.
func ParseGroup(data []byte) (*matchbox.Group, []string, error) {
	var g matchbox.Group
	unknown, err := decodeObject(data, &g, "id", "name", "profile", "selector", "metadata")
	if err != nil {
		return nil, nil, err
	}
	if err := NormalizeGroup(&g); err != nil {
		return nil, nil, err
	}
	return &g, unknown, nil
}

// NormalizeGroup validates g and normalises its "mac" selector.
func NormalizeGroup(g *matchbox.Group) error {
	if g.ID == "" {
		return fmt.Errorf("%w: group has no id", matchbox.ErrInvalid)
	}
	if len(g.ID) > maxIDLen {
		return fmt.Errorf("%w: group id longer than %d bytes", matchbox.ErrInvalid, maxIDLen)
	}
	if g.Profile == "" {
		return fmt.Errorf("%w: group %q has no profile", matchbox.ErrInvalid, g.ID)
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
