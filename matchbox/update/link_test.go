package update

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

const (
	macA = "52:54:00:00:00:0a"
	macB = "52:54:00:00:00:0b"
)

// linkFixture is a service over a store whose inventory holds macA (booted
// from matchbox group "workers", labelled rack=r1) and macB (leased
// 10.0.0.2), recording the events the service sends.
type linkFixture struct {
	st     *storage.DB
	s      *Service
	c      *clock
	mu     sync.Mutex
	events []matchbox.Event
}

func newLinkFixture(t *testing.T) *linkFixture {
	t.Helper()
	ctx := context.Background()
	f := &linkFixture{st: storage.NewMemory(), c: &clock{t: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}}
	if _, err := f.st.RecordEvents(ctx, []matchbox.Event{
		{Time: f.c.now(), MAC: macA, Kind: matchbox.EventHTTPServed, File: "/ipxe", Group: "workers", Profile: "worker"},
		{Time: f.c.now(), MAC: macB, Kind: matchbox.EventDHCPAck, IP: "10.0.0.2"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.SetMachineLabels(ctx, macA, map[string]string{"rack": "r1"}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.PutLeases(ctx, matchbox.Lease{IP: netip.MustParseAddr("10.0.0.2"), MAC: macB, State: matchbox.LeaseBound,
		Subnet: "10.0.0.0/24", Expires: f.c.now().Add(time.Hour), Updated: f.c.now()}); err != nil {
		t.Fatal(err)
	}
	f.s = newService(t, f.st, f.c)
	f.s.SetEvents(func(e matchbox.Event) { f.mu.Lock(); f.events = append(f.events, e); f.mu.Unlock() })
	for _, ch := range Channels {
		if err := f.s.SetPaused(ctx, ch, false, ""); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// kinds returns the kinds of the events sent for mac, and forgets them.
func (f *linkFixture) kinds(mac string) []matchbox.EventKind {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []matchbox.EventKind
	for _, e := range f.events {
		if e.MAC == mac {
			out = append(out, e.Kind)
		}
	}
	f.events = nil
	return out
}

func (f *linkFixture) check(t *testing.T, c Check) Answer {
	t.Helper()
	if c.Version == "" {
		c.Version = "3815.2.0"
	}
	ans, err := f.s.Decide(context.Background(), c)
	if err != nil {
		t.Fatalf("check %+v: %v", c, err)
	}
	return ans
}

// An update client is linked to the inventory machine its alias names,
// or else to the machine leased the address it asks from; a client
// neither links is keyed by its machine id.
func TestLinkToInventory(t *testing.T) {
	ctx := context.Background()
	f := newLinkFixture(t)
	// By alias (any MAC spelling), whatever the address.
	if ans := f.check(t, Check{Client: Client{MachineID: "id-a", Alias: "52-54-00-00-00-0A", Addr: netip.MustParseAddr("10.0.0.9")}, Track: "stable"}); ans.Version != "4081.2.0" {
		t.Fatalf("linked by alias: %+v", ans)
	}
	m, err := f.s.Machine(ctx, macA)
	if err != nil || m.MAC != macA || m.LinkedBy != LinkedByAlias || m.ID != "id-a" || m.State != StateGranted {
		t.Fatalf("machine A: %+v, %v", m, err)
	}
	if got := f.kinds(macA); !slices.Equal(got, []matchbox.EventKind{matchbox.EventUpdateVersion, matchbox.EventUpdateGranted}) {
		t.Errorf("events of A: %v", got)
	}
	// By lease: an alias that is no MAC of the inventory does not link.
	f.check(t, Check{Client: Client{MachineID: "id-b", Alias: "52:54:00:99:99:99", Addr: netip.MustParseAddr("10.0.0.2")}, Track: "stable"})
	if m, err := f.s.Machine(ctx, macB); err != nil || m.LinkedBy != LinkedByLease || m.ID != "id-b" {
		t.Fatalf("machine B: %+v, %v", m, err)
	}
	// Neither: keyed by machine id; not under any MAC.
	f.check(t, Check{Client: Client{MachineID: "id-c", Alias: "web-1", Addr: netip.MustParseAddr("10.0.0.3")}, Track: "stable"})
	if m, err := f.s.Machine(ctx, "id-c"); err != nil || m.MAC != "" || m.LinkedBy != "" {
		t.Fatalf("unlinked machine: %+v, %v", m, err)
	}
	if got := f.kinds(""); len(got) != 0 {
		t.Errorf("events of an unlinked machine: %v", got)
	}
	// A reinstalled machine (a new machine id) keeps its record and its
	// grant.
	if ans := f.check(t, Check{Client: Client{MachineID: "id-a-new", Alias: macA}, Track: "stable"}); ans.Version != "4081.2.0" {
		t.Fatalf("machine A after a reinstall: %+v", ans)
	}
	if m, _ := f.s.Machine(ctx, macA); m.ID != "id-a-new" || m.State != StateGranted {
		t.Errorf("machine A after a reinstall: %+v", m)
	}
	// An expired lease links no more.
	f.c.add(2 * time.Hour)
	f.check(t, Check{Client: Client{MachineID: "id-d", Addr: netip.MustParseAddr("10.0.0.2")}, Track: "stable"})
	if _, err := f.s.Machine(ctx, "id-d"); err != nil {
		t.Errorf("a client asking from an expired lease's address: %v", err)
	}
}

// A group matching a machine's label wins over one matching its matchbox
// group, which wins over the track; a client without a link only has its
// track.
func TestGroupMatch(t *testing.T) {
	ctx := context.Background()
	f := newLinkFixture(t)
	for _, g := range []Group{
		{Name: "by-group", Channel: "stable", Version: Newest, Match: Match{Kind: MatchGroup, Value: "workers"}, Policy: Policy{Paused: true}},
		{Name: "by-label", Channel: "stable", Version: Newest, Match: Match{Kind: MatchLabel, Key: "rack", Value: "r1"}, Policy: Policy{Paused: true}},
	} {
		if err := f.s.PutGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	if ans := f.check(t, Check{Client: Client{MachineID: "a", Alias: macA}, Track: "stable"}); ans.Group != "by-label" || ans.Hold != HoldPaused {
		t.Errorf("machine A (label rack=r1, group workers): %+v", ans)
	}
	if _, err := f.st.SetMachineLabels(ctx, macA, nil); err != nil {
		t.Fatal(err)
	}
	if ans := f.check(t, Check{Client: Client{MachineID: "a", Alias: macA}, Track: "stable"}); ans.Group != "by-group" {
		t.Errorf("machine A (group workers): %+v", ans)
	}
	if ans := f.check(t, Check{Client: Client{MachineID: "b", Alias: macB}, Track: "beta"}); ans.Group != "beta" {
		t.Errorf("machine B (track beta): %+v", ans)
	}
	if ans := f.check(t, Check{Client: Client{MachineID: "x", Alias: "nothing"}, Track: "nightly"}); ans.Hold != HoldNoGroup || ans.Version != "" {
		t.Errorf("a machine no group matches: %+v", ans)
	}
	// A linked machine's record says it is in no group.
	if ans := f.check(t, Check{Client: Client{MachineID: "b", Alias: macB}, Track: "nightly"}); ans.Hold != HoldNoGroup {
		t.Errorf("machine B (track nightly): %+v", ans)
	}
	if m, err := f.s.Machine(ctx, macB); err != nil || m.State != StateOnHold || m.Hold != HoldNoGroup {
		t.Errorf("machine B's record: %+v, %v", m, err)
	}
}

// A machine held by its label or by the operator is skipped by the
// rollout, and its record says why; a release lets it update.
func TestMachineHold(t *testing.T) {
	ctx := context.Background()
	f := newLinkFixture(t)
	if _, err := f.st.SetMachineLabels(ctx, macA, map[string]string{HoldLabel: "true"}); err != nil {
		t.Fatal(err)
	}
	if ans := f.check(t, Check{Client: Client{MachineID: "a", Alias: macA}, Track: "stable"}); ans.Hold != HoldMachine {
		t.Fatalf("labelled machine: %+v", ans)
	}
	if m, _ := f.s.Machine(ctx, macA); m.State != StateOnHold || m.Hold != HoldMachine {
		t.Errorf("labelled machine's record: %+v", m)
	}
	if got := f.kinds(macA); !slices.Contains(got, matchbox.EventUpdateHeld) {
		t.Errorf("events of the labelled machine: %v", got)
	}
	if _, err := f.s.SetHeld(ctx, macB, true); err != nil {
		t.Fatal(err)
	}
	if ans := f.check(t, Check{Client: Client{MachineID: "b", Alias: macB}, Track: "stable"}); ans.Hold != HoldMachine {
		t.Fatalf("held machine: %+v", ans)
	}
	if _, err := f.s.SetHeld(ctx, macB, false); err != nil {
		t.Fatal(err)
	}
	if ans := f.check(t, Check{Client: Client{MachineID: "b", Alias: macB}, Track: "stable"}); ans.Version != "4081.2.0" {
		t.Fatalf("released machine: %+v", ans)
	}
	// An unlinked client can be held by its machine id.
	if _, err := f.s.SetHeld(ctx, "loose", true); err != nil {
		t.Fatal(err)
	}
	if ans := f.check(t, Check{Client: Client{MachineID: "loose"}, Track: "stable"}); ans.Hold != HoldMachine {
		t.Fatalf("held unlinked client: %+v", ans)
	}
}

// A linked machine's record follows its version with one write per
// change, none per check; an update's steps and its completion are events
// on the machine's timeline; and the status counts the machine.
func TestLinkedMachineTimeline(t *testing.T) {
	ctx := context.Background()
	f := newLinkFixture(t)
	cl := Client{MachineID: "a", Alias: macA}
	writes := func() int {
		recs, _ := f.st.Records(ctx, kindMachine)
		n := 0
		for _, r := range recs {
			n += len(r.Value)
		}
		return n
	}
	// Up to date: recorded once, then checks change nothing.
	if ans := f.check(t, Check{Client: cl, Track: "stable", Version: "4081.2.0"}); ans.Version != "" || ans.Hold != "" {
		t.Fatalf("up to date: %+v", ans)
	}
	m, err := f.s.Machine(ctx, macA)
	if err != nil || m.State != StateIdle || m.Version != "4081.2.0" {
		t.Fatalf("up-to-date machine's record: %+v, %v", m, err)
	}
	before := writes()
	f.c.add(time.Minute)
	for range 3 {
		f.check(t, Check{Client: cl, Track: "stable", Version: "4081.2.0"})
	}
	if m2, _ := f.s.Machine(ctx, macA); m2.Updated != m.Updated || writes() != before {
		t.Errorf("checks of an up-to-date machine wrote its record: %+v", m2)
	}
	// Back to an older version (a rollback): granted again, then the
	// steps, then the completion.
	f.kinds(macA)
	if ans := f.check(t, Check{Client: cl, Track: "stable", Version: "3815.2.0"}); ans.Version != "4081.2.0" {
		t.Fatalf("after a rollback: %+v", ans)
	}
	for _, st := range []State{StateDownloading, StateDownloaded, StateInstalled} {
		if err := f.s.Report(ctx, cl, Progress, st, "3815.2.0", 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.s.Report(ctx, cl, Completed, "", "4081.2.0", 0); err != nil {
		t.Fatal(err)
	}
	want := []matchbox.EventKind{matchbox.EventUpdateVersion, matchbox.EventUpdateGranted, matchbox.EventUpdateDownloading,
		matchbox.EventUpdateDownloaded, matchbox.EventUpdateInstalled, matchbox.EventUpdateVersion, matchbox.EventUpdateComplete}
	if got := f.kinds(macA); !slices.Equal(got, want) {
		t.Errorf("events:\n got %v\nwant %v", got, want)
	}
	st, err := f.s.Status(ctx, "stable")
	if err != nil || len(st) != 1 || st[0].Total != 1 || st[0].Machines[0].States[StateComplete] != 1 || st[0].Rollout.Completed != 1 {
		t.Errorf("status: %+v, %v", st, err)
	}
	if _, err := f.s.Status(ctx, "nope"); !errors.Is(err, matchbox.ErrNotFound) {
		t.Errorf("status of a group not there: %v", err)
	}
}

// Unlinked clients' records are bounded: past the maximum, a new one is
// held, even in a group without limits; linked machines still update.
func TestUnlinkedRecordsBounded(t *testing.T) {
	ctx := context.Background()
	f := newLinkFixture(t)
	f.s.maxUnlinked = 5
	for i := range 8 {
		ans := f.check(t, Check{Client: Client{MachineID: string(rune('a' + i))}, Track: "stable"})
		if want := i < 5; (ans.Version != "") != want || !want && ans.Hold != HoldUnlinked {
			t.Errorf("unlinked client %d: %+v", i, ans)
		}
	}
	recs, _ := f.st.Records(ctx, kindMachine)
	if len(recs) != 5 {
		t.Errorf("%d unlinked records, want 5", len(recs))
	}
	if ans := f.check(t, Check{Client: Client{MachineID: "z", Alias: macA}, Track: "stable"}); ans.Version == "" {
		t.Errorf("a linked machine past the unlinked bound: %+v", ans)
	}
}

// A version that is not a Flatcar version is refused, not granted the
// newest release (it would sort below every one), and writes nothing.
func TestUnparseableVersionRefused(t *testing.T) {
	ctx := context.Background()
	f := newLinkFixture(t)
	for _, v := range []string{"abc", "3815.2", "3815.2.0+dev", "03815.2.0"} {
		ans, err := f.s.Decide(ctx, Check{Client: Client{MachineID: "a", Alias: macA}, Track: "stable", Version: v})
		if !errors.Is(err, matchbox.ErrInvalid) || ans.Version != "" {
			t.Errorf("version %q: %+v, %v", v, ans, err)
		}
	}
	if recs, _ := f.st.Records(ctx, kindMachine); len(recs) != 0 {
		t.Errorf("%d machine records after refused checks", len(recs))
	}
}
