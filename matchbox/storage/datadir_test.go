package storage_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
	"matchbox.dev/matchbox/storage/storagetest"
)

// TestDataDirMatchboxExample loads a data dir laid out and written the way
// poseidon/matchbox users write theirs.
func TestDataDirMatchboxExample(t *testing.T) {
	root := filepath.Join("testdata", "matchbox")
	objs, err := storage.NewDataDir(root, nil).Load(t.Context())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := matchbox.Objects{
		Groups: []*matchbox.Group{
			{ID: "default", Name: "Live Flatcar Linux for every other machine", Profile: "flatcar-install",
				Origin: filepath.Join(root, "groups", "default.json")},
			{ID: "install", Name: "Install Flatcar Linux to disk", Profile: "flatcar-install",
				Selector: map[string]string{"uuid": "16e7d8a7-bfa9-428b-9117-363341bb330b"},
				Origin:   filepath.Join(root, "groups", "install.json")},
			{ID: "node1", Name: "etcd Node 1", Profile: "etcd-install",
				Selector: map[string]string{"mac": "52:54:00:a1:9c:ae", "os": "installed"},
				Metadata: map[string]any{
					"domain_name":          "node1.example.com",
					"etcd_name":            "node1",
					"etcd_initial_cluster": "node1=http://node1.example.com:2380,node2=http://node2.example.com:2380",
					"ssh_authorized_keys":  []any{"ssh-ed25519 AAAA...one", "ssh-ed25519 AAAA...two"},
					"networkd":             map[string]any{"name": "ens3", "mtu": float64(9000), "dhcp": false},
				},
				Origin: filepath.Join(root, "groups", "node1.json")},
		},
		Profiles: []*matchbox.Profile{
			{ID: "etcd-install", Name: "etcd member, installed", IgnitionID: "sub/etcd.ign", CloudID: "etcd.yaml.tmpl", GenericID: "etcd-env",
				Origin: filepath.Join(root, "profiles", "etcd-install.json")},
			{ID: "flatcar-install", Name: "Flatcar Linux install to disk",
				Boot: matchbox.Boot{
					Kernel: "/assets/flatcar/current/flatcar_production_pxe.vmlinuz",
					Initrd: []string{"/assets/flatcar/current/flatcar_production_pxe_image.cpio.gz"},
					Args: []string{
						"initrd=flatcar_production_pxe_image.cpio.gz",
						"flatcar.config.url=http://matchbox.example.com:8080/ignition?uuid=${uuid}&mac=${mac:hexhyp}",
						"flatcar.first_boot=yes",
						"console=tty0",
						"console=ttyS0",
					},
				},
				IgnitionID: "flatcar-install.yaml",
				Origin:     filepath.Join(root, "profiles", "flatcar-install.json")},
		},
		Templates: []*matchbox.Template{
			{Kind: matchbox.KindCloud, Name: "etcd.yaml.tmpl", Content: []byte("#cloud-config\nhostname: {{.domain_name}}\n"),
				Origin: filepath.Join(root, "cloud", "etcd.yaml.tmpl")},
			{Kind: matchbox.KindGeneric, Name: "etcd-env", Content: []byte("ETCD_NAME={{.etcd_name}}\n"),
				Origin: filepath.Join(root, "generic", "etcd-env")},
			{Kind: matchbox.KindIgnition, Name: "flatcar-install.yaml",
				Content: []byte("variant: flatcar\nversion: 1.0.0\nsystemd:\n  units:\n    - name: installer.service\n      enabled: true\n"),
				Origin:  filepath.Join(root, "ignition", "flatcar-install.yaml")},
			{Kind: matchbox.KindIgnition, Name: "sub/etcd.ign", Content: []byte(`{"ignition":{"version":"3.3.0"}}` + "\n"),
				Origin: filepath.Join(root, "ignition", "sub", "etcd.ign")},
		},
	}
	// Objects are returned in path order, so the order is part of the
	// contract here and no sorting option is used.
	if diff := cmp.Diff(want, objs, cmpopts.EquateEmpty(), storagetest.GroupOptions); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
	snap := matchbox.NewSnapshot(objs)
	if probs := snap.Problems(); len(probs) != 0 {
		t.Errorf("the example data dir has problems: %v", probs)
	}
}

