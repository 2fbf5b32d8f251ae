package reinstall_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/power"
	"matchbox.dev/matchbox/reinstall"
	"matchbox.dev/matchbox/storage"
)

// fakeBMC is a BMC controller for the workflow's logic: it records calls
// and fails the actions it is told to. The real BMC paths are tested in
// matchbox/bmc against ipmi_sim and a Redfish server.
type fakeBMC struct {
	mu    sync.Mutex
	calls []string
	fail  map[string]error
}

func (f *fakeBMC) call(what string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, what)
	return f.fail[what]
}

func (f *fakeBMC) PowerState(context.Context, matchbox.BMC) (matchbox.PowerState, error) {
	return matchbox.PowerOn, f.call("status")
}

func (f *fakeBMC) SetPower(_ context.Context, b matchbox.BMC, a matchbox.PowerAction) error {
	return f.call(b.Address + " power " + string(a))
}

func (f *fakeBMC) SetBootDevice(_ context.Context, b matchbox.BMC, d matchbox.BootDevice, efi bool) error {
	return f.call(fmt.Sprintf("%s bootdev %s efi=%v", b.Address, d, efi))
}

func (f *fakeBMC) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

type lifecycleLab struct {
	t        *testing.T
	database *storage.MemoryBackend
	key      *storage.SecretKey
	db       *storage.DB // the store the engine's config uses
	bmc      *fakeBMC
	cfg      reinstall.Config
	lc       *reinstall.Engine
	stop     func()
	t0       time.Time // when the lab was made, on the bubble's clock
}

