package render

import (
	"context"
	"errors"
	"strings"
	"testing"

	"matchbox.dev/matchbox"
)

// cloudCases are rendered cloud templates and whether poseidon/matchbox
// (coreos-cloudinit's IsCloudConfig, IsScript and NewCloudConfig) serves
// them; wantErr holds substrings of the reason when it does not.
var cloudCases = []struct {
	name, out string
	wantErr   []string
}{
	{name: "cloud-config", out: "#cloud-config\nhostname: node1\nssh_authorized_keys:\n  - ssh-ed25519 AAAA\n"},
	{name: "header only", out: "#cloud-config\n"},
	{name: "header without newline", out: "#cloud-config"},
	{name: "CRLF", out: "#cloud-config\r\nhostname: node1\r\n"},
	{name: "trailing blanks after header", out: "#cloud-config \t\nhostname: node1\n"},
	// coreos-cloudinit decodes into typed fields and ignores what does
	// not fit: only YAML syntax fails it.
	{name: "wrong types", out: "#cloud-config\nhostname: [a, b]\nwrite_files: nope\n"},
	{name: "sequence document", out: "#cloud-config\n- a\n- b\n"},
	{name: "duplicate keys", out: "#cloud-config\nhostname: a\nhostname: b\n"},
	{name: "script", out: "#!/bin/bash\necho not: yaml: [\n"},
	{name: "bare #!", out: "#!"},
	{name: "no header", out: "hostname: node1\n", wantErr: []string{`"hostname: node1"`, "neither #cloud-config nor a #! script"}},
	{name: "empty", out: "", wantErr: []string{"empty"}},
	{name: "blank line before header", out: "\n#cloud-config\nhostname: node1\n", wantErr: []string{"first line"}},
	{name: "space in header", out: "# cloud-config\nhostname: node1\n", wantErr: []string{`"# cloud-config"`}},
	{name: "header case", out: "#Cloud-Config\nhostname: node1\n", wantErr: []string{"#Cloud-Config"}},
	{name: "leading blank before header", out: " #cloud-config\nhostname: node1\n", wantErr: []string{"first line"}},
	{name: "bad YAML", out: "#cloud-config\nhostname: node1\nwrite_files: [\n", wantErr: []string{"not valid YAML", "line 3"}},
	{name: "tab indentation", out: "#cloud-config\ncoreos:\n\tunits: []\n", wantErr: []string{"not valid YAML", "line 3"}},
	{name: "mapping in scalar", out: "#cloud-config\nhostname: a: b\n", wantErr: []string{"not valid YAML", "line 2"}},
	{name: "unknown alias", out: "#cloud-config\nhostname: *name\n", wantErr: []string{"not valid YAML", "name"}},
}

