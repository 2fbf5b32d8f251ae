package storagetest

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"matchbox.dev/matchbox"
)

// runReopen writes something of every kind, restarts the store and reads
// it all back.
func runReopen(t *testing.T, h Harness) {
	s, key := openKeyed(t, h)
	ctx := t.Context()
	put(t, s, seed())
	tok := matchbox.Token{Name: "ops", Role: matchbox.RoleAdmin, Hash: "h-ops"}
	if err := s.CreateToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	record(t, s, discover(1), discover(2), discover(2))
	labels := map[string]string{"rack": "r1"}
	if _, err := s.SetMachineLabels(ctx, mac(1), labels); err != nil {
		t.Fatal(err)
	}
	s.SetMaxMachines(2)
	if nr := record(t, s, discover(3)); nr.Full != 1 {
		t.Fatalf("past the maximum: %+v", nr)
	}
	if err := s.PutLeases(ctx, testLease(1), testLease(2)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteLeases(ctx, testLease(2).IP); err != nil {
		t.Fatal(err)
	}
	w := workflow(1, 1, matchbox.StateRequested)
	if err := s.SwapWorkflow(ctx, 0, w); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMachineBMC(ctx, mac(1), bmcOf(1, bmcPassword)); err != nil {
		t.Fatal(err)
	}

	r := h.Reopen(t)
	r.SetSecretKey(key)
	if diff := cmp.Diff(seedWant(), objects(t, r), opts); diff != "" {
		t.Errorf("Objects after reopen (-want +got):\n%s", diff)
	}
	if ts, err := r.Tokens(ctx); err != nil || len(ts) != 1 || ts[0].Name != "ops" || ts[0].Hash != "h-ops" {
		t.Errorf("Tokens after reopen = %+v, %v", ts, err)
	}
	if n := r.MachineCount(); n != 2 {
		t.Errorf("MachineCount after reopen = %d, want 2", n)
	}
	if m, err := r.GetMachine(ctx, mac(1)); err != nil || !cmp.Equal(m.Labels, labels) {
		t.Errorf("machine after reopen: %+v, %v", m, err)
	}
	if evs, err := r.MachineEvents(ctx, mac(2)); err != nil || len(evs) != 2 {
		t.Errorf("history after reopen: %d events, %v; want 2", len(evs), err)
	}
	// The bound is the server's setting, not stored.
	if nr := record(t, r, discover(3)); nr != (matchbox.NotRecorded{}) || r.MachineCount() != 3 {
		t.Errorf("after reopen, without a bound set: %+v, count %d", nr, r.MachineCount())
	}
	leasesAre(t, r, testLease(1))
	if got, err := r.Workflow(ctx, mac(1)); err != nil || !cmp.Equal(w, got, cmpopts.EquateEmpty()) {
		t.Errorf("workflow after reopen = %+v, %v", got, err)
	}
	hasBMC(t, r, 1, bmcOf(1, bmcPassword))
}
