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
	load := func(t *testing.T, dir string) storagetest.Source {
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
	storagetest.RunSource(t, storagetest.SourceHarness{
		Open: func(t *testing.T, seed matchbox.Objects) storagetest.Source {
			dir := t.TempDir()
			writeDataDir(t, dir, seed)
			mu.Lock()
			dirs[t] = dir
			mu.Unlock()
			return load(t, dir)
		},
		Reopen: func(t *testing.T) storagetest.Source {
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
		db   *storage.DB
	}
	var mu sync.Mutex
	stores := make(map[*testing.T]*opened)
	last := func(t *testing.T) *opened {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		o, ok := stores[t]
		if !ok {
			t.Fatal("no store opened for this test")
		}
		return o
	}
	storagetest.Run(t, storagetest.Harness{
		Open: func(t *testing.T) storage.Store {
			path := filepath.Join(t.TempDir(), "matchbox.db")
			db := openBolt(t, path)
			mu.Lock()
			stores[t] = &opened{path, db}
			mu.Unlock()
			return db
		},
		Reopen: func(t *testing.T) storage.Store {
			o := last(t)
			// Release the lock so that the new handle can take it; the
			// cleanup's second Close is a no-op.
			if err := o.db.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			o.db = openBolt(t, o.path)
			return o.db
		},
		Raw: func(t *testing.T) []byte {
			data, err := os.ReadFile(last(t).path)
			if err != nil {
				t.Fatal(err)
			}
			return data
		},
	})
}

func TestMemoryConformance(t *testing.T) {
	var mu sync.Mutex
	backends := make(map[*testing.T]*storage.MemoryBackend)
	stores := make(map[*testing.T]*storage.DB)
	open := func(t *testing.T, b *storage.MemoryBackend) *storage.DB {
		db := storage.OpenMemory(b)
		t.Cleanup(func() {
			if err := db.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return db
	}
	backend := func(t *testing.T) *storage.MemoryBackend {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		b, ok := backends[t]
		if !ok {
			t.Fatal("no store opened for this test")
		}
		return b
	}
	storagetest.Run(t, storagetest.Harness{
		Open: func(t *testing.T) storage.Store {
			b := storage.NewMemoryBackend()
			db := open(t, b)
			mu.Lock()
			backends[t], stores[t] = b, db
			mu.Unlock()
			return db
		},
		// A restart is a new store over the same backend.
		Reopen: func(t *testing.T) storage.Store {
			b := backend(t)
			mu.Lock()
			old := stores[t]
			mu.Unlock()
			if err := old.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			db := open(t, b)
			mu.Lock()
			stores[t] = db
			mu.Unlock()
			return db
		},
		Replica: func(t *testing.T) storage.Store { return open(t, backend(t)) },
		Raw:     func(t *testing.T) []byte { return storage.MemoryBytes(backend(t)) },
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
