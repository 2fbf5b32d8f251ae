// Package reinstall runs reinstall workflows: it drives each machine's BMC
// (through matchbox/power), gates what the machine is served while it is
// reinstalled, takes the installer's reports and enforces each state's
// deadline. Every transition is written to the store before the BMC call
// that follows it, so a restarted server resumes where the last one
// stopped. Engines that share a store follow each other's workflows
// through its change feed: each gates the machine and takes its reports;
// the one that wrote a workflow's last transition drives it.
package reinstall

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/power"
	"matchbox.dev/matchbox/recorder"
)

// holdsSlot reports whether a workflow in this state holds one of the
// concurrency slots: from the first BMC call until the installer reports.
func holdsSlot(s matchbox.WorkflowState) bool {
	return s == matchbox.StateBMCPrep || s == matchbox.StateBooting || s == matchbox.StateInstalling
}

// Config configures a Engine. Zero durations and counts take
// the defaults named.
type Config struct {
	Store matchbox.WorkflowStore
	// Changes, when set, is the change feed of the store Store is part
	// of: workflows other engines sharing the store write are followed
	// (see Engine).
	Changes  matchbox.ChangeFeed
	BMCs     *power.Service
	Machines matchbox.MachineStore
	Recorder *recorder.Recorder
	Logger   *slog.Logger
	// DefaultProfile is the install profile when a request names none
	// (default flatcar-install).
	DefaultProfile string
	// ProfileExists reports whether a profile id is known.
	ProfileExists func(id string) bool
	// BootTimeout bounds booting: from power-on until the machine fetches
	// its install config (default 10m). BootAttempts is how many power
	// cycles are tried before failing (default 3).
	BootTimeout  time.Duration
	BootAttempts int
	// InstallTimeout bounds installing: until the installer reports
	// (default 30m).
	InstallTimeout time.Duration
	// FirstBootTimeout bounds installed: until the installed system
	// reports its first boot (default 30m).
	FirstBootTimeout time.Duration
	// BMCAttempts is how often one BMC step is tried before the workflow
	// fails (default 3), BMCRetryDelay the pause between tries (5s).
	BMCAttempts   int
	BMCRetryDelay time.Duration
	// Concurrency bounds the machines in flight at once (default 16).
	Concurrency int
	// Tick is how often deadlines are checked (default 1s).
	Tick time.Duration
	// OnTransition, when set, is told of every stored transition (for
	// metrics); from is empty for a new reinstall.
	OnTransition func(from, to matchbox.WorkflowState)
}

// Engine runs reinstall workflows: it drives each machine's BMC, gates
// what the machine is served while it is reinstalled, takes the
// installer's reports and enforces each state's deadline. Every
// transition is written before the BMC call that follows it, so a
// restarted server resumes where the last one stopped.
type Engine struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex
	// flows holds every workflow that has not ended.
	flows map[string]*matchbox.Workflow
	// busy marks machines with a BMC step running.
	busy map[string]bool
	// poweredOn remembers, per machine, the generation for which this
	// process has powered the machine on (booting's one BMC call).
	poweredOn map[string]uint64
	// followed marks the workflows whose last transition another engine
	// sharing the store wrote: that engine drives them (BMC steps,
	// deadlines); this one gates their machines and takes their reports.
	followed map[string]bool
	// gates is what Gate reads on every boot request, without a lock: a
	// map rebuilt at each transition (rare) and never changed after.
	gates  atomic.Pointer[map[string]matchbox.Gate]
	loaded bool
	// changes are the store's workflow changes (nil: not followed).
	changes <-chan matchbox.Change
	kick    chan struct{}
	wg      sync.WaitGroup
}