// problem is an expected problem: the file (relative to the data dir), the
// severity and words the message must contain.
type problem struct {
	file     string
	severity matchbox.Severity
	contains []string
}

// checkProblems reports a difference between the problems found and want,
// matching each wanted problem to one found in the same file.
func checkProblems(t *testing.T, dir string, got []matchbox.Problem, want []problem) {
	t.Helper()
	type key struct {
		File     string
		Severity matchbox.Severity
	}
	var gotKeys, wantKeys []key
	for _, p := range got {
		rel, err := filepath.Rel(dir, p.Origin)
		if err != nil {
			rel = p.Origin
		}
		gotKeys = append(gotKeys, key{filepath.ToSlash(rel), p.Severity})
	}
	for _, w := range want {
		wantKeys = append(wantKeys, key{w.file, w.severity})
	}
	less := func(a, b key) bool { return a.File < b.File || (a.File == b.File && a.Severity < b.Severity) }
	if diff := cmp.Diff(wantKeys, gotKeys, cmpopts.SortSlices(less), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("problems (-want +got):\n%s\nall problems: %v", diff, got)
		return
	}
	for _, w := range want {
		origin := filepath.Join(dir, filepath.FromSlash(w.file))
		found := false
		for _, p := range got {
			if p.Origin != origin || p.Severity != w.severity {
				continue
			}
			if !slices.ContainsFunc(w.contains, func(s string) bool { return !strings.Contains(p.Message, s) }) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no %s problem for %s whose message contains %q; problems: %v", w.severity, w.file, w.contains, got)
		}
	}
}

func groupIDs(objs matchbox.Objects) []string {
	var ids []string
	for _, g := range objs.Groups {
		ids = append(ids, g.ID)
	}
	return ids
}

func profileIDs(objs matchbox.Objects) []string {
	var ids []string
	for _, p := range objs.Profiles {
		ids = append(ids, p.ID)
	}
	return ids
}

func templateNames(objs matchbox.Objects) []string {
	var names []string
	for _, tm := range objs.Templates {
		names = append(names, string(tm.Kind)+"/"+tm.Name)
	}
	return names
}

const (
	validGroup   = `{"id": "a", "profile": "p"}`
	validProfile = `{"id": "p", "boot": {"kernel": "/k"}}`
)

