package update

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"matchbox.dev/matchbox"
)

// The kinds of the service's records (matchbox.RecordStore).
const (
	kindGroup   = "update-group"
	kindRollout = "update-rollout"
	kindMachine = "update-machine"
)

// State is where a machine's update stands.
type State string

// Machine update states, in the order an update goes through them.
const (
	StateIdle        State = "idle"
	StateGranted     State = "granted"
	StateDownloading State = "downloading"
	StateDownloaded  State = "downloaded"
	StateInstalled   State = "installed"
	StateComplete    State = "complete"
	StateFailed      State = "failed"
	StateOnHold      State = "on-hold"
)

// inFlight reports whether a machine in state s holds a grant.
func (s State) inFlight() bool {
	return s == StateGranted || s == StateDownloading || s == StateDownloaded || s == StateInstalled
}

// Machine is what the service knows of one machine's updates.
type Machine struct {
	// ID is the update client's machine id (/etc/machine-id), as of its
	// last request.
	ID string `json:"id"`
	// MAC is the inventory machine the client is linked to (empty: not
	// linked), and LinkedBy how.
	MAC      string   `json:"mac,omitempty"`
	LinkedBy LinkedBy `json:"linked_by,omitempty"`
	Group    string   `json:"group"`
	// Version is the OS version the machine last reported running.
	Version string `json:"version"`
	State   State  `json:"state"`
	// Target is the version granted (or last granted).
	Target string `json:"target,omitempty"`
	// Granted is when the grant was made; Updated when the state last
	// changed.
	Granted time.Time `json:"granted,omitzero"`
	Updated time.Time `json:"updated"`
	// ErrorCode is update_engine's code of a failure (flags removed).
	ErrorCode int `json:"error_code,omitempty"`
	// Hold says why the machine is on hold.
	Hold Hold `json:"hold,omitempty"`
	// Held is the operator's hold on the machine (SetHeld): rollouts skip
	// it.
	Held bool `json:"held,omitempty"`
	// FailedTarget is the last version the machine failed to update to,
	// at FailedAt: it is not offered that version again for
	// RetryAfterFailure, or, after a rollback, until an operator
	// releases it (SetHeld false).
	FailedTarget string    `json:"failed_target,omitempty"`
	FailedAt     time.Time `json:"failed_at,omitzero"`
}

// RetryAfterFailure is how long a machine that failed to update to a
// version waits before it is offered that version again.
const RetryAfterFailure = time.Hour

// codeRollback is update_engine's error code of a rollback: the machine
// rebooted into the version it updated from (the new one did not boot).
const codeRollback = 44

// failed records that the machine failed its target at now with code (0:
// the grant timed out).
func (m *Machine) failed(now time.Time, code int) {
	m.State, m.ErrorCode, m.Hold, m.Updated = StateFailed, code, "", now
	m.FailedTarget, m.FailedAt = m.Target, now
}

// TimedOut reports whether the machine's grant has outlived timeout at
// now without completing: it counts as failed (the service records that
// at the machine's next request).
func (m *Machine) TimedOut(now time.Time, timeout time.Duration) bool {
	return m.State.inFlight() && now.Sub(m.Granted) >= timeout
}

// Store is what the service keeps its groups, rollouts and machines in,
// and where it finds the machines its clients are.
type Store interface {
	matchbox.RecordStore
	Inventory
}

// Releases lists the versions mirrored for a channel and board.
type Releases interface {
	Versions(channel, board string) []string
}

// MaxUnlinked bounds the update records of clients not linked to an
// inventory machine (made by grants only): past it, such clients are held
// (HoldUnlinked), so that machine ids a client makes up cannot fill the
// store even in a group without limits.
const MaxUnlinked = 100_000

// kindCount holds the service's counters; countUnlinked counts the
// unlinked clients' records.
const (
	kindCount     = "update-count"
	countUnlinked = "unlinked"
)

// Service decides update checks and follows machines' updates. Its state
// is in the store: a grant and the budget it spends are committed
// together before the answer, so concurrent checks, on this server or
// others sharing the store, never exceed a limit, and a restart loses
// nothing. The groups are also kept in memory (a check reads no group
// record until it grants), reloaded after every write of one, by this
// service or, through Follow, another sharing the store.
type Service struct {
	store     Store
	inventory Inventory
	releases  Releases
	now       func() time.Time
	events    func(matchbox.Event)
	// maxUnlinked is MaxUnlinked (smaller in tests).
	maxUnlinked int

	groupsMu sync.Mutex // serialises reloads, so the last one wins
	groups   atomic.Pointer[[]Group]
	rollouts rolloutCache
}

