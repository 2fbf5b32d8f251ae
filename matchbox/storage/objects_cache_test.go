package storage_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// Objects keeps what it decoded: every change to a stored object, even one
// that keeps its length, is seen by the next call, a deleted object is
// gone from it, and an unchanged one is handed out again.
func TestObjectsFollowChangedValues(t *testing.T) {
	for _, tt := range []struct {
		name string
		// open returns the store Objects is called on and the one that
		// writes (another store over the same backend where there can
		// be one).
		open func(t *testing.T) (reader, writer *storage.DB)
	}{
		{"memory", func(t *testing.T) (*storage.DB, *storage.DB) {
			b := storage.NewMemoryBackend()
			return storage.OpenMemory(b), storage.OpenMemory(b)
		}},
		{"bolt", func(t *testing.T) (*storage.DB, *storage.DB) {
			db := openBolt(t, filepath.Join(t.TempDir(), "m.db"))
			return db, db
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reader, writer := tt.open(t)
			ctx := t.Context()
			put := func(o any) {
				t.Helper()
				var err error
				switch o := o.(type) {
				case *matchbox.Group:
					_, err = writer.PutGroupIf(ctx, o, matchbox.Condition{})
				case *matchbox.Profile:
					_, err = writer.PutProfileIf(ctx, o, matchbox.Condition{})
				case *matchbox.Template:
					_, err = writer.PutTemplateIf(ctx, o, matchbox.Condition{})
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			put(&matchbox.Group{ID: "a", Profile: "p1", Selector: map[string]string{"os": "x"}, Metadata: map[string]any{"n": "1"}})
			put(&matchbox.Group{ID: "b", Profile: "p1"})
			put(&matchbox.Group{ID: "c", Profile: "p1", Selector: map[string]string{"os": "y"}})
			put(&matchbox.Profile{ID: "p1", Name: "one"})
			put(&matchbox.Profile{ID: "p2", Name: "two"})
			put(&matchbox.Template{Kind: matchbox.KindGeneric, Name: "t1", Content: []byte("abc")})
			put(&matchbox.Template{Kind: matchbox.KindGeneric, Name: "t2", Content: []byte("xyz")})
			before := dbObjects(t, reader)
			if got := describe(before); got != "a p1 os=x 1; b p1  ; c p1 os=y ; p1 one; p2 two; t1 abc; t2 xyz" {
				t.Fatalf("Objects = %s", got)
			}

			// Changes that keep each value's length, and deletions.
			put(&matchbox.Group{ID: "a", Profile: "p2", Selector: map[string]string{"os": "z"}, Metadata: map[string]any{"n": "2"}})
			if err := writer.DeleteGroupIf(ctx, "b", matchbox.Condition{}); err != nil {
				t.Fatal(err)
			}
			put(&matchbox.Profile{ID: "p1", Name: "uno"})
			if err := writer.DeleteProfileIf(ctx, "p2", matchbox.Condition{}); err != nil {
				t.Fatal(err)
			}
			put(&matchbox.Template{Kind: matchbox.KindGeneric, Name: "t1", Content: []byte("abd")})
			if err := writer.DeleteTemplateIf(ctx, matchbox.KindGeneric, "t2", matchbox.Condition{}); err != nil {
				t.Fatal(err)
			}
			after := dbObjects(t, reader)
			if got := describe(after); got != "a p2 os=z 2; c p1 os=y ; p1 uno; t1 abd" {
				t.Errorf("Objects after the changes = %s", got)
			}
			if after.Groups[1] != before.Groups[2] {
				t.Error("the unchanged group was decoded again")
			}
			// What was handed out before is as it was.
			if got := describe(before); got != "a p1 os=x 1; b p1  ; c p1 os=y ; p1 one; p2 two; t1 abc; t2 xyz" {
				t.Errorf("objects handed out before changed: %s", got)
			}

			// Deleted objects written again come back.
			put(&matchbox.Group{ID: "b", Profile: "p1"})
			if got := describe(dbObjects(t, reader)); got != "a p2 os=z 2; b p1  ; c p1 os=y ; p1 uno; t1 abd" {
				t.Errorf("Objects after writing b again = %s", got)
			}
		})
	}
}

func dbObjects(t *testing.T, db *storage.DB) matchbox.Objects {
	t.Helper()
	objs, err := db.Objects(t.Context())
	if err != nil {
		t.Fatalf("Objects: %v", err)
	}
	return objs
}

// describe is the groups (id, profile, selector, metadata "n"), profiles
// (id, name) and templates (name, content) of objs.
func describe(objs matchbox.Objects) string {
	var parts []string
	for _, g := range objs.Groups {
		n, _ := g.MetadataValue("n")
		s, _ := n.(string)
		parts = append(parts, g.ID+" "+g.Profile+" "+g.SelectorString()+" "+s)
	}
	for _, p := range objs.Profiles {
		parts = append(parts, p.ID+" "+p.Name)
	}
	for _, tm := range objs.Templates {
		parts = append(parts, tm.Name+" "+string(tm.Content))
	}
	return strings.Join(parts, "; ")
}

// A stored object with a name refused today is reported by every Objects
// call, not only by the one that decoded it.
func TestObjectsReportStaleEveryTime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	openBolt(t, path).Close()
	raw := rawBolt(t, path)
	if err := raw.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("groups")).Put([]byte("a\nb"), groupJSON(t, map[string]any{"id": "a\nb", "profile": "live"}))
	}); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	db := openBolt(t, path)
	for i := range 2 {
		if objs := dbObjects(t, db); len(objs.Groups) != 1 || len(objs.Problems) != 1 || !strings.Contains(objs.Problems[0].Message, "still served") {
			t.Errorf("call %d: %d groups, problems %v; want the group and one warning", i+1, len(objs.Groups), objs.Problems)
		}
	}
}

// Objects called from several goroutines while another writes: each call
// sees whole objects, and the last sees every write.
func TestObjectsConcurrentCalls(t *testing.T) {
	db := storage.NewMemory()
	ctx := t.Context()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				objs, err := db.Objects(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				for _, g := range objs.Groups {
					if g.Profile != "p" || !g.Frozen() {
						t.Errorf("group %q: profile %q, frozen %v", g.ID, g.Profile, g.Frozen())
					}
				}
			}
		})
	}
	for i := range 100 {
		if _, err := db.PutGroupIf(ctx, &matchbox.Group{ID: fmt.Sprintf("g%03d", i), Profile: "p"}, matchbox.Condition{}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if n := len(dbObjects(t, db).Groups); n != 100 {
		t.Errorf("%d groups, want 100", n)
	}
}
