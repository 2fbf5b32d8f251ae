package storage_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

func TestSalvageClaim(t *testing.T) {
	tests := []struct {
		name string
		data string
		want matchbox.Claim
	}{
		{"valid JSON, invalid MAC", `{"id": "a", "profile": "p", "selector": {"mac": "52:54:00:zz:00:01", "os": "installed"}}`,
			matchbox.Claim{Known: true, Selector: map[string]string{"os": "installed"}, Unknown: []string{"mac"}}},
		{"valid JSON, MAC normalised", `{"selector": {"MAC": "52-54-00-A1-9C-AE"}, "metadata": 5}`,
			matchbox.Claim{Known: true, Selector: map[string]string{"MAC": "52:54:00:a1:9c:ae"}}},
		{"valid JSON, no selector: a default group", `{"id": "a", "profile": "p", "metadata": {"deep": 1}}`,
			matchbox.Claim{Known: true}},
		{"valid JSON, null selector", `{"id": "a", "selector": null}`, matchbox.Claim{Known: true}},
		{"valid JSON, a selector that is a number", `{"id": "a", "selector": {"os": "installed", "rack": 2}}`,
			matchbox.Claim{Known: true, Selector: map[string]string{"os": "installed"}, Unknown: []string{"rack"}}},
		{"valid JSON, a selector that is not an object", `{"id": "a", "selector": "os=installed"}`, matchbox.Claim{}},
		{"broken metadata, intact selector", "{\n \"id\": \"installed\",\n \"selector\": {\"os\": \"installed\"},\n \"metadata\": {\"a\": 1,}\n}",
			matchbox.Claim{Known: true, Selector: map[string]string{"os": "installed"}}},
		{"truncated inside the selector", `{"id": "a", "selector": {"mac": "52:54:00:a1:9c:ae"`, matchbox.Claim{}},
		{"broken, two selector keys", `{"selector": {"os": "a"}, "Selector": {"os": "b"},`, matchbox.Claim{}},
		{"broken, no selector key", `{"id": "a", "profile": "p",`, matchbox.Claim{}},
		{"empty file", ``, matchbox.Claim{}},
		{"not JSON at all", "\x00\x01binary", matchbox.Claim{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := storage.SalvageClaim([]byte(tt.data), "groups/x.json", "bad")
			tt.want.Origin, tt.want.Reason = "groups/x.json", "bad"
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("SalvageClaim (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDataDirClaims checks which group files that do not load claim their
// machines: those without a last good version, for as long as they are
// broken.
func TestDataDirClaims(t *testing.T) {
	dir := t.TempDir()
	path := func(rel string) string { return filepath.Join(dir, filepath.FromSlash(rel)) }
	writeFile(t, path("groups/default.json"), []byte(`{"id": "default", "profile": "live"}`))
	writeFile(t, path("groups/installed.json"), []byte(`{"id": "installed", "profile": "disk", "selector": {"os": "installed"}, "metadata": {"a": 1,}}`))
	writeFile(t, path("groups/node1.json"), []byte(`{"id": "node1", "profile": "install", "selector": {"mac": "52:54:00:a1:9c:zz"}}`))
	writeFile(t, path("groups/good.json"), []byte(`{"id": "good", "profile": "live", "selector": {"rack": "1"}}`))
	d := storage.NewDataDir(dir, nil)

	claims := func(objs matchbox.Objects) map[string]string {
		out := map[string]string{}
		for _, c := range objs.Claims {
			out[filepath.Base(c.Origin)] = c.Covers()
		}
		return out
	}
	objs := mustLoad(t, d)
	want := map[string]string{
		"installed.json": "machines matching os=installed without a more specific group",
		"node1.json":     "machines matching mac=(unreadable) without a more specific group",
	}
	if diff := cmp.Diff(want, claims(objs)); diff != "" {
		t.Fatalf("claims at start-up (-want +got):\n%s", diff)
	}

	// A file that once loaded keeps its last good version and claims
	// nothing when it breaks; a fixed file stops claiming.
	writeFile(t, path("groups/good.json"), []byte(`{"id": "good", "profile": "live", "selector": {"rack": "1"`))
	writeFile(t, path("groups/node1.json"), []byte(`{"id": "node1", "profile": "install", "selector": {"mac": "52:54:00:a1:9c:ae"}}`))
	objs = mustLoad(t, d)
	want = map[string]string{"installed.json": "machines matching os=installed without a more specific group"}
	if diff := cmp.Diff(want, claims(objs)); diff != "" {
		t.Errorf("claims after edits (-want +got):\n%s", diff)
	}
	if g := findGroup(objs, "good"); g == nil {
		t.Error("good.json broke and its last good version is gone")
	}
	if g := findGroup(objs, "node1"); g == nil {
		t.Error("node1.json was fixed and does not load")
	}

	// A file that cannot be read at all claims every machine; removing
	// it ends the claim.
	if os.Geteuid() != 0 { // root reads files whatever their mode
		writeFile(t, path("groups/secret.json"), []byte(`{"id": "s", "profile": "p"}`))
		if err := os.Chmod(path("groups/secret.json"), 0); err != nil {
			t.Fatal(err)
		}
		objs = mustLoad(t, d)
		if got := claims(objs)["secret.json"]; !strings.Contains(got, "every machine") {
			t.Errorf("unreadable file claims %q, want every machine", got)
		}
		os.Remove(path("groups/secret.json"))
	}
	if err := os.Mkdir(path("groups/folder.json"), 0o755); err != nil { // a folder named like a group is not read
		t.Fatal(err)
	}
	if err := os.Remove(path("groups/installed.json")); err != nil {
		t.Fatal(err)
	}
	objs = mustLoad(t, d)
	if c := claims(objs); len(c) != 0 {
		t.Errorf("claims after removing the broken file: %v, want none", c)
	}
}

// TestDataDirTemplateByReference checks that a template a profile names is
// read even when the walk skips its name (hidden, in a hidden folder, a
// backup name), as poseidon/matchbox reads templates by name, and that it
// is dropped once no profile names it.
func TestDataDirTemplateByReference(t *testing.T) {
	dir := t.TempDir()
	path := func(rel string) string { return filepath.Join(dir, filepath.FromSlash(rel)) }
	writeFile(t, path("profiles/p.json"), []byte(`{"id": "p", "ignition_id": ".hidden.yaml", "cloud_id": ".private/c.yaml", "generic_id": "g.tmpl~"}`))
	writeFile(t, path("ignition/.hidden.yaml"), []byte("variant: flatcar\nversion: 1.0.0\n"))
	writeFile(t, path("ignition/.other.yaml"), []byte("not named by any profile"))
	writeFile(t, path("cloud/.private/c.yaml"), []byte("#cloud-config\n"))
	writeFile(t, path("generic/g.tmpl~"), []byte("generic"))
	d := storage.NewDataDir(dir, nil)
	objs := mustLoad(t, d)
	if diff := cmp.Diff([]string{"cloud/.private/c.yaml", "generic/g.tmpl~", "ignition/.hidden.yaml"}, templateNames(objs)); diff != "" {
		t.Fatalf("templates (-want +got):\n%s", diff)
	}
	snap := matchbox.NewSnapshot(objs)
	for _, p := range snap.Problems() {
		t.Errorf("problem: %s", p)
	}
	// The next load rereads nothing and keeps them.
	if again := mustLoad(t, d); len(again.Templates) != 3 {
		t.Errorf("second load: %d templates, want 3", len(again.Templates))
	}
	writeFile(t, path("profiles/p.json"), []byte(`{"id": "p", "ignition_id": ".hidden.yaml"}`))
	objs = mustLoad(t, d)
	if diff := cmp.Diff([]string{"ignition/.hidden.yaml"}, templateNames(objs)); diff != "" {
		t.Errorf("templates after the profile changed (-want +got):\n%s", diff)
	}
	// A name that leaves the folder is never read.
	writeFile(t, path("secret"), []byte("outside"))
	writeFile(t, path("profiles/p.json"), []byte(`{"id": "p", "ignition_id": "../secret"}`))
	objs = mustLoad(t, d)
	if n := len(objs.Templates); n != 0 {
		t.Errorf("%d templates for a name leaving the folder, want 0", n)
	}
}

// TestTemplateThatDoesNotLoadIsNotMissing: a profile naming a template
// whose file exists but does not load is told so, never that the file
// does not exist.
func TestTemplateThatDoesNotLoadIsNotMissing(t *testing.T) {
	dir := t.TempDir()
	path := func(rel string) string { return filepath.Join(dir, filepath.FromSlash(rel)) }
	writeFile(t, path("profiles/p.json"), []byte(`{"id": "p", "ignition_id": "pipe.yaml", "cloud_id": "../../etc/passwd", "generic_id": "gone.tmpl"}`))
	if err := os.MkdirAll(path("ignition"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path("ignition/pipe.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	objs := mustLoad(t, storage.NewDataDir(dir, nil))
	var msgs []string
	for _, p := range matchbox.NewSnapshot(objs).Problems() {
		msgs = append(msgs, p.Message)
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{
		`ignition template "pipe.yaml", whose file does not load`,
		"not a regular file",
		`cloud template name "../../etc/passwd" leaves the cloud/ folder`,
		`generic template "gone.tmpl", which does not exist`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, `"pipe.yaml", which does not exist`) {
		t.Errorf("a template whose file exists is called missing:\n%s", all)
	}
}
