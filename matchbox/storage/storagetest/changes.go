package storagetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// receive reads n changes from ch, each within waitFor.
func receive(t *testing.T, ch <-chan matchbox.Change, n int) []matchbox.Change {
	t.Helper()
	out := make([]matchbox.Change, 0, n)
	for range n {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatalf("change feed closed after %d of %d changes: %v", len(out), n, out)
			}
			out = append(out, c)
		case <-time.After(waitFor):
			t.Fatalf("%d of %d changes within %v: %v", len(out), n, waitFor, out)
		}
	}
	return out
}

// closes waits until ch is closed, reading at most n changes first.
func closes(t *testing.T, ch <-chan matchbox.Change, n int) {
	t.Helper()
	deadline := time.After(waitFor)
	for range n + 1 {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("change feed still open after %v", waitFor)
		}
	}
	t.Fatalf("change feed still open after %d changes", n)
}

// change is a Change written through the subscriber's own store.
func change(kind matchbox.ChangeKind, key string) matchbox.Change {
	return matchbox.Change{Kind: kind, Key: key, Local: true}
}

// remote is a Change written through another store over the backend.
func remote(kind matchbox.ChangeKind, key string) matchbox.Change {
	return matchbox.Change{Kind: kind, Key: key}
}

// changeStep is a write and the changes it must publish (of every kind).
type changeStep struct {
	name  string
	write func(ctx context.Context, s storage.Store) error
	want  []matchbox.Change
}