// New returns a Engine; Run loads the stored workflows and
// drives them.
func New(cfg Config) *Engine {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	def(&cfg.BootTimeout, 10*time.Minute)
	def(&cfg.InstallTimeout, 30*time.Minute)
	def(&cfg.FirstBootTimeout, 30*time.Minute)
	def(&cfg.BMCRetryDelay, 5*time.Second)
	def(&cfg.Tick, time.Second)
	defInt(&cfg.BootAttempts, 3)
	defInt(&cfg.BMCAttempts, 3)
	defInt(&cfg.Concurrency, 16)
	if cfg.DefaultProfile == "" {
		cfg.DefaultProfile = "flatcar-install"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Recorder == nil {
		cfg.Recorder = recorder.New(nil, nil)
	}
	return &Engine{cfg: cfg, log: cfg.Logger, flows: map[string]*matchbox.Workflow{}, busy: map[string]bool{},
		poweredOn: map[string]uint64{}, followed: map[string]bool{}, kick: make(chan struct{}, 1)}
}

// Load reads the stored workflows that have not ended. Run calls it; a
// server calls it before answering boot requests so that gating holds from
// the first one.
func (l *Engine) Load(ctx context.Context) error {
	if l.cfg.Changes != nil && l.changes == nil {
		// Subscribed before the load: nothing written between is missed.
		l.changes = l.cfg.Changes.Changes(ctx, matchbox.ChangeWorkflow)
	}
	all, err := l.cfg.Store.Workflows(ctx)
	if err != nil {
		return fmt.Errorf("load workflows: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range all {
		w := all[i]
		if !w.State.Done() {
			l.flows[w.MAC] = &w
			l.log.Info("reinstall resumed", "mac", w.MAC, "state", w.State, "attempt", w.Attempt)
		}
	}
	l.loaded = true
	l.publishGates()
	return nil
}

// publishGates rebuilds the map Gate reads. Called with l.mu held.
func (l *Engine) publishGates() {
	m := make(map[string]matchbox.Gate, len(l.flows))
	for mac, w := range l.flows {
		if w.State != matchbox.StateRequested {
			m[mac] = matchbox.Gate{State: w.State, Profile: w.Profile, Token: w.Token}
		}
	}
	l.gates.Store(&m)
}

// Run drives the workflows until ctx ends. BMC steps still running then
// are abandoned: their state is stored and the next start resumes them.
func (l *Engine) Run(ctx context.Context) error {
	l.mu.Lock()
	loaded := l.loaded
	l.mu.Unlock()
	if !loaded {
		if err := l.Load(ctx); err != nil {
			return err
		}
	}
	t := time.NewTicker(l.cfg.Tick)
	defer t.Stop()
	defer l.wg.Wait()
	changes := l.changes
	for {
		l.step(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-l.kick:
		case c, ok := <-changes:
			switch {
			case !ok:
				changes = nil
			case !c.Local:
				l.follow(ctx, c.Key)
			}
		}
	}
}

func (l *Engine) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// step starts the BMC work that is due and fails the workflows whose
// deadline has passed.
func (l *Engine) step(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	flows := make([]*matchbox.Workflow, 0, len(l.flows))
	inFlight, batch := 0, map[string]int{}
	for _, w := range l.flows {
		flows = append(flows, w)
		// A requested workflow whose BMC step has started counts
		// before its first transition is written.
		if holdsSlot(w.State) || (w.State == matchbox.StateRequested && l.busy[w.MAC]) {
			inFlight++
			batch[w.Batch]++
		}
	}
	// Oldest requests first, so a bulk request runs in the order given.
	slices.SortFunc(flows, func(a, b *matchbox.Workflow) int {
		if c := a.Requested.Compare(b.Requested); c != 0 {
			return c
		}
		return strings.Compare(a.MAC, b.MAC)
	})
	now := time.Now()
	for _, w := range flows {
		if l.busy[w.MAC] || l.followed[w.MAC] {
			continue
		}
		switch w.State {
		case matchbox.StateRequested:
			if inFlight >= l.cfg.Concurrency || (w.BatchLimit > 0 && batch[w.Batch] >= w.BatchLimit) {
				continue
			}
			inFlight++
			batch[w.Batch]++
			l.spawn(ctx, *w, l.prepare)
		case matchbox.StateBMCPrep:
			l.spawn(ctx, *w, l.prepare)
		case matchbox.StateBooting:
			switch {
			case now.Sub(w.Entered) >= l.cfg.BootTimeout:
				l.spawn(ctx, *w, l.bootTimedOut)
			case l.poweredOn[w.MAC] != w.Generation:
				l.spawn(ctx, *w, l.powerOn)
			}
		case matchbox.StateInstalling:
			if now.Sub(w.Entered) >= l.cfg.InstallTimeout {
				l.spawn(ctx, *w, func(ctx context.Context, w matchbox.Workflow) {
					l.fail(ctx, w, fmt.Sprintf("the installer did not report within %v", l.cfg.InstallTimeout))
				})
			}
		case matchbox.StateInstalled:
			if now.Sub(w.Entered) >= l.cfg.FirstBootTimeout {
				l.spawn(ctx, *w, func(ctx context.Context, w matchbox.Workflow) {
					l.fail(ctx, w, fmt.Sprintf("the installed system did not report its first boot within %v", l.cfg.FirstBootTimeout))
				})
			}
		}
	}
}

// spawn runs fn for one machine off the lock; the machine is busy until
// it returns. Called with l.mu held.
func (l *Engine) spawn(ctx context.Context, w matchbox.Workflow, fn func(context.Context, matchbox.Workflow)) {
	l.busy[w.MAC] = true
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		fn(ctx, w)
		l.mu.Lock()
		delete(l.busy, w.MAC)
		l.mu.Unlock()
		l.wake()
	}()
}

// prepare powers the machine off and sets a one-time network boot, then
// moves to booting. Each call is idempotent, so a resumed bmc-prep simply
// repeats them.
func (l *Engine) prepare(ctx context.Context, w matchbox.Workflow) {
	var err error
	if w.State == matchbox.StateRequested {
		if w, err = l.transition(ctx, w, func(n *matchbox.Workflow) { n.State = matchbox.StateBMCPrep; n.Attempt++ }); err != nil {
			return
		}
	}
	if !l.bmcStep(ctx, w, "power off", func(ctx context.Context) error {
		return l.cfg.BMCs.SetPower(ctx, w.MAC, matchbox.ActionOff)
	}) {
		return
	}
	if !l.bmcStep(ctx, w, "set one-time network boot", func(ctx context.Context) error {
		return l.cfg.BMCs.SetBootDevice(ctx, w.MAC, matchbox.BootPXE, w.EFI)
	}) {
		return
	}
	if w, err = l.transition(ctx, w, func(n *matchbox.Workflow) { n.State = matchbox.StateBooting }); err != nil {
		return
	}
	l.powerOn(ctx, w)
}

// powerOn is booting's BMC call, made once per generation by this process
// (and again after a restart: powering on a running machine does nothing).
func (l *Engine) powerOn(ctx context.Context, w matchbox.Workflow) {
	if !l.bmcStep(ctx, w, "power on", func(ctx context.Context) error {
		return l.cfg.BMCs.SetPower(ctx, w.MAC, matchbox.ActionOn)
	}) {
		return
	}
	l.mu.Lock()
	if cur := l.flows[w.MAC]; cur != nil && cur.Generation == w.Generation {
		l.poweredOn[w.MAC] = w.Generation
	}
	l.mu.Unlock()
}

// bootTimedOut retries the boot from bmc-prep, or fails once the attempts
// are spent.
func (l *Engine) bootTimedOut(ctx context.Context, w matchbox.Workflow) {
	if w.Attempt >= l.cfg.BootAttempts {
		l.fail(ctx, w, fmt.Sprintf("the machine did not fetch its install config within %v, %d boot attempts made", l.cfg.BootTimeout, w.Attempt))
		return
	}
	n, err := l.transition(ctx, w, func(n *matchbox.Workflow) {
		n.State = matchbox.StateBMCPrep
		n.Attempt++
		n.Reason = fmt.Sprintf("boot attempt %d did not fetch the install config within %v", w.Attempt, l.cfg.BootTimeout)
	})
	if err == nil {
		l.prepare(ctx, n)
	}
}

// bmcStep runs one BMC call with bounded retries; when they are spent the
// workflow fails with the call's error. It reports whether the call
// succeeded.
func (l *Engine) bmcStep(ctx context.Context, w matchbox.Workflow, what string, call func(context.Context) error) bool {
	var err error
	for try := 1; try <= l.cfg.BMCAttempts; try++ {
		if err = call(ctx); err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false // shutting down: resumed at the next start
		}
		l.log.Warn("reinstall: bmc call failed", "mac", w.MAC, "step", what, "try", try, "of", l.cfg.BMCAttempts, "err", err)
		if try < l.cfg.BMCAttempts {
			select {
			case <-ctx.Done():
				return false
			case <-time.After(l.cfg.BMCRetryDelay):
			}
		}
	}
	tries := "1 try"
	if l.cfg.BMCAttempts > 1 {
		tries = fmt.Sprintf("%d tries", l.cfg.BMCAttempts)
	}
	l.fail(ctx, w, fmt.Sprintf("bmc %s failed (%s): %v", what, tries, err))
	return false
}

