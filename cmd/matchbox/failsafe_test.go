package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"matchbox.dev/matchbox"
)

// shippedDataDir copies the quick start's data dir (groups/, profiles/,
// ignition/), whose installed group keeps install-node1 from installing
// again once it runs from its disk.
func shippedDataDir(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	dir := t.TempDir()
	for _, sub := range []string{"groups", "profiles", "ignition"} {
		files, err := filepath.Glob(filepath.Join(root, sub, "*"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: %v", sub, err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, sub, filepath.Base(f)), string(b))
		}
	}
	return dir
}

const node1 = "52:54:00:a1:9c:ae"

// TestBrokenInstalledGroupNeverReinstalls: with groups/installed.json
// broken before the server ever read it, node1 booting its installed
// system (os=installed) must not get install-node1, whose profile wipes
// its disk. It gets 503 until the file is fixed; other machines are
// served as before.
func TestBrokenInstalledGroupNeverReinstalls(t *testing.T) {
	dir := shippedDataDir(t)
	good, err := os.ReadFile(filepath.Join(dir, "groups", "installed.json"))
	if err != nil {
		t.Fatal(err)
	}
	// A trailing comma in the metadata: the selector is still readable.
	broken := strings.Replace(string(good), `"metadata": {`, `"metadata": {"note": "x",,`, 1)
	writeFile(t, filepath.Join(dir, "groups", "installed.json"), broken)

	s := startServer(t, nil, "-data-path", dir, "-db-path", filepath.Join(t.TempDir(), "m.db"), "-assets-path", "")
	installed := s.url + "/ignition?mac=" + node1 + "&os=installed"
	if code, body := fetch(t, installed); code != 503 || !strings.Contains(body, "installed.json") || strings.Contains(body, "flatcar-install") {
		t.Fatalf("node1 with os=installed while installed.json is broken: %d %s; want 503 naming installed.json", code, body)
	}
	// Machines the broken group cannot select are served as without it.
	for _, q := range []string{"mac=" + node1, "mac=52:54:00:12:34:56"} {
		if code, body := fetch(t, s.url+"/ipxe?"+q); code != 200 {
			t.Errorf("/ipxe?%s: %d %s; want 200", q, code, body)
		}
	}
	if code, body := fetch(t, s.url+"/readyz"); code != 503 || !strings.Contains(body, "os=installed") {
		t.Errorf("readyz: %d %s; want 503 saying machines with os=installed get no group", code, body)
	}
	code, out := runCLI(t, nil, "validate", "-data-path", dir)
	if code != 1 || !strings.Contains(out, "installed.json: error: no group is served to machines matching os=installed") {
		t.Errorf("validate: exit %d\n%s", code, out)
	}

	writeFile(t, filepath.Join(dir, "groups", "installed.json"), string(good))
	waitFor(t, 5*time.Second, "the fixed installed.json", func() bool {
		code, body := fetch(t, installed)
		return code == 200 && !strings.Contains(body, "flatcar-install")
	})
	if code, _ := fetch(t, s.url+"/readyz"); code != 200 {
		t.Errorf("readyz after the fix: %d", code)
	}

	// A later broken edit keeps the last good version in force.
	writeFile(t, filepath.Join(dir, "groups", "installed.json"), broken)
	waitFor(t, 5*time.Second, "the broken edit reported", func() bool {
		return strings.Contains(s.log.String(), "still serving the last version")
	})
	if code, _ := fetch(t, installed); code != 200 {
		t.Errorf("node1 with os=installed after a broken edit: %d; want the last good version", code)
	}
}

// TestIgnoreBrokenGroups: the operator may accept the risk and be served
// as poseidon/matchbox serves, the broken file skipped.
func TestIgnoreBrokenGroups(t *testing.T) {
	dir := shippedDataDir(t)
	writeFile(t, filepath.Join(dir, "groups", "installed.json"), `{"id": "installed",`)
	s := startServer(t, nil, "-data-path", dir, "-db-path", filepath.Join(t.TempDir(), "m.db"), "-assets-path", "", "-ignore-broken-groups")
	if code, body := fetch(t, s.url+"/ignition?mac="+node1+"&os=installed"); code != 200 {
		t.Errorf("with -ignore-broken-groups: %d %s; want 200", code, body)
	}
	if code, _ := fetch(t, s.url+"/readyz"); code != 200 {
		t.Errorf("readyz with -ignore-broken-groups: %d", code)
	}
	if !strings.Contains(s.log.String(), "installed.json") {
		t.Error("the broken file is not reported in the log")
	}
}

// TestUpstreamGroupFiles: group files poseidon/matchbox serves are served
// the same way: without an id, two with one id; a group without a profile
// keeps its machines (404), never the default group.
func TestUpstreamGroupFiles(t *testing.T) {
	dir := shippedDataDir(t)
	writeFile(t, filepath.Join(dir, "groups", "node2.json"), `{"profile": "flatcar-install", "selector": {"mac": "52:54:00:00:00:02"}, "metadata": {"marker": "node2", "install_disk": "/dev/vda", "ssh_authorized_key": "k"}}`)
	writeFile(t, filepath.Join(dir, "groups", "rack-a.json"), `{"id": "rack", "profile": "flatcar-live", "selector": {"rack": "a"}, "metadata": {"marker": "rack-a", "ssh_authorized_key": "k"}}`)
	writeFile(t, filepath.Join(dir, "groups", "rack-b.json"), `{"id": "rack", "profile": "flatcar-install", "selector": {"rack": "b"}, "metadata": {"marker": "rack-b", "install_disk": "/dev/sdb", "ssh_authorized_key": "k"}}`)
	writeFile(t, filepath.Join(dir, "groups", "noprofile.json"), `{"id": "noprofile", "selector": {"mac": "52:54:00:00:00:04"}}`)
	s := startServer(t, nil, "-data-path", dir, "-db-path", filepath.Join(t.TempDir(), "m.db"), "-assets-path", "")
	for _, tt := range []struct {
		query, marker string
		code          int
	}{
		{"mac=52:54:00:00:00:02", "node2", 200},
		{"mac=52:54:00:00:00:05&rack=a", "rack-a", 200},
		{"mac=52:54:00:00:00:06&rack=b", "rack-b", 200},
		{"mac=52:54:00:00:00:04", "", 404},
	} {
		code, body := fetch(t, s.url+"/metadata?"+tt.query)
		if tt.code == 404 {
			// /metadata needs only the group; /ipxe needs its profile.
			if code, body = fetch(t, s.url+"/ipxe?"+tt.query); code != 404 || !strings.Contains(body, "no profile") {
				t.Errorf("/ipxe?%s: %d %s; want 404 saying the group has no profile", tt.query, code, body)
			}
			continue
		}
		if code != tt.code || !strings.Contains(body, "MARKER="+tt.marker+"\n") {
			t.Errorf("/metadata?%s: %d %s; want the group marked %s", tt.query, code, body, tt.marker)
		}
	}
	code, out := runCLI(t, nil, "validate", "-data-path", dir)
	for _, want := range []string{`group id "rack" is also defined by`, `group "noprofile" has no profile`} {
		if !strings.Contains(out, want) {
			t.Errorf("validate (exit %d) lacks %q:\n%s", code, want, out)
		}
	}
	if !strings.Contains(s.log.String(), `group id \"rack\" is also defined by`) {
		t.Errorf("the log does not warn of the duplicate id")
	}
}

// TestNetbootWithheld: the DHCP front-end's question gets the same answer
// as the boot endpoints: no boot for a machine a broken group file may
// select, with the reason, and the usual answer for the others.
func TestNetbootWithheld(t *testing.T) {
	catalog := matchbox.NewCatalog("datadir")
	catalog.Update(t.Context(), "datadir", matchbox.Objects{
		Groups: []*matchbox.Group{
			{ID: "install-node1", Profile: "install", Selector: map[string]string{"mac": node1}},
			{ID: "default", Profile: "live"},
		},
		Profiles: []*matchbox.Profile{{ID: "install"}, {ID: "live"}},
		Claims:   []matchbox.Claim{{Origin: "groups/installed.json", Reason: "bad JSON", Known: true, Selector: map[string]string{"uuid": "u1"}}},
	})
	b := matchbox.NewBooter(catalog, nil)
	if d := b.Decide(map[string]string{"mac": node1, "uuid": "u1"}); d.Netboots() || !errors.Is(d.Err, matchbox.ErrUnavailable) || !strings.Contains(d.Err.Error(), "installed.json") {
		t.Errorf("claimed machine: %v; want ErrUnavailable naming the file", d.Err)
	}
	if d := b.Decide(map[string]string{"mac": node1}); !d.Netboots() || d.Group.ID != "install-node1" {
		t.Errorf("node1 without the uuid: %+v, %v; want install-node1", d.Group, d.Err)
	}
}
