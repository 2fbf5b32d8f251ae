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

// backendStorage is the storage of one test's store: how to open a store
// over it and how to read it raw.
type backendStorage struct {
	open func(t *testing.T) *storage.DB
	raw  func(t *testing.T) []byte
	db   *storage.DB // the store last opened
}

// harness is the conformance harness of a backend whose new storage
// create makes; shared: stores may be opened over it at once.
func harness(create func(t *testing.T) *backendStorage, shared bool) storagetest.Harness {
	var last perTest[*backendStorage]
	h := storagetest.Harness{
		Open: func(t *testing.T) storage.Store {
			b := create(t)
			b.db = b.open(t)
			last.set(t, b)
			return b.db
		},
		Reopen: func(t *testing.T) storage.Store {
			b := last.get(t)
			// The cleanup's second Close is a no-op.
			if err := b.db.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			b.db = b.open(t)
			return b.db
		},
		Raw: func(t *testing.T) []byte { return last.get(t).raw(t) },
	}
	if shared {
		h.Replica = func(t *testing.T) storage.Store { return last.get(t).open(t) }
	}
	return h
}

// The bbolt store: a file that a restart closes and opens again (its lock
// keeps a second store from opening it at once).
func TestBoltConformance(t *testing.T) {
	storagetest.Run(t, harness(func(t *testing.T) *backendStorage {
		path := filepath.Join(t.TempDir(), "matchbox.db")
		return &backendStorage{
			open: func(t *testing.T) *storage.DB { return openBolt(t, path) },
			raw: func(t *testing.T) []byte {
				data, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				return data
			},
		}
	}, false))
}

// The memory store: a restart is a new store over the same backend, and
// replicas are stores over it at once.
func TestMemoryConformance(t *testing.T) {
	storagetest.Run(t, harness(func(t *testing.T) *backendStorage {
		b := storage.NewMemoryBackend()
		return &backendStorage{
			open: func(t *testing.T) *storage.DB {
				db := storage.OpenMemory(b)
				t.Cleanup(func() {
					if err := db.Close(); err != nil {
						t.Errorf("Close: %v", err)
					}
				})
				return db
			},
			raw: func(*testing.T) []byte { return storage.MemoryBytes(b) },
		}
	}, true))
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