// New returns a service over store; releases says what can be granted.
func New(store Store, releases Releases) *Service {
	return &Service{store: store, inventory: store, releases: releases, now: time.Now, events: func(matchbox.Event) {}, maxUnlinked: MaxUnlinked}
}

// SetEvents sets where the service sends the update steps of linked
// machines (a recorder's Record), for their timelines.
func (s *Service) SetEvents(fn func(matchbox.Event)) { s.events = fn }

// Follow keeps the groups in memory current with writes by other services
// sharing the store: changes is the store's feed of record changes
// (ChangeRecord), subscribed to before the service was first used. It
// returns when ctx ends or changes is closed.
func (s *Service) Follow(ctx context.Context, changes <-chan matchbox.Change) {
	for {
		var ch matchbox.Change
		var ok bool
		select {
		case <-ctx.Done():
			return
		case ch, ok = <-changes:
			if !ok {
				return
			}
		}
		if ch.Local || ch.Kind != matchbox.ChangeRecord || (ch.Key != "" && !strings.HasPrefix(ch.Key, kindGroup+"/")) {
			continue
		}
		// A failed reload leaves the cache empty: the next check reads
		// the store again.
		_ = s.reloadGroups(ctx)
	}
}

// groupList returns the groups, sorted by name.
func (s *Service) groupList(ctx context.Context) ([]Group, error) {
	if p := s.groups.Load(); p != nil {
		return *p, nil
	}
	if err := s.reloadGroups(ctx); err != nil {
		return nil, err
	}
	if p := s.groups.Load(); p != nil {
		return *p, nil
	}
	return nil, nil
}

// reloadGroups reads the groups from the store into memory.
func (s *Service) reloadGroups(ctx context.Context) error {
	s.groupsMu.Lock()
	defer s.groupsMu.Unlock()
	gs, err := s.Groups(ctx)
	if err != nil {
		s.groups.Store(nil)
		return err
	}
	s.groups.Store(&gs)
	return nil
}

// wroteGroups brings the groups in memory up to date after a write of
// this service, whatever the write's outcome.
func (s *Service) wroteGroups(ctx context.Context, err error) error {
	if rerr := s.reloadGroups(ctx); rerr != nil && err == nil {
		return rerr
	}
	return err
}

// EnsureDefaultGroups creates the default groups (DefaultGroups) that do
// not exist yet; existing groups are left as they are.
func (s *Service) EnsureDefaultGroups(ctx context.Context) error {
	for _, g := range DefaultGroups() {
		data, err := json.Marshal(g)
		if err != nil {
			return err
		}
		err = s.store.UpdateRecords(ctx, []matchbox.RecordKey{{Kind: kindGroup, Key: g.Name}}, func(old [][]byte) ([][]byte, error) {
			if old[0] != nil {
				return old, nil
			}
			return [][]byte{data}, nil
		})
		if err != nil {
			return s.wroteGroups(ctx, err)
		}
	}
	return s.wroteGroups(ctx, nil)
}

// PutGroup creates or replaces a group (its rollout's progress stays).
func (s *Service) PutGroup(ctx context.Context, g Group) error {
	_, _, err := s.SetGroup(ctx, g, false)
	return err
}

// SetGroup creates or replaces a group (its rollout's progress stays) and
// returns what it stored and whether it created it. With keepState, an
// existing group keeps its floors and its paused state and reason (g
// pauses it only if it was not paused), read and written in one
// transaction, so that a pause made meanwhile is not undone.
func (s *Service) SetGroup(ctx context.Context, g Group, keepState bool) (Group, bool, error) {
	if err := g.Check(); err != nil {
		return Group{}, false, err
	}
	var stored Group
	var created bool
	err := s.store.UpdateRecords(ctx, []matchbox.RecordKey{{Kind: kindGroup, Key: g.Name}}, func(old [][]byte) ([][]byte, error) {
		stored, created = g, old[0] == nil
		if keepState && !created {
			var was Group
			if err := json.Unmarshal(old[0], &was); err != nil {
				return nil, err
			}
			stored.Floors = was.Floors
			if was.Policy.Paused || !g.Policy.Paused {
				stored.Policy.Paused, stored.Policy.Reason = was.Policy.Paused, was.Policy.Reason
			}
		}
		data, err := json.Marshal(stored)
		return [][]byte{data}, err
	})
	return stored, created, s.wroteGroups(ctx, err)
}