// changeSteps writes something of every kind, and fails to write some
// more: refused writes publish nothing.
func changeSteps() []changeStep {
	l1, l2 := testLease(1), testLease(2)
	return []changeStep{
		{"records", func(ctx context.Context, s storage.Store) error {
			err := s.UpdateRecords(ctx, []matchbox.RecordKey{{Kind: "k", Key: "a"}, {Kind: "k", Key: "b"}}, func([][]byte) ([][]byte, error) {
				return [][]byte{[]byte("1"), []byte("2")}, nil
			})
			if err != nil {
				return err
			}
			// Unchanged values publish nothing; a refused update neither.
			if err := s.UpdateRecords(ctx, []matchbox.RecordKey{{Kind: "k", Key: "a"}}, func([][]byte) ([][]byte, error) {
				return [][]byte{[]byte("1")}, nil
			}); err != nil {
				return err
			}
			_ = s.UpdateRecords(ctx, []matchbox.RecordKey{{Kind: "k", Key: "a"}}, func([][]byte) ([][]byte, error) {
				return nil, errors.New("refused")
			})
			return nil
		}, []matchbox.Change{change(matchbox.ChangeRecord, "k/a"), change(matchbox.ChangeRecord, "k/b")}},
		{"put group", func(ctx context.Context, s storage.Store) error {
			_, err := s.PutGroupIf(ctx, &matchbox.Group{ID: "g1", Profile: "p1"}, matchbox.Condition{})
			return err
		}, []matchbox.Change{change(matchbox.ChangeGroup, "g1")}},
		{"put profile", func(ctx context.Context, s storage.Store) error {
			_, err := s.PutProfileIf(ctx, &matchbox.Profile{ID: "p1"}, matchbox.Condition{})
			return err
		}, []matchbox.Change{change(matchbox.ChangeProfile, "p1")}},
		{"put template", func(ctx context.Context, s storage.Store) error {
			_, err := s.PutTemplateIf(ctx, &matchbox.Template{Kind: matchbox.KindIgnition, Name: "sub/x.ign", Content: []byte("{}")}, matchbox.Condition{})
			return err
		}, []matchbox.Change{change(matchbox.ChangeTemplate, "ignition/sub/x.ign")}},
		{"create token", func(ctx context.Context, s storage.Store) error {
			return s.CreateToken(ctx, matchbox.Token{Name: "ci", Role: matchbox.RoleRead, Hash: "h-ci"})
		}, []matchbox.Change{change(matchbox.ChangeToken, "ci")}},
		{"record events", func(ctx context.Context, s storage.Store) error {
			_, err := s.RecordEvents(ctx, []matchbox.Event{discover(2), discover(1), discover(2)})
			return err
		}, []matchbox.Change{change(matchbox.ChangeMachine, mac(1)), change(matchbox.ChangeMachine, mac(2))}},
		{"set labels", func(ctx context.Context, s storage.Store) error {
			_, err := s.SetMachineLabels(ctx, mac(1), map[string]string{"rack": "1"})
			return err
		}, []matchbox.Change{change(matchbox.ChangeMachine, mac(1))}},
		{"swap workflow", func(ctx context.Context, s storage.Store) error {
			return s.SwapWorkflow(ctx, 0, workflow(1, 1, matchbox.StateRequested))
		}, []matchbox.Change{change(matchbox.ChangeWorkflow, mac(1))}},
		{"put leases", func(ctx context.Context, s storage.Store) error { return s.PutLeases(ctx, l1, l2) },
			[]matchbox.Change{change(matchbox.ChangeLease, "10.0.0.1"), change(matchbox.ChangeLease, "10.0.0.2")}},
		{"BMC of a new machine", func(ctx context.Context, s storage.Store) error {
			return s.SetMachineBMC(ctx, mac(3), bmcOf(3, bmcPassword))
		},
			[]matchbox.Change{change(matchbox.ChangeMachine, mac(3)), change(matchbox.ChangeBMC, mac(3))}},
		{"BMC", func(ctx context.Context, s storage.Store) error {
			return s.SetMachineBMC(ctx, mac(1), bmcOf(1, bmcPassword))
		},
			[]matchbox.Change{change(matchbox.ChangeBMC, mac(1))}},
		{"refused writes", func(ctx context.Context, s storage.Store) error {
			refused := []error{
				s.DeleteGroupIf(ctx, "g1", matchbox.Condition{IfMatch: `"0123"`}),
				s.SwapWorkflow(ctx, 0, workflow(1, 1, matchbox.StateFailed)),
				s.CreateToken(ctx, matchbox.Token{Name: "ci", Role: matchbox.RoleRead, Hash: "h-other"}),
				s.SetMachineBMC(ctx, mac(1), matchbox.BMC{Address: "elsewhere"}),
				s.DeleteMachine(ctx, mac(9)),
			}
			_, err := s.SetMachineLabels(ctx, mac(9), nil)
			refused = append(refused, err, s.DeleteLeases(ctx, testLease(9).IP))
			for i, err := range refused[:len(refused)-1] {
				if err == nil {
					return fmt.Errorf("refused write %d succeeded", i)
				}
			}
			return refused[len(refused)-1] // deleting a missing lease is no error
		}, nil},
		{"delete token", func(ctx context.Context, s storage.Store) error { return s.DeleteToken(ctx, "ci") },
			[]matchbox.Change{change(matchbox.ChangeToken, "ci")}},
		{"delete leases", func(ctx context.Context, s storage.Store) error { return s.DeleteLeases(ctx, l1.IP) },
			[]matchbox.Change{change(matchbox.ChangeLease, "10.0.0.1")}},
		{"delete BMC", func(ctx context.Context, s storage.Store) error { return s.DeleteMachineBMC(ctx, mac(3)) },
			[]matchbox.Change{change(matchbox.ChangeBMC, mac(3))}},
		{"delete machine", func(ctx context.Context, s storage.Store) error { return s.DeleteMachine(ctx, mac(1)) },
			[]matchbox.Change{change(matchbox.ChangeMachine, mac(1)), change(matchbox.ChangeBMC, mac(1)), change(matchbox.ChangeWorkflow, mac(1))}},
		{"delete objects", func(ctx context.Context, s storage.Store) error {
			if err := s.DeleteTemplateIf(ctx, matchbox.KindIgnition, "sub/x.ign", matchbox.Condition{}); err != nil {
				return err
			}
			if err := s.DeleteProfileIf(ctx, "p1", matchbox.Condition{}); err != nil {
				return err
			}
			return s.DeleteGroupIf(ctx, "g1", matchbox.Condition{IfMatch: "*"})
		}, []matchbox.Change{change(matchbox.ChangeTemplate, "ignition/sub/x.ign"), change(matchbox.ChangeProfile, "p1"), change(matchbox.ChangeGroup, "g1")}},
	}
}

