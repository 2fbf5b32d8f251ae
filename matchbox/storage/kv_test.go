package storage

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
)

// Both kv backends behave as bbolt does for everything the store asks of
// them; the memory one is checked against the bbolt one.
func TestKV(t *testing.T) {
	backends := map[string]func(t *testing.T) kvStore{
		"bolt": func(t *testing.T) kvStore {
			db, err := bolt.Open(filepath.Join(t.TempDir(), "kv.db"), 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := migrate(db); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return &boltKV{db: db}
		},
		"memory": func(t *testing.T) kvStore {
			kv := &memKV{b: NewMemoryBackend()}
			t.Cleanup(func() { kv.Close() })
			return kv
		},
	}
	for name, open := range backends {
		t.Run(name, func(t *testing.T) { runKV(t, open) })
	}
}

// kvDump returns a bucket's pairs in the order ForEach gives them.
func kvDump(t *testing.T, kv kvStore, bucket []byte) []string {
	t.Helper()
	var out []string
	if err := kv.View(func(tx kvTx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			out = append(out, string(k)+"="+string(v))
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func runKV(t *testing.T, open func(t *testing.T) kvStore) {
	put := func(t *testing.T, kv kvStore, pairs ...string) {
		t.Helper()
		if err := kv.Update(func(tx kvTx) error {
			for i := 0; i < len(pairs); i += 2 {
				if err := tx.Bucket(bucketGroups).Put([]byte(pairs[i]), []byte(pairs[i+1])); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("Order", func(t *testing.T) {
		kv := open(t)
		put(t, kv, "b", "2", "a", "1", "c", "", "ab", "x")
		want := []string{"a=1", "ab=x", "b=2", "c="}
		if diff := cmp.Diff(want, kvDump(t, kv, bucketGroups)); diff != "" {
			t.Errorf("ForEach (-want +got):\n%s", diff)
		}
		if err := kv.View(func(tx kvTx) error {
			bk := tx.Bucket(bucketGroups)
			if v := bk.Get([]byte("c")); v == nil || len(v) != 0 {
				t.Errorf("Get of an empty value = %#v, want empty, not nil", v)
			}
			if v := bk.Get([]byte("zz")); v != nil {
				t.Errorf("Get of a missing key = %q, want nil", v)
			}
			c := bk.Cursor()
			var walk []string
			for k, v := c.First(); k != nil; k, v = c.Next() {
				walk = append(walk, string(k)+"="+string(v))
			}
			if diff := cmp.Diff(want, walk); diff != "" {
				t.Errorf("cursor walk (-want +got):\n%s", diff)
			}
			for _, s := range [][2]string{{"", "a"}, {"a", "a"}, {"aa", "ab"}, {"b", "b"}, {"bb", "c"}, {"d", ""}} {
				if k, _ := c.Seek([]byte(s[0])); string(k) != s[1] {
					t.Errorf("Seek(%q) at %q, want %q", s[0], k, s[1])
				}
			}
			if k, _ := c.Next(); k != nil {
				t.Errorf("Next past the end: %q", k)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})

	// A failed write transaction leaves nothing, whatever it wrote
	// before failing.
	t.Run("Rollback", func(t *testing.T) {
		kv := open(t)
		put(t, kv, "a", "1", "b", "2", "c", "3")
		failed := errors.New("failed")
		err := kv.Update(func(tx kvTx) error {
			bk := tx.Bucket(bucketGroups)
			for _, op := range []func() error{
				func() error { return bk.Put([]byte("a"), []byte("changed")) },
				func() error { return bk.Put([]byte("new"), []byte("x")) },
				func() error { return bk.Delete([]byte("b")) },
				func() error { return bk.Put([]byte("b"), []byte("again")) },
				func() error { return bk.Delete([]byte("new")) },
				func() error { return bk.Put([]byte("new2"), []byte("y")) },
				func() error { c := bk.Cursor(); c.Seek([]byte("c")); return c.Delete() },
				func() error { return tx.Bucket(bucketLeases).Put([]byte("l"), []byte("x")) },
			} {
				if err := op(); err != nil {
					return err
				}
			}
			return failed
		})
		if !errors.Is(err, failed) {
			t.Fatalf("Update = %v", err)
		}
		if diff := cmp.Diff([]string{"a=1", "b=2", "c=3"}, kvDump(t, kv, bucketGroups)); diff != "" {
			t.Errorf("after a failed Update (-want +got):\n%s", diff)
		}
		if got := kvDump(t, kv, bucketLeases); len(got) != 0 {
			t.Errorf("another bucket after a failed Update: %v", got)
		}
		func() {
			defer func() { recover() }()
			kv.Update(func(tx kvTx) error {
				tx.Bucket(bucketGroups).Put([]byte("a"), []byte("panicked"))
				panic("write failed")
			})
		}()
		if diff := cmp.Diff([]string{"a=1", "b=2", "c=3"}, kvDump(t, kv, bucketGroups)); diff != "" {
			t.Errorf("after a panicking Update (-want +got):\n%s", diff)
		}
	})

	// Deleting at a cursor, as DeleteMachine walks a history, removes
	// exactly the keys walked over.
	t.Run("CursorDelete", func(t *testing.T) {
		kv := open(t)
		var pairs []string
		for i := range 50 {
			pairs = append(pairs, fmt.Sprintf("m%02d", i), "v")
		}
		put(t, kv, pairs...)
		if err := kv.Update(func(tx kvTx) error {
			c := tx.Bucket(bucketGroups).Cursor()
			for k, _ := c.Seek([]byte("m1")); k != nil && k[1] == '1'; k, _ = c.Seek([]byte("m1")) {
				if err := c.Delete(); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if got := kvDump(t, kv, bucketGroups); len(got) != 40 || got[9] != "m09=v" || got[10] != "m20=v" {
			t.Errorf("after deleting m1*: %d keys, %v", len(got), got)
		}
	})

	t.Run("Batch", func(t *testing.T) {
		kv := open(t)
		if err := kv.Batch(func(tx kvTx) error { return tx.Bucket(bucketGroups).Put([]byte("k"), []byte("v")) }); err != nil {
			t.Fatal(err)
		}
		if got := kvDump(t, kv, bucketGroups); len(got) != 1 {
			t.Errorf("after Batch: %v", got)
		}
	})

	t.Run("ReadOnly", func(t *testing.T) {
		kv := open(t)
		if err := kv.View(func(tx kvTx) error { return tx.Bucket(bucketGroups).Put([]byte("k"), []byte("v")) }); err == nil {
			t.Error("Put in a View succeeded")
		}
	})

	t.Run("Closed", func(t *testing.T) {
		kv := open(t)
		if err := kv.Close(); err != nil {
			t.Fatal(err)
		}
		if err := kv.View(func(kvTx) error { return nil }); err == nil {
			t.Error("View of a closed store succeeded")
		}
		if err := kv.Update(func(kvTx) error { return nil }); err == nil {
			t.Error("Update of a closed store succeeded")
		}
	})
}

// The memory backend hands out nothing that aliases what it holds, and
// keeps nothing of what it is handed.
func TestMemoryCopies(t *testing.T) {
	kv := &memKV{b: NewMemoryBackend()}
	key, value := []byte("k"), []byte("value")
	if err := kv.Update(func(tx kvTx) error { return tx.Bucket(bucketGroups).Put(key, value) }); err != nil {
		t.Fatal(err)
	}
	key[0], value[0] = 'X', 'X'
	var got []byte
	kv.View(func(tx kvTx) error {
		got = tx.Bucket(bucketGroups).Get([]byte("k"))
		k, v := tx.Bucket(bucketGroups).Cursor().First()
		k[0], v[1] = 'Y', 'Y'
		return nil
	})
	got[0] = 'Z'
	if diff := cmp.Diff([]string{"k=value"}, kvDump(t, kv, bucketGroups)); diff != "" {
		t.Errorf("stored pairs after changing slices given and read (-want +got):\n%s", diff)
	}
}