// DeleteGroup deletes a group and its rollout's progress, or returns
// ErrNotFound. Its machines are held by no group until another matches
// them; a default group comes back, paused, at the next start
// (EnsureDefaultGroups).
func (s *Service) DeleteGroup(ctx context.Context, name string) error {
	keys := []matchbox.RecordKey{{Kind: kindGroup, Key: name}, {Kind: kindRollout, Key: name}}
	return s.wroteGroups(ctx, s.store.UpdateRecords(ctx, keys, func(old [][]byte) ([][]byte, error) {
		if old[0] == nil {
			return nil, fmt.Errorf("update group %s: %w", matchbox.Quote(name), matchbox.ErrNotFound)
		}
		return [][]byte{nil, nil}, nil
	}))
}

// Group returns a group, or ErrNotFound.
func (s *Service) Group(ctx context.Context, name string) (Group, error) {
	data, err := s.store.Record(ctx, kindGroup, name)
	if err != nil {
		return Group{}, fmt.Errorf("update group %s: %w", matchbox.Quote(name), err)
	}
	var g Group
	return g, json.Unmarshal(data, &g)
}

// Groups returns every group, by name.
func (s *Service) Groups(ctx context.Context) ([]Group, error) {
	recs, err := s.store.Records(ctx, kindGroup)
	if err != nil {
		return nil, err
	}
	out := make([]Group, 0, len(recs))
	for _, r := range recs {
		var g Group
		if err := json.Unmarshal(r.Value, &g); err != nil {
			return nil, fmt.Errorf("update group %s: %w", matchbox.Quote(r.Key), err)
		}
		out = append(out, g)
	}
	return out, nil
}

// SetPaused pauses or resumes a group. Resuming clears the failures the
// automatic pause counted, so the rollout goes on.
func (s *Service) SetPaused(ctx context.Context, name string, paused bool, reason string) error {
	keys := []matchbox.RecordKey{{Kind: kindGroup, Key: name}, {Kind: kindRollout, Key: name}}
	return s.wroteGroups(ctx, s.store.UpdateRecords(ctx, keys, func(old [][]byte) ([][]byte, error) {
		if old[0] == nil {
			return nil, fmt.Errorf("update group %s: %w", matchbox.Quote(name), matchbox.ErrNotFound)
		}
		var g Group
		if err := json.Unmarshal(old[0], &g); err != nil {
			return nil, err
		}
		g.Policy.Paused, g.Policy.Reason = paused, reason
		gd, err := json.Marshal(g)
		if err != nil {
			return nil, err
		}
		out := [][]byte{gd, old[1]}
		if !paused && old[1] != nil {
			var r rollout
			if err := json.Unmarshal(old[1], &r); err != nil {
				return nil, err
			}
			r.Failed = 0
			if out[1], err = json.Marshal(r); err != nil {
				return nil, err
			}
		}
		return out, nil
	}))
}

// Machine returns what the service knows of a machine's updates, or
// ErrNotFound: id is the MAC of a machine in the inventory, or the
// machine id of a client not linked to one.
func (s *Service) Machine(ctx context.Context, id string) (Machine, error) {
	data, err := s.store.Record(ctx, kindMachine, recordKeyOf(id))
	if err != nil {
		return Machine{}, fmt.Errorf("update machine %s: %w", matchbox.Quote(id), err)
	}
	var m Machine
	return m, json.Unmarshal(data, &m)
}

// recordKeyOf is the record key of a machine named by MAC or machine id.
func recordKeyOf(id string) string {
	if mac, err := matchbox.NormalizeMAC(id); err == nil && len(mac) == len("00:00:00:00:00:00") {
		return mac
	}
	return unlinkedKey(id)
}

