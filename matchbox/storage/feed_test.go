package storage

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox"
)

// nextChanges reads n changes, each within a deadline for a hung feed.
func nextChanges(t *testing.T, ch <-chan matchbox.Change, n int) []matchbox.Change {
	t.Helper()
	var out []matchbox.Change
	for range n {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatalf("feed closed after %v", out)
			}
			out = append(out, c)
		case <-time.After(30 * time.Second):
			t.Fatalf("no change after %v", out)
		}
	}
	return out
}

func keyed(kind matchbox.ChangeKind, keys ...string) []matchbox.Change {
	var out []matchbox.Change
	for _, k := range keys {
		out = append(out, matchbox.Change{Kind: kind, Key: k, Local: true})
	}
	return out
}

// thenGroup writes the group "next" and checks that ch delivers the
// group changes keys, then that one: nothing between, and the feed goes on.
func thenGroup(t *testing.T, db *DB, ch <-chan matchbox.Change, keys ...string) {
	t.Helper()
	if _, err := db.PutGroupIf(t.Context(), &matchbox.Group{ID: "next", Profile: "p"}, matchbox.Condition{}); err != nil {
		t.Fatal(err)
	}
	want := keyed(matchbox.ChangeGroup, append(keys, "next")...)
	if diff := cmp.Diff(want, nextChanges(t, ch, len(want))); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
}

// Transactions published out of order are delivered in the order of
// their sequence numbers, which is commit order.
func TestFeedDeliversInSequence(t *testing.T) {
	db := NewMemory()
	defer db.Close()
	ch := db.Changes(t.Context(), matchbox.ChangeGroup)
	f := &db.state.feed
	sets := make([]*changeSet, 4)
	for i := range sets {
		sets[i] = &changeSet{want: f.wanted(), origin: db}
		sets[i].add(kindGroup, string(rune('a'+i)))
		if got := f.stamp(); got != uint64(i) {
			t.Fatalf("stamp %d, want %d", got, i)
		}
	}
	f.publish(2, sets[2])
	f.publish(1, sets[1])
	f.publish(3, nil) // a transaction that did not commit
	f.publish(0, sets[0])
	if diff := cmp.Diff(keyed(matchbox.ChangeGroup, "a", "b", "c"), nextChanges(t, ch, 3)); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	if len(f.held) != 0 || f.next != 4 {
		t.Errorf("feed after delivering: %d held, next %d", len(f.held), f.next)
	}
}

// A run that Batch rolls back and runs again (its number taken, its
// changes never committed) neither stalls the feed nor is told.
func TestFeedRunRolledBack(t *testing.T) {
	db := NewMemory()
	defer db.Close()
	ch := db.Changes(t.Context(), matchbox.ChangeGroup)
	runs := 0
	w := writeRun{feed: &db.state.feed, origin: db, fn: func(tx kvTx, cs *changeSet) error {
		runs++
		key := []string{"rolled-back", "committed"}[runs-1]
		cs.add(kindGroup, key)
		return tx.Bucket(bucketGroups).Put([]byte(key), []byte("{}"))
	}}
	// As bbolt's Batch does when another call of the batch fails: the
	// transaction is rolled back and the function run again.
	retry := errors.New("another call of the batch failed")
	if err := db.kv.Update(func(tx kvTx) error {
		if err := w.run(tx); err != nil {
			return err
		}
		return retry
	}); !errors.Is(err, retry) {
		t.Fatal(err)
	}
	err := db.kv.Update(w.run)
	w.publish(err == nil)
	if err != nil || runs != 2 {
		t.Fatalf("write = %v after %d runs", err, runs)
	}
	thenGroup(t, db, ch, "committed")
}

// A subscriber that comes in while a transaction runs, too late for its
// keys to be kept, is told that anything of the kinds it wrote may have
// changed.
func TestFeedSubscriberDuringTransaction(t *testing.T) {
	db := NewMemory()
	defer db.Close()
	inTx, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- db.update(func(tx kvTx, cs *changeSet) error {
			close(inTx)
			<-release
			cs.add(kindGroup, "g")
			cs.add(kindLease, "10.0.0.1")
			return tx.Bucket(bucketGroups).Put([]byte("g"), []byte("{}"))
		})
	}()
	<-inTx
	ch := db.Changes(t.Context(), matchbox.ChangeGroup, matchbox.ChangeBMC)
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	thenGroup(t, db, ch, "")
}

// Nobody subscribed: a write keeps no keys and nothing is held.
func TestFeedUnwatched(t *testing.T) {
	db := NewMemory()
	defer db.Close()
	var kept int
	err := db.update(func(tx kvTx, cs *changeSet) error {
		cs.add(kindMachine, "m")
		kept = len(cs.keys)
		return nil
	})
	if err != nil || kept != 0 {
		t.Errorf("write = %v, %d keys kept with no subscriber", err, kept)
	}
	if f := &db.state.feed; len(f.held) != 0 || f.next != 1 {
		t.Errorf("feed: %d held, next %d", len(f.held), f.next)
	}
}
