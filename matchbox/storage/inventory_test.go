package storage_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// TestInventoryBounds: claimed events never add a machine, and past the
// maximum no event does, while machines in the inventory keep recording;
// the count survives a reopen and follows deletes.
func TestInventoryBounds(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	db, err := storage.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	mac := func(i int) string { return fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff) }
	record := func(events ...matchbox.Event) matchbox.NotRecorded {
		t.Helper()
		nr, err := db.RecordEvents(ctx, events)
		if err != nil {
			t.Fatal(err)
		}
		return nr
	}
	// A claimed event of an unknown machine: nothing stored.
	if nr := record(matchbox.Event{MAC: mac(1), Kind: matchbox.EventHTTPServed, Claimed: true}); nr != (matchbox.NotRecorded{Unconfirmed: 1}) {
		t.Errorf("claimed event of an unknown machine: %+v", nr)
	}
	if _, err := db.GetMachine(ctx, mac(1)); err == nil {
		t.Error("a claimed event created a machine")
	}
	// In one batch a claimed event first, then a DHCP event of the same
	// machine: the DHCP one adds it, the claimed one is not kept.
	nr := record(matchbox.Event{MAC: mac(2), Kind: matchbox.EventHTTPServed, Claimed: true},
		matchbox.Event{MAC: mac(2), Kind: matchbox.EventDHCPDiscover},
		matchbox.Event{MAC: mac(2), Kind: matchbox.EventHTTPServed, File: "/ipxe", Claimed: true})
	if nr != (matchbox.NotRecorded{Unconfirmed: 1}) {
		t.Errorf("mixed batch: %+v", nr)
	}
	if evs, err := db.MachineEvents(ctx, mac(2)); err != nil || len(evs) != 2 {
		t.Errorf("machine added by DHCP keeps its later claimed event: %v, %v", evs, err)
	}
	if db.MachineCount() != 1 {
		t.Errorf("count %d, want 1", db.MachineCount())
	}
	// A claimed event lands in the history of a known machine, but
	// another host's address does not become the machine's.
	record(matchbox.Event{MAC: mac(2), Kind: matchbox.EventDHCPAck, IP: "10.0.0.5"},
		matchbox.Event{MAC: mac(2), Kind: matchbox.EventHTTPFailed, IP: "10.0.0.66", UUID: "forged", Claimed: true})
	if m, err := db.GetMachine(ctx, mac(2)); err != nil || m.LastIP != "10.0.0.5" || m.UUID != "" {
		t.Errorf("after a claimed event: %+v, %v", m, err)
	}

	db.SetMaxMachines(3)
	var batch []matchbox.Event
	for i := 10; i < 20; i++ {
		batch = append(batch, matchbox.Event{MAC: mac(i), Kind: matchbox.EventDHCPDiscover})
	}
	if nr := record(batch...); nr != (matchbox.NotRecorded{Full: 8}) {
		t.Errorf("past the maximum: %+v", nr)
	}
	if db.MachineCount() != 3 {
		t.Errorf("count %d, want 3", db.MachineCount())
	}
	// Machines in the inventory still record, full or not.
	if nr := record(matchbox.Event{MAC: mac(2), Kind: matchbox.EventDHCPAck}, matchbox.Event{MAC: mac(2), Kind: matchbox.EventHTTPServed, Claimed: true}); nr != (matchbox.NotRecorded{}) {
		t.Errorf("known machine while full: %+v", nr)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = storage.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.MachineCount() != 3 {
		t.Errorf("count after reopen %d, want 3", db.MachineCount())
	}
	db.SetMaxMachines(3)
	if err := db.DeleteMachine(ctx, mac(2)); err != nil {
		t.Fatal(err)
	}
	nr, err = db.RecordEvents(ctx, []matchbox.Event{{MAC: mac(30), Kind: matchbox.EventDHCPDiscover}, {MAC: mac(31), Kind: matchbox.EventDHCPDiscover}})
	if err != nil || nr != (matchbox.NotRecorded{Full: 1}) || db.MachineCount() != 3 {
		t.Errorf("after a delete one more fits: %+v, %v, count %d", nr, err, db.MachineCount())
	}
}