// SetHeld holds a machine out of every rollout, or releases it: id as
// for Machine. A machine with no record yet gets one (an operator's
// action, not a client's).
func (s *Service) SetHeld(ctx context.Context, id string, held bool) (Machine, error) {
	key := recordKeyOf(id)
	var m Machine
	err := s.store.UpdateRecords(ctx, []matchbox.RecordKey{{Kind: kindMachine, Key: key}}, func(old [][]byte) ([][]byte, error) {
		m = Machine{}
		if old[0] != nil {
			if err := json.Unmarshal(old[0], &m); err != nil {
				return nil, err
			}
		} else if key == id || strings.HasPrefix(key, "id:") {
			m.ID = id
		} else {
			m.MAC = key
		}
		m.Held = held
		if !held {
			// A release also lets the machine try again a version it
			// failed (or rolled back from).
			m.FailedTarget, m.FailedAt = "", time.Time{}
		}
		data, err := json.Marshal(m)
		return [][]byte{data}, err
	})
	return m, err
}

// Check is one machine's update check.
type Check struct {
	Client
	// Track is the group the client names (GROUP= of update.conf).
	Track   string
	Version string
	Board   string
}

// Answer is the decision of a check: a version to update to, or none and
// why (Hold empty: the machine is up to date).
type Answer struct {
	Version string
	Hold    Hold
	// Group is the machine's update group ("" when none matches).
	Group string
	// Granted is set when this check made the grant (not when it offers
	// one made before).
	Granted bool
}

// Decide answers an update check (a version that is not X.Y.Z[.W] is
// ErrInvalid, with nothing written). A machine up to date whose record says
// so, or one holding a grant, or one held as at its last check, costs no
// store write; a grant is committed (with the budget it spends) before
// Decide returns it. The machine's group is chosen from its link to the
// inventory and its track (groupFor).
func (s *Service) Decide(ctx context.Context, c Check) (Answer, error) {
	if _, ok := matchbox.ParseVersion(c.Version); !ok {
		// It would sort below every release: refused rather than
		// granted the newest.
		return Answer{}, fmt.Errorf("version %s is not a Flatcar version (X.Y.Z): %w", matchbox.Quote(c.Version), matchbox.ErrInvalid)
	}
	l, err := s.link(ctx, c.Client)
	if err != nil {
		return Answer{}, err
	}
	groups, err := s.groupList(ctx)
	if err != nil {
		return Answer{}, err
	}
	key := l.key(c.Client)
	m, recorded, err := s.machineRecord(ctx, key)
	if err != nil {
		return Answer{}, err
	}
	g, ok := groupFor(groups, l, c.Track)
	if !ok {
		if (recorded || l.machine != nil) && !m.says(l, c, "", StateOnHold, HoldNoGroup) {
			return s.decide(ctx, Group{}, "", key, l, c)
		}
		return Answer{Hold: HoldNoGroup}, nil
	}
	target, ok := g.Target(c.Version, s.releases.Versions(g.Channel, c.Board))
	if !ok {
		// Up to date (or nothing mirrored to go to). A linked machine's
		// record says its version; an unlinked one gets none.
		if (l.machine != nil || recorded) && !m.current(l, c, g.Name) {
			return s.decide(ctx, g, "", key, l, c)
		}
		return Answer{Group: g.Name}, nil
	}
	if recorded && m.State.inFlight() && m.Target == target && m.ID == c.MachineID && !m.TimedOut(s.now(), g.Policy.GrantTimeout()) {
		// Granted already: offered again until it is done.
		return Answer{Version: target, Group: g.Name}, nil
	}
	if hold := s.stillHeld(ctx, g, target, l, c, m, recorded); hold != "" {
		// On hold as before: answered without a write.
		return Answer{Hold: hold, Group: g.Name}, nil
	}
	return s.decide(ctx, g, target, key, l, c)
}

// machineRecord reads a machine's update record.
func (s *Service) machineRecord(ctx context.Context, key string) (Machine, bool, error) {
	data, err := s.store.Record(ctx, kindMachine, key)
	switch {
	case errors.Is(err, matchbox.ErrNotFound):
		return Machine{}, false, nil
	case err != nil:
		return Machine{}, false, err
	}
	var m Machine
	if err := json.Unmarshal(data, &m); err != nil {
		return Machine{}, false, fmt.Errorf("update machine %s: %w", matchbox.Quote(key), err)
	}
	return m, true, nil
}

// says reports whether the record already says what a check would write
// of a machine in state st with hold h.
func (m *Machine) says(l link, c Check, group string, st State, h Hold) bool {
	mac := ""
	if l.machine != nil {
		mac = l.machine.MAC
	}
	return m.ID == c.MachineID && m.MAC == mac && m.LinkedBy == l.by && m.Group == group && m.Version == c.Version && m.State == st && m.Hold == h
}

