package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// cloudDataDir is a data dir with cloud templates poseidon/matchbox serves
// (good.yaml for one group, a script) and refuses (node.yaml for one
// group's data, static.yaml always).
func cloudDataDir(t *testing.T) string {
	dir := t.TempDir()
	for id, cloud := range map[string]string{"node": "node.yaml", "static": "static.yaml", "script": "script.sh"} {
		writeFile(t, filepath.Join(dir, "profiles", id+".json"), `{"id": "`+id+`", "cloud_id": "`+cloud+`"}`)
	}
	writeFile(t, filepath.Join(dir, "cloud", "node.yaml"), "#cloud-config\nhostname: {{.hostname}}\n")
	writeFile(t, filepath.Join(dir, "cloud", "static.yaml"), "hostname: node1\n")
	writeFile(t, filepath.Join(dir, "cloud", "script.sh"), "#!/bin/sh\necho {{.hostname}}\n")
	writeFile(t, filepath.Join(dir, "groups", "good.json"), `{"id": "good", "profile": "node", "selector": {"mac": "52:54:00:00:00:01"}, "metadata": {"hostname": "node1"}}`)
	writeFile(t, filepath.Join(dir, "groups", "bad.json"), `{"id": "bad", "profile": "node", "selector": {"mac": "52:54:00:00:00:02"}, "metadata": {"hostname": "a: b"}}`)
	writeFile(t, filepath.Join(dir, "groups", "static.json"), `{"id": "static", "profile": "static", "selector": {"mac": "52:54:00:00:00:03"}}`)
	writeFile(t, filepath.Join(dir, "groups", "script.json"), `{"id": "script", "profile": "script", "selector": {"mac": "52:54:00:00:00:04"}, "metadata": {"hostname": "a: b"}}`)
	return dir
}

// TestValidateCloudConfig: validate reports each cloud template whose
// rendering /cloud refuses, with its file and the reason.
func TestValidateCloudConfig(t *testing.T) {
	dir := cloudDataDir(t)
	code, out := runCLI(t, nil, "validate", "-data-path", dir)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		filepath.Join("cloud", "static.yaml") + `: error: cloud-config: first line "hostname: node1" is neither #cloud-config nor a #! script`,
		filepath.Join("groups", "bad.json") + `: error: group "bad", profile "node": cloud node.yaml: cloud-config: not valid YAML`,
	}
	if len(lines) != len(want)+1 {
		t.Fatalf("got %d lines, want %d problems and the summary:\n%s", len(lines), len(want), out)
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("line %d = %q, want it to contain %q", i, lines[i], w)
		}
	}
	if !strings.Contains(lines[1], "line 2: mapping values are not allowed") {
		t.Errorf("bad.json's reason lacks the YAML error: %q", lines[1])
	}
	if !strings.HasSuffix(lines[2], "4 groups, 3 profiles, 3 templates; 2 errors, 0 warnings") {
		t.Errorf("summary %q", lines[2])
	}
}

// TestCompatCloudConfigRefused: /cloud answers 404, as poseidon/matchbox,
// for a rendered cloud template that is neither a #cloud-config YAML
// document nor a #! script, and serves the others.
func TestCompatCloudConfigRefused(t *testing.T) {
	dir := cloudDataDir(t)
	ts, _ := compatServerDir(t, dir)
	for _, tt := range []struct {
		mac      string
		code     int
		contains string
	}{
		{"52:54:00:00:00:01", 200, "#cloud-config\nhostname: node1\n"},
		{"52:54:00:00:00:02", 404, "not valid YAML"},
		{"52:54:00:00:00:03", 404, "neither #cloud-config nor a #! script"},
		{"52:54:00:00:00:04", 200, "#!/bin/sh\necho a: b\n"},
	} {
		code, body := compatGet(t, ts, "cloud", "mac="+tt.mac)
		if code != tt.code || !strings.Contains(string(body), tt.contains) {
			t.Errorf("/cloud?mac=%s: %d %q; want %d containing %q", tt.mac, code, body, tt.code, tt.contains)
		}
	}
}
