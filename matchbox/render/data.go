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

// BootData is the template data of an answer to a machine: Data of the
// decision's group and the request, the release of its profile (release,
// with URLs for host, the address the machine reached matchbox by), and
// while a reinstall holds the machine the reinstall's token, MAC and state
// (reinstall), from which the install profile's templates build their
// callback and config URLs.
func (e *Engine) BootData(d *matchbox.Decision, req Request, host string) map[string]any {
	data := Data(d.Group, req)
	if rel := e.ReleaseData(d.Profile, host); rel != nil {
		data["release"] = rel
	}
	if d.Held {
		data["reinstall"] = map[string]any{"token": d.Gate.Token, "mac": req.Labels["mac"], "state": string(d.Gate.State)}
	}
	return data
}

// The answers to a machine that must boot from its own disk (a reinstall
// installed it): iPXE and GRUB return to the firmware, which tries the
// next boot device.
var (
	LocalBootIPXE = []byte("#!ipxe\necho matchbox: the install is done, booting from disk\nexit\n")
	LocalBootGRUB = []byte("echo 'matchbox: the install is done, booting from disk'\nexit\n")
)