func TestDataDirLayout(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		groups    []string
		profiles  []string
		templates []string
		problems  []problem
	}{
		{
			name:  "empty data dir",
			files: map[string]string{},
		},
		{
			name: "only json read in groups",
			files: map[string]string{
				"groups/a.json":     validGroup,
				"groups/b.yaml":     `{"id": "b", "profile": "p"}`,
				"groups/README":     "notes",
				"groups/c.json.bak": `{"id": "c", "profile": "p"}`,
			},
			groups: []string{"a"},
			problems: []problem{
				{"groups/b.yaml", matchbox.SeverityWarning, []string{"only .json"}},
				{"groups/README", matchbox.SeverityWarning, []string{"only .json"}},
				{"groups/c.json.bak", matchbox.SeverityWarning, []string{"only .json"}},
			},
		},
		{
			name: "only json read in profiles",
			files: map[string]string{
				"profiles/p.json": validProfile,
				"profiles/q.yaml": `{"id": "q"}`,
			},
			profiles: []string{"p"},
			problems: []problem{{"profiles/q.yaml", matchbox.SeverityWarning, []string{"only .json"}}},
		},
		{
			name: "dot files and backups skipped silently",
			files: map[string]string{
				"groups/a.json":            validGroup,
				"groups/.#a.json":          `{"id": "lock", "profile": "p"}`,
				"groups/.a.json.swp":       "\x00binary swap",
				"groups/a.json~":           `{"id": "a", "profile": "old"}`,
				"profiles/p.json~":         `{"id": "p"}`,
				"profiles/.#q.json":        `{"id": "q"}`,
				"ignition/x.yaml~":         "old",
				"ignition/.x.yaml.swp":     "swap",
				"ignition/.git/config":     "[core]",
				"cloud/.hidden/c.yaml":     "hidden",
				"generic/.generic.tmp":     "tmp",
				"generic/visible.txt":      "visible",
				"ignition/sub/.y.yaml":     "hidden",
				"ignition/sub/y.yaml":      "visible",
				"ignition/sub/y.yaml.orig": "visible too",
			},
			groups:    []string{"a"},
			templates: []string{"generic/visible.txt", "ignition/sub/y.yaml", "ignition/sub/y.yaml.orig"},
		},
		{
			// poseidon/matchbox reads every NAME.json in groups/ and
			// profiles/, hidden or not.
			name: "hidden .json groups and profiles are read",
			files: map[string]string{
				"groups/.b.json":   `{"id": "b", "profile": "p"}`,
				"profiles/.q.json": `{"id": ".q"}`,
			},
			groups:   []string{"b"},
			profiles: []string{".q"},
		},
		{
			name: "group without an id takes the file name",
			files: map[string]string{
				"groups/node1.json": `{"profile": "p", "selector": {"mac": "52:54:00:a1:9c:ae"}}`,
			},
			groups: []string{"node1"},
		},
		{
			name: "two group files with one id are both read",
			files: map[string]string{
				"groups/a.json": `{"id": "node", "profile": "p", "selector": {"os": "installed"}}`,
				"groups/b.json": `{"id": "node", "profile": "p"}`,
			},
			groups: []string{"node", "node"},
		},
		{
			name: "folders inside groups and profiles not read",
			files: map[string]string{
				"groups/a.json":           validGroup,
				"groups/old/b.json":       `{"id": "b", "profile": "p"}`,
				"profiles/old/q.json":     `{"id": "q"}`,
				"profiles/p.json":         validProfile,
				"ignition/a/b/c/d.yaml":   "deep",
				"cloud/x/y.yaml":          "y",
				"generic/x/y/z.tmpl":      "z",
				"unrelated/groups/x.json": `{"id": "x", "profile": "p"}`,
				"README.md":               "top-level files are not read",
			},
			groups:    []string{"a"},
			profiles:  []string{"p"},
			templates: []string{"cloud/x/y.yaml", "generic/x/y/z.tmpl", "ignition/a/b/c/d.yaml"},
		},
		{
			name: "profile id taken from the file name",
			files: map[string]string{
				"profiles/install.json": `{"id": "other", "boot": {"kernel": "/k"}}`,
			},
			profiles: []string{"install"},
			problems: []problem{{"profiles/install.json", matchbox.SeverityWarning, []string{`"other"`, "file name", `"install"`}}},
		},
		{
			name: "group id not taken from the file name",
			files: map[string]string{
				"groups/node1.json": `{"id": "machine-1", "profile": "p"}`,
			},
			groups: []string{"machine-1"},
		},
		{
			name: "unknown keys are warnings and the object loads",
			files: map[string]string{
				"groups/a.json":   `{"id": "a", "profile": "p", "comment": "x", "requirements": {"os": "installed"}}`,
				"profiles/p.json": `{"id": "p", "cloud_config": "old.yaml"}`,
			},
			groups:   []string{"a"},
			profiles: []string{"p"},
			problems: []problem{
				{"groups/a.json", matchbox.SeverityWarning, []string{"unknown keys", "comment", "requirements"}},
				{"profiles/p.json", matchbox.SeverityWarning, []string{"unknown keys", "cloud_config"}},
			},
		},
		{
			name: "bad JSON reported with line and column",
			files: map[string]string{
				"groups/a.json":   validGroup,
				"groups/bad.json": "{\n  \"id\": \"bad\"\n  \"profile\": \"p\"\n}\n",
			},
			groups:   []string{"a"},
			problems: []problem{{"groups/bad.json", matchbox.SeverityError, []string{"line 3, column"}}},
		},
		{
			name: "wrong JSON type reported with line",
			files: map[string]string{
				"profiles/p.json": "{\n  \"id\": \"p\",\n  \"boot\": {\"initrd\": \"/one-string\"}\n}\n",
			},
			problems: []problem{{"profiles/p.json", matchbox.SeverityError, []string{"line 3, column", "initrd"}}},
		},
		{
			name: "invalid MAC selector reported naming the file",
			files: map[string]string{
				"groups/a.json":       validGroup,
				"groups/bad-mac.json": `{"id": "bad-mac", "profile": "p", "selector": {"mac": "52:54:00:zz:00:01"}}`,
			},
			groups:   []string{"a"},
			problems: []problem{{"groups/bad-mac.json", matchbox.SeverityError, []string{"52:54:00:zz:00:01", "not a MAC address"}}},
		},
		{
			// It loads, and claims its machines: the snapshot tells them
			// (and validate) that it has no profile.
			name: "group without profile",
			files: map[string]string{
				"groups/a.json": `{"id": "a"}`,
			},
			groups: []string{"a"},
		},
		{
			name: "profile without id",
			files: map[string]string{
				"profiles/p.json": `{"boot": {"kernel": "/k"}}`,
			},
			problems: []problem{{"profiles/p.json", matchbox.SeverityError, []string{"no id"}}},
		},
		{
			name: "empty group file",
			files: map[string]string{
				"groups/a.json": "",
			},
			problems: []problem{{"groups/a.json", matchbox.SeverityError, nil}},
		},
		{
			name: "MAC selectors normalised",
			files: map[string]string{
				"groups/a.json": `{"id": "a", "profile": "p", "selector": {"mac": "52-54-00-A1-9C-AE"}}`,
			},
			groups: []string{"a"},
		},
		{
			name: "templates in every kind folder",
			files: map[string]string{
				"ignition/a.ign":         `{}`,
				"ignition/b.yaml":        "variant: flatcar",
				"ignition/sub/c.yaml":    "variant: flatcar",
				"cloud/c.yaml":           "#cloud-config",
				"generic/g":              "generic",
				"generic/with space.txt": "spaces are fine",
			},
			templates: []string{"cloud/c.yaml", "generic/g", "generic/with space.txt", "ignition/a.ign", "ignition/b.yaml", "ignition/sub/c.yaml"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				writeFile(t, filepath.Join(dir, filepath.FromSlash(name)), []byte(content))
			}
			d := storage.NewDataDir(dir, nil)
			objs, err := d.Load(t.Context())
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if diff := cmp.Diff(tt.groups, groupIDs(objs), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("group ids (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.profiles, profileIDs(objs), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("profile ids (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.templates, templateNames(objs), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("templates (-want +got):\n%s", diff)
			}
			checkProblems(t, dir, objs.Problems, tt.problems)
			for _, g := range objs.Groups {
				if mac, ok := g.Selector["mac"]; ok {
					if norm, err := matchbox.NormalizeMAC(mac); err != nil || norm != mac {
						t.Errorf("group %q: mac selector %q is not normalised", g.ID, mac)
					}
				}
				if want := filepath.Join(dir, "groups"); filepath.Dir(g.Origin) != want {
					t.Errorf("group %q: Origin %q is not a file in %s", g.ID, g.Origin, want)
				}
			}
		})
	}
}

