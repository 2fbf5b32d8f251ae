package matchbox

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// NormalizeMAC parses a MAC address in colon, hyphen or dot form and returns
// it in lowercase colon form, the form selectors are compared in.
func NormalizeMAC(s string) (string, error) {
	if isCanonicalMAC(s) {
		return s, nil // the common case, without allocating
	}
	hw, err := net.ParseMAC(s)
	if err != nil {
		return "", fmt.Errorf("%w: %s is not a MAC address", ErrInvalid, Quote(s))
	}
	return hw.String(), nil
}

// isCanonicalMAC reports whether s is a 6-byte MAC in lowercase colon
// form.
func isCanonicalMAC(s string) bool {
	if len(s) != 17 {
		return false
	}
	for i := 0; i < 17; i++ {
		c := s[i]
		if i%3 == 2 {
			if c != ':' {
				return false
			}
		} else if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// ParseLabels turns request query values into selection labels: the first
// value of each key; a key spelled "mac" in any case is parsed as a MAC
// address and normalised. Unlike poseidon/matchbox, which silently drops an
// unparseable MAC (and then may select the default group), a malformed MAC
// is an error wrapping ErrInvalid, and so is a key or value CheckLabel
// refuses (a control character, invalid UTF-8, a bidirectional override).
func ParseLabels(values map[string][]string) (map[string]string, error) {
	labels := make(map[string]string, len(values))
	for k, vs := range values {
		if len(vs) == 0 {
			continue
		}
		v := vs[0]
		if err := CheckLabel("label", k, v); err != nil {
			return nil, err
		}
		if strings.EqualFold(k, "mac") {
			mac, err := NormalizeMAC(v)
			if err != nil {
				return nil, err
			}
			v = mac
		}
		labels[k] = v
	}
	return labels, nil
}

// ParseQueryLabels is ParseLabels of url.ParseQuery(raw) in one pass,
// without building the intermediate url.Values: it runs on every boot
// request. Any malformed pair (bad escape, a ';' separator) is an error
// wrapping ErrInvalid, as a failed url.ParseQuery is; so is a label
// ParseLabels refuses.
func ParseQueryLabels(raw string) (map[string]string, error) {
	labels := make(map[string]string, 4)
	var firstErr error
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		if part == "" {
			continue
		}
		if strings.Contains(part, ";") {
			if firstErr == nil {
				firstErr = fmt.Errorf("%w: malformed query: invalid semicolon separator in query", ErrInvalid)
			}
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		k, err := url.QueryUnescape(k)
		if err == nil {
			v, err = url.QueryUnescape(v)
		}
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("%w: malformed query: %v", ErrInvalid, err)
			}
			continue
		}
		if _, seen := labels[k]; seen {
			continue // the first value counts
		}
		labels[k] = v
	}
	if firstErr != nil {
		return nil, firstErr
	}
	for k, v := range labels {
		if err := CheckLabel("label", k, v); err != nil {
			return nil, err
		}
		if strings.EqualFold(k, "mac") {
			mac, err := NormalizeMAC(v)
			if err != nil {
				return nil, err
			}
			labels[k] = mac
		}
	}
	return labels, nil
}
