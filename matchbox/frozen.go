package matchbox

import (
	"encoding/binary"
	"encoding/json"
	"iter"
	"maps"
	"math"
	"slices"
)

// A fleet's groups live in memory for the life of the server: at 100,000
// groups, maps for every group's selector and metadata are most of the
// heap, and every garbage collection walks all of them. Freeze moves a
// group's selector and metadata into two immutable strings: a few
// pointer-free objects per group instead of dozens, and much less memory.
// Frozen groups are read through the accessor methods (Selectors,
// SelectorValue, MetadataValue, CopyMetadata, …), which also work on groups
// that are not frozen; the Selector and Metadata fields of a frozen group
// are nil.
//
// Encoding: the selector is its pairs sorted by key, each key and value a
// uvarint length and the bytes. Metadata is a JSON value tree: a type byte,
// then for strings a uvarint length and the bytes, for numbers the 8-byte
// float64, for arrays and objects a uvarint count and the elements (object
// keys sorted, each a length-prefixed string before its value).
const (
	valNull   = 'n'
	valTrue   = 't'
	valFalse  = 'f'
	valNumber = 'd'
	valString = 's'
	valArray  = 'a'
	valObject = 'o'
)

// Freeze stores g's selector and metadata compactly. It does nothing when
// g is already frozen or when its metadata holds a value JSON would not
// produce (such groups keep their maps). Call it only before g is shared.
func (g *Group) Freeze() {
	if g.frozen {
		return
	}
	meta, ok := appendValue(nil, g.Metadata, 0)
	if !ok {
		return
	}
	// One string holds the selector pairs, the selector string (so the
	// index shares it) and the metadata: one object for the collector.
	selStr := g.SelectorString()
	var buf []byte
	for _, k := range slices.Sorted(maps.Keys(g.Selector)) {
		buf = appendString(buf, k)
		buf = appendString(buf, g.Selector[k])
	}
	selEnd := len(buf)
	buf = append(buf, selStr...)
	strEnd := len(buf)
	buf = append(buf, meta...)
	metaEnd := len(buf)
	// The identifying strings ride in the same object: the group's string
	// fields become slices of it, so a frozen group points at one object.
	buf = append(buf, g.ID...)
	buf = append(buf, g.Name...)
	buf = append(buf, g.Profile...)
	buf = append(buf, g.Origin...)
	data := string(buf)
	off := metaEnd
	cut := func(n int) string {
		if n == 0 {
			return "" // no pointer at all
		}
		s := data[off : off+n]
		off += n
		return s
	}
	g.ID, g.Name, g.Profile, g.Origin = cut(len(g.ID)), cut(len(g.Name)), cut(len(g.Profile)), cut(len(g.Origin))
	g.data = data[:metaEnd]
	g.selEnd, g.strEnd, g.nsel, g.frozen = uint32(selEnd), uint32(strEnd), uint32(len(g.Selector)), true
	g.Selector, g.Metadata = nil, nil
}

// Frozen reports whether g is frozen.
func (g *Group) Frozen() bool { return g.frozen }

// Thawed returns a copy of g with its selector and metadata in maps (new
// maps for a frozen group, the same ones otherwise).
func (g *Group) Thawed() *Group {
	c := *g
	if g.frozen {
		c.Selector, c.Metadata = g.SelectorMap(), g.MetadataMap()
		c.data, c.selEnd, c.strEnd, c.nsel, c.frozen = "", 0, 0, 0, false
	}
	return &c
}

// MarshalJSON writes the group in poseidon/matchbox's format, frozen or
// not.
func (g *Group) MarshalJSON() ([]byte, error) {
	type plain Group
	return json.Marshal((*plain)(g.Thawed()))
}

// SelectorCount is the number of selectors.
func (g *Group) SelectorCount() int {
	if g.frozen {
		return int(g.nsel)
	}
	return len(g.Selector)
}

// Selectors yields the selector pairs (sorted by key when frozen).
func (g *Group) Selectors() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		if !g.frozen {
			for k, v := range g.Selector {
				if !yield(k, v) {
					return
				}
			}
			return
		}
		s := g.selPart()
		for s != "" {
			var k, v string
			k, s = cutString(s)
			v, s = cutString(s)
			if !yield(k, v) {
				return
			}
		}
	}
}

// SelectorValue returns the selector value for key.
func (g *Group) SelectorValue(key string) (string, bool) {
	if !g.frozen {
		v, ok := g.Selector[key]
		return v, ok
	}
	for k, v := range g.Selectors() {
		if k == key {
			return v, true
		}
	}
	return "", false
}

// SelectorMap returns the selector as a map (the group's own map when not
// frozen: do not modify it).
func (g *Group) SelectorMap() map[string]string {
	if !g.frozen {
		return g.Selector
	}
	if g.nsel == 0 {
		return nil
	}
	m := make(map[string]string, int(g.nsel))
	for k, v := range g.Selectors() {
		m[k] = v
	}
	return m
}