// newLifecycleLab makes a store holding macs and an engine's config with
// the default timeouts. Call it inside a synctest bubble: the engine's
// ticker, deadlines and BMC retry delays then run on the fake clock.
func newLifecycleLab(t *testing.T, macs ...string) *lifecycleLab {
	t.Helper()
	key, err := storage.NewSecretKey(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	l := &lifecycleLab{t: t, database: storage.NewMemoryBackend(), key: key, bmc: &fakeBMC{fail: map[string]error{}}, t0: time.Now()}
	l.cfg = reinstall.Config{
		DefaultProfile: "install",
		ProfileExists:  func(id string) bool { return id == "install" || id == "other" },
	}
	l.open()
	ctx := context.Background()
	for i, mac := range macs {
		if err := l.db.PutMachine(ctx, &matchbox.Machine{MAC: mac, Arch: "EFI x86-64"}); err != nil {
			t.Fatal(err)
		}
		// A password no message contains: power.Service redacts it from every error.
		if err := l.db.SetMachineBMC(ctx, mac, matchbox.BMC{Address: fmt.Sprintf("bmc%d", i), Username: "u", Password: "lab-bmc-pw"}); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// open opens a store over the lab's database with its secret key, as a
// server's start does, and gives it to the engine's config.
func (l *lifecycleLab) open() {
	db := storage.OpenMemory(l.database)
	db.SetSecretKey(l.key)
	l.t.Cleanup(func() { db.Close() })
	l.db = db
	l.cfg.Store, l.cfg.Machines = db, db
	l.cfg.BMCs = &power.Service{Settings: db, Controller: l.bmc}
}

// start runs a Lifecycle on the lab's database until the test ends (or
// stop is called).
func (l *lifecycleLab) start() {
	l.t.Helper()
	l.lc = reinstall.New(l.cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		_ = l.lc.Run(ctx)
		close(done)
	}()
	l.stop = func() {
		cancel()
		<-done
	}
	l.t.Cleanup(l.stop)
}

// wantState waits until every goroutine of the test's bubble is blocked
// (the engine has done all it can at this fake time) and checks mac's
// stored state.
func (l *lifecycleLab) wantState(mac string, want matchbox.WorkflowState) matchbox.Workflow {
	l.t.Helper()
	synctest.Wait()
	w, err := l.db.Workflow(context.Background(), mac)
	if err != nil || w.State != want {
		l.t.Fatalf("at %v: %s: state %q (%v), want %q; BMC calls %v", l.elapsed(), mac, w.State, err, want, l.bmc.Calls())
	}
	return w
}

// at sleeps, on the bubble's fake clock, until d after the lab was made,
// and lets the engine do all it does by then.
func (l *lifecycleLab) at(d time.Duration) {
	l.t.Helper()
	if l.elapsed() > d {
		l.t.Fatalf("at(%v): already %v", d, l.elapsed())
	}
	time.Sleep(d - l.elapsed())
	synctest.Wait()
}

func (l *lifecycleLab) elapsed() time.Duration { return time.Since(l.t0) }

const (
	macA = "52:54:00:00:00:0a"
	macB = "52:54:00:00:00:0b"
	macC = "52:54:00:00:00:0c"
)

func TestReinstallHappyPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLifecycleLab(t, macA)
		l.start()
		ctx := context.Background()
		flows, err := l.lc.Reinstall(ctx, reinstall.Request{MACs: []string{"52-54-00-00-00-0A"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(flows) != 1 || flows[0].MAC != macA || flows[0].Profile != "install" || !flows[0].EFI || len(flows[0].Token) != 32 {
			t.Fatalf("requested %+v", flows)
		}
		token := flows[0].Token
		w := l.wantState(macA, matchbox.StateBooting)
		if w.Attempt != 1 {
			t.Errorf("attempt %d", w.Attempt)
		}
		// Power-on follows the stored booting state.
		want := []string{"bmc0 power off", "bmc0 bootdev pxe efi=true", "bmc0 power on"}
		if got := l.bmc.Calls(); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("BMC calls %q, want %q", got, want)
		}
		g, held := l.lc.Gate(macA)
		if !held || !g.Installs() || g.Profile != "install" || g.Token != token {
			t.Fatalf("gate %+v %v", g, held)
		}
		if err := l.lc.CheckToken(macA, "stale"); !errors.Is(err, matchbox.ErrStaleToken) {
			t.Errorf("a wrong token: %v", err)
		}
		if _, err := l.lc.Report(ctx, macA, "stale", matchbox.InstallReport{Status: matchbox.ReportInstalled}); !errors.Is(err, matchbox.ErrStaleToken) {
			t.Errorf("a report with a wrong token: %v", err)
		}
		// Booting for a minute short of the boot timeout changes nothing.
		l.at(9 * time.Minute)
		l.wantState(macA, matchbox.StateBooting)
		if n := len(l.bmc.Calls()); n != len(want) {
			t.Errorf("%d BMC calls while booting, want %d", n, len(want))
		}
		if _, err := l.lc.InstallStarted(ctx, macA, "stale"); !errors.Is(err, matchbox.ErrStaleToken) {
			t.Errorf("install started with a wrong token: %v", err)
		}
		if w, err := l.lc.InstallStarted(ctx, macA, token); err != nil || w.State != matchbox.StateInstalling {
			t.Fatalf("install started: %+v, %v", w, err)
		}
		if _, err := l.lc.InstallStarted(ctx, macA, token); !errors.Is(err, matchbox.ErrConflict) {
			t.Errorf("install started twice: %v", err)
		}
		w = l.wantState(macA, matchbox.StateInstalling)
		if !w.Entered.Equal(l.t0.Add(9 * time.Minute)) {
			t.Errorf("installing entered at %v, want 9m", w.Entered.Sub(l.t0))
		}
		if _, err := l.lc.Report(ctx, macA, token, matchbox.InstallReport{Status: matchbox.ReportBooted}); err != nil {
			// A lost success report: the first boot still completes it.
			t.Fatalf("booted while installing: %v", err)
		}
		w = l.wantState(macA, matchbox.StateActive)
		if w.Token != "" || w.Report == nil || w.Report.Status != matchbox.ReportBooted {
			t.Errorf("active workflow %+v", w)
		}
		if _, held := l.lc.Gate(macA); held {
			t.Error("an active machine is still gated")
		}
		if err := l.lc.CheckToken(macA, token); !errors.Is(err, matchbox.ErrStaleToken) {
			t.Errorf("the token of a finished reinstall: %v", err)
		}
	})
}

func TestReinstallReportsAndStates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLifecycleLab(t, macA, macB)
		l.start()
		ctx := context.Background()
		flows, err := l.lc.Reinstall(ctx, reinstall.Request{MACs: []string{macA}, Profile: "other", EFI: new(bool)})
		if err != nil {
			t.Fatal(err)
		}
		tok := flows[0].Token
		l.wantState(macA, matchbox.StateBooting)
		// The installer can report before any config fetch was seen.
		if _, err := l.lc.Report(ctx, macA, tok, matchbox.InstallReport{Status: matchbox.ReportInstalled}); err != nil {
			t.Fatal(err)
		}
		l.wantState(macA, matchbox.StateInstalled)
		if g, held := l.lc.Gate(macA); !held || g.Installs() || g.State != matchbox.StateInstalled {
			t.Errorf("installed gate %+v %v", g, held)
		}
		if _, err := l.lc.Report(ctx, macA, tok, matchbox.InstallReport{Status: matchbox.ReportInstalled}); !errors.Is(err, matchbox.ErrConflict) {
			t.Errorf("a second success report: %v", err)
		}
		if _, err := l.lc.Report(ctx, macA, tok, matchbox.InstallReport{Status: "done"}); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("an unknown status: %v", err)
		}
		if _, err := l.lc.Report(ctx, macA, tok, matchbox.InstallReport{Status: matchbox.ReportBooted}); err != nil {
			t.Fatal(err)
		}
		l.wantState(macA, matchbox.StateActive)

		// An installer's failure report ends the workflow with its reason.
		flows, err = l.lc.Reinstall(ctx, reinstall.Request{MACs: []string{macB}})
		if err != nil {
			t.Fatal(err)
		}
		l.wantState(macB, matchbox.StateBooting)
		exit := 3
		log := strings.Repeat("noise\n", 2000) + "flatcar-install: disk /dev/sdz not found\n"
		if _, err := l.lc.Report(ctx, macB, flows[0].Token, matchbox.InstallReport{Status: matchbox.ReportFailed, ExitStatus: &exit, Log: log}); err != nil {
			t.Fatal(err)
		}
		w := l.wantState(macB, matchbox.StateFailed)
		if !strings.Contains(w.Reason, "exit status 3") || !strings.Contains(w.Reason, "disk /dev/sdz not found") {
			t.Errorf("reason %q", w.Reason)
		}
		if w.Report == nil || len(w.Report.Log) > matchbox.MaxReportLog || !strings.HasSuffix(w.Report.Log, "not found\n") {
			t.Errorf("kept log of %d bytes", len(w.Report.Log))
		}
	})
}

