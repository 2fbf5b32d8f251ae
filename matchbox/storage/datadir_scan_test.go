package storage

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestDataDirReloadsOnlyWhatChanged checks that a reload for changed paths
// looks at those files only, and that the server's own files beside the
// data dir's folders are not looked at at all.
func TestDataDirReloadsOnlyWhatChanged(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, content string) string {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const n = 500
	for i := range n {
		write(fmt.Sprintf("groups/g%03d.json", i), fmt.Sprintf(`{"id": "g%03d", "profile": "p"}`, i))
	}
	write("ignition/sub/t.yaml", "t")
	d := NewDataDir(dir, nil)
	if _, _, err := d.load(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	if got := d.examined.Load(); got != n+1 {
		t.Fatalf("first load examined %d files, want %d", got, n+1)
	}

	tests := []struct {
		name    string
		paths   []string
		files   int64 // files examined
		changed bool
		groups  int
	}{
		{"the server's database beside the folders", []string{write("matchbox.db", "db"), write("admin.token", "t")}, 0, false, n},
		{"one edited group", []string{write("groups/g007.json", `{"id": "g007", "profile": "q"}`)}, 1, true, n},
		{"a new group", []string{write("groups/new.json", `{"id": "new", "profile": "p"}`)}, 1, true, n + 1},
		{"a removed group", []string{rm(t, dir, "groups/g001.json")}, 0, true, n},
		{"a removed template folder", []string{rm(t, dir, "ignition/sub")}, 0, true, n},
		{"a file in a folder matchbox does not read", []string{write("groups/old/x.json", `{"id": "x", "profile": "p"}`)}, 0, false, n},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := d.examined.Load()
			objs, changed, err := d.load(t.Context(), tt.paths)
			if err != nil {
				t.Fatal(err)
			}
			if got := d.examined.Load() - before; got != tt.files {
				t.Errorf("examined %d files, want %d", got, tt.files)
			}
			if changed != tt.changed {
				t.Errorf("changed = %v, want %v", changed, tt.changed)
			}
			if len(objs.Groups) != tt.groups {
				t.Errorf("%d groups, want %d", len(objs.Groups), tt.groups)
			}
		})
	}
	// A full scan afterwards agrees with the incremental ones.
	objs, changed, err := d.load(t.Context(), nil)
	if err != nil || changed || len(objs.Groups) != n || len(objs.Templates) != 0 {
		t.Errorf("full rescan: %d groups, %d templates, changed %v, %v; want %d, 0, false", len(objs.Groups), len(objs.Templates), changed, err, n)
	}
}

func rm(t *testing.T, dir, rel string) string {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.RemoveAll(p); err != nil {
		t.Fatal(err)
	}
	return p
}