func (l *Engine) fail(ctx context.Context, w matchbox.Workflow, reason string) {
	_, _ = l.transition(ctx, w, func(n *matchbox.Workflow) { n.State = matchbox.StateFailed; n.Reason = reason; n.Token = "" })
}

// transition writes the next state of w if nothing changed it meanwhile,
// and returns the stored result.
func (l *Engine) transition(ctx context.Context, w matchbox.Workflow, mutate func(*matchbox.Workflow)) (matchbox.Workflow, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.transitionLocked(ctx, w, mutate)
}

func (l *Engine) transitionLocked(ctx context.Context, w matchbox.Workflow, mutate func(*matchbox.Workflow)) (matchbox.Workflow, error) {
	if cur := l.flows[w.MAC]; cur == nil || cur.Generation != w.Generation {
		return w, fmt.Errorf("workflow of %s changed meanwhile: %w", w.MAC, matchbox.ErrPrecondition)
	}
	n := w
	mutate(&n)
	n.Generation = w.Generation + 1
	if n.State != w.State {
		n.Entered = time.Now()
		if n.State != matchbox.StateFailed && n.State != matchbox.StateBMCPrep {
			n.Reason = ""
		}
		n.History = append(slices.Clone(w.History), matchbox.WorkflowStep{State: n.State, Time: n.Entered, Reason: n.Reason})
		if len(n.History) > matchbox.MaxWorkflowHistory {
			n.History = n.History[len(n.History)-matchbox.MaxWorkflowHistory:]
		}
	}
	// A fresh context: a transition decided before shutdown is written.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := l.cfg.Store.SwapWorkflow(wctx, w.Generation, n); err != nil {
		l.log.Error("reinstall: store transition", "mac", w.MAC, "from", w.State, "to", n.State, "err", err)
		return w, err
	}
	l.published(w.State, &n)
	return n, nil
}

