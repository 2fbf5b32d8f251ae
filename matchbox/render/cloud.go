package render

import (
	"bytes"
	"fmt"
	"unicode"

	"go.yaml.in/yaml/v3"

	"matchbox.dev/matchbox"
)

// cloudConfigError is why a rendered cloud template is refused. It matches
// matchbox.ErrNotFound, so the machine gets 404 as from poseidon/matchbox,
// and coreos-cloudinit, which retries a 5xx, gives up on it at once.
type cloudConfigError struct{ reason string }

func (e *cloudConfigError) Error() string { return "cloud-config: " + e.reason }

func (e *cloudConfigError) Is(target error) bool { return target == matchbox.ErrNotFound }

// checkCloudConfig refuses what poseidon/matchbox refuses to serve from
// /cloud, with coreos-cloudinit's own tests: the first line must be
// "#cloud-config" (trailing white space aside) or start with "#!" (a
// script, not checked further), and a #cloud-config must be a YAML
// document that parses. Like coreos-cloudinit, which decodes into typed
// fields and ignores what does not fit, only YAML syntax is checked.
func checkCloudConfig(out []byte) error {
	first, _, _ := bytes.Cut(out, []byte("\n"))
	if bytes.HasPrefix(first, []byte("#!")) {
		return nil
	}
	if string(bytes.TrimRightFunc(first, unicode.IsSpace)) != "#cloud-config" {
		if len(out) == 0 {
			return &cloudConfigError{"empty: neither a #cloud-config document nor a #! script"}
		}
		return &cloudConfigError{fmt.Sprintf("first line %.60q is neither #cloud-config nor a #! script", first)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(out, &doc); err != nil {
		return &cloudConfigError{fmt.Sprintf("not valid YAML (lines of the rendered config): %v", err)}
	}
	return nil
}