func TestDataDirMissing(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) string
		check func(t *testing.T, err error)
	}{
		{
			name:  "no such directory",
			setup: func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing") },
			check: func(t *testing.T, err error) {
				if !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("error = %v, want one wrapping fs.ErrNotExist", err)
				}
			},
		},
		{
			name: "a file, not a directory",
			setup: func(t *testing.T) string {
				path := filepath.Join(t.TempDir(), "file")
				writeFile(t, path, []byte("x"))
				return path
			},
			check: func(t *testing.T, err error) {
				if err == nil || !strings.Contains(err.Error(), "not a directory") {
					t.Errorf("error = %v, want one saying it is not a directory", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := tt.setup(t)
			_, err := storage.NewDataDir(root, nil).Load(t.Context())
			tt.check(t, err)
			if err != nil && !strings.Contains(err.Error(), "data dir") {
				t.Errorf("error %q does not say it is about the data dir", err)
			}
		})
	}
}

func TestDataDirLoadCancelled(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "groups", "a.json"), []byte(validGroup))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := storage.NewDataDir(dir, nil).Load(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Load with a cancelled context: error = %v, want context.Canceled", err)
	}
}

// TestDataDirSymlinks covers data dirs mounted the way Kubernetes mounts a
// ConfigMap: every file is a symlink through "..data", which an update
// swaps atomically to a new hidden folder.
func TestDataDirSymlinks(t *testing.T) {
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, filepath.FromSlash(name)) }
	symlink := func(target, name string) {
		t.Helper()
		if err := os.Symlink(target, path(name)); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, path("groups/..v1/a.json"), []byte(`{"id": "a", "profile": "v1"}`))
	symlink("..v1", "groups/..data")
	symlink("..data/a.json", "groups/a.json")
	writeFile(t, path("elsewhere/file.json"), []byte(`{"id": "b", "profile": "p"}`))
	symlink("../elsewhere/file.json", "groups/b.json")
	symlink("../elsewhere", "groups/dir.json")
	symlink("missing.json", "groups/dangling.json")

	d := storage.NewDataDir(dir, nil)
	objs := mustLoad(t, d)
	if diff := cmp.Diff([]string{"a", "b"}, groupIDs(objs)); diff != "" {
		t.Errorf("group ids (-want +got):\n%s", diff)
	}
	checkProblems(t, dir, objs.Problems, []problem{
		{"groups/dir.json", matchbox.SeverityError, []string{"not a regular file"}},
		{"groups/dangling.json", matchbox.SeverityError, nil},
	})

	// The update: a new folder, then an atomic rename of the ..data link.
	writeFile(t, path("groups/..v2/a.json"), []byte(`{"id": "a", "profile": "v2"}`))
	symlink("..v2", "groups/..data_tmp")
	if err := os.Rename(path("groups/..data_tmp"), path("groups/..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(path("groups/..v1")); err != nil {
		t.Fatal(err)
	}
	objs = mustLoad(t, d)
	if g := findGroup(objs, "a"); g == nil || g.Profile != "v2" {
		t.Errorf("group a after the ..data swap = %+v, want profile v2", g)
	}
}

func TestDataDirOversizedFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "groups", "a.json"), []byte(validGroup))
	writeFile(t, filepath.Join(dir, "ignition", "big.ign"), nil)
	// A sparse file: larger than the limit without writing the bytes.
	if err := os.Truncate(filepath.Join(dir, "ignition", "big.ign"), 16<<20+1); err != nil {
		t.Fatal(err)
	}
	objs := mustLoad(t, storage.NewDataDir(dir, nil))
	if diff := cmp.Diff([]string{"a"}, groupIDs(objs)); diff != "" {
		t.Errorf("group ids (-want +got):\n%s", diff)
	}
	if len(objs.Templates) != 0 {
		t.Errorf("templates = %v, want the oversized one skipped", templateNames(objs))
	}
	checkProblems(t, dir, objs.Problems, []problem{{"ignition/big.ign", matchbox.SeverityError, []string{"larger than"}}})
}

func mustLoad(t *testing.T, d *storage.DataDir) matchbox.Objects {
	t.Helper()
	objs, err := d.Load(t.Context())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return objs
}

// packedData identifies the packed form a group was unpacked from (groups
// are handed out as fresh copies of the data dir's packed groups): the
// same pointer means the file was not reparsed. nil for a nil group.
func packedData(g *matchbox.Group) *byte {
	if g == nil {
		return nil
	}
	return unsafe.StringData(g.Packed())
}

func findGroup(objs matchbox.Objects, id string) *matchbox.Group {
	for _, g := range objs.Groups {
		if g.ID == id {
			return g
		}
	}
	return nil
}

func findProfile(objs matchbox.Objects, id string) *matchbox.Profile {
	for _, p := range objs.Profiles {
		if p.ID == id {
			return p
		}
	}
	return nil
}

func findTemplate(objs matchbox.Objects, kind matchbox.TemplateKind, name string) *matchbox.Template {
	for _, tm := range objs.Templates {
		if tm.Kind == kind && tm.Name == name {
			return tm
		}
	}
	return nil
}

