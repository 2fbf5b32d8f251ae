package storage_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
	"matchbox.dev/matchbox/storage/storagetest"
)

func TestDataDirConformance(t *testing.T) {
	var mu sync.Mutex
	dirs := make(map[*testing.T]string)
	load := func(t *testing.T, dir string) storagetest.Reader {
		t.Helper()
		d := storage.NewDataDir(dir, nil)
		objs, err := d.Load(t.Context())
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		for _, p := range objs.Problems {
			t.Errorf("unexpected problem loading the seed: %s", p)
		}
		return d
	}
	storagetest.Run(t, storagetest.Harness{
		Open: func(t *testing.T, seed matchbox.Objects) storagetest.Reader {
			dir := t.TempDir()
			writeDataDir(t, dir, seed)
			mu.Lock()
			dirs[t] = dir
			mu.Unlock()
			return load(t, dir)
		},
		Reopen: func(t *testing.T) storagetest.Reader {
			mu.Lock()
			dir, ok := dirs[t]
			mu.Unlock()
			if !ok {
				t.Fatal("Reopen before Open")
			}
			return load(t, dir)
		},
	})
}

func TestBoltConformance(t *testing.T) {
	type opened struct {
		path string
		db   *storage.Bolt
	}
	var mu sync.Mutex
	stores := make(map[*testing.T]*opened)
	open := func(t *testing.T, path string) *storage.Bolt {
		t.Helper()
		db, err := storage.OpenBolt(path)
		if err != nil {
			t.Fatalf("OpenBolt: %v", err)
		}
		t.Cleanup(func() {
			if err := db.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return db
	}
	storagetest.Run(t, storagetest.Harness{
		Open: func(t *testing.T, seed matchbox.Objects) storagetest.Reader {
			path := filepath.Join(t.TempDir(), "matchbox.db")
			db := open(t, path)
			ctx := t.Context()
			for _, g := range seed.Groups {
				if err := db.PutGroup(ctx, g); err != nil {
					t.Fatalf("seed PutGroup(%s): %v", g.ID, err)
				}
			}
			for _, p := range seed.Profiles {
				if err := db.PutProfile(ctx, p); err != nil {
					t.Fatalf("seed PutProfile(%s): %v", p.ID, err)
				}
			}
			for _, tm := range seed.Templates {
				if err := db.PutTemplate(ctx, tm); err != nil {
					t.Fatalf("seed PutTemplate(%s, %s): %v", tm.Kind, tm.Name, err)
				}
			}
			mu.Lock()
			stores[t] = &opened{path, db}
			mu.Unlock()
			return db
		},
		Reopen: func(t *testing.T) storagetest.Reader {
			mu.Lock()
			defer mu.Unlock()
			o, ok := stores[t]
			if !ok {
				t.Fatal("Reopen before Open")
			}
			// Release the lock so that the new handle can take it; the
			// cleanup's second Close is a no-op.
			if err := o.db.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			o.db = open(t, o.path)
			return o.db
		},
	})
}

// writeDataDir writes objs into dir in poseidon/matchbox's layout:
// groups/<id>.json, profiles/<id>.json and <kind>/<name> template files.
func writeDataDir(t *testing.T, dir string, objs matchbox.Objects) {
	t.Helper()
	for _, g := range objs.Groups {
		writeJSON(t, filepath.Join(dir, "groups", g.ID+".json"), g)
	}
	for _, p := range objs.Profiles {
		writeJSON(t, filepath.Join(dir, "profiles", p.ID+".json"), p)
	}
	for _, tm := range objs.Templates {
		writeFile(t, filepath.Join(dir, string(tm.Kind), filepath.FromSlash(tm.Name)), tm.Content)
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, data)
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
