package omaha

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"strings"
)

// update_engine escapes its values with libxml2's
// xmlEncodeEntitiesReentrant, which leaves '"' as it is: a '"' in
// MACHINE_ALIAS (or in any value from update.conf) ends the attribute
// early and the body is not XML. Its start tags, though, are written from
// fixed templates, so where each value ends is known: at the '"' followed
// by ` nextname="`, the last one at the tag's last '"'. escapeQuotes uses
// that to escape the stray quotes, and only where exactly one reading
// exists.

// attrSpec is one attribute of a template, in order.
type attrSpec struct {
	name     string
	optional bool // the template writes it only sometimes
	free     bool // its value comes from a file a person edits and may hold '"'; others are numbers and fixed words
}

// templates are the start tags update_engine writes whose values may hold
// a '"' (ue/omaha_request_action.cc; values from ue/omaha_request_params.cc).
// <request> holds only fixed values.
var templates = []struct {
	elem  string
	attrs []attrSpec
}{
	{"os", []attrSpec{{name: "version"}, {name: "platform"}, {name: "sp", free: true}}},
	{"app", []attrSpec{
		{name: "appid", free: true}, {name: "version", free: true}, {name: "track", free: true},
		{name: "bootid"}, {name: "oem", free: true}, {name: "oemversion", free: true},
		{name: "alephversion", free: true}, {name: "machineid"}, {name: "machinealias", free: true},
		{name: "lang"}, {name: "board", free: true}, {name: "hardware_class"}, {name: "delta_okay"},
	}},
	{"event", []attrSpec{
		{name: "eventtype"}, {name: "eventresult"}, {name: "errorcode", optional: true},
		{name: "previousversion", optional: true, free: true},
	}},
}

// maxRepairTag bounds the start tags escapeQuotes reads: 13 values of
// MaxValueLen and their names fit well within it.
const maxRepairTag = 8 << 10

// escapeQuotes returns body with the stray '"' of every malformed
// template start tag escaped, and the attributes it escaped them in. It
// fails when a tag can be read in more than one way.
func escapeQuotes(body []byte) ([]byte, []string, error) {
	var out []byte
	var repaired []string
	copied := 0
	for i := 0; i < len(body); {
		j := bytes.IndexByte(body[i:], '<')
		if j < 0 {
			break
		}
		start := i + j
		i = start + 1
		k := templateAt(body[start+1:])
		if k < 0 {
			continue
		}
		end := bytes.IndexByte(body[start:], '>')
		if end < 0 {
			break
		}
		tag := body[start : start+end+1]
		i = start + end + 1
		elem, spec := templates[k].elem, templates[k].attrs
		if len(tag) > maxRepairTag {
			if wellFormed(tag) {
				continue
			}
			return nil, nil, fmt.Errorf("a malformed <%s> of %d bytes is too long to repair", elem, len(tag))
		}
		values, tail, ways := splitTemplate(string(tag[1+len(elem):len(tag)-1]), spec)
		if ways == 0 || ways == 1 && !anyQuote(values) || wellFormed(tag) {
			continue
		}
		if ways > 1 {
			return nil, nil, fmt.Errorf("the '\"' in <%s> can be read more than one way", elem)
		}
		out = append(out, body[copied:start]...)
		out = append(out, '<')
		out = append(out, elem...)
		for _, v := range values {
			out = append(out, ' ')
			out = append(out, v.name...)
			out = append(out, `="`...)
			out = append(out, strings.ReplaceAll(v.raw, `"`, "&quot;")...)
			out = append(out, '"')
			if strings.Contains(v.raw, `"`) {
				repaired = append(repaired, elem+"."+v.name)
			}
		}
		out = append(out, tail...)
		out = append(out, '>')
		copied = i
	}
	if len(repaired) == 0 {
		return body, nil, nil
	}
	return append(out, body[copied:]...), repaired, nil
}

// templateAt returns the index in templates of the element whose name
// and a space begin b, or -1.
func templateAt(b []byte) int {
	for k, t := range templates {
		if len(b) > len(t.elem) && string(b[:len(t.elem)]) == t.elem && b[len(t.elem)] == ' ' {
			return k
		}
	}
	return -1
}