// current reports whether the record of an up-to-date machine needs no
// write: it says the machine's version and group, and no grant or hold
// is left to settle.
func (m *Machine) current(l link, c Check, group string) bool {
	if m.State.inFlight() || m.State == StateOnHold {
		return false
	}
	return m.says(l, c, group, m.State, m.Hold)
}

// machineHold is the machine's own hold from target at now, if any: a
// label or the operator's hold, or a recent failure of target (a
// rollback: until an operator releases it).
func machineHold(l link, m Machine, target string, now time.Time) Hold {
	switch {
	case l.labelHeld() || m.Held:
		return HoldMachine
	case m.FailedTarget == "" || m.FailedTarget != target:
		return ""
	case m.ErrorCode == codeRollback:
		return HoldRolledBack
	case now.Sub(m.FailedAt) < RetryAfterFailure:
		return HoldRetry
	}
	return ""
}

// decide commits what a check makes of a machine: a grant of target (with
// the budget it spends) or a hold, or for an up-to-date machine (target
// "") its version; a grant it held that has timed out counts as failed.
// g is the zero Group when no group matches.
func (s *Service) decide(ctx context.Context, g Group, target, key string, l link, c Check) (Answer, error) {
	var (
		ans        Answer
		before     Machine
		after      Machine
		autoPaused bool
	)
	keys := []matchbox.RecordKey{{Kind: kindMachine, Key: key}}
	if g.Name != "" {
		keys = append(keys, matchbox.RecordKey{Kind: kindGroup, Key: g.Name}, matchbox.RecordKey{Kind: kindRollout, Key: g.Name})
	}
	unlinked := l.machine == nil
	if unlinked {
		keys = append(keys, matchbox.RecordKey{Kind: kindCount, Key: countUnlinked})
	}
	err := s.store.UpdateRecords(ctx, keys, func(old [][]byte) ([][]byte, error) {
		now := s.now()
		out := slices.Clone(old)
		m := Machine{}
		exists := old[0] != nil
		if exists {
			if err := json.Unmarshal(old[0], &m); err != nil {
				return nil, err
			}
		}
		before = m
		m.ID, m.Version = c.MachineID, c.Version
		if l.machine != nil {
			m.MAC, m.LinkedBy = l.machine.MAC, l.by
		}
		// The rollout is read from the cache and copied only when this
		// check changes it (a grant, a completion, a timeout): a hold
		// rewrites neither it nor the group.
		var (
			gr      Group
			base    = &rollout{}
			changed *rollout
			counts  Rollout
		)
		mutable := func() *rollout {
			if changed == nil {
				r := base.clone()
				if target != "" {
					r.retarget(target)
				}
				changed = &r
			}
			return changed
		}
		inFlight := func() bool {
			r := base
			if changed != nil {
				r = changed
			}
			_, ok := r.InFlight[key]
			return ok
		}
		if g.Name != "" {
			if old[1] == nil || json.Unmarshal(old[1], &gr) != nil {
				return nil, fmt.Errorf("update group %s: %w", matchbox.Quote(g.Name), matchbox.ErrNotFound)
			}
			var err error
			if base, err = s.rollouts.get(g.Name, old[2]); err != nil {
				return nil, err
			}
			rt := target
			if rt == "" {
				// Up to date: the rollout stays at its target.
				rt = base.Target
			}
			var expired int
			counts, expired = base.countsFor(rt, now, gr.Policy)
			timedOut := m.State.inFlight() && m.TimedOut(now, gr.Policy.GrantTimeout())
			if expired > 0 {
				r := mutable()
				if slices.Contains(r.expire(now, gr.Policy), key) {
					timedOut = true
				}
				counts = r.counts(now, gr.Policy)
			}
			if timedOut {
				m.failed(now, 0)
			}
			if pause, why := gr.Policy.PauseFor(counts); pause {
				gr.Policy.Paused, gr.Policy.Reason = true, why
				autoPaused = true
			}
		}
		m.Group = gr.Name
		hold := Hold("")
		switch {
		case g.Name == "":
			hold = HoldNoGroup
		case target == "":
			// Up to date: a grant it held is complete when it runs the
			// target.
			if m.State.inFlight() && c.Version == m.Target {
				if inFlight() || base.Target == m.Target {
					r := mutable()
					delete(r.InFlight, key)
					if r.Target == m.Target {
						r.Completed++
					}
				}
				m.State, m.Updated = StateComplete, now
			} else if m.State == StateOnHold || m.State == "" || m.State.inFlight() {
				m.State, m.Hold, m.Updated = StateIdle, "", now
			}
			ans = Answer{Group: gr.Name}
		case m.State.inFlight() && m.Target == target:
			// Granted before (and not timed out, see above): offered
			// again until it is done.
			ans = Answer{Version: target, Group: gr.Name}
		default:
			if hold = machineHold(l, m, target, now); hold == "" {
				hold = gr.Policy.Admit(now, counts)
			}
			if hold == "" && unlinked && !exists {
				n, _ := strconv.Atoi(string(old[len(old)-1]))
				if n >= s.maxUnlinked {
					hold = HoldUnlinked
				} else {
					out[len(out)-1] = []byte(strconv.Itoa(n + 1))
				}
			}
			if hold == "" {
				mutable().grant(key, now, gr.Policy)
				m.State, m.Hold, m.Target, m.Granted, m.Updated, m.ErrorCode = StateGranted, "", target, now, now, 0
				ans = Answer{Version: target, Group: gr.Name, Granted: true}
			}
		}
		if hold != "" {
			ans = Answer{Hold: hold, Group: gr.Name}
			if m.State != StateOnHold || m.Hold != hold {
				m.State, m.Hold, m.Updated = StateOnHold, hold, now
			}
		}
		after = m
		if !exists && unlinked && !after.State.inFlight() {
			// No record for a hold alone (see stillHeld).
			out[0] = nil
		} else {
			data, err := json.Marshal(m)
			if err != nil {
				return nil, err
			}
			out[0] = data
		}
		if autoPaused {
			gd, err := json.Marshal(gr)
			if err != nil {
				return nil, err
			}
			out[1] = gd
		}
		if changed != nil {
			rd, err := json.Marshal(changed)
			if err != nil {
				return nil, err
			}
			out[2] = rd
		}
		return out, nil
	})
	if err != nil {
		return Answer{}, err
	}
	if autoPaused {
		_ = s.reloadGroups(ctx)
	}
	now := s.now()
	for _, e := range transitionEvents(before, after) {
		if ev, ok := l.event(e.kind, c.Client, now, e.detail); ok {
			s.events(ev)
		}
	}
	return ans, nil
}