func TestDataDirLastGood(t *testing.T) {
	const stillServing = "still serving the last version"
	type step struct {
		name   string
		write  map[string]string // files to write
		remove []string          // files to remove
		// want is each group's profile; groups not listed must be absent.
		want     map[string]string
		problems []problem
	}
	steps := []step{
		{
			name:  "valid groups",
			write: map[string]string{"groups/a.json": `{"id": "a", "profile": "p1"}`, "groups/b.json": `{"id": "b", "profile": "p1"}`},
			want:  map[string]string{"a": "p1", "b": "p1"},
		},
		{
			name:     "a overwritten with broken JSON",
			write:    map[string]string{"groups/a.json": `{"id": "a", "profile": "p2"`},
			want:     map[string]string{"a": "p1", "b": "p1"},
			problems: []problem{{"groups/a.json", matchbox.SeverityError, []string{stillServing}}},
		},
		{
			name:     "a overwritten with an invalid MAC",
			write:    map[string]string{"groups/a.json": `{"id": "a", "profile": "p2", "selector": {"mac": "zz"}}`},
			want:     map[string]string{"a": "p1", "b": "p1"},
			problems: []problem{{"groups/a.json", matchbox.SeverityError, []string{stillServing, "not a MAC address"}}},
		},
		{
			name:  "a fixed",
			write: map[string]string{"groups/a.json": `{"id": "a", "profile": "p2"}`},
			want:  map[string]string{"a": "p2", "b": "p1"},
		},
		{
			name:     "c broken from the start is skipped",
			write:    map[string]string{"groups/c.json": `{"id": "c", "profile": `},
			want:     map[string]string{"a": "p2", "b": "p1"},
			problems: []problem{{"groups/c.json", matchbox.SeverityError, []string{"bad JSON"}}},
		},
		{
			name:     "b emptied by a half-finished save",
			write:    map[string]string{"groups/b.json": ``},
			want:     map[string]string{"a": "p2", "b": "p1"},
			problems: []problem{{"groups/c.json", matchbox.SeverityError, nil}, {"groups/b.json", matchbox.SeverityError, []string{stillServing}}},
		},
		{
			name:     "a deleted disappears",
			remove:   []string{"groups/a.json"},
			want:     map[string]string{"b": "p1"},
			problems: []problem{{"groups/c.json", matchbox.SeverityError, nil}, {"groups/b.json", matchbox.SeverityError, []string{stillServing}}},
		},
		{
			name:   "broken files deleted take their problems with them",
			remove: []string{"groups/b.json", "groups/c.json"},
			want:   map[string]string{},
		},
		{
			name:  "a recreated is a new file, not the last good version",
			write: map[string]string{"groups/a.json": `{"id": "a", "profile": "p3"}`},
			want:  map[string]string{"a": "p3"},
		},
	}
	dir := t.TempDir()
	d := storage.NewDataDir(dir, nil)
	for _, s := range steps {
		// Each step depends on the ones before it: stop at the first failure.
		ok := t.Run(s.name, func(t *testing.T) {
			for name, content := range s.write {
				writeFile(t, filepath.Join(dir, filepath.FromSlash(name)), []byte(content))
			}
			for _, name := range s.remove {
				if err := os.Remove(filepath.Join(dir, filepath.FromSlash(name))); err != nil {
					t.Fatal(err)
				}
			}
			objs := mustLoad(t, d)
			got := make(map[string]string)
			for _, g := range objs.Groups {
				got[g.ID] = g.Profile
			}
			if diff := cmp.Diff(s.want, got); diff != "" {
				t.Errorf("groups → profile (-want +got):\n%s", diff)
			}
			checkProblems(t, dir, objs.Problems, s.problems)
			// The read-only accessors see the same state.
			for id, profile := range s.want {
				g, err := d.GetGroup(t.Context(), id)
				if err != nil || g.Profile != profile {
					t.Errorf("GetGroup(%q) = %v, %v; want profile %q", id, g, err, profile)
				}
			}
		})
		if !ok {
			break
		}
	}
}

func TestDataDirLastGoodProfileAndTemplate(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "profiles", "p.json"), []byte(`{"id": "p", "boot": {"kernel": "/v1"}}`))
	writeFile(t, filepath.Join(dir, "ignition", "x.yaml"), []byte("v1"))
	d := storage.NewDataDir(dir, nil)
	mustLoad(t, d)

	writeFile(t, filepath.Join(dir, "profiles", "p.json"), []byte(`{"id": "p", "boot": {"kernel": 5}}`))
	writeFile(t, filepath.Join(dir, "ignition", "x.yaml"), []byte("v2, any bytes are a valid template"))
	objs := mustLoad(t, d)
	p := findProfile(objs, "p")
	if p == nil || p.Boot.Kernel != "/v1" {
		t.Errorf("profile after a broken edit = %+v, want the last good version with kernel /v1", p)
	}
	checkProblems(t, dir, objs.Problems, []problem{{"profiles/p.json", matchbox.SeverityError, []string{"still serving the last version", "kernel"}}})
	if tm := findTemplate(objs, matchbox.KindIgnition, "x.yaml"); tm == nil || string(tm.Content) != "v2, any bytes are a valid template" {
		t.Errorf("template after an edit = %+v, want the new content", tm)
	}
}

