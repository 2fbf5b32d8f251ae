package reinstall_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
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
	t    *testing.T
	db   *storage.Bolt
	path string
	bmc  *fakeBMC
	cfg  reinstall.Config
	lc   *reinstall.Engine
	stop func()
}

func newLifecycleLab(t *testing.T, macs ...string) *lifecycleLab {
	t.Helper()
	path := filepath.Join(t.TempDir(), "matchbox.db")
	db, err := storage.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := storage.NewSecretKey(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, mac := range macs {
		if err := db.PutMachine(ctx, &matchbox.Machine{MAC: mac, Arch: "EFI x86-64"}); err != nil {
			t.Fatal(err)
		}
		// A password no message contains: power.Service redacts it from every error.
		if err := db.SetMachineBMC(ctx, key, mac, matchbox.BMC{Address: fmt.Sprintf("bmc%d", i), Username: "u", Password: "lab-bmc-pw"}); err != nil {
			t.Fatal(err)
		}
	}
	l := &lifecycleLab{t: t, db: db, path: path, bmc: &fakeBMC{fail: map[string]error{}}}
	l.cfg = reinstall.Config{
		Store:          db,
		Machines:       db,
		BMCs:           &power.Service{Settings: storage.BMCSettings{DB: db, Key: key}, Controller: l.bmc},
		DefaultProfile: "install",
		ProfileExists:  func(id string) bool { return id == "install" || id == "other" },
		BootTimeout:    time.Hour,
		InstallTimeout: time.Hour,
		BMCRetryDelay:  time.Millisecond,
		Tick:           10 * time.Millisecond,
	}
	return l
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

func (l *lifecycleLab) waitState(mac string, want matchbox.WorkflowState) matchbox.Workflow {
	l.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w, err := l.db.Workflow(context.Background(), mac)
		if err == nil && w.State == want {
			return w
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%s: state %q (%v), want %q; BMC calls %v", mac, w.State, err, want, l.bmc.Calls())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const (
	macA = "52:54:00:00:00:0a"
	macB = "52:54:00:00:00:0b"
	macC = "52:54:00:00:00:0c"
)

func TestReinstallHappyPath(t *testing.T) {
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
	w := l.waitState(macA, matchbox.StateBooting)
	if w.Attempt != 1 {
		t.Errorf("attempt %d", w.Attempt)
	}
	// Power-on follows the stored booting state.
	deadline := time.Now().Add(5 * time.Second)
	for len(l.bmc.Calls()) < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
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
	if _, err := l.lc.InstallStarted(ctx, macA, "stale"); !errors.Is(err, matchbox.ErrStaleToken) {
		t.Errorf("install started with a wrong token: %v", err)
	}
	if w, err := l.lc.InstallStarted(ctx, macA, token); err != nil || w.State != matchbox.StateInstalling {
		t.Fatalf("install started: %+v, %v", w, err)
	}
	if _, err := l.lc.InstallStarted(ctx, macA, token); !errors.Is(err, matchbox.ErrConflict) {
		t.Errorf("install started twice: %v", err)
	}
	l.waitState(macA, matchbox.StateInstalling)
	if _, err := l.lc.Report(ctx, macA, token, matchbox.InstallReport{Status: matchbox.ReportBooted}); err != nil {
		// A lost success report: the first boot still completes it.
		t.Fatalf("booted while installing: %v", err)
	}
	w = l.waitState(macA, matchbox.StateActive)
	if w.Token != "" || w.Report == nil || w.Report.Status != matchbox.ReportBooted {
		t.Errorf("active workflow %+v", w)
	}
	if _, held := l.lc.Gate(macA); held {
		t.Error("an active machine is still gated")
	}
	if err := l.lc.CheckToken(macA, token); !errors.Is(err, matchbox.ErrStaleToken) {
		t.Errorf("the token of a finished reinstall: %v", err)
	}
}

func TestReinstallReportsAndStates(t *testing.T) {
	l := newLifecycleLab(t, macA, macB)
	l.start()
	ctx := context.Background()
	flows, err := l.lc.Reinstall(ctx, reinstall.Request{MACs: []string{macA}, Profile: "other", EFI: new(bool)})
	if err != nil {
		t.Fatal(err)
	}
	tok := flows[0].Token
	l.waitState(macA, matchbox.StateBooting)
	// The installer can report before any config fetch was seen.
	if _, err := l.lc.Report(ctx, macA, tok, matchbox.InstallReport{Status: matchbox.ReportInstalled}); err != nil {
		t.Fatal(err)
	}
	l.waitState(macA, matchbox.StateInstalled)
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
	l.waitState(macA, matchbox.StateActive)

	// An installer's failure report ends the workflow with its reason.
	flows, err = l.lc.Reinstall(ctx, reinstall.Request{MACs: []string{macB}})
	if err != nil {
		t.Fatal(err)
	}
	l.waitState(macB, matchbox.StateBooting)
	exit := 3
	log := strings.Repeat("noise\n", 2000) + "flatcar-install: disk /dev/sdz not found\n"
	if _, err := l.lc.Report(ctx, macB, flows[0].Token, matchbox.InstallReport{Status: matchbox.ReportFailed, ExitStatus: &exit, Log: log}); err != nil {
		t.Fatal(err)
	}
	w := l.waitState(macB, matchbox.StateFailed)
	if !strings.Contains(w.Reason, "exit status 3") || !strings.Contains(w.Reason, "disk /dev/sdz not found") {
		t.Errorf("reason %q", w.Reason)
	}
	if w.Report == nil || len(w.Report.Log) > matchbox.MaxReportLog || !strings.HasSuffix(w.Report.Log, "not found\n") {
		t.Errorf("kept log of %d bytes", len(w.Report.Log))
	}
}

func TestReinstallRefusals(t *testing.T) {
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
	l.waitState(macA, matchbox.StateBooting)
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
	l.waitState(macA, matchbox.StateBooting)
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
}

func TestReinstallTimeoutsAndBMCFailures(t *testing.T) {
	l := newLifecycleLab(t, macA, macB)
	l.cfg.BootTimeout = 50 * time.Millisecond
	l.cfg.BootAttempts = 2
	l.cfg.BMCAttempts = 2
	l.bmc.fail["bmc1 power off"] = errors.New("connect to bmc1: wrong password")
	l.start()
	ctx := context.Background()
	if _, err := l.lc.Reinstall(ctx, reinstall.Request{MACs: []string{macA, macB}}); err != nil {
		t.Fatal(err)
	}
	w := l.waitState(macA, matchbox.StateFailed)
	if w.Attempt != 2 || !strings.Contains(w.Reason, "did not fetch its install config") || !strings.Contains(w.Reason, "2 boot attempts") {
		t.Errorf("boot timeout: %+v", w)
	}
	ons := 0
	for _, c := range l.bmc.Calls() {
		if c == "bmc0 power on" {
			ons++
		}
	}
	if ons != 2 {
		t.Errorf("%d power-ons for 2 boot attempts: %v", ons, l.bmc.Calls())
	}
	w = l.waitState(macB, matchbox.StateFailed)
	if !strings.Contains(w.Reason, "bmc power off failed (2 tries)") || !strings.Contains(w.Reason, "wrong password") {
		t.Errorf("BMC refusal: %q", w.Reason)
	}
}

func TestReinstallInstallTimeouts(t *testing.T) {
	l := newLifecycleLab(t, macA, macB)
	l.cfg.InstallTimeout = 50 * time.Millisecond
	l.cfg.FirstBootTimeout = 50 * time.Millisecond
	l.start()
	ctx := context.Background()
	flows, err := l.lc.Reinstall(ctx, reinstall.Request{MACs: []string{macA, macB}})
	if err != nil {
		t.Fatal(err)
	}
	l.waitState(macA, matchbox.StateBooting)
	l.waitState(macB, matchbox.StateBooting)
	if _, err := l.lc.InstallStarted(ctx, macA, flows[0].Token); err != nil {
		t.Fatal(err)
	}
	if _, err := l.lc.Report(ctx, macB, flows[1].Token, matchbox.InstallReport{Status: matchbox.ReportInstalled}); err != nil {
		t.Fatal(err)
	}
	if w := l.waitState(macA, matchbox.StateFailed); !strings.Contains(w.Reason, "installer did not report") {
		t.Errorf("install timeout: %q", w.Reason)
	}
	if w := l.waitState(macB, matchbox.StateFailed); !strings.Contains(w.Reason, "did not report its first boot") {
		t.Errorf("first boot timeout: %q", w.Reason)
	}
}

func TestReinstallResumesAfterRestart(t *testing.T) {
	l := newLifecycleLab(t, macA)
	l.start()
	ctx := context.Background()
	flows, err := l.lc.Reinstall(ctx, reinstall.Request{MACs: []string{macA}})
	if err != nil {
		t.Fatal(err)
	}
	l.waitState(macA, matchbox.StateBooting)
	l.stop()
	before := len(l.bmc.Calls())

	// A new process on the same database: gating holds from the load,
	// booting's power-on is repeated (idempotent), and the reinstall
	// finishes with the same token.
	l.start()
	deadline := time.Now().Add(5 * time.Second)
	for len(l.bmc.Calls()) == before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
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
	l.waitState(macA, matchbox.StateActive)
}

func TestReinstallConcurrencyLimit(t *testing.T) {
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
		l.waitState(mac, matchbox.StateBooting)
		for _, other := range []string{macA, macB, macC} {
			if w, _ := l.db.Workflow(ctx, other); other != mac && (w.State == matchbox.StateBMCPrep || w.State == matchbox.StateBooting || w.State == matchbox.StateInstalling) {
				t.Fatalf("%s in flight (%s) beside %s", other, w.State, mac)
			}
		}
		if _, err := l.lc.Report(ctx, mac, tokens[mac], matchbox.InstallReport{Status: matchbox.ReportInstalled}); err != nil {
			t.Fatal(err)
		}
	}
}