// transition is a step of a machine's update, as its timeline shows it.
type transition struct {
	kind   matchbox.EventKind
	detail string
}

// transitionEvents says what changed between two records of a machine.
func transitionEvents(before, after Machine) []transition {
	var out []transition
	if before.Version != after.Version && after.Version != "" {
		out = append(out, transition{matchbox.EventUpdateVersion, "running " + after.Version})
	}
	if before.State == after.State && before.Hold == after.Hold {
		return out
	}
	in := "update group " + after.Group
	switch after.State {
	case StateGranted:
		out = append(out, transition{matchbox.EventUpdateGranted, after.Target + " (" + in + ")"})
	case StateOnHold:
		out = append(out, transition{matchbox.EventUpdateHeld, string(after.Hold) + " (" + in + ")"})
	case StateDownloading:
		out = append(out, transition{matchbox.EventUpdateDownloading, after.Target})
	case StateDownloaded:
		out = append(out, transition{matchbox.EventUpdateDownloaded, after.Target})
	case StateInstalled:
		out = append(out, transition{matchbox.EventUpdateInstalled, after.Target + ", rebooting into it"})
	case StateComplete:
		out = append(out, transition{matchbox.EventUpdateComplete, after.Version})
	case StateFailed:
		detail := after.Target + ": grant timed out"
		if after.ErrorCode != 0 {
			detail = fmt.Sprintf("%s: update_engine error code %d", after.Target, after.ErrorCode)
		}
		out = append(out, transition{matchbox.EventUpdateFailed, detail})
	}
	return out
}

