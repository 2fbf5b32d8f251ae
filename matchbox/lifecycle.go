package matchbox

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
)

// WorkflowState is where a machine's reinstall stands.
type WorkflowState string

// The reinstall workflow's states (see docs/reinstall.md):
//
//	active|failed --reinstall--> requested --> bmc-prep --> booting
//	booting --install profile fetched with the token--> installing
//	installing --installer reports success--> installed
//	installed --installed system reports its first boot--> active
//	any state --timeout, retries spent, failure report, cancel--> failed
const (
	StateRequested  WorkflowState = "requested"
	StateBMCPrep    WorkflowState = "bmc-prep"
	StateBooting    WorkflowState = "booting"
	StateInstalling WorkflowState = "installing"
	StateInstalled  WorkflowState = "installed"
	StateActive     WorkflowState = "active"
	StateFailed     WorkflowState = "failed"
)

// Done reports whether the workflow has ended (active or failed).
func (s WorkflowState) Done() bool { return s == StateActive || s == StateFailed }

// inFlight reports whether a workflow in this state holds one of the
// concurrency slots: from the first BMC call until the installer reports.
func (s WorkflowState) inFlight() bool {
	return s == StateBMCPrep || s == StateBooting || s == StateInstalling
}

// Workflow is one machine's reinstall, persisted at every transition.
type Workflow struct {
	MAC   string        `json:"mac"`
	State WorkflowState `json:"state"`
	// Reason says why the workflow failed (or was canceled).
	Reason string `json:"reason,omitempty"`
	// Generation grows by one at every transition, across reinstalls of
	// the machine: each write is a compare-and-swap on it.
	Generation uint64 `json:"generation"`
	// Profile is the install profile the machine is given while booting
	// and installing.
	Profile string `json:"profile"`
	// EFI asks the BMC for a UEFI (rather than legacy) network boot.
	EFI bool `json:"efi"`
	// Token is the secret in the install profile's URLs; requests and
	// reports with another token are refused.
	Token string `json:"token,omitempty"`
	// Attempt counts the boots tried (power cycles through the BMC).
	Attempt int `json:"attempt"`
	// Batch groups the machines of one bulk request; BatchLimit is how
	// many of them may be in flight at once (0: no batch limit).
	Batch      string `json:"batch,omitempty"`
	BatchLimit int    `json:"batch_limit,omitempty"`
	// Requested is when the reinstall was asked for; Entered when the
	// current state began.
	Requested time.Time `json:"requested"`
	Entered   time.Time `json:"entered"`
	// Report is the installer's (or installed system's) last report.
	Report *InstallReport `json:"report,omitempty"`
	// History lists the states this reinstall went through, oldest first
	// (at most MaxWorkflowHistory).
	History []WorkflowStep `json:"history,omitempty"`
}

// WorkflowStep is one state a workflow entered.
type WorkflowStep struct {
	State  WorkflowState `json:"state"`
	Time   time.Time     `json:"time"`
	Reason string        `json:"reason,omitempty"`
}

// MaxWorkflowHistory bounds a workflow's history (a machine that keeps
// failing to boot retries a bounded number of times anyway).
const MaxWorkflowHistory = 32

// InstallReport is what an installer or a freshly installed system tells
// matchbox.
type InstallReport struct {
	Status ReportStatus `json:"status"`
	// ExitStatus is the installer's exit status, when it gave one.
	ExitStatus *int `json:"exit_status,omitempty"`
	// Log is the end of the installer's log (bounded).
	Log  string    `json:"log,omitempty"`
	Time time.Time `json:"time"`
}

// ReportStatus is what a report says.
type ReportStatus string

// Report statuses: the installer succeeded or failed; the installed
// system booted.
const (
	ReportInstalled ReportStatus = "installed"
	ReportFailed    ReportStatus = "failed"
	ReportBooted    ReportStatus = "booted"
)

// MaxReportLog bounds the installer log kept with a report.
const MaxReportLog = 4096

// ErrStaleToken is returned (wrapped) for a request or report whose token
// is not the machine's current reinstall token.
var ErrStaleToken = errors.New("stale or unknown reinstall token")

