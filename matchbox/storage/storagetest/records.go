package storagetest

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// errBudget is what a contender of the budget case gets past the limit.
var errBudget = errors.New("budget spent")

// runRecords checks the records of engines: read, list, atomic updates of
// several, refusals that write nothing, and a budget several writers race
// for, never overspent.
func runRecords(t *testing.T, h Harness) {
	s := h.Open(t)
	ctx := t.Context()
	key := func(kind, k string) matchbox.RecordKey { return matchbox.RecordKey{Kind: kind, Key: k} }
	set := func(keys []matchbox.RecordKey, values ...string) error {
		return s.UpdateRecords(ctx, keys, func(old [][]byte) ([][]byte, error) {
			out := make([][]byte, len(values))
			for i, v := range values {
				if v != "" {
					out[i] = []byte(v)
				}
			}
			return out, nil
		})
	}
	if _, err := s.Record(ctx, "rollout", "stable"); !errors.Is(err, matchbox.ErrNotFound) {
		t.Fatalf("Record of nothing: %v, want ErrNotFound", err)
	}
	if err := set([]matchbox.RecordKey{key("rollout", "stable"), key("machine", "m2"), key("machine", "m1")}, "r", "two", "one"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Record(ctx, "rollout", "stable"); err != nil || string(v) != "r" {
		t.Errorf("Record = %q, %v", v, err)
	}
	got, err := s.Records(ctx, "machine")
	want := []matchbox.Record{{Key: "m1", Value: []byte("one")}, {Key: "m2", Value: []byte("two")}}
	if err != nil || !cmp.Equal(got, want) {
		t.Errorf("Records(machine) = %q, %v; want %q (key order, this kind only)", got, err, want)
	}
	// fn sees what is stored, absent as nil.
	err = s.UpdateRecords(ctx, []matchbox.RecordKey{key("machine", "m1"), key("machine", "m3")}, func(old [][]byte) ([][]byte, error) {
		if string(old[0]) != "one" || old[1] != nil {
			t.Errorf("fn read %q", old)
		}
		return [][]byte{nil, []byte("three")}, nil // delete m1, create m3
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record(ctx, "machine", "m1"); !errors.Is(err, matchbox.ErrNotFound) {
		t.Errorf("a deleted record: %v", err)
	}
	// Refused, too large, wrong count: nothing written, not even the
	// other records of the call.
	refused := errors.New("refused")
	for name, fn := range map[string]func([][]byte) ([][]byte, error){
		"fn fails": func([][]byte) ([][]byte, error) { return nil, refused },
		"too large": func([][]byte) ([][]byte, error) {
			return [][]byte{[]byte("x"), bytes.Repeat([]byte("x"), matchbox.MaxRecord+1)}, nil
		},
		"wrong count": func([][]byte) ([][]byte, error) { return [][]byte{[]byte("x")}, nil },
	} {
		if err := s.UpdateRecords(ctx, []matchbox.RecordKey{key("machine", "m2"), key("machine", "m4")}, fn); err == nil {
			t.Errorf("%s: no error", name)
		}
		if v, _ := s.Record(ctx, "machine", "m2"); string(v) != "two" {
			t.Errorf("%s: m2 is %q, want it unchanged", name, v)
		}
		if _, err := s.Record(ctx, "machine", "m4"); !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("%s: m4 was written", name)
		}
	}
	for _, bad := range []matchbox.RecordKey{{}, {Kind: "machine"}, {Key: "m1"}, {Kind: "a\x00b", Key: "k"}, {Kind: "k", Key: strings.Repeat("x", 2000)}} {
		if err := set([]matchbox.RecordKey{bad}, "v"); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("UpdateRecords(%q): %v, want ErrInvalid", bad, err)
		}
	}

	// A budget of 3 grants, raced for by every writer (over two stores
	// where the backend is shared): exactly 3 get one, and the budget
	// and the grants agree.
	t.Run("Budget", func(t *testing.T) {
		ss := stores(t, h, h.Open(t))
		const limit = 3
		errs := contend(ss, func(s storage.Store, i int) error {
			return s.UpdateRecords(ctx, []matchbox.RecordKey{key("rollout", "g"), key("grant", strconv.Itoa(i))}, func(old [][]byte) ([][]byte, error) {
				n, _ := strconv.Atoi(string(old[0]))
				if n >= limit {
					return nil, errBudget
				}
				return [][]byte{[]byte(strconv.Itoa(n + 1)), []byte("granted")}, nil
			})
		})
		granted := 0
		for i, err := range errs {
			switch {
			case err == nil:
				granted++
			case !errors.Is(err, errBudget):
				t.Errorf("writer %d: %v", i, err)
			}
		}
		grants, err := ss[0].Records(ctx, "grant")
		budget, _ := ss[0].Record(ctx, "rollout", "g")
		if granted != limit || err != nil || len(grants) != limit || string(budget) != strconv.Itoa(limit) {
			t.Errorf("%d granted, %d grants stored (%v), budget %q; want %d of each", granted, len(grants), err, budget, limit)
		}
	})
}
