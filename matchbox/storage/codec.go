package storage

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"matchbox.dev/matchbox"
)

// Machine records and history events are written often (every boot step
// of every machine), so they are stored in a compact binary form rather
// than JSON: a format byte, then one field after another, each a tag byte
// followed by its value. Strings are a uvarint length and the bytes;
// times are a varint of Unix nanoseconds (UTC); counters are uvarints.
// Empty fields are left out. Values written by schema 3 and earlier are
// JSON (their first byte is '{') and are still read.
const recordV1 byte = 0x01

// Machine field tags. Never reuse or renumber a tag: add new ones.
const (
	mTagMAC byte = iota + 1
	mTagUUID
	mTagSerial
	mTagHostname
	mTagArch
	mTagLastIP
	mTagFirstSeen
	mTagLastSeen
	mTagGroup
	mTagProfile
	mTagLabels // uvarint count, then key and value strings
	mTagReservedIP
	mTagEventSeq
)

// Event field tags. Never reuse or renumber a tag: add new ones.
const (
	eTagTime byte = iota + 1
	eTagMAC
	eTagKind
	eTagArch
	eTagIP
	eTagUUID
	eTagFile
	eTagGroup
	eTagProfile
	eTagDetail
)

func appendStr(b []byte, tag byte, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, tag)
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, tag byte, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	return binary.AppendVarint(append(b, tag), t.UnixNano())
}

// appendMachine appends m's binary record to b.
func appendMachine(b []byte, m *matchbox.Machine) []byte {
	b = append(b, recordV1)
	b = appendStr(b, mTagMAC, m.MAC)
	b = appendStr(b, mTagUUID, m.UUID)
	b = appendStr(b, mTagSerial, m.Serial)
	b = appendStr(b, mTagHostname, m.Hostname)
	b = appendStr(b, mTagArch, m.Arch)
	b = appendStr(b, mTagLastIP, m.LastIP)
	b = appendTime(b, mTagFirstSeen, m.FirstSeen)
	b = appendTime(b, mTagLastSeen, m.LastSeen)
	b = appendStr(b, mTagGroup, m.Group)
	b = appendStr(b, mTagProfile, m.Profile)
	if len(m.Labels) > 0 {
		b = binary.AppendUvarint(append(b, mTagLabels), uint64(len(m.Labels)))
		for _, k := range slices.Sorted(maps.Keys(m.Labels)) {
			b = binary.AppendUvarint(b, uint64(len(k)))
			b = append(b, k...)
			v := m.Labels[k]
			b = binary.AppendUvarint(b, uint64(len(v)))
			b = append(b, v...)
		}
	}
	b = appendStr(b, mTagReservedIP, m.ReservedIP)
	if m.EventSeq != 0 {
		b = binary.AppendUvarint(append(b, mTagEventSeq), m.EventSeq)
	}
	return b
}

// appendEvent appends e's binary record to b; withMAC false leaves the
// MAC out (history keys carry it).
func appendEvent(b []byte, e *matchbox.Event, withMAC bool) []byte {
	b = append(b, recordV1)
	b = appendTime(b, eTagTime, e.Time)
	if withMAC {
		b = appendStr(b, eTagMAC, e.MAC)
	}
	b = appendStr(b, eTagKind, string(e.Kind))
	b = appendStr(b, eTagArch, e.Arch)
	b = appendStr(b, eTagIP, e.IP)
	b = appendStr(b, eTagUUID, e.UUID)
	b = appendStr(b, eTagFile, e.File)
	b = appendStr(b, eTagGroup, e.Group)
	b = appendStr(b, eTagProfile, e.Profile)
	b = appendStr(b, eTagDetail, e.Detail)
	return b
}

var errTruncated = errors.New("truncated record")

// reader walks the fields of a binary record.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(errTruncated)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(errTruncated)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) str() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.fail(errTruncated)
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) time() time.Time {
	n := r.varint()
	if r.err != nil {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
		r.b = nil
	}
}

// decodeMachine reads a machine record, binary or (older) JSON.
func decodeMachine(data []byte, m *matchbox.Machine) error {
	if len(data) > 0 && data[0] == '{' {
		return json.Unmarshal(data, m)
	}
	return walkRecord(data, "machine", func(tag byte, r *reader) bool {
		switch tag {
		case mTagMAC:
			m.MAC = r.str()
		case mTagUUID:
			m.UUID = r.str()
		case mTagSerial:
			m.Serial = r.str()
		case mTagHostname:
			m.Hostname = r.str()
		case mTagArch:
			m.Arch = r.str()
		case mTagLastIP:
			m.LastIP = r.str()
		case mTagFirstSeen:
			m.FirstSeen = r.time()
		case mTagLastSeen:
			m.LastSeen = r.time()
		case mTagGroup:
			m.Group = r.str()
		case mTagProfile:
			m.Profile = r.str()
		case mTagLabels:
			n := r.uvarint()
			if n > uint64(len(r.b)) { // each pair takes at least two bytes
				r.fail(errTruncated)
				break
			}
			m.Labels = make(map[string]string, n)
			for range n {
				k := r.str()
				m.Labels[k] = r.str()
			}
		case mTagReservedIP:
			m.ReservedIP = r.str()
		case mTagEventSeq:
			m.EventSeq = r.uvarint()
		default:
			return false
		}
		return true
	})
}

// decodeEvent reads a history event, binary or (older) JSON.
func decodeEvent(data []byte, e *matchbox.Event) error {
	if len(data) > 0 && data[0] == '{' {
		return json.Unmarshal(data, e)
	}
	return walkRecord(data, "event", func(tag byte, r *reader) bool {
		switch tag {
		case eTagTime:
			e.Time = r.time()
		case eTagMAC:
			e.MAC = r.str()
		case eTagKind:
			e.Kind = matchbox.EventKind(r.str())
		case eTagArch:
			e.Arch = r.str()
		case eTagIP:
			e.IP = r.str()
		case eTagUUID:
			e.UUID = r.str()
		case eTagFile:
			e.File = r.str()
		case eTagGroup:
			e.Group = r.str()
		case eTagProfile:
			e.Profile = r.str()
		case eTagDetail:
			e.Detail = r.str()
		default:
			return false
		}
		return true
	})
}

// walkRecord reads the fields of a binary record, handing each tag to
// field, which reads its value and reports whether it knows the tag.
func walkRecord(data []byte, what string, field func(tag byte, r *reader) bool) error {
	if len(data) == 0 || data[0] != recordV1 {
		return fmt.Errorf("unknown %s record format", what)
	}
	r := reader{b: data[1:]}
	for len(r.b) > 0 && r.err == nil {
		tag := r.b[0]
		r.b = r.b[1:]
		if !field(tag, &r) {
			return fmt.Errorf("%s record: unknown field %d (written by a newer matchbox?)", what, tag)
		}
	}
	if r.err != nil {
		return fmt.Errorf("%s record: %w", what, r.err)
	}
	return nil
}

// arena hands out byte slices that stay valid until the arena is dropped:
// bbolt keeps references to keys and values until the transaction
// commits, so a batch encodes into a few large chunks instead of one
// allocation per record.
type arena struct{ buf []byte }

// encode appends one record with fn and returns it.
func (a *arena) encode(fn func([]byte) []byte) []byte {
	if cap(a.buf)-len(a.buf) < 512 {
		a.buf = make([]byte, 0, 64<<10)
	}
	start := len(a.buf)
	a.buf = fn(a.buf)
	// If fn outgrew the chunk, the record now lives in a new backing
	// array; it is still valid, and later records continue after it.
	return a.buf[start:len(a.buf):len(a.buf)]
}