// WorkflowStore persists workflows.
type WorkflowStore interface {
	Workflow(ctx context.Context, mac string) (Workflow, error)
	Workflows(ctx context.Context) ([]Workflow, error)
	// SwapWorkflow stores next if the machine's stored workflow still has
	// generation prev (0: none stored); otherwise ErrPrecondition.
	SwapWorkflow(ctx context.Context, prev uint64, next Workflow) error
}

// MachineStore returns machine records.
type MachineStore interface {
	GetMachine(ctx context.Context, mac string) (*Machine, error)
}

// LifecycleConfig configures a Lifecycle. Zero durations and counts take
// the defaults named.
type LifecycleConfig struct {
	Store    WorkflowStore
	BMCs     *BMCs
	Machines MachineStore
	Recorder *Recorder
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
	OnTransition func(from, to WorkflowState)
}

// Lifecycle runs reinstall workflows: it drives each machine's BMC, gates
// what the machine is served while it is reinstalled, takes the
// installer's reports and enforces each state's deadline. Every
// transition is written before the BMC call that follows it, so a
// restarted server resumes where the last one stopped.
type Lifecycle struct {
	cfg LifecycleConfig
	log *slog.Logger

	mu sync.Mutex
	// flows holds every workflow that has not ended.
	flows map[string]*Workflow
	// busy marks machines with a BMC step running.
	busy map[string]bool
	// poweredOn remembers, per machine, the generation for which this
	// process has powered the machine on (booting's one BMC call).
	poweredOn map[string]uint64
	// gates is what Gate reads on every boot request, without a lock: a
	// map rebuilt at each transition (rare) and never changed after.
	gates  atomic.Pointer[map[string]Gate]
	loaded bool
	kick   chan struct{}
	wg     sync.WaitGroup
}

// NewLifecycle returns a Lifecycle; Run loads the stored workflows and
// drives them.
func NewLifecycle(cfg LifecycleConfig) *Lifecycle {
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
		cfg.Recorder = NewRecorder(nil, nil)
	}
	return &Lifecycle{cfg: cfg, log: cfg.Logger, flows: map[string]*Workflow{}, busy: map[string]bool{},
		poweredOn: map[string]uint64{}, kick: make(chan struct{}, 1)}
}

