package storagetest

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// writers is how many goroutines contend in each concurrency case.
const writers = 8

// contend runs write(s, i) for every writer i at once, spread over ss,
// and returns their errors by writer.
func contend(ss []storage.Store, write func(s storage.Store, i int) error) []error {
	start := make(chan struct{})
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			<-start
			errs[i] = write(ss[i%len(ss)], i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// oneWins checks that exactly one writer succeeded and that every other
// failed with lost; it returns the winner.
func oneWins(t *testing.T, errs []error, lost error) int {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("writers %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, lost):
			t.Errorf("writer %d: %v, want success or %v", i, err, lost)
		}
	}
	if winner < 0 {
		t.Fatalf("no writer succeeded: %v", errs)
	}
	return winner
}

// runConcurrency has writers race for one conditional write: exactly one
// wins, and what is stored is the winner's. Over a shared backend the
// writers are spread over two stores, as two servers would be.
func runConcurrency(t *testing.T, h Harness) {
	// Creating a group that does not exist, and replacing the version
	// every writer read.
	for name, cond := range map[string]func(tag string) matchbox.Condition{
		"CreateGroup":  func(string) matchbox.Condition { return matchbox.Condition{IfNoneMatch: true} },
		"ReplaceGroup": func(tag string) matchbox.Condition { return matchbox.Condition{IfMatch: tag} },
	} {
		t.Run(name, func(t *testing.T) {
			s := h.Open(t)
			var tag string
			if name == "ReplaceGroup" {
				var err error
				if tag, err = s.PutGroupIf(t.Context(), &matchbox.Group{ID: "g", Profile: "p"}, matchbox.Condition{}); err != nil {
					t.Fatal(err)
				}
			}
			errs := contend(stores(t, h, s), func(s storage.Store, i int) error {
				_, err := s.PutGroupIf(t.Context(), &matchbox.Group{ID: "g", Name: strconv.Itoa(i), Profile: "p"}, cond(tag))
				return err
			})
			winner := oneWins(t, errs, matchbox.ErrPrecondition)
			if g, _, err := s.GroupVersion(t.Context(), "g"); err != nil || g.Name != strconv.Itoa(winner) {
				t.Errorf("stored group %+v, %v; want writer %d's", g, err, winner)
			}
		})
	}

	t.Run("DeleteTemplate", func(t *testing.T) {
		s := h.Open(t)
		tag, err := s.PutTemplateIf(t.Context(), &matchbox.Template{Kind: matchbox.KindGeneric, Name: "t", Content: []byte("x")}, matchbox.Condition{})
		if err != nil {
			t.Fatal(err)
		}
		errs := contend(stores(t, h, s), func(s storage.Store, i int) error {
			return s.DeleteTemplateIf(t.Context(), matchbox.KindGeneric, "t", matchbox.Condition{IfMatch: tag})
		})
		oneWins(t, errs, matchbox.ErrNotFound)
	})

	t.Run("SwapWorkflow", func(t *testing.T) {
		s := h.Open(t)
		if err := s.SwapWorkflow(t.Context(), 0, workflow(1, 1, matchbox.StateRequested)); err != nil {
			t.Fatal(err)
		}
		errs := contend(stores(t, h, s), func(s storage.Store, i int) error {
			w := workflow(1, 2, matchbox.StateBooting)
			w.Attempt = 100 + i
			return s.SwapWorkflow(t.Context(), 1, w)
		})
		winner := oneWins(t, errs, matchbox.ErrPrecondition)
		if w, err := s.Workflow(t.Context(), mac(1)); err != nil || w.Attempt != 100+winner || w.Generation != 2 {
			t.Errorf("stored workflow %+v, %v; want writer %d's", w, err, winner)
		}
	})

	t.Run("CreateToken", func(t *testing.T) {
		s := h.Open(t)
		errs := contend(stores(t, h, s), func(s storage.Store, i int) error {
			return s.CreateToken(t.Context(), matchbox.Token{Name: "ci", Role: matchbox.RoleRead, Hash: fmt.Sprintf("h%d", i)})
		})
		winner := oneWins(t, errs, matchbox.ErrConflict)
		if ts, err := s.Tokens(t.Context()); err != nil || len(ts) != 1 || ts[0].Hash != fmt.Sprintf("h%d", winner) {
			t.Errorf("stored tokens %+v, %v; want writer %d's", ts, err, winner)
		}
	})

	// Writes to distinct keys all land.
	t.Run("DistinctWrites", func(t *testing.T) {
		const each = 10
		s := h.Open(t)
		errs := contend(stores(t, h, s), func(s storage.Store, i int) error {
			for j := range each {
				id := fmt.Sprintf("w%d-%02d", i, j)
				mac := fmt.Sprintf("02-00-00-00-%02X-%02X", i, j)
				if _, err := s.PutGroupIf(t.Context(), &matchbox.Group{ID: id, Profile: "p", Selector: map[string]string{"mac": mac}}, matchbox.Condition{IfNoneMatch: true}); err != nil {
					return fmt.Errorf("PutGroupIf(%s): %w", id, err)
				}
				if err := s.PutLeases(t.Context(), testLease(i*each+j+1)); err != nil {
					return fmt.Errorf("PutLeases: %w", err)
				}
			}
			return nil
		})
		for _, err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		var want matchbox.Objects
		var leases []matchbox.Lease
		for i := range writers {
			for j := range each {
				want.Groups = append(want.Groups, &matchbox.Group{
					ID: fmt.Sprintf("w%d-%02d", i, j), Profile: "p",
					Selector: map[string]string{"mac": strings.ToLower(fmt.Sprintf("02:00:00:00:%02X:%02X", i, j))},
				})
				leases = append(leases, testLease(i*each+j+1))
			}
		}
		if diff := cmp.Diff(want, objects(t, s), opts); diff != "" {
			t.Errorf("Objects after concurrent puts (-want +got):\n%s", diff)
		}
		leasesAre(t, s, leases...)
	})

	// Concurrent event batches of the same machines keep each history
	// whole and bounded and the machine count exact.
	t.Run("RecordEvents", func(t *testing.T) {
		const batches, shared = 30, 4
		s := h.Open(t)
		errs := contend(stores(t, h, s), func(s storage.Store, i int) error {
			for b := range batches {
				var events []matchbox.Event
				for m := range shared {
					events = append(events, matchbox.Event{Time: time.Unix(int64(i*batches+b), 0), MAC: mac(m), Kind: matchbox.EventDHCPAck, File: fmt.Sprintf("%d/%d", i, b)})
				}
				events = append(events, discover(100+i))
				if _, err := s.RecordEvents(t.Context(), events); err != nil {
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
		for m := range shared {
			evs, err := s.MachineEvents(t.Context(), mac(m))
			if err != nil || len(evs) != storage.MaxEventsPerMachine {
				t.Errorf("history of a machine every writer recorded: %d events, %v; want %d", len(evs), err, storage.MaxEventsPerMachine)
			}
		}
		for _, st := range stores(t, h, s) {
			if n := st.MachineCount(); n != shared+writers {
				t.Errorf("MachineCount = %d, want %d", n, shared+writers)
			}
		}
	})
}
