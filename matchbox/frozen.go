package matchbox

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"iter"
	"maps"
	"math"
	"slices"
)

// A fleet's groups live in memory for the life of the server: at 100,000
// groups, maps for every group's selector and metadata would be most of
// the heap, and every garbage collection walks all of them. Freeze moves a
// whole group (its strings, selector and metadata) into one immutable
// string: one pointer-free object per group instead of dozens, and much
// less memory.
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

// Freeze stores g's selector and metadata compactly: the whole group
// becomes one immutable string (see Packed), and its string fields slices
// of it. Metadata holding values JSON decoding never yields (ints, typed
// maps, built in Go) is stored as JSON would decode it. It does nothing
// when g is already frozen or when its metadata cannot be stored (nested
// deeper than MaxMetadataDepth, or not representable in JSON); such groups
// keep their maps. Call it only before g is shared.
func (g *Group) Freeze() {
	if g.frozen {
		return
	}
	meta, ok := appendValue(nil, g.Metadata, 0)
	if !ok {
		var m map[string]any
		if b, err := json.Marshal(g.Metadata); err == nil && json.Unmarshal(b, &m) == nil {
			meta, ok = appendValue(nil, m, 0)
		}
		if !ok {
			return
		}
	}
	var pairs []byte
	for _, k := range slices.Sorted(maps.Keys(g.Selector)) {
		pairs = appendString(pairs, k)
		pairs = appendString(pairs, g.Selector[k])
	}
	selStr := g.SelectorString()
	var b []byte
	for _, n := range [...]int{len(g.ID), len(g.Name), len(g.Profile), len(g.Origin), len(pairs), len(selStr), len(g.Selector)} {
		b = binary.AppendUvarint(b, uint64(n))
	}
	b = append(b, g.ID...)
	b = append(b, g.Name...)
	b = append(b, g.Profile...)
	b = append(b, g.Origin...)
	b = append(b, pairs...)
	b = append(b, selStr...)
	b = append(b, meta...)
	g.unpack(string(b))
}

// Packed returns a frozen group as one string, from which UnpackGroup
// makes the group again. A large fleet is held in memory in this form:
// one object per group with no pointers in it, which the collector marks
// without reading, where a Group is two objects and several pointers. It
// returns "" when g is not frozen.
//
// Layout: seven uvarints (the lengths of the id, name, profile, origin,
// encoded selector pairs and selector string, then the number of
// selectors), then those strings one after another, then the metadata.
func (g *Group) Packed() string {
	if !g.frozen {
		return ""
	}
	return g.data
}

// UnpackGroup returns the frozen group that Packed returned p for. Its
// strings share p's memory. p must come from Packed.
func UnpackGroup(p string) *Group {
	g := new(Group)
	g.unpack(p)
	return g
}

// unpack sets g to the frozen group packed in p.
func (g *Group) unpack(p string) {
	var n [7]uint64
	s := p
	for i := range n {
		n[i], s = cutUvarint(s)
	}
	off := uint64(len(p) - len(s))
	take := func(l uint64) string {
		if l == 0 {
			return "" // no pointer at all
		}
		v := p[off : off+l]
		off += l
		return v
	}
	*g = Group{ID: take(n[0]), Name: take(n[1]), Profile: take(n[2]), Origin: take(n[3]), data: p, frozen: true}
	g.selStart = uint32(off)
	g.selEnd = g.selStart + uint32(n[4])
	g.strEnd = g.selEnd + uint32(n[5])
	g.nsel = uint32(n[6])
}

// packedID is the id of the group packed in p, read without unpacking the
// rest.
func packedID(p string) string {
	idLen, s := cutUvarint(p)
	for range 6 {
		_, s = cutUvarint(s)
	}
	return s[:idLen]
}

// MaxMetadataDepth is how deeply group metadata may nest (an object in an
// object is depth 2).
const MaxMetadataDepth = 64

// CheckMetadataDepth returns an error when m nests deeper than
// MaxMetadataDepth.
func CheckMetadataDepth(m map[string]any) error {
	var depth func(v any, d int) bool
	depth = func(v any, d int) bool {
		if d > MaxMetadataDepth {
			return false
		}
		switch v := v.(type) {
		case []any:
			for _, e := range v {
				if !depth(e, d+1) {
					return false
				}
			}
		case map[string]any:
			for _, e := range v {
				if !depth(e, d+1) {
					return false
				}
			}
		}
		return true
	}
	if !depth(m, 0) {
		return fmt.Errorf("%w: metadata nested deeper than %d levels", ErrInvalid, MaxMetadataDepth)
	}
	return nil
}

// Frozen reports whether g is frozen.
func (g *Group) Frozen() bool { return g.frozen }

// Thawed returns a copy of g with its selector and metadata in maps (new
// maps for a frozen group, the same ones otherwise).
func (g *Group) Thawed() *Group {
	c := *g
	if g.frozen {
		c.Selector, c.Metadata = g.SelectorMap(), g.MetadataMap()
		c.data, c.selStart, c.selEnd, c.strEnd, c.nsel, c.frozen = "", 0, 0, 0, 0, false
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
func (g *Group) selPart() string { return g.data[g.selStart:g.selEnd] }

// metaPart is the encoded metadata of a frozen group.
func (g *Group) metaPart() string { return g.data[g.strEnd:] }

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendValue encodes v; ok is false for types JSON decoding never yields.
// A nil metadata map encodes to nothing.
func appendValue(b []byte, v any, depth int) ([]byte, bool) {
	if depth > MaxMetadataDepth {
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