// published updates the in-memory view after a stored write, and records
// and logs the transition. Called with l.mu held.
func (l *Engine) published(from matchbox.WorkflowState, n *matchbox.Workflow) {
	// This engine wrote the last transition: it drives the workflow.
	delete(l.followed, n.MAC)
	if n.State.Done() {
		delete(l.flows, n.MAC)
		delete(l.poweredOn, n.MAC)
	} else {
		c := *n
		l.flows[n.MAC] = &c
	}
	l.publishGates()
	detail := string(from) + " -> " + string(n.State)
	if from == "" {
		detail = string(n.State)
	}
	if n.Reason != "" {
		detail += ": " + n.Reason
	}
	l.cfg.Recorder.RecordDistinct(matchbox.Event{MAC: n.MAC, Kind: matchbox.EventWorkflow, Profile: n.Profile, Detail: detail})
	if l.cfg.OnTransition != nil {
		l.cfg.OnTransition(from, n.State)
	}
	level := slog.LevelInfo
	if n.State == matchbox.StateFailed {
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, "reinstall", "mac", n.MAC, "from", from, "to", n.State, "attempt", n.Attempt, "reason", n.Reason)
	l.wake()
}

// Counts returns how many reinstalls are in each state that has not
// ended.
func (l *Engine) Counts() map[matchbox.WorkflowState]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[matchbox.WorkflowState]int{}
	for _, w := range l.flows {
		out[w.State]++
	}
	return out
}

// Request asks for machines to be reinstalled.
type Request struct {
	MACs []string
	// Profile is the install profile (empty: the default).
	Profile string
	// Force restarts a reinstall already in progress.
	Force bool
	// EFI asks for a UEFI network boot; nil takes it from the firmware
	// the machine last booted with (legacy when unknown).
	EFI *bool
	// Concurrency bounds how many of these machines are in flight at
	// once (0: only the server's limit).
	Concurrency int
}

