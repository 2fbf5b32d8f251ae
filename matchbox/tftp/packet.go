package tftp

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
)

// TFTP opcodes (RFC 1350, RFC 2347).
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// TFTP error codes (RFC 1350, RFC 2347).
const (
	errNotDefined   = 0
	errNotFound     = 1
	errAccessDenied = 2
	errIllegalOp    = 4
	errOptionRefuse = 8
)

// Limits of the options this server negotiates.
const (
	minBlockSize  = 8     // RFC 2348
	maxBlockSize  = 65464 // RFC 2348
	maxWindowSize = 64    // RFC 7440 allows 65535; more than this gains nothing on a LAN
	maxRequestLen = 512   // an RRQ never needs more; bigger ones are refused
)

// request is a parsed read or write request.
type request struct {
	op       uint16
	filename string
	mode     string            // lower case
	options  map[string]string // names lower case; RFC 2347 says they are case-insensitive
	order    []string          // option names in the order the client sent them
}

var errMalformed = errors.New("malformed request")

// parseRequest parses an RRQ or WRQ: opcode, file name, mode, then
// option name/value pairs, each NUL-terminated.
func parseRequest(p []byte) (request, error) {
	if len(p) < 4 {
		return request{}, errMalformed
	}
	if len(p) > maxRequestLen {
		return request{}, errors.New("request too long")
	}
	r := request{op: binary.BigEndian.Uint16(p)}
	if r.op != opRRQ && r.op != opWRQ {
		return request{}, errMalformed
	}
	body := p[2:]
	if body[len(body)-1] != 0 {
		return request{}, errors.New("malformed request: not NUL-terminated")
	}
	fields := strings.Split(string(body[:len(body)-1]), "\x00")
	if len(fields) < 2 || fields[0] == "" {
		return request{}, errors.New("malformed request: no file name or mode")
	}
	r.filename, r.mode = fields[0], strings.ToLower(fields[1])
	opts := fields[2:]
	if len(opts)%2 != 0 {
		return request{}, errors.New("malformed request: option without a value")
	}
	for i := 0; i < len(opts); i += 2 {
		name := strings.ToLower(opts[i])
		if name == "" {
			return request{}, errors.New("malformed request: empty option name")
		}
		if r.options == nil {
			r.options = make(map[string]string, len(opts)/2)
		}
		if _, dup := r.options[name]; !dup {
			r.order = append(r.order, name)
		}
		r.options[name] = opts[i+1]
	}
	return r, nil
}

// optionInt parses an option's decimal value within [lo, hi].
func optionInt(v string, lo, hi int) (int, bool) {
	if v == "" || len(v) > 10 {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, false
	}
	return n, true
}

// appendOACK appends an OACK packet carrying the given name/value pairs.
func appendOACK(b []byte, pairs ...string) []byte {
	b = binary.BigEndian.AppendUint16(b, opOACK)
	for _, s := range pairs {
		b = append(b, s...)
		b = append(b, 0)
	}
	return b
}

// appendError appends an ERROR packet.
func appendError(b []byte, code uint16, msg string) []byte {
	if len(msg) > 400 {
		msg = msg[:400]
	}
	b = binary.BigEndian.AppendUint16(b, opERROR)
	b = binary.BigEndian.AppendUint16(b, code)
	b = append(b, msg...)
	return append(b, 0)
}

// parseError returns the code and message of an ERROR packet.
func parseError(p []byte) (uint16, string) {
	if len(p) < 4 {
		return errNotDefined, ""
	}
	msg := p[4:]
	if i := strings.IndexByte(string(msg), 0); i >= 0 {
		msg = msg[:i]
	}
	return binary.BigEndian.Uint16(p[2:]), string(msg)
}

// netascii converts file content to the netascii form of RFC 764 that
// the netascii mode sends: CR LF for each LF, CR NUL for each bare CR.
func netascii(data []byte) []byte {
	extra := 0
	for _, c := range data {
		if c == '\n' || c == '\r' {
			extra++
		}
	}
	out := make([]byte, 0, len(data)+extra)
	for _, c := range data {
		switch c {
		case '\n':
			out = append(out, '\r', '\n')
		case '\r':
			out = append(out, '\r', 0)
		default:
			out = append(out, c)
		}
	}
	return out
}