// wellFormed reports whether a start tag is well-formed XML on its own,
// duplicate attributes included; such a tag is read as XML says.
func wellFormed(tag []byte) bool {
	tok, err := xml.NewDecoder(bytes.NewReader(tag)).RawToken()
	if err != nil {
		return false
	}
	start, ok := tok.(xml.StartElement)
	return ok && checkAttrs(start.Name.Local, start.Attr) == nil
}

// rawValue is an attribute as the template wrote it, entities undecoded.
type rawValue struct {
	name, raw string
}

func anyQuote(values []rawValue) bool {
	for _, v := range values {
		if strings.Contains(v.raw, `"`) {
			return true
		}
	}
	return false
}

// splitTemplate reads inner, the text of a start tag between the element
// name and '>', as the attributes of spec in order (optional ones may be
// missing), each written ` name="value"` where a free value may hold '"'. It
// returns the number of readings (capped at 2) and, when there is exactly
// one, the values and what follows the last '"' (spaces, perhaps '/').
func splitTemplate(inner string, spec []attrSpec) ([]rawValue, string, int) {
	if strings.ContainsAny(inner, "<>") {
		return nil, "", 0
	}
	last := strings.LastIndexByte(inner, '"')
	if last < 0 {
		return nil, "", 0
	}
	tail := inner[last+1:]
	if strings.TrimLeft(strings.TrimSuffix(strings.TrimRight(tail, " "), "/"), " ") != "" {
		return nil, "", 0
	}
	first, begin := -1, 0
	for a, s := range spec {
		if p := " " + s.name + `="`; strings.HasPrefix(inner, p) {
			first, begin = a, len(p)
			break
		}
		if !s.optional {
			break
		}
	}
	if first < 0 {
		return nil, "", 0
	}

	// A boundary is a '"' followed by ` name="` of an attribute of spec:
	// where one value may end and the next begin.
	type boundary struct {
		quote, attr, next int
		ways, then        int // readings of the rest from here; the boundary taken after this one (-1: none, the value runs to last)
	}
	var bounds []boundary
	for q := begin; q < last; q++ {
		if inner[q] != '"' {
			continue
		}
		for a, s := range spec {
			if p := ` ` + s.name + `="`; strings.HasPrefix(inner[q+1:], p) {
				bounds = append(bounds, boundary{quote: q, attr: a, next: q + 1 + len(p)})
				break
			}
		}
	}
	// readings counts the ways to read attribute a, whose value starts at
	// p, and what follows it; later boundaries are already counted.
	// A value that is not free ends at the first '"'.
	readings := func(a, p int) (ways, then int) {
		then = -1
		firstQuote := p + strings.IndexByte(inner[p:], '"')
		ends := func(q int) bool { return q >= p && (spec[a].free || q == firstQuote) }
		if ends(last) && skippable(spec[a+1:]) {
			ways = 1
		}
		for k := range bounds {
			b := bounds[k]
			if ends(b.quote) && b.attr > a && b.ways > 0 && skippable(spec[a+1:b.attr]) {
				ways += b.ways
				then = k
			}
		}
		return min(ways, 2), then
	}
	for k := len(bounds) - 1; k >= 0; k-- {
		bounds[k].ways, bounds[k].then = readings(bounds[k].attr, bounds[k].next)
	}
	ways, then := readings(first, begin)
	if ways != 1 {
		return nil, "", ways
	}
	var values []rawValue
	attr, p := first, begin
	for then >= 0 {
		b := bounds[then]
		values = append(values, rawValue{spec[attr].name, inner[p:b.quote]})
		attr, p, then = b.attr, b.next, b.then
	}
	values = append(values, rawValue{spec[attr].name, inner[p:last]})
	return values, tail, 1
}

// skippable reports whether every attribute in spec is optional.
func skippable(spec []attrSpec) bool {
	for _, s := range spec {
		if !s.optional {
			return false
		}
	}
	return true
}
