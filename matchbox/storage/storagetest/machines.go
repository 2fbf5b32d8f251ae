package storagetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// machinePutter is a store that can be given whole machine records; the
// server never writes them, so it is not part of Store, but a reserved
// address can only be set that way.
type machinePutter interface {
	PutMachine(ctx context.Context, m *matchbox.Machine) error
}

// record stores events and returns what was not recorded.
func record(t *testing.T, s storage.Store, events ...matchbox.Event) matchbox.NotRecorded {
	t.Helper()
	nr, err := s.RecordEvents(t.Context(), events)
	if err != nil {
		t.Fatalf("RecordEvents: %v", err)
	}
	return nr
}

// discover is a DHCP event of machine i: it adds the machine.
func discover(i int) matchbox.Event {
	return matchbox.Event{Time: time.Unix(int64(1e9+i), 0).UTC(), MAC: mac(i), Kind: matchbox.EventDHCPDiscover, Arch: fmt.Sprintf("arch%d", i%3)}
}

func runMachines(t *testing.T, h Harness) {
	t.Run("GetMachine", func(t *testing.T) {
		s := h.Open(t)
		ctx := t.Context()
		seen := time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)
		record(t, s, matchbox.Event{Time: seen, MAC: "52-54-00-A1-9C-AE", Kind: matchbox.EventHTTPServed, IP: "10.0.0.21",
			UUID: "16e7d8a7-bfa9-428b-9117-363341bb330b", Arch: "x86_64-efi", Group: "node1", Profile: "install"})
		want := &matchbox.Machine{MAC: "52:54:00:a1:9c:ae", UUID: "16e7d8a7-bfa9-428b-9117-363341bb330b", Arch: "x86_64-efi",
			LastIP: "10.0.0.21", FirstSeen: seen, LastSeen: seen, Group: "node1", Profile: "install"}
		for _, spelling := range []string{"52:54:00:a1:9c:ae", "52:54:00:A1:9C:AE", "52-54-00-a1-9c-ae", "5254.00a1.9cae"} {
			got, err := s.GetMachine(ctx, spelling)
			if err != nil {
				t.Fatalf("GetMachine(%s): %v", spelling, err)
			}
			if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(matchbox.Machine{}, "EventSeq")); diff != "" {
				t.Errorf("GetMachine(%s) (-want +got):\n%s", spelling, diff)
			}
		}
		if _, err := s.GetMachine(ctx, mac(99)); !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("GetMachine of an unknown machine: %v, want ErrNotFound", err)
		}
		invalid := map[string]func() error{
			"get":          func() error { _, err := s.GetMachine(ctx, "52:54:00"); return err },
			"events":       func() error { _, err := s.MachineEvents(ctx, "node1"); return err },
			"labels":       func() error { _, err := s.SetMachineLabels(ctx, "", nil); return err },
			"delete":       func() error { return s.DeleteMachine(ctx, "zz:zz:zz:zz:zz:zz") },
			"reserved":     func() error { _, err := s.ReservedIP(ctx, "52-54"); return err },
			"workflow":     func() error { _, err := s.Workflow(ctx, "x"); return err },
			"bmc":          func() error { return s.DeleteMachineBMC(ctx, "x") },
			"swap":         func() error { return s.SwapWorkflow(ctx, 0, matchbox.Workflow{MAC: "x"}) },
			"delete empty": func() error { return s.DeleteMachine(ctx, "") },
		}
		for name, call := range invalid {
			if err := call(); !errors.Is(err, matchbox.ErrInvalid) {
				t.Errorf("invalid MAC, %s: %v, want ErrInvalid", name, err)
			}
		}
	})

	t.Run("MachinePage", func(t *testing.T) {
		s := h.Open(t)
		ctx := t.Context()
		const n = 7
		for i := n - 1; i >= 0; i-- { // stored in MAC order whatever the order of writes
			record(t, s, discover(i))
		}
		page := func(after string, limit int, keep func(*matchbox.Machine) bool) ([]string, bool) {
			t.Helper()
			ms, more, err := s.MachinePage(ctx, after, limit, keep)
			if err != nil {
				t.Fatalf("MachinePage(%q, %d): %v", after, limit, err)
			}
			var macs []string
			for _, m := range ms {
				macs = append(macs, m.MAC)
			}
			return macs, more
		}
		macs := func(is ...int) []string {
			var out []string
			for _, i := range is {
				out = append(out, mac(i))
			}
			return out
		}
		tests := []struct {
			name     string
			after    string
			limit    int
			keep     func(*matchbox.Machine) bool
			want     []string
			wantMore bool
		}{
			{"all", "", 0, nil, macs(0, 1, 2, 3, 4, 5, 6), false},
			{"first page", "", 3, nil, macs(0, 1, 2), true},
			{"second page", mac(2), 3, nil, macs(3, 4, 5), true},
			{"last page", mac(5), 3, nil, macs(6), false},
			{"exactly the rest", mac(3), 3, nil, macs(4, 5, 6), false},
			{"after the last", mac(6), 3, nil, nil, false},
			{"after a MAC not stored", "52:54:00:00:00:03ff", 2, nil, macs(4, 5), true},
			{"filtered", "", 2, func(m *matchbox.Machine) bool { return m.Arch == "arch1" }, macs(1, 4), false},
			{"filtered, paged", "", 1, func(m *matchbox.Machine) bool { return m.Arch == "arch0" }, macs(0), true},
			{"filtered, next page", mac(0), 1, func(m *matchbox.Machine) bool { return m.Arch == "arch0" }, macs(3), true},
		}
		for _, tt := range tests {
			got, more := page(tt.after, tt.limit, tt.keep)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" || more != tt.wantMore {
				t.Errorf("%s: MachinePage more=%v, want %v (-want +got):\n%s", tt.name, more, tt.wantMore, diff)
			}
		}
	})

	t.Run("SetMachineLabels", func(t *testing.T) {
		s := h.Open(t)
		ctx := t.Context()
		record(t, s, discover(1))
		labels := map[string]string{"rack": "r1", "os": "installed"}
		m, err := s.SetMachineLabels(ctx, mac(1), labels)
		if err != nil || m.MAC != mac(1) || !cmp.Equal(m.Labels, labels) {
			t.Fatalf("SetMachineLabels = %+v, %v", m, err)
		}
		got, err := s.GetMachine(ctx, mac(1))
		if err != nil || !cmp.Equal(got.Labels, labels) || got.Arch != "arch1" {
			t.Errorf("after SetMachineLabels: %+v, %v; want the labels on the record as it was", got, err)
		}
		for _, bad := range []map[string]string{{"rack\n": "1"}, {"rack": "1\nos=installed"}, {"": "x"}, {"rack": "\xff"}} {
			if _, err := s.SetMachineLabels(ctx, mac(1), bad); !errors.Is(err, matchbox.ErrInvalid) {
				t.Errorf("SetMachineLabels(%q): %v, want ErrInvalid", bad, err)
			}
		}
		if _, err := s.SetMachineLabels(ctx, mac(2), labels); !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("SetMachineLabels of an unknown machine: %v, want ErrNotFound", err)
		}
		if _, err := s.GetMachine(ctx, mac(2)); !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("SetMachineLabels created a machine: %v", err)
		}
		if _, err := s.SetMachineLabels(ctx, mac(1), nil); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.GetMachine(ctx, mac(1)); len(got.Labels) != 0 {
			t.Errorf("labels after clearing them: %v", got.Labels)
		}
	})

	t.Run("DeleteMachine", func(t *testing.T) {
		s, _ := openKeyed(t, h)
		ctx := t.Context()
		record(t, s, discover(1), discover(2))
		if err := s.SetMachineBMC(ctx, mac(1), matchbox.BMC{Address: "10.0.0.9", Password: "pw"}); err != nil {
			t.Fatal(err)
		}
		if err := s.SwapWorkflow(ctx, 0, matchbox.Workflow{MAC: mac(1), State: matchbox.StateRequested, Generation: 1}); err != nil {
			t.Fatal(err)
		}
		if n := s.MachineCount(); n != 2 {
			t.Errorf("MachineCount = %d, want 2", n)
		}
		if err := s.DeleteMachine(ctx, "52-54-00-00-00-01"); err != nil {
			t.Fatalf("DeleteMachine: %v", err)
		}
		gone := map[string]func() error{
			"record":   func() error { _, err := s.GetMachine(ctx, mac(1)); return err },
			"history":  func() error { _, err := s.MachineEvents(ctx, mac(1)); return err },
			"BMC":      func() error { _, err := s.MachineBMC(ctx, mac(1)); return err },
			"workflow": func() error { _, err := s.Workflow(ctx, mac(1)); return err },
			"again":    func() error { return s.DeleteMachine(ctx, mac(1)) },
		}
		for what, call := range gone {
			if err := call(); !errors.Is(err, matchbox.ErrNotFound) {
				t.Errorf("%s after DeleteMachine: %v, want ErrNotFound", what, err)
			}
		}
		if n := s.MachineCount(); n != 1 {
			t.Errorf("MachineCount after a delete = %d, want 1", n)
		}
		if evs, err := s.MachineEvents(ctx, mac(2)); err != nil || len(evs) != 1 {
			t.Errorf("the other machine's history: %v, %v", evs, err)
		}
		// A machine that comes back starts a new history.
		record(t, s, discover(1))
		if evs, err := s.MachineEvents(ctx, mac(1)); err != nil || len(evs) != 1 {
			t.Errorf("history of a machine deleted and seen again: %d events, %v; want 1", len(evs), err)
		}
	})

	t.Run("ReservedIP", func(t *testing.T) {
		s := h.Open(t)
		ctx := t.Context()
		record(t, s, discover(1))
		for _, m := range []string{mac(1), mac(2)} {
			if ip, err := s.ReservedIP(ctx, m); ip != "" || err != nil {
				t.Errorf("ReservedIP(%s) = %q, %v; want none", m, ip, err)
			}
		}
		p, ok := s.(machinePutter)
		if !ok {
			t.Skip("store cannot be given machine records with a reserved address")
		}
		if err := p.PutMachine(ctx, &matchbox.Machine{MAC: "52-54-00-00-00-03", ReservedIP: "10.0.0.33"}); err != nil {
			t.Fatal(err)
		}
		if ip, err := s.ReservedIP(ctx, "52:54:00:00:00:03"); ip != "10.0.0.33" || err != nil {
			t.Errorf("ReservedIP = %q, %v; want 10.0.0.33", ip, err)
		}
	})

	// Claimed events never add a machine, and past the maximum no event
	// does, while machines in the inventory keep recording.
	t.Run("InventoryBounds", func(t *testing.T) {
		s := h.Open(t)
		ctx := t.Context()
		if nr := record(t, s, matchbox.Event{MAC: mac(1), Kind: matchbox.EventHTTPServed, Claimed: true}); nr != (matchbox.NotRecorded{Unconfirmed: 1}) {
			t.Errorf("claimed event of an unknown machine: %+v", nr)
		}
		if _, err := s.GetMachine(ctx, mac(1)); !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("a claimed event created a machine: %v", err)
		}
		// In one batch a claimed event first, then a DHCP event of the
		// same machine: the DHCP one adds it, the claimed one is not kept.
		nr := record(t, s, matchbox.Event{MAC: mac(2), Kind: matchbox.EventHTTPServed, Claimed: true},
			matchbox.Event{MAC: mac(2), Kind: matchbox.EventDHCPDiscover},
			matchbox.Event{MAC: mac(2), Kind: matchbox.EventHTTPServed, File: "/ipxe", Claimed: true})
		if nr != (matchbox.NotRecorded{Unconfirmed: 1}) {
			t.Errorf("mixed batch: %+v", nr)
		}
		if evs, err := s.MachineEvents(ctx, mac(2)); err != nil || len(evs) != 2 {
			t.Errorf("machine added by DHCP keeps its later claimed event: %v, %v", evs, err)
		}
		if n := s.MachineCount(); n != 1 {
			t.Errorf("MachineCount = %d, want 1", n)
		}
		// A claimed event lands in the history of a known machine, but
		// another host's address does not become the machine's.
		record(t, s, matchbox.Event{MAC: mac(2), Kind: matchbox.EventDHCPAck, IP: "10.0.0.5"},
			matchbox.Event{MAC: mac(2), Kind: matchbox.EventHTTPFailed, IP: "10.0.0.66", UUID: "forged", Claimed: true})
		if m, err := s.GetMachine(ctx, mac(2)); err != nil || m.LastIP != "10.0.0.5" || m.UUID != "" {
			t.Errorf("after a claimed event: %+v, %v", m, err)
		}

		s.SetMaxMachines(3)
		var batch []matchbox.Event
		for i := 10; i < 20; i++ {
			batch = append(batch, discover(i))
		}
		if nr := record(t, s, batch...); nr != (matchbox.NotRecorded{Full: 8}) {
			t.Errorf("past the maximum: %+v", nr)
		}
		if n := s.MachineCount(); n != 3 {
			t.Errorf("MachineCount = %d, want 3", n)
		}
		// Machines in the inventory still record, full or not.
		if nr := record(t, s, matchbox.Event{MAC: mac(2), Kind: matchbox.EventDHCPAck}, matchbox.Event{MAC: mac(2), Kind: matchbox.EventHTTPServed, Claimed: true}); nr != (matchbox.NotRecorded{}) {
			t.Errorf("known machine while full: %+v", nr)
		}
		// After a delete, one more fits.
		if err := s.DeleteMachine(ctx, mac(2)); err != nil {
			t.Fatal(err)
		}
		if nr := record(t, s, discover(30), discover(31)); nr != (matchbox.NotRecorded{Full: 1}) || s.MachineCount() != 3 {
			t.Errorf("after a delete: %+v, count %d; want one more recorded", nr, s.MachineCount())
		}
		s.SetMaxMachines(0)
		if nr := record(t, s, discover(32)); nr != (matchbox.NotRecorded{}) || s.MachineCount() != 4 {
			t.Errorf("without a bound: %+v, count %d", nr, s.MachineCount())
		}
	})
}