// Reinstall starts a reinstall of every machine in req, or of none: each
// must have BMC settings and no reinstall in progress (unless forced).
func (l *Engine) Reinstall(ctx context.Context, req Request) ([]matchbox.Workflow, error) {
	if len(req.MACs) == 0 {
		return nil, fmt.Errorf("no machine named: %w", matchbox.ErrInvalid)
	}
	if req.Concurrency < 0 {
		return nil, fmt.Errorf("concurrency %d: %w", req.Concurrency, matchbox.ErrInvalid)
	}
	profile := req.Profile
	if profile == "" {
		profile = l.cfg.DefaultProfile
	}
	if l.cfg.ProfileExists != nil && !l.cfg.ProfileExists(profile) {
		return nil, fmt.Errorf("install profile %q: %w", profile, matchbox.ErrNotFound)
	}
	macs := make([]string, 0, len(req.MACs))
	efi := map[string]bool{}
	for _, raw := range req.MACs {
		mac, err := matchbox.NormalizeMAC(raw)
		if err != nil {
			return nil, err
		}
		if slices.Contains(macs, mac) {
			return nil, fmt.Errorf("machine %s named twice: %w", mac, matchbox.ErrInvalid)
		}
		if err := l.cfg.BMCs.Check(ctx, mac); err != nil {
			if errors.Is(err, matchbox.ErrNotFound) {
				return nil, fmt.Errorf("machine %s has no BMC settings (matchbox machine bmc set): %w", mac, matchbox.ErrInvalid)
			}
			return nil, err
		}
		efi[mac] = false
		if req.EFI != nil {
			efi[mac] = *req.EFI
		} else if l.cfg.Machines != nil {
			if m, err := l.cfg.Machines.GetMachine(ctx, mac); err == nil {
				efi[mac] = strings.Contains(strings.ToLower(m.Arch), "efi")
			}
		}
		macs = append(macs, mac)
	}
	batch := ""
	if len(macs) > 1 || req.Concurrency > 0 {
		batch = newSecret(8)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	prev := map[string]matchbox.Workflow{}
	for _, mac := range macs {
		cur, err := l.cfg.Store.Workflow(ctx, mac)
		switch {
		case errors.Is(err, matchbox.ErrNotFound):
		case err != nil:
			return nil, err
		case !cur.State.Done() && !req.Force:
			return nil, fmt.Errorf("machine %s is already being reinstalled (state %s); force to restart it: %w", mac, cur.State, matchbox.ErrConflict)
		}
		prev[mac] = cur
	}
	out := make([]matchbox.Workflow, 0, len(macs))
	now := time.Now()
	for i, mac := range macs {
		p := prev[mac]
		// Requested times keep the order given: machines start in it.
		at := now.Add(time.Duration(i))
		n := matchbox.Workflow{MAC: mac, State: matchbox.StateRequested, Generation: p.Generation + 1, Profile: profile, EFI: efi[mac],
			Token: newSecret(16), Batch: batch, BatchLimit: req.Concurrency, Requested: at, Entered: at,
			History: []matchbox.WorkflowStep{{State: matchbox.StateRequested, Time: at}}}
		if err := l.cfg.Store.SwapWorkflow(ctx, p.Generation, n); err != nil {
			return out, fmt.Errorf("machine %s: %w", mac, err)
		}
		delete(l.poweredOn, mac)
		from := matchbox.WorkflowState("")
		if !p.State.Done() && p.State != "" {
			from = p.State
			n.Reason = "restarted by a forced reinstall"
		}
		l.published(from, &n)
		n.Reason = ""
		out = append(out, n)
	}
	return out, nil
}

// Cancel ends a machine's reinstall in progress as failed.
func (l *Engine) Cancel(ctx context.Context, mac string) (matchbox.Workflow, error) {
	mac, err := matchbox.NormalizeMAC(mac)
	if err != nil {
		return matchbox.Workflow{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.flows[mac]
	if cur == nil {
		return matchbox.Workflow{}, fmt.Errorf("machine %s has no reinstall in progress: %w", mac, matchbox.ErrConflict)
	}
	return l.transitionLocked(ctx, *cur, func(n *matchbox.Workflow) {
		n.State = matchbox.StateFailed
		n.Reason = "canceled by the operator in state " + string(cur.State)
		n.Token = ""
	})
}

// Workflow returns a machine's current or last workflow.
func (l *Engine) Workflow(ctx context.Context, mac string) (matchbox.Workflow, error) {
	mac, err := matchbox.NormalizeMAC(mac)
	if err != nil {
		return matchbox.Workflow{}, err
	}
	return l.cfg.Store.Workflow(ctx, mac)
}

// Gate reports whether mac is held by a reinstall, and how. Machines in
// bmc-prep, booting and installing get the install profile; installed
// machines boot from their disk.
func (l *Engine) Gate(mac string) (matchbox.Gate, bool) {
	m := l.gates.Load()
	if m == nil {
		return matchbox.Gate{}, false
	}
	g, ok := (*m)[mac]
	return g, ok
}

// CheckToken returns ErrStaleToken unless token is the current token of a
// reinstall of mac that is not over.
func (l *Engine) CheckToken(mac, token string) error {
	if g, ok := l.Gate(mac); ok && g.Admits(token) {
		return nil
	}
	return fmt.Errorf("machine %s: %w", mac, matchbox.ErrStaleToken)
}

// InstallStarted moves a booting machine's reinstall to installing: the
// machine fetched its install config with token. It fails with
// ErrStaleToken for another token, ErrConflict when the reinstall is not
// booting (another request moved it first).
func (l *Engine) InstallStarted(ctx context.Context, mac, token string) (matchbox.Workflow, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.flows[mac]
	if w == nil || w.Token == "" || subtle.ConstantTimeCompare([]byte(w.Token), []byte(token)) != 1 {
		return matchbox.Workflow{}, fmt.Errorf("machine %s: %w", mac, matchbox.ErrStaleToken)
	}
	if w.State != matchbox.StateBooting {
		return *w, fmt.Errorf("machine %s is %s, not booting: %w", mac, w.State, matchbox.ErrConflict)
	}
	return l.transitionLocked(ctx, *w, func(n *matchbox.Workflow) { n.State = matchbox.StateInstalling })
}

// Report takes an installer's or an installed system's report.
func (l *Engine) Report(ctx context.Context, mac, token string, r matchbox.InstallReport) (matchbox.Workflow, error) {
	mac, err := matchbox.NormalizeMAC(mac)
	if err != nil {
		return matchbox.Workflow{}, err
	}
	if len(r.Log) > matchbox.MaxReportLog {
		r.Log = r.Log[len(r.Log)-matchbox.MaxReportLog:]
	}
	r.Time = time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.flows[mac]
	if w == nil || w.Token == "" || w.Token != token {
		return matchbox.Workflow{}, fmt.Errorf("report from %s: %w", mac, matchbox.ErrStaleToken)
	}
	detail := string(r.Status)
	if r.ExitStatus != nil {
		detail += fmt.Sprintf(" (exit status %d)", *r.ExitStatus)
	}
	if last := lastLine(r.Log); last != "" {
		detail += ": " + last
	}
	l.cfg.Recorder.RecordDistinct(matchbox.Event{MAC: mac, Kind: matchbox.EventReport, Profile: w.Profile, Detail: detail})
	var next func(*matchbox.Workflow)
	switch r.Status {
	case matchbox.ReportInstalled:
		if w.State == matchbox.StateBooting || w.State == matchbox.StateInstalling {
			next = func(n *matchbox.Workflow) { n.State = matchbox.StateInstalled }
		}
	case matchbox.ReportFailed:
		if w.State == matchbox.StateBooting || w.State == matchbox.StateInstalling {
			next = func(n *matchbox.Workflow) {
				n.State = matchbox.StateFailed
				n.Reason = "the installer reported failure: " + detail
				n.Token = ""
			}
		}
	case matchbox.ReportBooted:
		// A lost success report does not keep a running system from
		// completing its workflow.
		if w.State == matchbox.StateInstalled || w.State == matchbox.StateInstalling {
			next = func(n *matchbox.Workflow) { n.State = matchbox.StateActive; n.Token = "" }
		}
	default:
		return matchbox.Workflow{}, fmt.Errorf("report status %s (want installed, failed or booted): %w", matchbox.Quote(string(r.Status)), matchbox.ErrInvalid)
	}
	if next == nil {
		return *w, fmt.Errorf("report %q from %s in state %s: %w", r.Status, mac, w.State, matchbox.ErrConflict)
	}
	return l.transitionLocked(ctx, *w, func(n *matchbox.Workflow) {
		next(n)
		rep := r
		n.Report = &rep
	})
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\r\n\t ")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// newSecret returns n random bytes, hex-encoded.
func newSecret(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b)
}