func TestReinstallRefusals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLifecycleLab(t, macA)
		l.start()
		ctx := context.Background()
		for name, req := range map[string]reinstall.Request{
			"no machine":      {},
			"bad mac":         {MACs: []string{"nope"}},
			"twice":           {MACs: []string{macA, strings.ToUpper(macA)}},
			"no bmc":          {MACs: []string{macB}},
			"unknown profile": {MACs: []string{macA}, Profile: "missing"},
			"all or none":     {MACs: []string{macA, macB}},
		} {
			if _, err := l.lc.Reinstall(ctx, req); err == nil {
				t.Errorf("%s: accepted", name)
			}
		}
		if _, err := l.db.Workflow(ctx, macA); !errors.Is(err, matchbox.ErrNotFound) {
			t.Fatalf("a refused request left a workflow: %v", err)
		}
		first, err := l.lc.Reinstall(ctx, reinstall.Request{MACs: []string{macA}})
		if err != nil {
			t.Fatal(err)
		}
		l.wantState(macA, matchbox.StateBooting)
		if _, err := l.lc.Reinstall(ctx, reinstall.Request{MACs: []string{macA}}); !errors.Is(err, matchbox.ErrConflict) {
			t.Fatalf("second reinstall in progress: %v", err)
		}
		second, err := l.lc.Reinstall(ctx, reinstall.Request{MACs: []string{macA}, Force: true})
		if err != nil {
			t.Fatal(err)
		}
		if second[0].Token == first[0].Token || second[0].Generation <= first[0].Generation {
			t.Errorf("forced reinstall %+v after %+v", second[0], first[0])
		}
		if err := l.lc.CheckToken(macA, first[0].Token); !errors.Is(err, matchbox.ErrStaleToken) {
			t.Errorf("the first reinstall's token still works: %v", err)
		}
		l.wantState(macA, matchbox.StateBooting)
		w, err := l.lc.Cancel(ctx, macA)
		if err != nil || w.State != matchbox.StateFailed || !strings.Contains(w.Reason, "canceled") {
			t.Fatalf("cancel: %+v %v", w, err)
		}
		if _, err := l.lc.Cancel(ctx, macA); !errors.Is(err, matchbox.ErrConflict) {
			t.Errorf("cancel without a reinstall: %v", err)
		}
		if _, held := l.lc.Gate(macA); held {
			t.Error("a canceled machine is still gated")
		}
	})
}

