package storage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strconv"
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
	if err := checkGroup(g); err != nil {
		return nil, nil, err
	}
	return g, unknown, nil
}

func decodeGroup(data []byte) (*matchbox.Group, []string, error) {
	var g matchbox.Group
	unknown, err := decodeObject(data, &g)
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
		return fmt.Errorf("%w: group %s has no profile", matchbox.ErrInvalid, matchbox.Quote(g.ID))
	}
	return checkGroup(g)
}

// checkGroup checks the id's length, the metadata's depth and every name
// and value (checkGroupText), and normalises a "mac" selector.
func checkGroup(g *matchbox.Group) error {
	if len(g.ID) > maxIDLen {
		return fmt.Errorf("%w: group id longer than %d bytes", matchbox.ErrInvalid, maxIDLen)
	}
	if err := checkGroupText(g); err != nil {
		return err
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

// checkGroupText checks a group's id, name and profile as names
// (matchbox.CheckName), its selectors as labels (matchbox.CheckLabel), and
// the keys and strings of its metadata as values (matchbox.CheckValue: a
// string may span lines, a key may not).
func checkGroupText(g *matchbox.Group) error {
	if err := matchbox.CheckName("group id", g.ID); err != nil {
		return err
	}
	id := matchbox.Quote(g.ID)
	if g.Name != "" {
		if err := matchbox.CheckName("group "+id+" name", g.Name); err != nil {
			return err
		}
	}
	if g.Profile != "" {
		if err := matchbox.CheckName("group "+id+" profile", g.Profile); err != nil {
			return err
		}
	}
	for k, v := range g.Selectors() {
		if err := matchbox.CheckLabel("selector", k, v); err != nil {
			return fmt.Errorf("group %s: %w", id, err)
		}
	}
	if err := checkMetadata(g.Metadata); err != nil {
		return fmt.Errorf("group %s: %w", id, err)
	}
	return nil
}

// checkMetadata checks the keys and strings of group metadata, at any
// depth; the error names the failing one's path (metadata.a.b[2]). The
// path is built only for a failure: this runs on every group loaded.
func checkMetadata(m map[string]any) error {
	type bad struct {
		path []string // innermost first
		text string
		key  bool
	}
	var walk func(v any) *bad
	walk = func(v any) *bad {
		switch v := v.(type) {
		case string:
			if matchbox.CheckValue("", v, true) != nil {
				return &bad{text: v}
			}
		case []any:
			for i, e := range v {
				if b := walk(e); b != nil {
					b.path = append(b.path, "["+strconv.Itoa(i)+"]")
					return b
				}
			}
		case map[string]any:
			for k, e := range v {
				if matchbox.CheckValue("", k, false) != nil {
					return &bad{text: k, key: true}
				}
				if b := walk(e); b != nil {
					b.path = append(b.path, "."+k)
					return b
				}
			}
		}
		return nil
	}
	b := walk(map[string]any(m))
	if b == nil {
		return nil
	}
	slices.Reverse(b.path)
	where := "metadata" + strings.Join(b.path, "")
	if b.key {
		return matchbox.CheckValue("key in "+where, b.text, false)
	}
	return matchbox.CheckValue(where, b.text, true)
}

// SalvageClaim reads what a group file that does not load still says about
// the machines it selects (see matchbox.Claim). When the file is JSON, its
// selector object is read as far as it can be: a value that is not a
// string, a "mac" that is not a MAC address, or a key or value that
// matchbox.CheckLabel refuses becomes an unknown selector. When the file is not JSON, a selector object that parses on
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
		// A selector no label can equal now (a control character in its
		// key or value) may have been meant as any value: unknown.
		if json.Unmarshal(v, &s) != nil || matchbox.CheckLabel("selector", k, s) != nil {
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
	unknown, err := decodeObject(data, &p)
	if err != nil {
		return nil, nil, err
	}
	if err := ValidateProfile(&p); err != nil {
		return nil, nil, err
	}
	return &p, unknown, nil
}

// ValidateProfile checks the fields every profile needs, and its id, name
// and template names as names (matchbox.CheckName).
func ValidateProfile(p *matchbox.Profile) error {
	if p.ID == "" {
		return fmt.Errorf("%w: profile has no id", matchbox.ErrInvalid)
	}
	if len(p.ID) > maxIDLen {
		return fmt.Errorf("%w: profile id longer than %d bytes", matchbox.ErrInvalid, maxIDLen)
	}
	if err := matchbox.CheckName("profile id", p.ID); err != nil {
		return err
	}
	for _, f := range [...]struct{ field, name string }{{"name", p.Name}, {"ignition_id", p.IgnitionID}, {"cloud_id", p.CloudID}, {"generic_id", p.GenericID}} {
		if f.name == "" {
			continue
		}
		if err := matchbox.CheckName("profile "+matchbox.Quote(p.ID)+" "+f.field, f.name); err != nil {
			return err
		}
	}
	return nil
}

// CheckTemplateName checks a template's name: a name (matchbox.CheckName)
// of at most maxIDLen bytes, relative, without "..".
func CheckTemplateName(name string) error {
	if err := matchbox.CheckName("template name", name); err != nil {
		return err
	}
	if len(name) > maxIDLen || strings.Contains(name, "..") || strings.HasPrefix(name, "/") {
		return fmt.Errorf("%w: template name %s: 1 to %d bytes, no leading / and no ..", matchbox.ErrInvalid, matchbox.Quote(name), maxIDLen)
	}
	return nil
}

// decodeObject decodes one JSON object into v (a pointer to a struct),
// refusing trailing data and reporting syntax and type errors with their
// line and column. Keys that name none of the struct's fields are ignored
// and returned. The common case (no unknown keys) decodes once.
func decodeObject(data []byte, v any) ([]string, error) {
	if err := strictDecode(data, v, true); err == nil {
		return nil, nil
	}
	if err := strictDecode(data, v, false); err != nil {
		return nil, err
	}
	return unknownKeys(data, jsonKeys(reflect.TypeOf(v).Elem())...), nil
}

// jsonKeys are the object keys encoding/json decodes into struct type t:
// the one list of what a file may hold, so a field added to the type is
// never reported as unknown.
func jsonKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-" || !f.IsExported():
		case name == "":
			keys = append(keys, f.Name)
		default:
			keys = append(keys, name)
		}
	}
	return keys
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
