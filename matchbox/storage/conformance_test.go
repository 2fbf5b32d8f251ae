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

// perTest remembers what a harness opened for each test.
type perTest[T any] struct {
	mu sync.Mutex
	m  map[*testing.T]T
}

func (p *perTest[T]) set(t *testing.T, v T) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[*testing.T]T)
	}
	p.m[t] = v
}

func (p *perTest[T]) get(t *testing.T) T {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.m[t]
	if !ok {
		t.Fatal("nothing opened for this test")
	}
	return v
}

func TestDataDirConformance(t *testing.T) {
	var dirs perTest[string]
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
			dirs.set(t, dir)
			return load(t, dir)
		},
		Reopen: func(t *testing.T) storagetest.Source { return load(t, dirs.get(t)) },
	})
}

func TestBoltConformance(t *testing.T) {
	type opened struct {
		path string
		db   *storage.DB
	}
	var last perTest[*opened]
	storagetest.Run(t, storagetest.Harness{
		Open: func(t *testing.T) storage.Store {
			path := filepath.Join(t.TempDir(), "matchbox.db")
			db := openBolt(t, path)
			last.set(t, &opened{path, db})
			return db
		},
		Reopen: func(t *testing.T) storage.Store {
			o := last.get(t)
			// Release the lock so that the new handle can take it; the
			// cleanup's second Close is a no-op.
			if err := o.db.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			o.db = openBolt(t, o.path)
			return o.db
		},
		Raw: func(t *testing.T) []byte {
			data, err := os.ReadFile(last.get(t).path)
			if err != nil {
				t.Fatal(err)
			}
			return data
		},
	})
}

func TestMemoryConformance(t *testing.T) {
	type opened struct {
		backend *storage.MemoryBackend
		db      *storage.DB
	}
	var last perTest[*opened]
	open := func(t *testing.T, b *storage.MemoryBackend) *storage.DB {
		db := storage.OpenMemory(b)
		t.Cleanup(func() {
			if err := db.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return db
	}
	storagetest.Run(t, storagetest.Harness{
		Open: func(t *testing.T) storage.Store {
			o := &opened{backend: storage.NewMemoryBackend()}
			o.db = open(t, o.backend)
			last.set(t, o)
			return o.db
		},
		// A restart is a new store over the same backend.
		Reopen: func(t *testing.T) storage.Store {
			o := last.get(t)
			if err := o.db.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			o.db = open(t, o.backend)
			return o.db
		},
		Replica: func(t *testing.T) storage.Store { return open(t, last.get(t).backend) },
		Raw:     func(t *testing.T) []byte { return storage.MemoryBytes(last.get(t).backend) },
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