// The boot timeout (default 10m) power-cycles the machine again, up to
// BootAttempts (default 3); a BMC call is tried BMCAttempts times
// (default 3), BMCRetryDelay (default 5s) apart.
func TestReinstallTimeoutsAndBMCFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLifecycleLab(t, macA, macB)
		l.bmc.fail["bmc1 power off"] = errors.New("connect to bmc1: wrong password")
		l.start()
		ctx := context.Background()
		if _, err := l.lc.Reinstall(ctx, reinstall.Request{MACs: []string{macA, macB}}); err != nil {
			t.Fatal(err)
		}
		count := func(call string) int {
			n := 0
			for _, c := range l.bmc.Calls() {
				if c == call {
					n++
				}
			}
			return n
		}
		l.wantState(macB, matchbox.StateBMCPrep)
		if n := count("bmc1 power off"); n != 1 {
			t.Errorf("%d tries at once, want 1", n)
		}
		l.at(5*time.Second - time.Nanosecond)
		if n := count("bmc1 power off"); n != 1 {
			t.Errorf("%d tries before the retry delay, want 1", n)
		}
		l.at(5 * time.Second)
		if n := count("bmc1 power off"); n != 2 {
			t.Errorf("%d tries after one retry delay, want 2", n)
		}
		l.at(10*time.Second - time.Nanosecond)
		l.wantState(macB, matchbox.StateBMCPrep)
		l.at(10 * time.Second)
		w := l.wantState(macB, matchbox.StateFailed)
		if !strings.Contains(w.Reason, "bmc power off failed (3 tries)") || !strings.Contains(w.Reason, "wrong password") {
			t.Errorf("BMC refusal: %q", w.Reason)
		}
		if n := count("bmc1 power off"); n != 3 {
			t.Errorf("%d tries, want 3", n)
		}

		for attempt := 1; attempt <= 3; attempt++ {
			timeout := time.Duration(attempt) * 10 * time.Minute
			l.at(timeout - time.Second) // the last tick before the timeout
			w := l.wantState(macA, matchbox.StateBooting)
			if w.Attempt != attempt || count("bmc0 power on") != attempt {
				t.Fatalf("at %v: attempt %d, %d power-ons; want %d", l.elapsed(), w.Attempt, count("bmc0 power on"), attempt)
			}
			l.at(timeout)
		}
		w = l.wantState(macA, matchbox.StateFailed)
		if w.Attempt != 3 || !strings.Contains(w.Reason, "did not fetch its install config within 10m0s") || !strings.Contains(w.Reason, "3 boot attempts") {
			t.Errorf("boot timeout: %+v", w)
		}
		if n := count("bmc0 power on"); n != 3 {
			t.Errorf("%d power-ons for 3 boot attempts: %v", n, l.bmc.Calls())
		}
	})
}