func runEvents(t *testing.T, h Harness) {
	// The history keeps the newest MaxEventsPerMachine events, oldest
	// first, and the record follows them.
	t.Run("BoundedHistory", func(t *testing.T) {
		s := h.Open(t)
		ctx := t.Context()
		start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		total := storage.MaxEventsPerMachine + 50
		var batch []matchbox.Event
		for i := range total {
			batch = append(batch, matchbox.Event{Time: start.Add(time.Duration(i) * time.Second), MAC: "52-54-00-00-00-01",
				Kind: matchbox.EventHTTPServed, File: fmt.Sprintf("/ipxe#%d", i), IP: "10.0.0.5", Group: "g", Profile: "p", Arch: "x86_64"})
			if len(batch) == 37 || i == total-1 {
				record(t, s, batch...)
				batch = nil
			}
		}
		// Events without a valid MAC are skipped, not fatal.
		if nr := record(t, s, matchbox.Event{MAC: "junk", Kind: matchbox.EventDHCPOffer}); nr != (matchbox.NotRecorded{}) {
			t.Errorf("event without a MAC: %+v", nr)
		}
		events, err := s.MachineEvents(ctx, "52:54:00:00:00:01")
		if err != nil {
			t.Fatal(err)
		}
		if len(events) != storage.MaxEventsPerMachine {
			t.Fatalf("kept %d events, want the newest %d", len(events), storage.MaxEventsPerMachine)
		}
		for i, e := range events {
			if want := fmt.Sprintf("/ipxe#%d", 50+i); e.File != want || e.MAC != "52:54:00:00:00:01" || !e.Time.Equal(start.Add(time.Duration(50+i)*time.Second)) {
				t.Fatalf("event %d = %+v, want %s in time order", i, e, want)
			}
		}
		m, err := s.GetMachine(ctx, "52:54:00:00:00:01")
		if err != nil {
			t.Fatal(err)
		}
		if !m.FirstSeen.Equal(start) || !m.LastSeen.Equal(start.Add(time.Duration(total-1)*time.Second)) ||
			m.LastIP != "10.0.0.5" || m.Group != "g" || m.Profile != "p" || m.Arch != "x86_64" {
			t.Errorf("machine record %+v", m)
		}
		if _, err := s.MachineEvents(ctx, "52:54:00:00:00:99"); !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("MachineEvents of an unknown machine: %v, want ErrNotFound", err)
		}
	})

	t.Run("EventsRoundTrip", func(t *testing.T) {
		s := h.Open(t)
		at := time.Date(2026, 2, 3, 4, 5, 6, 7, time.UTC)
		e := matchbox.Event{Time: at, MAC: mac(5), Kind: matchbox.EventHTTPServed, Arch: "arm64", IP: "10.0.0.9", UUID: "u",
			File: "/ignition?mac=52:54:00:00:00:05", Group: "g", Profile: "p", Detail: "200 with \"quotes\" ✓"}
		record(t, s, e)
		got, err := s.MachineEvents(t.Context(), mac(5))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]matchbox.Event{e}, got); diff != "" {
			t.Errorf("MachineEvents (-want +got):\n%s", diff)
		}
	})

	// Events of matchbox acting on a machine (BMC calls, workflow steps)
	// are kept in its history but do not make it "seen", nor change its
	// address, group or profile.
	t.Run("EventsFromMatchboxLeaveTheRecord", func(t *testing.T) {
		s := h.Open(t)
		ctx := t.Context()
		const mac = "52:54:00:00:00:31"
		seen := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		record(t, s,
			matchbox.Event{Time: seen, MAC: mac, Kind: matchbox.EventHTTPServed, IP: "10.0.0.5", Group: "g", Profile: "live"},
			matchbox.Event{Time: seen.Add(time.Hour), MAC: mac, Kind: matchbox.EventBMC, File: "power off"},
			matchbox.Event{Time: seen.Add(2 * time.Hour), MAC: mac, Kind: matchbox.EventWorkflow, Profile: "install", Detail: "requested"})
		m, err := s.GetMachine(ctx, mac)
		if err != nil {
			t.Fatal(err)
		}
		if !m.LastSeen.Equal(seen) || m.Profile != "live" || m.LastIP != "10.0.0.5" {
			t.Errorf("record changed by matchbox's own events: %+v", m)
		}
		if events, err := s.MachineEvents(ctx, mac); err != nil || len(events) != 3 {
			t.Errorf("history: %d events, %v", len(events), err)
		}
	})
}
