package render

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Metadata renders template data as an env file: one KEY=value line per
// leaf, keys uppercased and nested keys joined with "_". Compared with
// poseidon/matchbox the lines are sorted, whole numbers print as integers
// (not 1e+06) and arrays are kept, JSON-encoded; null values are left out.
// Every line stays one KEY=value line: CR and LF in values are written as
// \r and \n, and entries whose name is empty or holds CR, LF or "=" are
// left out.
func Metadata(data map[string]any) []byte {
	lines := appendEnv(make([]string, 0, 2*len(data)+4), "", data)
	slices.Sort(lines)
	n := 0
	for _, l := range lines {
		n += len(l) + 1
	}
	out := make([]byte, 0, n)
	for _, l := range lines {
		out = append(out, l...)
		out = append(out, '\n')
	}
	return out
}

// envLine is NAME=value with the name uppercased, in one allocation.
func envLine(name, value string) string {
	value = lineEscaper.Replace(value)
	b := make([]byte, 0, len(name)+1+len(value))
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 0x80 {
			// Non-ASCII: let Unicode case mapping do it.
			return strings.ToUpper(name) + "=" + value
		}
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		b = append(b, c)
	}
	b = append(b, '=')
	b = append(b, value...)
	return string(b)
}

// lineEscaper keeps a value on its line.
var lineEscaper = strings.NewReplacer("\r", `\r`, "\n", `\n`)

func validName(name string) bool {
	return name != "" && !strings.ContainsAny(name, "\r\n=")
}

func appendEnv(lines []string, prefix string, m map[string]any) []string {
	add := func(name, value string) {
		if validName(name) {
			lines = append(lines, envLine(name, value))
		}
	}
	for k, v := range m {
		name := prefix + k
		switch val := v.(type) {
		case map[string]any:
			lines = appendEnv(lines, prefix+k+"_", val)
		case map[string]string:
			for sk, sv := range val {
				add(prefix+k+"_"+sk, sv)
			}
		case string:
			add(name, val)
		case bool:
			add(name, strconv.FormatBool(val))
		case float64:
			add(name, formatNumber(val))
		case json.Number:
			add(name, val.String())
		case int:
			add(name, strconv.Itoa(val))
		case nil:
		default:
			js, err := json.Marshal(val)
			if err != nil {
				js = fmt.Appendf(nil, "%v", val)
			}
			add(name, string(js))
		}
	}
	return lines
}

// formatNumber prints whole numbers without an exponent (up to 1e21,
// where JSON writers switch to exponents too) and others in Go's shortest
// form.
func formatNumber(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e21 {
		return strconv.FormatFloat(f, 'f', 0, 64)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
