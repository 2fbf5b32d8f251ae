package reinstall_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/internal/testrun"
	"matchbox.dev/matchbox/power"
	"matchbox.dev/matchbox/reinstall"
	"matchbox.dev/matchbox/storage"
)

// replica is one of several engines over one store.
type replica struct {
	db  *storage.DB
	bmc *fakeBMC
	lc  *reinstall.Engine
}

// newReplicas starts n engines, each over its own store of one shared
// memory backend (as replicas share a database), with macs known and given
// BMC settings. Call it inside a synctest bubble.
func newReplicas(t *testing.T, n int, macs ...string) []replica {
	t.Helper()
	backend := storage.NewMemoryBackend()
	key, err := storage.NewSecretKey(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	var out []replica
	for i := range n {
		r := replica{db: storage.OpenMemory(backend), bmc: &fakeBMC{fail: map[string]error{}}}
		t.Cleanup(func() { r.db.Close() })
		r.db.SetSecretKey(key)
		if i == 0 {
			for j, mac := range macs {
				if err := r.db.PutMachine(context.Background(), &matchbox.Machine{MAC: mac}); err != nil {
					t.Fatal(err)
				}
				if err := r.db.SetMachineBMC(context.Background(), mac, matchbox.BMC{Address: "bmc" + string(rune('0'+j)), Username: "u", Password: "lab-bmc-pw"}); err != nil {
					t.Fatal(err)
				}
			}
		}
		r.lc = reinstall.New(reinstall.Config{
			Store: r.db, Changes: r.db, Machines: r.db,
			BMCs:           &power.Service{Settings: r.db, Controller: r.bmc},
			DefaultProfile: "install",
			ProfileExists:  func(id string) bool { return id == "install" },
		})
		// Loaded before anything is written, as a server loads before it
		// serves: a workflow found at the load is resumed, and driven.
		if err := r.lc.Load(context.Background()); err != nil {
			t.Fatal(err)
		}
		testrun.Background(t, r.lc.Run)
		out = append(out, r)
	}
	return out
}

// Two engines over one store: a reinstall started on one gates the
// machine on the other as soon as it is committed (no time passes on the
// bubble's clock), with the same token; the machine's config fetch and
// reports are taken by either; only the engine that wrote a workflow's
// last transition drives it (BMC calls, deadlines).
func TestEnginesShareWorkflows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rs := newReplicas(t, 2, macA)
		a, b := rs[0], rs[1]
		ctx := context.Background()
		flows, err := a.lc.Reinstall(ctx, reinstall.Request{MACs: []string{macA}})
		if err != nil {
			t.Fatal(err)
		}
		token := flows[0].Token
		synctest.Wait()
		g, held := b.lc.Gate(macA)
		if !held || g.State != matchbox.StateBooting || g.Profile != "install" || g.Token != token {
			t.Fatalf("b's gate of a's reinstall: %+v %v", g, held)
		}
		if got := len(a.bmc.Calls()); got != 3 {
			t.Errorf("a's BMC calls %q, want power off, boot device, power on", a.bmc.Calls())
		}
		if got := b.bmc.Calls(); len(got) != 0 {
			t.Errorf("b drove a's reinstall: %q", got)
		}
		if _, err := b.lc.Reinstall(ctx, reinstall.Request{MACs: []string{macA}}); !errors.Is(err, matchbox.ErrConflict) {
			t.Errorf("b started a second reinstall of the machine: %v", err)
		}
		if err := b.lc.CheckToken(macA, token); err != nil {
			t.Errorf("b refuses the reinstall's token: %v", err)
		}

		// The installer fetches its config through b: b now drives it,
		// and a follows.
		if _, err := b.lc.InstallStarted(ctx, macA, token); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if g, _ := a.lc.Gate(macA); g.State != matchbox.StateInstalling {
			t.Fatalf("a's gate after b's move: %+v", g)
		}
		// Its report through a; the first boot's through b.
		if _, err := a.lc.Report(ctx, macA, token, matchbox.InstallReport{Status: matchbox.ReportInstalled}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if g, _ := b.lc.Gate(macA); g.State != matchbox.StateInstalled {
			t.Fatalf("b's gate after a's report: %+v", g)
		}
		if _, err := b.lc.Report(ctx, macA, token, matchbox.InstallReport{Status: matchbox.ReportBooted}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		for name, r := range map[string]replica{"a": a, "b": b} {
			if _, held := r.lc.Gate(macA); held {
				t.Errorf("%s still gates the machine after its first boot", name)
			}
		}
		if got := b.bmc.Calls(); len(got) != 0 {
			t.Errorf("b called the BMC: %q", got)
		}
	})
}

// A reinstall driven by one engine times out on that engine's clock
// alone: the other, following, does not act on it.
func TestFollowedReinstallTimesOutOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rs := newReplicas(t, 2, macA)
		a, b := rs[0], rs[1]
		if _, err := a.lc.Reinstall(context.Background(), reinstall.Request{MACs: []string{macA}}); err != nil {
			t.Fatal(err)
		}
		// Three boots of 10 minutes, each a power cycle by a.
		time.Sleep(31 * time.Minute)
		synctest.Wait()
		w, err := b.db.Workflow(context.Background(), macA)
		if err != nil || w.State != matchbox.StateFailed || w.Attempt != 3 {
			t.Fatalf("workflow %+v, %v; want failed after 3 attempts", w, err)
		}
		if got := b.bmc.Calls(); len(got) != 0 {
			t.Errorf("b drove a's reinstall: %q", got)
		}
		if _, held := b.lc.Gate(macA); held {
			t.Error("b gates a machine whose reinstall failed")
		}
	})
}