// MetadataMap returns the metadata as a map (the group's own map when not
// frozen: do not modify it; a fresh one, safe to modify, when frozen).
func (g *Group) MetadataMap() map[string]any {
	if !g.frozen {
		return g.Metadata
	}
	v, _ := decodeValue(g.metaPart())
	m, _ := v.(map[string]any)
	return m
}

// MetadataCount is the number of top-level metadata entries.
func (g *Group) MetadataCount() int {
	if !g.frozen {
		return len(g.Metadata)
	}
	if g.metaPart() == "" || g.metaPart()[0] != valObject {
		return 0
	}
	n, _ := cutUvarint(g.metaPart()[1:])
	return int(n)
}

// CopyMetadata copies the top-level metadata entries into dst.
func (g *Group) CopyMetadata(dst map[string]any) {
	if !g.frozen {
		maps.Copy(dst, g.Metadata)
		return
	}
	if g.metaPart() == "" || g.metaPart()[0] != valObject {
		return
	}
	n, s := cutUvarint(g.metaPart()[1:])
	for range n {
		var k string
		k, s = cutString(s)
		dst[k], s = decodeValue(s)
	}
}

// MetadataValue returns the top-level metadata value for key.
func (g *Group) MetadataValue(key string) (any, bool) {
	if !g.frozen {
		v, ok := g.Metadata[key]
		return v, ok
	}
	if g.metaPart() == "" || g.metaPart()[0] != valObject {
		return nil, false
	}
	n, s := cutUvarint(g.metaPart()[1:])
	for range n {
		var k string
		k, s = cutString(s)
		if k == key {
			v, _ := decodeValue(s)
			return v, true
		}
		s = skipValue(s)
	}
	return nil, false
}

// selPart is the encoded selector pairs of a frozen group.
func (g *Group) selPart() string { return g.data[:g.selEnd] }

// metaPart is the encoded metadata of a frozen group.
func (g *Group) metaPart() string { return g.data[g.strEnd:] }

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendValue encodes v; ok is false for types JSON decoding never yields.
// A nil metadata map encodes to nothing.
func appendValue(b []byte, v any, depth int) ([]byte, bool) {
	if depth > 64 {
		return b, false
	}
	switch v := v.(type) {
	case nil:
		if depth == 0 {
			return b, true
		}
		return append(b, valNull), true
	case bool:
		if v {
			return append(b, valTrue), true
		}
		return append(b, valFalse), true
	case float64:
		return binary.LittleEndian.AppendUint64(append(b, valNumber), math.Float64bits(v)), true
	case string:
		return appendString(append(b, valString), v), true
	case []any:
		b = binary.AppendUvarint(append(b, valArray), uint64(len(v)))
		for _, e := range v {
			var ok bool
			if b, ok = appendValue(b, e, depth+1); !ok {
				return b, false
			}
		}
		return b, true
	case map[string]any:
		if depth == 0 && v == nil {
			return b, true
		}
		b = binary.AppendUvarint(append(b, valObject), uint64(len(v)))
		for _, k := range slices.Sorted(maps.Keys(v)) {
			b = appendString(b, k)
			var ok bool
			if b, ok = appendValue(b, v[k], depth+1); !ok {
				return b, false
			}
		}
		return b, true
	}
	return b, false
}

// The decoders below read only what Freeze wrote, so they trust lengths.

func cutUvarint(s string) (uint64, string) {
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, s[i+1:]
		}
	}
	return v, ""
}

func le64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

func cutString(s string) (string, string) {
	n, s := cutUvarint(s)
	return s[:n], s[n:]
}

// decodeValue decodes one value; strings share the encoded string's memory.
func decodeValue(s string) (any, string) {
	if s == "" {
		return nil, ""
	}
	tag, s := s[0], s[1:]
	switch tag {
	case valTrue:
		return true, s
	case valFalse:
		return false, s
	case valNumber:
		return math.Float64frombits(le64(s)), s[8:]
	case valString:
		return cutString(s)
	case valArray:
		n, rest := cutUvarint(s)
		a := make([]any, n)
		for i := range a {
			a[i], rest = decodeValue(rest)
		}
		return a, rest
	case valObject:
		n, rest := cutUvarint(s)
		m := make(map[string]any, n)
		for range n {
			var k string
			k, rest = cutString(rest)
			m[k], rest = decodeValue(rest)
		}
		return m, rest
	}
	return nil, s // valNull
}

// skipValue returns s after its first value.
func skipValue(s string) string {
	tag, s := s[0], s[1:]
	switch tag {
	case valNumber:
		return s[8:]
	case valString:
		_, s = cutString(s)
		return s
	case valArray:
		n, rest := cutUvarint(s)
		for range n {
			rest = skipValue(rest)
		}
		return rest
	case valObject:
		n, rest := cutUvarint(s)
		for range n {
			_, rest = cutString(rest)
			rest = skipValue(rest)
		}
		return rest
	}
	return s
}
