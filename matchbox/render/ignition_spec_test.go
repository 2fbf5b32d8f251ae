package render

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	v33 "github.com/coreos/ignition/v2/config/v3_3"
	v34 "github.com/coreos/ignition/v2/config/v3_4"

	"matchbox.dev/matchbox"
)

// TestIgnitionServedAtItsOwnSpecVersion pins the decision documented in
// docs/compatibility.md: raw Ignition and Butane output keep the spec
// version they were written for, where poseidon/matchbox parses both into
// spec 3.4 types and re-encodes them. An Ignition whose newest spec is 3.3
// (Flatcar's first spec-3 releases ship one) reads what is served here
// and cannot read the 3.4 re-encoding.
func TestIgnitionServedAtItsOwnSpecVersion(t *testing.T) {
	const raw33 = `{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"core","sshAuthorizedKeys":["ssh-ed25519 AAAA"]}]}}`
	const butane10 = "variant: flatcar\nversion: 1.0.0\npasswd:\n  users:\n    - name: core\n      ssh_authorized_keys:\n        - {{.key}}\n"
	snap, sel := ignitionFixture(map[string]string{"node.ign": raw33, "node.yaml": butane10})
	e := NewEngine(Options{})
	data := Data(&matchbox.Group{Metadata: map[string]any{"key": "ssh-ed25519 AAAA"}}, Request{})

	for _, name := range []string{"node.ign", "node.yaml"} {
		t.Run(name, func(t *testing.T) {
			out, err := e.Ignition(context.Background(), snap, sel(name), data)
			if err != nil {
				t.Fatal(err)
			}
			if v := ignitionVersion(t, out); v != "3.3.0" {
				t.Errorf("served at spec %s, want 3.3.0 as written", v)
			}
			if name == "node.ign" && string(out) != raw33 {
				t.Errorf("raw Ignition re-encoded: %s", out)
			}
			for _, empty := range []string{`"kernelArguments":{}`, `"systemd":{}`, `"storage":{}`} {
				if strings.Contains(string(out), empty) {
					t.Errorf("served config has %s added: %s", empty, out)
				}
			}
			if _, rep, err := v33.ParseCompatibleVersion(out); err != nil {
				t.Errorf("an Ignition that reads up to spec 3.3 refuses it: %v %s", err, rep)
			}

			// poseidon/matchbox's answer for the same file.
			cfg, _, err := v34.ParseCompatibleVersion(out)
			if err != nil {
				t.Fatal(err)
			}
			upstream, err := json.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if v := ignitionVersion(t, upstream); v != "3.4.0" {
				t.Fatalf("re-encoding gives spec %s", v)
			}
			if _, _, err := v33.ParseCompatibleVersion(upstream); err == nil {
				t.Errorf("an Ignition that reads up to spec 3.3 accepts the 3.4 re-encoding; the reason documented for not re-encoding is wrong")
			}
		})
	}
}

// TestIgnitionSpec2Raw: a raw spec 2.x config (Flatcar translates 2.x
// itself) is served as written; poseidon/matchbox's spec 3.4 parser
// refuses it, so its answer would be an empty config.
func TestIgnitionSpec2Raw(t *testing.T) {
	const raw23 = `{"ignition":{"version":"2.3.0"},"systemd":{"units":[{"name":"x.service","enable":true}]}}`
	snap, sel := ignitionFixture(map[string]string{"old.ign": raw23})
	out, err := NewEngine(Options{}).Ignition(context.Background(), snap, sel("old.ign"), Data(&matchbox.Group{}, Request{}))
	if err != nil || string(out) != raw23 {
		t.Errorf("Ignition = %s, %v; want it served as written", out, err)
	}
	if _, _, err := v34.ParseCompatibleVersion([]byte(raw23)); err == nil {
		t.Errorf("the spec 3.4 parser accepts spec 2.3.0; docs/compatibility.md says it does not")
	}
}