// stillHeld reads, without a transaction, whether the machine is held
// and nothing is to be written for it: its record says it was held for
// the same reason at its last check, or it has no record and none is to
// be made (an unlinked client: a grant makes its record, a hold alone
// none, so that machine ids a client makes up cannot fill the store).
// Any other outcome ("" returned) is decided in the transaction.
func (s *Service) stillHeld(ctx context.Context, g Group, target string, l link, c Check, m Machine, recorded bool) Hold {
	silent := func(h Hold) bool {
		if recorded {
			return m.says(l, c, g.Name, StateOnHold, h)
		}
		return l.machine == nil
	}
	if h := machineHold(l, m, target, s.now()); h != "" {
		if silent(h) {
			return h
		}
		return ""
	}
	rd, err := s.store.Record(ctx, kindRollout, g.Name)
	if err != nil && !errors.Is(err, matchbox.ErrNotFound) {
		return ""
	}
	r, err := s.rollouts.get(g.Name, rd)
	if err != nil {
		return ""
	}
	now := s.now()
	counts, expired := r.countsFor(target, now, g.Policy)
	if expired > 0 {
		// Timed-out grants are to be counted: a write.
		return ""
	}
	if hold := g.Policy.Admit(now, counts); hold != "" && silent(hold) {
		return hold
	}
	return ""
}

// Outcome is what a machine's event says of its update.
type Outcome int

// Outcomes of events.
const (
	// Progress moves a granted update on (downloading, downloaded,
	// installed).
	Progress Outcome = iota
	// Completed: the machine rebooted into the target.
	Completed
	// Failed: the update failed (ErrorCode says how).
	Failed
)

// Report takes what a machine's event says: a step of its granted update
// (to state), its completion, or its failure with code. A client with no
// update record (no grant was made to it) has nothing to report:
// ErrNotFound.
func (s *Service) Report(ctx context.Context, c Client, outcome Outcome, to State, version string, code int) error {
	l, err := s.link(ctx, c)
	if err != nil {
		return err
	}
	key := l.key(c)
	m, recorded, err := s.machineRecord(ctx, key)
	switch {
	case err != nil:
		return err
	case !recorded || m.Group == "":
		return fmt.Errorf("update machine %s: %w", matchbox.Quote(key), matchbox.ErrNotFound)
	}
	var before, after Machine
	keys := []matchbox.RecordKey{{Kind: kindGroup, Key: m.Group}, {Kind: kindRollout, Key: m.Group}, {Kind: kindMachine, Key: key}}
	err = s.store.UpdateRecords(ctx, keys, func(old [][]byte) ([][]byte, error) {
		now := s.now()
		var g Group
		if old[0] == nil || json.Unmarshal(old[0], &g) != nil {
			return nil, fmt.Errorf("update group %s: %w", matchbox.Quote(m.Group), matchbox.ErrNotFound)
		}
		var m Machine
		if old[2] == nil || json.Unmarshal(old[2], &m) != nil {
			return nil, fmt.Errorf("update machine %s: %w", matchbox.Quote(key), matchbox.ErrNotFound)
		}
		before, after = m, m
		// The rollout may have moved on to another target since the
		// grant: the machine's outcome counts only in its own.
		r, err := readRollout(old[1])
		if err != nil {
			return nil, err
		}
		ours := r.Target == m.Target
		// Its grant is followed in the rollout, or (a group that does
		// not weigh grants one by one, or one with more in flight than
		// it follows) its record holds one that has not timed out.
		_, granted := r.InFlight[key]
		granted = granted || m.State.inFlight() && !m.TimedOut(now, g.Policy.GrantTimeout())
		switch {
		case !granted && outcome != Completed:
			// Not an update of ours in progress: nothing to count.
			return old, nil
		case outcome == Progress:
			m.State = to
		case outcome == Completed:
			if version != m.Target || !m.State.inFlight() && m.State != StateFailed {
				return old, nil
			}
			delete(r.InFlight, key)
			if granted && ours {
				r.Completed++
			}
			m.State, m.Version = StateComplete, version
		case outcome == Failed:
			delete(r.InFlight, key)
			if ours {
				r.Failed++
			}
			m.failed(now, code)
			if pause, why := g.Policy.PauseFor(r.counts(now, g.Policy)); pause {
				g.Policy.Paused, g.Policy.Reason = true, why
			}
		}
		m.Updated = now
		after = m
		out := make([][]byte, 3)
		for i, v := range []any{g, r, m} {
			if out[i], err = json.Marshal(v); err != nil {
				return nil, err
			}
		}
		return out, nil
	})
	if err != nil {
		return err
	}
	if outcome == Failed {
		// The group may have paused itself.
		_ = s.reloadGroups(ctx)
	}
	now := s.now()
	for _, e := range transitionEvents(before, after) {
		if ev, ok := l.event(e.kind, c, now, e.detail); ok {
			s.events(ev)
		}
	}
	return nil
}
