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

func appendEnv(lines []string, prefix string, m map[string]any) []string {
	for k, v := range m {
		name := strings.ToUpper(prefix + k)
		switch val := v.(type) {
		case map[string]any:
			lines = appendEnv(lines, prefix+k+"_", val)
		case map[string]string:
			for sk, sv := range val {
				lines = append(lines, strings.ToUpper(prefix+k+"_"+sk)+"="+sv)
			}
		case string:
			lines = append(lines, name+"="+val)
		case bool:
			lines = append(lines, name+"="+strconv.FormatBool(val))
		case float64:
			lines = append(lines, name+"="+formatNumber(val))
		case json.Number:
			lines = append(lines, name+"="+val.String())
		case int:
			lines = append(lines, name+"="+strconv.Itoa(val))
		case nil:
		default:
			js, err := json.Marshal(val)
			if err != nil {
				js = fmt.Appendf(nil, "%v", val)
			}
			lines = append(lines, name+"="+string(js))
		}
	}
	return lines
}

func formatNumber(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return strconv.FormatInt(int64(f), 10)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
