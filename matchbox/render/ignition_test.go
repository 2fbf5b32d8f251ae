package render

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox"
)

// ignitionFixture is a snapshot with one profile per Ignition template, all
// named after the template, and a group using none of them.
func ignitionFixture(templates map[string]string) (*matchbox.Snapshot, func(name string) matchbox.Selection) {
	var objs matchbox.Objects
	for name, content := range templates {
		objs.Profiles = append(objs.Profiles, &matchbox.Profile{ID: name, IgnitionID: name, Origin: "profiles/" + name + ".json"})
		objs.Templates = append(objs.Templates, &matchbox.Template{
			Kind: matchbox.KindIgnition, Name: name, Content: []byte(content), Origin: "ignition/" + name,
		})
	}
	snap := matchbox.NewSnapshot(objs)
	return snap, func(name string) matchbox.Selection {
		p, _ := snap.Profile(name)
		return matchbox.Selection{Group: &matchbox.Group{ID: "grp", Profile: name}, Profile: p}
	}
}

// ignitionVersion returns ignition.version of an Ignition JSON config.
func ignitionVersion(t *testing.T, out []byte) string {
	t.Helper()
	var cfg struct {
		Ignition struct {
			Version string `json:"version"`
		} `json:"ignition"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	return cfg.Ignition.Version
}

func TestIgnitionRaw(t *testing.T) {
	const (
		// Odd spacing and key order: served byte for byte, not re-encoded.
		valid34 = "{ \"storage\": {\"files\": [{\"path\": \"/etc/motd\", \"contents\": {\"source\": \"data:,hello\"}}]},\n  \"ignition\": {\"version\": \"3.4.0\"} }\n"
		valid30 = `{"ignition":{"version":"3.0.0"}}`
		valid23 = "{\"ignition\": {\"version\": \"2.3.0\"},\n \"systemd\": {\"units\": [{\"name\": \"etcd2.service\", \"enable\": true}]}}"
		valid22 = `{"ignition":{"version":"2.2.0"},"passwd":{"users":[{"name":"core","sshAuthorizedKeys":["ssh-ed25519 AAAA"]}]}}`
	)
	tests := []struct {
		name, content string
		wantErr       []string // substrings of the error; nil means valid
	}{
		{name: "valid.ign", content: valid34},
		{name: "valid.ignition", content: valid30},
		{name: "spec2.ign", content: valid23},
		{name: "spec22.ign", content: valid22},
		{name: "notjson.ign", content: "variant: flatcar\nversion: 1.1.0\n", wantErr: []string{"ignition/notjson.ign", "JSON"}},
		{name: "truncated.ign", content: `{"ignition":{"version":"3.4.0"}`, wantErr: []string{"ignition/truncated.ign"}},
		{name: "empty.ign", content: "", wantErr: []string{"ignition/empty.ign"}},
		{name: "array.ign", content: `[]`, wantErr: []string{"ignition/array.ign"}},
		{name: "noversion.ign", content: `{}`, wantErr: []string{"ignition/noversion.ign"}},
		{name: "badversion.ign", content: `{"ignition":{"version":"9.9.9"}}`, wantErr: []string{"ignition/badversion.ign"}},
		{name: "nopath.ign", content: `{"ignition":{"version":"3.4.0"},"storage":{"files":[{"contents":{"source":"data:,x"}}]}}`,
			wantErr: []string{"ignition/nopath.ign", "path"}},
		{name: "badsource.ign", content: `{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/x","contents":{"source":"nope://x"}}]}}`,
			wantErr: []string{"ignition/badsource.ign"}},
		{name: "relative.ign", content: `{"ignition":{"version":"3.2.0"},"storage":{"files":[{"path":"etc/x"}]}}`,
			wantErr: []string{"ignition/relative.ign"}},
	}
	templates := map[string]string{}
	for _, tt := range tests {
		templates[tt.name] = tt.content
	}
	snap, sel := ignitionFixture(templates)
	e := NewEngine(Options{})
	data := Data(&matchbox.Group{}, Request{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.Ignition(context.Background(), snap, sel(tt.name), data)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != tt.content {
					t.Errorf("raw Ignition not served byte for byte:\n got %q\nwant %q", got, tt.content)
				}
				return
			}
			var rerr *Error
			if !errors.As(err, &rerr) {
				t.Fatalf("Ignition = %q, %v; want a *render.Error", got, err)
			}
			t.Log(err)
			if got != nil {
				t.Errorf("Ignition returned %q along with the error", got)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
	// CheckTemplates reports exactly the invalid files, by origin.
	var origins []string
	for _, p := range e.CheckTemplates(snap) {
		if p.Severity != matchbox.SeverityError {
			t.Errorf("problem %s is not an error", p)
		}
		origins = append(origins, p.Origin)
	}
	var want []string
	for _, tt := range snap.Templates() {
		for _, c := range tests {
			if c.name == tt.Name && c.wantErr != nil {
				want = append(want, tt.Origin)
			}
		}
	}
	if diff := cmp.Diff(want, origins); diff != "" {
		t.Errorf("CheckTemplates origins (-want +got):\n%s", diff)
	}
}

const butaneNode = `variant: flatcar
version: 1.1.0
passwd:
  users:
    - name: core
      ssh_authorized_keys:
        - {{.ssh_key}}
storage:
  files:
    - path: /etc/hostname
      mode: 0644
      contents:
        inline: {{.hostname}}
    - path: /etc/mac
      contents:
        inline: {{.request.query.mac}}
`

func TestIgnitionButane(t *testing.T) {
	snap, sel := ignitionFixture(map[string]string{"node.yaml": butaneNode})
	e := NewEngine(Options{})
	g := &matchbox.Group{ID: "node1", Metadata: map[string]any{"ssh_key": "ssh-ed25519 AAAAC3Nza test@example", "hostname": "node1"}}
	data := Data(g, Request{Labels: map[string]string{"mac": "52:54:00:a1:9c:ae"}})
	out, err := e.Ignition(context.Background(), snap, sel("node.yaml"), data)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Ignition struct{ Version string }
		Passwd   struct {
			Users []struct {
				Name              string
				SSHAuthorizedKeys []string
			}
		}
		Storage struct {
			Files []struct {
				Path     string
				Mode     *int
				Contents struct{ Source string }
			}
		}
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if cfg.Ignition.Version != "3.4.0" {
		t.Errorf("version = %q, want 3.4.0 (flatcar 1.1.0)", cfg.Ignition.Version)
	}
	if len(cfg.Passwd.Users) != 1 || cfg.Passwd.Users[0].Name != "core" ||
		!cmp.Equal(cfg.Passwd.Users[0].SSHAuthorizedKeys, []string{"ssh-ed25519 AAAAC3Nza test@example"}) {
		t.Errorf("users = %+v", cfg.Passwd.Users)
	}
	files := map[string]string{}
	for _, f := range cfg.Storage.Files {
		files[f.Path] = f.Contents.Source
	}
	wantFiles := map[string]string{"/etc/hostname": "data:,node1", "/etc/mac": "data:,52%3A54%3A00%3Aa1%3A9c%3Aae"}
	if diff := cmp.Diff(wantFiles, files); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if strings.Contains(string(out), "\n") {
		t.Errorf("output is not compact JSON:\n%s", out)
	}
}

func TestIgnitionButaneErrors(t *testing.T) {
	templates := map[string]string{
		"missingkey.yaml": butaneNode,
		"badtype.yaml":    "variant: flatcar\nversion: 1.1.0\npasswd:\n  users:\n    - name: core\n      ssh_authorized_keys: notalist\n",
		"nopath.yaml":     "variant: flatcar\nversion: 1.1.0\nstorage:\n  files:\n    - mode: 0644\n      contents:\n        inline: x\n",
		"yamlsyntax.yaml": "variant: flatcar\nversion: 1.1.0\nstorage:\n  files:\n  - path: /a\n    contents: {inline: [\n",
		"novariant.yaml":  "version: 1.1.0\n",
		"unknown.yaml":    "variant: flatcar\nversion: 9.0.0\n",
		"rhcos.yaml":      "variant: rhcos\nversion: 0.1.0\n",
		"tmplsyntax.yaml": "variant: flatcar\nversion: 1.1.0\n{{ if }}\n",
	}
	snap, sel := ignitionFixture(templates)
	e := NewEngine(Options{})
	data := Data(&matchbox.Group{Metadata: map[string]any{"hostname": "h"}}, Request{Labels: map[string]string{"mac": "52:54:00:a1:9c:ae"}})
	tests := []struct {
		name     string
		contains []string
	}{
		{"missingkey.yaml", []string{"ssh_key"}},
		{"badtype.yaml", []string{"line 6"}},
		{"nopath.yaml", []string{"line 5", "path"}},
		{"yamlsyntax.yaml", []string{"line"}},
		{"novariant.yaml", []string{"variant"}},
		{"unknown.yaml", []string{"9.0.0"}},
		{"rhcos.yaml", []string{"rhcos"}},
		{"tmplsyntax.yaml", []string{"if"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := e.Ignition(context.Background(), snap, sel(tt.name), data)
			var rerr *Error
			if !errors.As(err, &rerr) {
				t.Fatalf("Ignition = %q, %v; want a *render.Error", out, err)
			}
			t.Log(err)
			if rerr.Template != "ignition/"+tt.name || rerr.Profile != tt.name || rerr.Group != "grp" {
				t.Errorf("Error names group %q, profile %q, template %q", rerr.Group, rerr.Profile, rerr.Template)
			}
			for _, s := range append([]string{"ignition/" + tt.name}, tt.contains...) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestIgnitionNotFound(t *testing.T) {
	snap := matchbox.NewSnapshot(matchbox.Objects{Profiles: []*matchbox.Profile{{ID: "none"}, {ID: "dangling", IgnitionID: "gone.yaml"}}})
	e := NewEngine(Options{})
	for _, id := range []string{"none", "dangling"} {
		p, _ := snap.Profile(id)
		_, err := e.Ignition(context.Background(), snap, matchbox.Selection{Group: &matchbox.Group{ID: "g"}, Profile: p}, nil)
		if !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("profile %s: %v, want ErrNotFound", id, err)
		}
	}
}

func TestButaneWarningsAreNotFatal(t *testing.T) {
	// An unknown key is a warning in Butane; the config is still served.
	out, err := TranslateButane([]byte("variant: fcos\nversion: 1.5.0\nunknown_key: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if v := ignitionVersion(t, out); v != "3.4.0" {
		t.Errorf("version = %q, want 3.4.0", v)
	}
}

// butaneVariants is every variant and version butane v0.29.0 registers
// (config/config.go) with the Ignition spec version it translates to.
var butaneVariants = []struct{ variant, version, ignition string }{
	{"fcos", "1.0.0", "3.0.0"},
	{"fcos", "1.1.0", "3.1.0"},
	{"fcos", "1.2.0", "3.2.0"},
	{"fcos", "1.3.0", "3.2.0"},
	{"fcos", "1.4.0", "3.3.0"},
	{"fcos", "1.5.0", "3.4.0"},
	{"fcos", "1.6.0", "3.5.0"},
	{"fcos", "1.7.0", "3.6.0"},
	{"fcos", "1.8.0-experimental", "3.7.0-experimental"},
	{"flatcar", "1.0.0", "3.3.0"},
	{"flatcar", "1.1.0", "3.4.0"},
	{"flatcar", "1.2.0-experimental", "3.7.0-experimental"},
	{"openshift", "4.8.0", "3.2.0"},
	{"openshift", "4.9.0", "3.2.0"},
	{"openshift", "4.10.0", "3.2.0"},
	{"openshift", "4.11.0", "3.2.0"},
	{"openshift", "4.12.0", "3.2.0"},
	{"openshift", "4.13.0", "3.2.0"},
	{"openshift", "4.14.0", "3.4.0"},
	{"openshift", "4.15.0", "3.4.0"},
	{"openshift", "4.16.0", "3.4.0"},
	{"openshift", "4.17.0", "3.4.0"},
	{"openshift", "4.18.0", "3.4.0"},
	{"openshift", "4.19.0", "3.5.0"},
	{"openshift", "4.20.0", "3.5.0"},
	{"openshift", "4.21.0", "3.5.0"},
	{"openshift", "4.22.0", "3.5.0"},
	{"openshift", "4.23.0-experimental", "3.7.0-experimental"},
	{"r4e", "1.0.0", "3.3.0"},
	{"r4e", "1.1.0", "3.4.0"},
	{"r4e", "1.2.0-experimental", "3.7.0-experimental"},
	{"fiot", "1.0.0", "3.4.0"},
	{"fiot", "1.1.0-experimental", "3.7.0-experimental"},
}

func TestIgnitionEveryButaneVariant(t *testing.T) {
	e := NewEngine(Options{})
	for _, tt := range butaneVariants {
		t.Run(tt.variant+"-"+tt.version, func(t *testing.T) {
			src := fmt.Sprintf("variant: %s\nversion: %s\n", tt.variant, tt.version)
			if tt.variant == "openshift" {
				src += "metadata:\n  name: x\n  labels:\n    machineconfiguration.openshift.io/role: worker\n"
			}
			// A templated value, so the Engine path (render, translate) is used.
			src += "storage:\n  files:\n    - path: /etc/variant\n      contents:\n        inline: {{.variant}}\n"
			snap, sel := ignitionFixture(map[string]string{"v.yaml": src})
			data := Data(&matchbox.Group{Metadata: map[string]any{"variant": tt.variant}}, Request{})
			out, err := e.Ignition(context.Background(), snap, sel("v.yaml"), data)
			if err != nil {
				t.Fatalf("%v\n%s", err, src)
			}
			if v := ignitionVersion(t, out); v != tt.ignition {
				t.Errorf("ignition.version = %q, want %q", v, tt.ignition)
			}
			if !strings.Contains(string(out), `"data:,`+tt.variant+`"`) {
				t.Errorf("rendered value missing from %s", out)
			}
		})
	}
}

func TestCheckTemplates(t *testing.T) {
	snap := matchbox.NewSnapshot(matchbox.Objects{
		Profiles: []*matchbox.Profile{
			{ID: "good", Origin: "profiles/good.json", Boot: matchbox.Boot{Kernel: "/k", Args: []string{"a={{.x}}"}}},
			{ID: "badargs", Origin: "profiles/badargs.json", Boot: matchbox.Boot{Kernel: "/k", Args: []string{"ok", "a={{.x"}}},
		},
		Templates: []*matchbox.Template{
			{Kind: matchbox.KindIgnition, Name: "ok.yaml", Origin: "ignition/ok.yaml", Content: []byte(butaneNode)},
			{Kind: matchbox.KindIgnition, Name: "broken.yaml", Origin: "ignition/broken.yaml", Content: []byte("variant: flatcar\n{{ range }}\n")},
			{Kind: matchbox.KindCloud, Name: "bad.tmpl", Origin: "cloud/bad.tmpl", Content: []byte("#cloud-config\n\nhostname: {{.hostname\n")},
			{Kind: matchbox.KindGeneric, Name: "fn.tmpl", Origin: "generic/fn.tmpl", Content: []byte("{{ nosuchfunc .x }}")},
			{Kind: matchbox.KindGeneric, Name: "sprig.tmpl", Origin: "generic/sprig.tmpl", Content: []byte("{{ .x | default \"d\" | upper }}")},
			{Kind: matchbox.KindIgnition, Name: "ok.ign", Origin: "ignition/ok.ign", Content: []byte(`{"ignition":{"version":"3.4.0"}}`)},
		},
	})
	got := NewEngine(Options{}).CheckTemplates(snap)
	checks := []struct{ origin, contains string }{
		{"cloud/bad.tmpl", "bad.tmpl:3"},
		{"generic/fn.tmpl", "nosuchfunc"},
		{"ignition/broken.yaml", "broken.yaml:2"},
		{"profiles/badargs.json", "boot.args[1]"},
	}
	if len(got) != len(checks) {
		t.Fatalf("got %d problems, want %d: %v", len(got), len(checks), got)
	}
	for i, c := range checks {
		if got[i].Origin != c.origin || got[i].Severity != matchbox.SeverityError || !strings.Contains(got[i].Message, c.contains) {
			t.Errorf("problem %d = %s; want origin %s, error containing %q", i, got[i], c.origin, c.contains)
		}
	}
}

func TestCheckGroups(t *testing.T) {
	snap := matchbox.NewSnapshot(matchbox.Objects{
		Profiles: []*matchbox.Profile{
			{ID: "node", IgnitionID: "node.yaml", CloudID: "c.tmpl", Boot: matchbox.Boot{Kernel: "/k", Args: []string{"h={{.request.host}}", "os={{.request.query.os}}"}}},
			{ID: "argsneed", Boot: matchbox.Boot{Kernel: "/k", Args: []string{"role={{.role}}"}}},
			{ID: "broken", IgnitionID: "broken.yaml"},
			{ID: "dangling", GenericID: "gone.tmpl"},
		},
		Templates: []*matchbox.Template{
			{Kind: matchbox.KindIgnition, Name: "node.yaml", Origin: "ignition/node.yaml", Content: []byte(butaneNode)},
			{Kind: matchbox.KindIgnition, Name: "broken.yaml", Origin: "ignition/broken.yaml", Content: []byte("variant: flatcar\nversion: 1.1.0\nstorage:\n  files:\n    - mode: 0644\n")},
			{Kind: matchbox.KindCloud, Name: "c.tmpl", Origin: "cloud/c.tmpl", Content: []byte("#cloud-config\nhostname: {{.hostname}}\n")},
		},
		Groups: []*matchbox.Group{
			{ID: "complete", Profile: "node", Origin: "groups/complete.json", Selector: map[string]string{"os": "flatcar"},
				Metadata: map[string]any{"ssh_key": "ssh-ed25519 AAAA", "hostname": "h"}},
			{ID: "no-ssh-key", Profile: "node", Origin: "groups/no-ssh-key.json", Selector: map[string]string{"os": "flatcar", "region": "eu"},
				Metadata: map[string]any{"hostname": "h"}},
			{ID: "no-os", Profile: "node", Origin: "groups/no-os.json", Selector: map[string]string{"mac": "52:54:00:a1:9c:ae"},
				Metadata: map[string]any{"ssh_key": "k", "hostname": "h"}},
			{ID: "no-role", Profile: "argsneed", Origin: "groups/no-role.json"},
			{ID: "broken", Profile: "broken", Origin: "groups/broken.json", Selector: map[string]string{"os": "x"}},
			{ID: "missing-profile", Profile: "nope", Origin: "groups/missing-profile.json", Selector: map[string]string{"os": "y"}},
			{ID: "missing-template", Profile: "dangling", Origin: "groups/missing-template.json", Selector: map[string]string{"os": "z"}},
		},
	})
	got := NewEngine(Options{}).CheckGroups(context.Background(), snap)
	checkErrors(t, got, []wantError{
		{"groups/broken.json", []string{`group "broken"`, `profile "broken"`, "ignition broken.yaml", "line 5"}},
		{"groups/no-os.json", []string{`group "no-os"`, `profile "node"`, "boot args", "os"}},
		{"groups/no-role.json", []string{`group "no-role"`, "boot args", "role"}},
		{"groups/no-ssh-key.json", []string{`group "no-ssh-key"`, "ignition node.yaml", "ssh_key"}},
	})

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got := NewEngine(Options{}).CheckGroups(ctx, snap); len(got) != 0 {
		t.Errorf("CheckGroups with a cancelled context rendered groups: %v", got)
	}
}

// wantError is an error problem expected from origin, whose message holds
// every one of contains.
type wantError struct {
	origin   string
	contains []string
}

// checkErrors checks that got are exactly the errors of want, in order.
func checkErrors(t *testing.T, got []matchbox.Problem, want []wantError) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].Origin != w.origin || got[i].Severity != matchbox.SeverityError {
			t.Errorf("problem %d = %s; want an error from %s", i, got[i], w.origin)
		}
		for _, s := range w.contains {
			if !strings.Contains(got[i].Message, s) {
				t.Errorf("problem %d message %q does not contain %q", i, got[i].Message, s)
			}
		}
	}
}