// TestDataDirIncrementalReload checks that Load rereads only files that
// changed: unchanged files keep their object, so per-object caches (parsed
// templates, rendered configs) survive a reload.
func TestDataDirIncrementalReload(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"groups/a.json":      validGroup,
		"groups/b.json":      `{"id": "b", "profile": "p"}`,
		"profiles/p.json":    validProfile,
		"ignition/x.yaml":    "x",
		"ignition/sub/y.ign": "{}",
	}
	for name, content := range files {
		writeFile(t, filepath.Join(dir, filepath.FromSlash(name)), []byte(content))
	}
	d := storage.NewDataDir(dir, nil)
	first := mustLoad(t, d)

	writeFile(t, filepath.Join(dir, "groups", "b.json"), []byte(`{"id": "b", "profile": "changed"}`))
	writeFile(t, filepath.Join(dir, "ignition", "x.yaml"), []byte("x changed"))
	second := mustLoad(t, d)

	tests := []struct {
		name        string
		before, now any
		same        bool
	}{
		{"unchanged group", packedData(findGroup(first, "a")), packedData(findGroup(second, "a")), true},
		{"unchanged profile", findProfile(first, "p"), findProfile(second, "p"), true},
		{"unchanged template in a subfolder", findTemplate(first, matchbox.KindIgnition, "sub/y.ign"), findTemplate(second, matchbox.KindIgnition, "sub/y.ign"), true},
		{"changed group", packedData(findGroup(first, "b")), packedData(findGroup(second, "b")), false},
		{"changed template", findTemplate(first, matchbox.KindIgnition, "x.yaml"), findTemplate(second, matchbox.KindIgnition, "x.yaml"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before == nil || tt.now == nil {
				t.Fatalf("object missing: before %v, now %v", tt.before, tt.now)
			}
			if same := tt.before == tt.now; same != tt.same {
				t.Errorf("same object across Loads = %v, want %v", same, tt.same)
			}
		})
	}
	if g := findGroup(second, "b"); g == nil || g.Profile != "changed" {
		t.Errorf("changed group = %+v, want profile %q", g, "changed")
	}
	// A Load with nothing changed hands back every object as it was.
	third := mustLoad(t, d)
	if diff := cmp.Diff(second, third, cmp.Comparer(func(a, b *matchbox.Group) bool { return packedData(a) == packedData(b) }),
		cmp.Comparer(func(a, b *matchbox.Profile) bool { return a == b }),
		cmp.Comparer(func(a, b *matchbox.Template) bool { return a == b })); diff != "" {
		t.Errorf("Load without changes returned different objects (-before +after):\n%s", diff)
	}
}

// watchRecorder keeps the objects the last onChange delivered.
type watchRecorder struct {
	mu    sync.Mutex
	last  matchbox.Objects
	calls int
}

func (r *watchRecorder) onChange(objs matchbox.Objects) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last = objs
	r.calls++
}