func TestCheckCloudConfig(t *testing.T) {
	for _, tt := range cloudCases {
		t.Run(tt.name, func(t *testing.T) {
			err := checkCloudConfig([]byte(tt.out))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("served; poseidon/matchbox refuses it")
			}
			if !errors.Is(err, matchbox.ErrNotFound) {
				t.Errorf("%v does not match matchbox.ErrNotFound (404, as poseidon/matchbox answers)", err)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

// TestCloudTemplateRefused renders each case through the engine twice: as a
// template whose output depends on the data (checked per request) and as
// a static one (checked when compiled, reported by CheckTemplates).
func TestCloudTemplateRefused(t *testing.T) {
	var objs matchbox.Objects
	for _, tt := range cloudCases {
		for _, form := range []string{"templated", "static"} {
			name := form + "/" + tt.name
			content := tt.out
			if form == "templated" {
				// The whole output comes from the group's metadata.
				content = "{{.out}}"
			}
			objs.Profiles = append(objs.Profiles, &matchbox.Profile{ID: name, CloudID: name, Origin: "profiles/" + name + ".json"})
			objs.Templates = append(objs.Templates, &matchbox.Template{
				Kind: matchbox.KindCloud, Name: name, Content: []byte(content), Origin: "cloud/" + name,
			})
		}
	}
	snap := matchbox.NewSnapshot(objs)
	e := NewEngine(Options{})
	reported := map[string]string{}
	for _, p := range e.CheckTemplates(snap) {
		reported[p.Origin] = p.Message
	}
	for _, tt := range cloudCases {
		for _, form := range []string{"templated", "static"} {
			name := form + "/" + tt.name
			t.Run(name, func(t *testing.T) {
				p, _ := snap.Profile(name)
				g := &matchbox.Group{ID: "grp", Metadata: map[string]any{"out": tt.out}}
				out, err := e.Template(t.Context(), snap, matchbox.Selection{Group: g, Profile: p}, matchbox.KindCloud, Data(g, Request{}))
				msg, atLoad := reported["cloud/"+name]
				if tt.wantErr == nil {
					if err != nil || string(out) != tt.out {
						t.Errorf("Template = %q, %v; want it served as rendered", out, err)
					}
					if atLoad {
						t.Errorf("CheckTemplates reports %s", msg)
					}
					return
				}
				var rerr *Error
				if !errors.As(err, &rerr) || !errors.Is(err, matchbox.ErrNotFound) {
					t.Fatalf("Template = %q, %v; want a *render.Error matching ErrNotFound", out, err)
				}
				if rerr.Template != "cloud/"+name || rerr.Profile != name || rerr.Group != "grp" {
					t.Errorf("error names group %q, profile %q, template %q", rerr.Group, rerr.Profile, rerr.Template)
				}
				if form == "static" != atLoad {
					t.Errorf("reported by CheckTemplates: %v (%q); want it only for the static form", atLoad, msg)
				}
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) || (atLoad && !strings.Contains(msg, s)) {
						t.Errorf("error %q (at load %q) does not contain %q", err, msg, s)
					}
				}
			})
		}
	}
}

// TestCheckGroupsReportsCloudConfig: validate renders every group's cloud
// template and reports the groups whose rendering is refused, with the
// template and the reason; a static refused template is reported once by
// CheckTemplates, not again per group.
func TestCheckGroupsReportsCloudConfig(t *testing.T) {
	snap := matchbox.NewSnapshot(matchbox.Objects{
		Profiles: []*matchbox.Profile{
			{ID: "node", CloudID: "node.yaml"},
			{ID: "static", CloudID: "static.yaml"},
		},
		Templates: []*matchbox.Template{
			{Kind: matchbox.KindCloud, Name: "node.yaml", Origin: "cloud/node.yaml",
				Content: []byte("{{if .header}}#cloud-config\n{{end}}hostname: {{.hostname}}\n")},
			{Kind: matchbox.KindCloud, Name: "static.yaml", Origin: "cloud/static.yaml", Content: []byte("hostname: x\n")},
		},
		Groups: []*matchbox.Group{
			{ID: "good", Profile: "node", Origin: "groups/good.json", Selector: map[string]string{"os": "a"},
				Metadata: map[string]any{"header": true, "hostname": "h"}},
			{ID: "noheader", Profile: "node", Origin: "groups/noheader.json", Selector: map[string]string{"os": "b"},
				Metadata: map[string]any{"header": false, "hostname": "h"}},
			{ID: "badyaml", Profile: "node", Origin: "groups/badyaml.json", Selector: map[string]string{"os": "c"},
				Metadata: map[string]any{"header": true, "hostname": "h: i"}},
			{ID: "static", Profile: "static", Origin: "groups/static.json", Selector: map[string]string{"os": "d"}},
		},
	})
	e := NewEngine(Options{})
	got := e.CheckGroups(context.Background(), snap)
	checkErrors(t, got, []wantError{
		{"groups/badyaml.json", []string{`group "badyaml"`, `profile "node"`, "cloud node.yaml", "not valid YAML", "line 2"}},
		{"groups/noheader.json", []string{`group "noheader"`, "cloud node.yaml", `"hostname: h"`, "#cloud-config"}},
	})
	probs := e.CheckTemplates(snap)
	if len(probs) != 1 || probs[0].Origin != "cloud/static.yaml" || !strings.Contains(probs[0].Message, "#cloud-config") {
		t.Errorf("CheckTemplates = %v; want cloud/static.yaml refused", probs)
	}
}

// TestCheckTemplateCloud: the admin API refuses a cloud template without
// actions that is not a cloud-config, and accepts templated ones (checked
// when rendered).
func TestCheckTemplateCloud(t *testing.T) {
	for _, tt := range []struct {
		content string
		ok      bool
	}{
		{"#cloud-config\nhostname: a\n", true},
		{"#!/bin/sh\nexit 0\n", true},
		{"hostname: {{.hostname}}\n", true},
		{"hostname: a\n", false},
		{"#cloud-config\nhostname: [a\n", false},
		{"#cloud-config\nhostname: {{.h\n", false},
	} {
		err := CheckTemplate(&matchbox.Template{Kind: matchbox.KindCloud, Name: "c.yaml", Content: []byte(tt.content)})
		if (err == nil) != tt.ok {
			t.Errorf("CheckTemplate(%q) = %v, want ok %v", tt.content, err, tt.ok)
		}
	}
	// Generic templates are anything.
	if err := CheckTemplate(&matchbox.Template{Kind: matchbox.KindGeneric, Name: "g", Content: []byte("hostname: a\n")}); err != nil {
		t.Errorf("generic: %v", err)
	}
}