var allChangeKinds = []matchbox.ChangeKind{matchbox.ChangeGroup, matchbox.ChangeProfile, matchbox.ChangeTemplate,
	matchbox.ChangeToken, matchbox.ChangeMachine, matchbox.ChangeWorkflow, matchbox.ChangeLease, matchbox.ChangeBMC, matchbox.ChangeRecord}

// ofKinds keeps the changes of kinds.
func ofKinds(cs []matchbox.Change, kinds ...matchbox.ChangeKind) []matchbox.Change {
	var out []matchbox.Change
	for _, c := range cs {
		if slices.Contains(kinds, c.Kind) {
			out = append(out, c)
		}
	}
	return out
}

func runChanges(t *testing.T, h Harness) {
	// One subscriber of each kind, one of two kinds and one of all: each
	// receives the changes of its kinds, one per key written, in commit
	// order, and nothing else (the last step writes every kind, so a
	// change of another kind would show before it).
	t.Run("EveryKind", func(t *testing.T) {
		s, _ := openKeyed(t, h)
		ctx := t.Context()
		if _, err := s.PutGroupIf(ctx, &matchbox.Group{ID: "before", Profile: "p"}, matchbox.Condition{}); err != nil {
			t.Fatal(err)
		}
		subs := map[string][]matchbox.ChangeKind{"all": nil, "groups and leases": {matchbox.ChangeGroup, matchbox.ChangeLease}}
		for _, k := range allChangeKinds {
			subs[string(k)] = []matchbox.ChangeKind{k}
		}
		feeds := map[string]<-chan matchbox.Change{}
		for name, kinds := range subs {
			feeds[name] = s.Changes(ctx, kinds...)
		}
		var all []matchbox.Change
		for _, st := range changeSteps() {
			if err := st.write(ctx, s); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			all = append(all, st.want...)
		}
		for name, kinds := range subs {
			want := all
			if kinds != nil {
				want = ofKinds(all, kinds...)
			}
			got := receive(t, feeds[name], len(want))
			if kinds == nil {
				// Changes of one transaction come in an order of the
				// store's; each kind's are in commit order.
				for _, k := range allChangeKinds {
					if diff := cmp.Diff(ofKinds(want, k), ofKinds(got, k)); diff != "" {
						t.Errorf("subscriber of every kind, changes of %s (-want +got):\n%s", k, diff)
					}
				}
				continue
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("subscriber of %s (-want +got):\n%s", name, diff)
			}
		}
	})

	// Concurrent writers' changes arrive each in the order written.
	t.Run("CommitOrder", func(t *testing.T) {
		const each = 20
		s := h.Open(t)
		ctx := t.Context()
		feed := s.Changes(ctx, matchbox.ChangeGroup)
		errs := contend(stores(t, h, s), func(s storage.Store, i int) error {
			for j := range each {
				if _, err := s.PutGroupIf(ctx, &matchbox.Group{ID: fmt.Sprintf("w%d-%02d", i, j), Profile: "p"}, matchbox.Condition{}); err != nil {
					return err
				}
			}
			return nil
		})
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		next := make([]int, writers)
		for _, c := range receive(t, feed, writers*each) {
			var i, j int
			if _, err := fmt.Sscanf(c.Key, "w%d-%d", &i, &j); err != nil || c.Kind != matchbox.ChangeGroup || i >= writers || j != next[i] {
				t.Fatalf("change %+v: want each writer's groups, in the order written (next of each: %v)", c, next)
			}
			next[i]++
		}
	})

	t.Run("CancelCloses", func(t *testing.T) {
		s := h.Open(t)
		ctx, cancel := context.WithCancel(t.Context())
		feed := s.Changes(ctx)
		cancel()
		closes(t, feed, 0)
		// Writes after it go on.
		if _, err := s.PutGroupIf(t.Context(), &matchbox.Group{ID: "g", Profile: "p"}, matchbox.Condition{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("CloseCloses", func(t *testing.T) {
		s := h.Open(t)
		feed := s.Changes(t.Context(), matchbox.ChangeGroup)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		closes(t, feed, 0)
	})

	// A subscriber that does not keep up is not waited for: past its
	// buffer (every store buffers fewer than overflow changes), it
	// receives one change of an empty key for the kind, once it has
	// caught up, then changes as before.
	t.Run("Overflow", func(t *testing.T) {
		const overflow = 5000
		s := h.Open(t)
		ctx := t.Context()
		feed := s.Changes(ctx, matchbox.ChangeMachine)
		groups := s.Changes(ctx, matchbox.ChangeGroup)
		var events []matchbox.Event
		for i := range overflow {
			events = append(events, discover(i))
		}
		record(t, s, events...)
		record(t, s, discover(overflow)) // past the buffer too
		if _, err := s.PutGroupIf(ctx, &matchbox.Group{ID: "g", Profile: "p"}, matchbox.Condition{}); err != nil {
			t.Fatal(err)
		}
		if got := receive(t, groups, 1); got[0] != change(matchbox.ChangeGroup, "g") {
			t.Errorf("another subscriber: %v, want the group", got)
		}
		n := 0
		for ; n <= overflow; n++ {
			c := receive(t, feed, 1)[0]
			if c.Key == "" {
				break
			}
			if c.Kind != matchbox.ChangeMachine {
				t.Fatalf("change %+v of a kind not subscribed", c)
			}
		}
		if n > overflow {
			t.Fatalf("all %d changes were delivered: the feed buffers more than the case assumes", n)
		}
		// What came after the overflow (the reload covers it) may follow;
		// then changes come as before.
		record(t, s, discover(overflow+1))
		for range 3 {
			c := receive(t, feed, 1)[0]
			if c == change(matchbox.ChangeMachine, mac(overflow+1)) {
				return
			}
			if c != change(matchbox.ChangeMachine, mac(overflow)) && c != remote(matchbox.ChangeMachine, "") {
				t.Fatalf("after the reload: %+v, want the next change", c)
			}
		}
		t.Fatal("the change after the reload did not come")
	})

	// Over a shared backend, each store's subscribers see the others'
	// writes: a replica's change is seen by the other.
	t.Run("Replica", func(t *testing.T) {
		if h.Replica == nil {
			t.Skip("backend cannot be shared")
		}
		a := h.Open(t)
		b := h.Replica(t)
		ctx := t.Context()
		onA, onB := a.Changes(ctx, matchbox.ChangeToken), b.Changes(ctx, matchbox.ChangeToken)
		if err := a.CreateToken(ctx, matchbox.Token{Name: "from-a", Role: matchbox.RoleRead, Hash: "h-a"}); err != nil {
			t.Fatal(err)
		}
		if err := b.DeleteToken(ctx, "from-a"); err != nil {
			t.Fatal(err)
		}
		// Each subscriber is told which of the two was its own store's.
		for name, tc := range map[string]struct {
			feed <-chan matchbox.Change
			want []matchbox.Change
		}{
			"a": {onA, []matchbox.Change{change(matchbox.ChangeToken, "from-a"), remote(matchbox.ChangeToken, "from-a")}},
			"b": {onB, []matchbox.Change{remote(matchbox.ChangeToken, "from-a"), change(matchbox.ChangeToken, "from-a")}},
		} {
			if diff := cmp.Diff(tc.want, receive(t, tc.feed, 2)); diff != "" {
				t.Errorf("subscriber on %s (-want +got):\n%s", name, diff)
			}
		}
		if _, err := a.RevokedToken(ctx, "h-a"); err != nil {
			t.Errorf("the replica's revocation, read on the other store: %v", err)
		}
		// Closing one store ends its feeds, not the other's.
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		closes(t, onB, 0)
		if err := a.CreateToken(ctx, matchbox.Token{Name: "after", Role: matchbox.RoleRead, Hash: "h-after"}); err != nil {
			t.Fatal(err)
		}
		if got := receive(t, onA, 1); got[0] != change(matchbox.ChangeToken, "after") {
			t.Errorf("after the replica closed: %v", got)
		}
	})
}