// waitFor polls, for up to 5 s, until the last delivered objects satisfy
// cond. poke, when set, is called at the start and every 250 ms while
// waiting, for changes that may need repeating until the watcher is ready.
func (r *watchRecorder) waitFor(t *testing.T, what string, cond func(matchbox.Objects) bool, poke func()) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var nextPoke time.Time
	for {
		if poke != nil && !time.Now().Before(nextPoke) {
			poke()
			nextPoke = time.Now().Add(250 * time.Millisecond)
		}
		r.mu.Lock()
		last, calls := r.last, r.calls
		r.mu.Unlock()
		if calls > 0 && cond(last) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no onChange with %s within 5s (%d calls; last groups %v, templates %v, problems %v)",
				what, calls, groupIDs(last), templateNames(last), last.Problems)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDataDirWatch(t *testing.T) {
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, filepath.FromSlash(name)) }
	writeFile(t, path("groups/a.json"), []byte(`{"id": "a", "profile": "p"}`))
	writeFile(t, path("groups/b.json"), []byte(`{"id": "b", "profile": "p"}`))
	d := storage.NewDataDir(dir, nil)
	mustLoad(t, d)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	rec := &watchRecorder{}
	done := make(chan error, 1)
	go func() { done <- d.Watch(ctx, 50*time.Millisecond, rec.onChange) }()

	hasGroup := func(id, profile string) func(matchbox.Objects) bool {
		return func(objs matchbox.Objects) bool {
			g := findGroup(objs, id)
			return g != nil && g.Profile == profile
		}
	}
	hasTemplate := func(name, content string) func(matchbox.Objects) bool {
		return func(objs matchbox.Objects) bool {
			tm := findTemplate(objs, matchbox.KindIgnition, name)
			return tm != nil && string(tm.Content) == content
		}
	}

	// The watcher starts in the background: repeat the first change until
	// it is seen, then every later change must be seen the first time.
	version := 0
	rec.waitFor(t, "the first edit", hasGroup("a", "ready"), func() {
		version++
		writeFile(t, path("groups/a.json"), []byte(`{"id": "a", "profile": "ready", "metadata": {"v": `+strings.Repeat("1", version)+`}}`))
	})

	steps := []struct {
		name   string
		change func(t *testing.T)
		want   func(matchbox.Objects) bool
	}{
		{"edit a group", func(t *testing.T) {
			writeFile(t, path("groups/a.json"), []byte(`{"id": "a", "profile": "edited"}`))
		}, hasGroup("a", "edited")},
		{"create a group", func(t *testing.T) {
			writeFile(t, path("groups/c.json"), []byte(`{"id": "c", "profile": "new"}`))
		}, hasGroup("c", "new")},
		{"delete a group", func(t *testing.T) {
			if err := os.Remove(path("groups/b.json")); err != nil {
				t.Fatal(err)
			}
		}, func(objs matchbox.Objects) bool { return findGroup(objs, "b") == nil }},
		{"break a group", func(t *testing.T) {
			writeFile(t, path("groups/c.json"), []byte(`{"id": "c", "profile": "broken"`))
		}, func(objs matchbox.Objects) bool {
			return hasGroup("c", "new")(objs) && slices.ContainsFunc(objs.Problems, func(p matchbox.Problem) bool {
				return p.Origin == path("groups/c.json") && strings.Contains(p.Message, "still serving the last version")
			})
		}},
		{"rename a group file over another", func(t *testing.T) {
			writeFile(t, path("groups/.d.json.tmp"), []byte(`{"id": "c", "profile": "renamed"}`))
			if err := os.Rename(path("groups/.d.json.tmp"), path("groups/c.json")); err != nil {
				t.Fatal(err)
			}
		}, func(objs matchbox.Objects) bool { return hasGroup("c", "renamed")(objs) && len(objs.Problems) == 0 }},
		{"create a template folder with a subfolder", func(t *testing.T) {
			writeFile(t, path("ignition/sub/x.yaml"), []byte("v1"))
		}, hasTemplate("sub/x.yaml", "v1")},
		{"edit a file in the new subfolder", func(t *testing.T) {
			writeFile(t, path("ignition/sub/x.yaml"), []byte("version 2"))
		}, hasTemplate("sub/x.yaml", "version 2")},
		{"create a file in the new subfolder", func(t *testing.T) {
			writeFile(t, path("ignition/sub/y.yaml"), []byte("y"))
		}, hasTemplate("sub/y.yaml", "y")},
		{"create the profiles folder", func(t *testing.T) {
			writeFile(t, path("profiles/p.json"), []byte(`{"id": "p"}`))
		}, func(objs matchbox.Objects) bool { return findProfile(objs, "p") != nil }},
		{"create a file in the new profiles folder", func(t *testing.T) {
			writeFile(t, path("profiles/q.json"), []byte(`{"id": "q"}`))
		}, func(objs matchbox.Objects) bool { return findProfile(objs, "q") != nil }},
	}
	for _, s := range steps {
		ok := t.Run(s.name, func(t *testing.T) {
			s.change(t)
			rec.waitFor(t, s.name, s.want, nil)
		})
		if !ok {
			break
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch returned %v after cancel, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return within 5s of its context being cancelled")
	}
}
