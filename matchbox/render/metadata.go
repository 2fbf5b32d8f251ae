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
	var lines []string
	lines = appendEnv(lines, "", data)
	slices.Sort(lines)
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// lineEscaper keeps a value on its line.
var lineEscaper = strings.NewReplacer("\r", `\r`, "\n", `\n`)

func validName(name string) bool {
	return name != "" && !strings.ContainsAny(name, "\r\n=")
}

func appendEnv(lines []string, prefix string, m map[string]any) []string {
	add := func(name, value string) {
		if validName(name) {
			lines = append(lines, name+"="+lineEscaper.Replace(value))
		}
	}
	for k, v := range m {
		name := strings.ToUpper(prefix + k)
		switch val := v.(type) {
		case map[string]any:
			lines = appendEnv(lines, prefix+k+"_", val)
		case map[string]string:
			for sk, sv := range val {
				add(strings.ToUpper(prefix+k+"_"+sk), sv)
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