// The installer has InstallTimeout (default 30m) to report, the installed
// system FirstBootTimeout (here 45m) to report its first boot.
func TestReinstallInstallTimeouts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLifecycleLab(t, macA, macB)
		l.cfg.FirstBootTimeout = 45 * time.Minute
		l.start()
		ctx := context.Background()
		flows, err := l.lc.Reinstall(ctx, reinstall.Request{MACs: []string{macA, macB}})
		if err != nil {
			t.Fatal(err)
		}
		l.wantState(macA, matchbox.StateBooting)
		l.wantState(macB, matchbox.StateBooting)
		if _, err := l.lc.InstallStarted(ctx, macA, flows[0].Token); err != nil {
			t.Fatal(err)
		}
		if _, err := l.lc.Report(ctx, macB, flows[1].Token, matchbox.InstallReport{Status: matchbox.ReportInstalled}); err != nil {
			t.Fatal(err)
		}
		l.at(30*time.Minute - time.Second)
		l.wantState(macA, matchbox.StateInstalling)
		l.at(30 * time.Minute)
		if w := l.wantState(macA, matchbox.StateFailed); !strings.Contains(w.Reason, "installer did not report within 30m0s") {
			t.Errorf("install timeout: %q", w.Reason)
		}
		l.at(45*time.Minute - time.Second)
		l.wantState(macB, matchbox.StateInstalled)
		l.at(45 * time.Minute)
		if w := l.wantState(macB, matchbox.StateFailed); !strings.Contains(w.Reason, "did not report its first boot within 45m0s") {
			t.Errorf("first boot timeout: %q", w.Reason)
		}
	})
}

func TestReinstallResumesAfterRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLifecycleLab(t, macA)
		l.start()
		ctx := context.Background()
		flows, err := l.lc.Reinstall(ctx, reinstall.Request{MACs: []string{macA}})
		if err != nil {
			t.Fatal(err)
		}
		l.wantState(macA, matchbox.StateBooting)
		l.stop()
		l.db.Close()
		before := len(l.bmc.Calls())

		// A new process on the same database: gating holds from the load,
		// booting's power-on is repeated (idempotent), and the reinstall
		// finishes with the same token.
		l.open()
		l.start()
		synctest.Wait()
		if calls := l.bmc.Calls(); len(calls) != before+1 || calls[before] != "bmc0 power on" {
			t.Errorf("after restart: %v", calls[before:])
		}
		if g, held := l.lc.Gate(macA); !held || g.Token != flows[0].Token {
			t.Fatalf("gate after restart %+v %v", g, held)
		}
		if _, err := l.lc.Report(ctx, macA, flows[0].Token, matchbox.InstallReport{Status: matchbox.ReportInstalled}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.lc.Report(ctx, macA, flows[0].Token, matchbox.InstallReport{Status: matchbox.ReportBooted}); err != nil {
			t.Fatal(err)
		}
		l.wantState(macA, matchbox.StateActive)
	})
}

func TestReinstallConcurrencyLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLifecycleLab(t, macA, macB, macC)
		l.start()
		ctx := context.Background()
		flows, err := l.lc.Reinstall(ctx, reinstall.Request{MACs: []string{macC, macA, macB}, Concurrency: 1})
		if err != nil {
			t.Fatal(err)
		}
		tokens := map[string]string{}
		for _, f := range flows {
			tokens[f.MAC] = f.Token
		}
		// One machine at a time, in the order given.
		for _, mac := range []string{macC, macA, macB} {
			l.wantState(mac, matchbox.StateBooting)
			for _, other := range []string{macA, macB, macC} {
				if w, _ := l.db.Workflow(ctx, other); other != mac && (w.State == matchbox.StateBMCPrep || w.State == matchbox.StateBooting || w.State == matchbox.StateInstalling) {
					t.Fatalf("%s in flight (%s) beside %s", other, w.State, mac)
				}
			}
			if _, err := l.lc.Report(ctx, mac, tokens[mac], matchbox.InstallReport{Status: matchbox.ReportInstalled}); err != nil {
				t.Fatal(err)
			}
		}
	})
}