// Load reads the stored workflows that have not ended. Run calls it; a
// server calls it before answering boot requests so that gating holds from
// the first one.
func (l *Lifecycle) Load(ctx context.Context) error {
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
func (l *Lifecycle) publishGates() {
	m := make(map[string]Gate, len(l.flows))
	for mac, w := range l.flows {
		if w.State != StateRequested {
			m[mac] = Gate{State: w.State, Profile: w.Profile, Token: w.Token}
		}
	}
	l.gates.Store(&m)
}

// Run drives the workflows until ctx ends. BMC steps still running then
// are abandoned: their state is stored and the next start resumes them.
func (l *Lifecycle) Run(ctx context.Context) error {
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
	for {
		l.step(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-l.kick:
		}
	}
}

func (l *Lifecycle) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// step starts the BMC work that is due and fails the workflows whose
// deadline has passed.
func (l *Lifecycle) step(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	flows := make([]*Workflow, 0, len(l.flows))
	inFlight, batch := 0, map[string]int{}
	for _, w := range l.flows {
		flows = append(flows, w)
		// A requested workflow whose BMC step has started counts
		// before its first transition is written.
		if w.State.inFlight() || (w.State == StateRequested && l.busy[w.MAC]) {
			inFlight++
			batch[w.Batch]++
		}
	}
	// Oldest requests first, so a bulk request runs in the order given.
	slices.SortFunc(flows, func(a, b *Workflow) int {
		if c := a.Requested.Compare(b.Requested); c != 0 {
			return c
		}
		return strings.Compare(a.MAC, b.MAC)
	})
	now := time.Now()
	for _, w := range flows {
		if l.busy[w.MAC] {
			continue
		}
		switch w.State {
		case StateRequested:
			if inFlight >= l.cfg.Concurrency || (w.BatchLimit > 0 && batch[w.Batch] >= w.BatchLimit) {
				continue
			}
			inFlight++
			batch[w.Batch]++
			l.spawn(ctx, *w, l.prepare)
		case StateBMCPrep:
			l.spawn(ctx, *w, l.prepare)
		case StateBooting:
			switch {
			case now.Sub(w.Entered) >= l.cfg.BootTimeout:
				l.spawn(ctx, *w, l.bootTimedOut)
			case l.poweredOn[w.MAC] != w.Generation:
				l.spawn(ctx, *w, l.powerOn)
			}
		case StateInstalling:
			if now.Sub(w.Entered) >= l.cfg.InstallTimeout {
				l.spawn(ctx, *w, func(ctx context.Context, w Workflow) {
					l.fail(ctx, w, fmt.Sprintf("the installer did not report within %v", l.cfg.InstallTimeout))
				})
			}
		case StateInstalled:
			if now.Sub(w.Entered) >= l.cfg.FirstBootTimeout {
				l.spawn(ctx, *w, func(ctx context.Context, w Workflow) {
					l.fail(ctx, w, fmt.Sprintf("the installed system did not report its first boot within %v", l.cfg.FirstBootTimeout))
				})
			}
		}
	}
}

// spawn runs fn for one machine off the lock; the machine is busy until
// it returns. Called with l.mu held.
func (l *Lifecycle) spawn(ctx context.Context, w Workflow, fn func(context.Context, Workflow)) {
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
func (l *Lifecycle) prepare(ctx context.Context, w Workflow) {
	var err error
	if w.State == StateRequested {
		if w, err = l.transition(ctx, w, func(n *Workflow) { n.State = StateBMCPrep; n.Attempt++ }); err != nil {
			return
		}
	}
	if !l.bmcStep(ctx, w, "power off", func(ctx context.Context) error {
		return l.cfg.BMCs.SetPower(ctx, w.MAC, ActionOff)
	}) {
		return
	}
	if !l.bmcStep(ctx, w, "set one-time network boot", func(ctx context.Context) error {
		return l.cfg.BMCs.SetBootDevice(ctx, w.MAC, BootPXE, w.EFI)
	}) {
		return
	}
	if w, err = l.transition(ctx, w, func(n *Workflow) { n.State = StateBooting }); err != nil {
		return
	}
	l.powerOn(ctx, w)
}

// powerOn is booting's BMC call, made once per generation by this process
// (and again after a restart: powering on a running machine does nothing).
func (l *Lifecycle) powerOn(ctx context.Context, w Workflow) {
	if !l.bmcStep(ctx, w, "power on", func(ctx context.Context) error {
		return l.cfg.BMCs.SetPower(ctx, w.MAC, ActionOn)
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
func (l *Lifecycle) bootTimedOut(ctx context.Context, w Workflow) {
	if w.Attempt >= l.cfg.BootAttempts {
		l.fail(ctx, w, fmt.Sprintf("the machine did not fetch its install config within %v, %d boot attempts made", l.cfg.BootTimeout, w.Attempt))
		return
	}
	n, err := l.transition(ctx, w, func(n *Workflow) {
		n.State = StateBMCPrep
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
func (l *Lifecycle) bmcStep(ctx context.Context, w Workflow, what string, call func(context.Context) error) bool {
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

func (l *Lifecycle) fail(ctx context.Context, w Workflow, reason string) {
	_, _ = l.transition(ctx, w, func(n *Workflow) { n.State = StateFailed; n.Reason = reason; n.Token = "" })
}

// transition writes the next state of w if nothing changed it meanwhile,
// and returns the stored result.
func (l *Lifecycle) transition(ctx context.Context, w Workflow, mutate func(*Workflow)) (Workflow, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.transitionLocked(ctx, w, mutate)
}

func (l *Lifecycle) transitionLocked(ctx context.Context, w Workflow, mutate func(*Workflow)) (Workflow, error) {
	if cur := l.flows[w.MAC]; cur == nil || cur.Generation != w.Generation {
		return w, fmt.Errorf("workflow of %s changed meanwhile: %w", w.MAC, ErrPrecondition)
	}
	n := w
	mutate(&n)
	n.Generation = w.Generation + 1
	if n.State != w.State {
		n.Entered = time.Now()
		if n.State != StateFailed && n.State != StateBMCPrep {
			n.Reason = ""
		}
		n.History = append(slices.Clone(w.History), WorkflowStep{State: n.State, Time: n.Entered, Reason: n.Reason})
		if len(n.History) > MaxWorkflowHistory {
			n.History = n.History[len(n.History)-MaxWorkflowHistory:]
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
func (l *Lifecycle) published(from WorkflowState, n *Workflow) {
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
	l.cfg.Recorder.RecordDistinct(Event{MAC: n.MAC, Kind: EventWorkflow, Profile: n.Profile, Detail: detail})
	if l.cfg.OnTransition != nil {
		l.cfg.OnTransition(from, n.State)
	}
	level := slog.LevelInfo
	if n.State == StateFailed {
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, "reinstall", "mac", n.MAC, "from", from, "to", n.State, "attempt", n.Attempt, "reason", n.Reason)
	l.wake()
}

// Counts returns how many reinstalls are in each state that has not
// ended.
func (l *Lifecycle) Counts() map[WorkflowState]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[WorkflowState]int{}
	for _, w := range l.flows {
		out[w.State]++
	}
	return out
}

// ReinstallRequest asks for machines to be reinstalled.
type ReinstallRequest struct {
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
func (l *Lifecycle) Reinstall(ctx context.Context, req ReinstallRequest) ([]Workflow, error) {
	if len(req.MACs) == 0 {
		return nil, fmt.Errorf("no machine named: %w", ErrInvalid)
	}
	if req.Concurrency < 0 {
		return nil, fmt.Errorf("concurrency %d: %w", req.Concurrency, ErrInvalid)
	}
	profile := req.Profile
	if profile == "" {
		profile = l.cfg.DefaultProfile
	}
	if l.cfg.ProfileExists != nil && !l.cfg.ProfileExists(profile) {
		return nil, fmt.Errorf("install profile %q: %w", profile, ErrNotFound)
	}
	macs := make([]string, 0, len(req.MACs))
	efi := map[string]bool{}
	for _, raw := range req.MACs {
		mac, err := NormalizeMAC(raw)
		if err != nil {
			return nil, err
		}
		if slices.Contains(macs, mac) {
			return nil, fmt.Errorf("machine %s named twice: %w", mac, ErrInvalid)
		}
		if _, err := l.cfg.BMCs.settings(ctx, mac); err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil, fmt.Errorf("machine %s has no BMC settings (matchbox machine bmc set): %w", mac, ErrInvalid)
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
	prev := map[string]Workflow{}
	for _, mac := range macs {
		cur, err := l.cfg.Store.Workflow(ctx, mac)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return nil, err
		case !cur.State.Done() && !req.Force:
			return nil, fmt.Errorf("machine %s is already being reinstalled (state %s); force to restart it: %w", mac, cur.State, ErrConflict)
		}
		prev[mac] = cur
	}
	out := make([]Workflow, 0, len(macs))
	now := time.Now()
	for i, mac := range macs {
		p := prev[mac]
		// Requested times keep the order given: machines start in it.
		at := now.Add(time.Duration(i))
		n := Workflow{MAC: mac, State: StateRequested, Generation: p.Generation + 1, Profile: profile, EFI: efi[mac],
			Token: newSecret(16), Batch: batch, BatchLimit: req.Concurrency, Requested: at, Entered: at,
			History: []WorkflowStep{{State: StateRequested, Time: at}}}
		if err := l.cfg.Store.SwapWorkflow(ctx, p.Generation, n); err != nil {
			return out, fmt.Errorf("machine %s: %w", mac, err)
		}
		delete(l.poweredOn, mac)
		from := WorkflowState("")
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
func (l *Lifecycle) Cancel(ctx context.Context, mac string) (Workflow, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return Workflow{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.flows[mac]
	if cur == nil {
		return Workflow{}, fmt.Errorf("machine %s has no reinstall in progress: %w", mac, ErrConflict)
	}
	return l.transitionLocked(ctx, *cur, func(n *Workflow) {
		n.State = StateFailed
		n.Reason = "canceled by the operator in state " + string(cur.State)
		n.Token = ""
	})
}

// Workflow returns a machine's current or last workflow.
func (l *Lifecycle) Workflow(ctx context.Context, mac string) (Workflow, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return Workflow{}, err
	}
	return l.cfg.Store.Workflow(ctx, mac)
}

// Gate is what a machine being reinstalled is served instead of its
// group's profile.
type Gate struct {
	State WorkflowState
	// Profile is the install profile (booting and installing).
	Profile string
	Token   string
}

// Installs reports whether the machine is to boot the installer.
func (g Gate) Installs() bool {
	return g.State == StateBooting || g.State == StateInstalling || g.State == StateBMCPrep
}

// Select is what a held machine boots: its own selection with the install
// profile in place of its group's while it installs, and always a group
// (an empty one when none matches it: the install profile then renders
// with the request's labels only).
func (g Gate) Select(snap *Snapshot, sel Selection) (Selection, error) {
	if g.Installs() {
		p, ok := snap.Profile(g.Profile)
		if !ok {
			// The server's configuration is at fault, not the request.
			return sel, fmt.Errorf("install profile %q of the reinstall is missing", g.Profile)
		}
		sel.Profile = p
	}
	if sel.Group == nil {
		sel.Group = &Group{Profile: g.Profile}
	}
	return sel, nil
}

// Gate reports whether mac is held by a reinstall, and how. Machines in
// bmc-prep, booting and installing get the install profile; installed
// machines boot from their disk.
func (l *Lifecycle) Gate(mac string) (Gate, bool) {
	m := l.gates.Load()
	if m == nil {
		return Gate{}, false
	}
	g, ok := (*m)[mac]
	return g, ok
}

// CheckToken returns ErrStaleToken unless token is the current token of a
// reinstall of mac that is not over.
func (l *Lifecycle) CheckToken(mac, token string) error {
	if g, ok := l.Gate(mac); ok && g.Token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(g.Token)) == 1 {
		return nil
	}
	return fmt.Errorf("machine %s: %w", mac, ErrStaleToken)
}

// InstallConfigServed tells the lifecycle that mac fetched its install
// config with token: a booting machine is now installing.
func (l *Lifecycle) InstallConfigServed(ctx context.Context, mac, token string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.flows[mac]
	if w == nil || w.State != StateBooting || w.Token != token {
		return
	}
	_, _ = l.transitionLocked(ctx, *w, func(n *Workflow) { n.State = StateInstalling })
}

// Report takes an installer's or an installed system's report.
func (l *Lifecycle) Report(ctx context.Context, mac, token string, r InstallReport) (Workflow, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return Workflow{}, err
	}
	if len(r.Log) > MaxReportLog {
		r.Log = r.Log[len(r.Log)-MaxReportLog:]
	}
	r.Time = time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.flows[mac]
	if w == nil || w.Token == "" || w.Token != token {
		return Workflow{}, fmt.Errorf("report from %s: %w", mac, ErrStaleToken)
	}
	detail := string(r.Status)
	if r.ExitStatus != nil {
		detail += fmt.Sprintf(" (exit status %d)", *r.ExitStatus)
	}
	if last := lastLine(r.Log); last != "" {
		detail += ": " + last
	}
	l.cfg.Recorder.RecordDistinct(Event{MAC: mac, Kind: EventReport, Profile: w.Profile, Detail: detail})
	var next func(*Workflow)
	switch r.Status {
	case ReportInstalled:
		if w.State == StateBooting || w.State == StateInstalling {
			next = func(n *Workflow) { n.State = StateInstalled }
		}
	case ReportFailed:
		if w.State == StateBooting || w.State == StateInstalling {
			next = func(n *Workflow) {
				n.State = StateFailed
				n.Reason = "the installer reported failure: " + detail
				n.Token = ""
			}
		}
	case ReportBooted:
		// A lost success report does not keep a running system from
		// completing its workflow.
		if w.State == StateInstalled || w.State == StateInstalling {
			next = func(n *Workflow) { n.State = StateActive; n.Token = "" }
		}
	default:
		return Workflow{}, fmt.Errorf("report status %s (want installed, failed or booted): %w", Quote(string(r.Status)), ErrInvalid)
	}
	if next == nil {
		return *w, fmt.Errorf("report %q from %s in state %s: %w", r.Status, mac, w.State, ErrConflict)
	}
	return l.transitionLocked(ctx, *w, func(n *Workflow) {
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
