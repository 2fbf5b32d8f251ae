package render

import (
	"strings"

	"matchbox.dev/matchbox"
)

// Request is what a machine's request contributes to template data.
type Request struct {
	// Labels are the parsed query labels (MAC normalised).
	Labels map[string]string
	// RawQuery is the query string exactly as sent.
	RawQuery string
	// Host is the host:port the machine used to reach the boot endpoints,
	// for URLs pointing back at matchbox. Empty leaves request.host out.
	Host string
}

// Data builds the template data for a group and request, in poseidon/matchbox's
// order of precedence: group metadata, then selectors (keys lowercased),
// then the reserved "request" entry with "query" and "raw_query" (and
// "host", a matchbox addition).
func Data(g *matchbox.Group, req Request) map[string]any {
	data := make(map[string]any, g.MetadataCount()+g.SelectorCount()+1)
	g.CopyMetadata(data)
	for k, v := range g.Selectors() {
		data[strings.ToLower(k)] = v
	}
	labels := req.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	r := map[string]any{"query": labels, "raw_query": req.RawQuery}
	if req.Host != "" {
		r["host"] = req.Host
	}
	data["request"] = r
	return data
}
