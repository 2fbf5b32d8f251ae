package matchbox_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// A catalog over one store follows the groups, profiles and templates
// another store over the same backend (another replica's) writes, as soon
// as they are committed (no time passes on the bubble's clock); its own
// process's writes it reloads itself.
func TestCatalogFollowsOtherWriters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		backend := storage.NewMemoryBackend()
		mine, theirs := storage.OpenMemory(backend), storage.OpenMemory(backend)
		defer mine.Close()
		defer theirs.Close()
		catalog := matchbox.NewCatalog("db")
		changes := mine.Changes(ctx, matchbox.ChangeGroup, matchbox.ChangeProfile, matchbox.ChangeTemplate)
		if _, err := catalog.Reload(ctx, "db", mine.Objects); err != nil {
			t.Fatal(err)
		}
		var failures []error
		done := make(chan struct{})
		go func() {
			catalog.Follow(ctx, "db", mine.Objects, changes, func(err error) { failures = append(failures, err) })
			close(done)
		}()

		if _, err := theirs.PutProfileIf(ctx, &matchbox.Profile{ID: "p"}, matchbox.Condition{}); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"g1", "g2", "g3"} {
			if _, err := theirs.PutGroupIf(ctx, &matchbox.Group{ID: id, Profile: "p"}, matchbox.Condition{}); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		if g, p, _ := catalog.Snapshot().Counts(); g != 3 || p != 1 {
			t.Fatalf("after the other store's writes: %d groups, %d profiles; want 3, 1", g, p)
		}
		if err := theirs.DeleteGroupIf(ctx, "g2", matchbox.Condition{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if _, ok := catalog.Snapshot().Group("g2"); ok {
			t.Error("a group the other store deleted is still served")
		}
		// This process's own write is not reloaded by Follow (its writer
		// reloads); the next write from elsewhere brings it in too.
		gen := catalog.Snapshot().Generation
		if _, err := mine.PutGroupIf(ctx, &matchbox.Group{ID: "own", Profile: "p"}, matchbox.Condition{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := catalog.Snapshot().Generation; got != gen {
			t.Errorf("Follow reloaded for this process's own write (generation %d → %d)", gen, got)
		}
		if _, err := theirs.PutGroupIf(ctx, &matchbox.Group{ID: "g4", Profile: "p"}, matchbox.Condition{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		for _, id := range []string{"own", "g4"} {
			if _, ok := catalog.Snapshot().Group(id); !ok {
				t.Errorf("group %s not in the catalog", id)
			}
		}
		cancel()
		<-done
		if len(failures) != 0 {
			t.Errorf("reload failures: %v", failures)
		}
	})
}

// A reload that fails is reported and the catalog keeps what it had.
func TestCatalogReloadFails(t *testing.T) {
	catalog := matchbox.NewCatalog("db")
	catalog.Update(t.Context(), "db", matchbox.Objects{Profiles: []*matchbox.Profile{{ID: "p"}}})
	broken := errors.New("store unreachable")
	if _, err := catalog.Reload(t.Context(), "db", func(context.Context) (matchbox.Objects, error) { return matchbox.Objects{}, broken }); !errors.Is(err, broken) {
		t.Errorf("Reload: %v", err)
	}
	if _, ok := catalog.Snapshot().Profile("p"); !ok {
		t.Error("a failed reload emptied the source")
	}
}
