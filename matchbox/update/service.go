package update

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
	// ID is the update client's machine id (/etc/machine-id).
	ID    string `json:"id"`
	Group string `json:"group"`
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
}

// rollout is the stored progress of a group's rollout of one target: what
// the policy weighs, kept exact by every grant and every outcome.
type rollout struct {
	Target string `json:"target"`
	// InFlight maps the machines holding a grant to when it was made.
	InFlight map[string]time.Time `json:"in_flight,omitempty"`
	// Grants are the times of the grants of the last period, oldest
	// first.
	Grants    []time.Time `json:"grants,omitempty"`
	Granted   int         `json:"granted"`
	Completed int         `json:"completed"`
	Failed    int         `json:"failed"`
}

// Store is what the service keeps its groups, rollouts and machines in.
type Store interface {
	matchbox.RecordStore
}

// Releases lists the versions mirrored for a channel and board.
type Releases interface {
	Versions(channel, board string) []string
}

// Service decides update checks and follows machines' updates. Its state
// is in the store: a grant and the budget it spends are committed
// together before the answer, so concurrent checks, on this server or
// others sharing the store, never exceed a limit, and a restart loses
// nothing.
type Service struct {
	store    Store
	releases Releases
	now      func() time.Time
}

// New returns a service over store; releases says what can be granted.
func New(store Store, releases Releases) *Service {
	return &Service{store: store, releases: releases, now: time.Now}
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
			return err
		}
	}
	return nil
}

// PutGroup creates or replaces a group (its rollout's progress stays).
func (s *Service) PutGroup(ctx context.Context, g Group) error {
	if err := g.Check(); err != nil {
		return err
	}
	data, err := json.Marshal(g)
	if err != nil {
		return err
	}
	return s.store.UpdateRecords(ctx, []matchbox.RecordKey{{Kind: kindGroup, Key: g.Name}}, func([][]byte) ([][]byte, error) {
		return [][]byte{data}, nil
	})
}

// DeleteGroup deletes a group and its rollout's progress, or returns
// ErrNotFound. Its machines are held by no group until another matches
// them; a default group comes back, paused, at the next start
// (EnsureDefaultGroups).
func (s *Service) DeleteGroup(ctx context.Context, name string) error {
	keys := []matchbox.RecordKey{{Kind: kindGroup, Key: name}, {Kind: kindRollout, Key: name}}
	return s.store.UpdateRecords(ctx, keys, func(old [][]byte) ([][]byte, error) {
		if old[0] == nil {
			return nil, fmt.Errorf("update group %s: %w", matchbox.Quote(name), matchbox.ErrNotFound)
		}
		return [][]byte{nil, nil}, nil
	})
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
	return s.store.UpdateRecords(ctx, keys, func(old [][]byte) ([][]byte, error) {
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
	})
}

// Machine returns what the service knows of a machine's updates, or
// ErrNotFound.
func (s *Service) Machine(ctx context.Context, id string) (Machine, error) {
	data, err := s.store.Record(ctx, kindMachine, id)
	if err != nil {
		return Machine{}, fmt.Errorf("update machine %s: %w", matchbox.Quote(id), err)
	}
	var m Machine
	return m, json.Unmarshal(data, &m)
}

// Check is one machine's update check.
type Check struct {
	MachineID string
	// Group is the machine's update group (chosen by the caller from its
	// track, matchbox group or labels).
	Group   string
	Version string
	Board   string
}

// Answer is the decision of a check: a version to update to, or none and
// why (Hold empty: the machine is up to date).
type Answer struct {
	Version string
	Hold    Hold
}

// Decide answers an update check. A machine up to date, or one holding a
// grant, costs no store write; a grant is committed (with the budget it
// spends) before Decide returns it.
func (s *Service) Decide(ctx context.Context, c Check) (Answer, error) {
	g, err := s.Group(ctx, c.Group)
	if err != nil {
		return Answer{}, err
	}
	target, ok := g.Target(c.Version, s.releases.Versions(g.Channel, c.Board))
	if !ok {
		return Answer{}, nil
	}
	if data, err := s.store.Record(ctx, kindMachine, c.MachineID); err == nil {
		var m Machine
		if json.Unmarshal(data, &m) == nil && m.State.inFlight() && m.Target == target && s.now().Sub(m.Granted) < g.Policy.GrantTimeout() {
			// Granted already: offered again until it is done.
			return Answer{Version: target}, nil
		}
	} else if !errors.Is(err, matchbox.ErrNotFound) {
		return Answer{}, err
	}
	if hold := s.stillHeld(ctx, g, target, c); hold != "" {
		// On hold as before: answered without a write.
		return Answer{Hold: hold}, nil
	}
	var ans Answer
	keys := []matchbox.RecordKey{{Kind: kindGroup, Key: g.Name}, {Kind: kindRollout, Key: g.Name}, {Kind: kindMachine, Key: c.MachineID}}
	err = s.store.UpdateRecords(ctx, keys, func(old [][]byte) ([][]byte, error) {
		now := s.now()
		var g Group
		if err := json.Unmarshal(old[0], &g); err != nil || old[0] == nil {
			return nil, fmt.Errorf("update group %s: %w", matchbox.Quote(c.Group), matchbox.ErrNotFound)
		}
		r, err := decodeRollout(old[1], target)
		if err != nil {
			return nil, err
		}
		m := Machine{ID: c.MachineID}
		if old[2] != nil {
			if err := json.Unmarshal(old[2], &m); err != nil {
				return nil, err
			}
		}
		r.expire(now, g.Policy)
		if pause, why := g.Policy.PauseFor(r.counts()); pause {
			g.Policy.Paused, g.Policy.Reason = true, why
		}
		m.Group, m.Version = g.Name, c.Version
		if _, granted := r.InFlight[m.ID]; granted && m.Target == target {
			ans = Answer{Version: target}
		} else if hold := g.Policy.Admit(now, r.counts()); hold != "" {
			ans = Answer{Hold: hold}
			if old[2] == nil {
				// No record for a hold alone (see stillHeld).
				out, err := encodeAll(g, r, m)
				if err == nil {
					out[2] = nil
				}
				return out, err
			}
			if m.State != StateOnHold || m.Hold != hold {
				m.State, m.Hold, m.Updated = StateOnHold, hold, now
			}
		} else {
			r.InFlight[m.ID] = now
			r.Grants = append(r.Grants, now)
			r.Granted++
			m.State, m.Hold, m.Target, m.Granted, m.Updated, m.ErrorCode = StateGranted, "", target, now, now, 0
			ans = Answer{Version: target}
		}
		return encodeAll(g, r, m)
	})
	return ans, err
}

// stillHeld reads, without a transaction, whether the machine is held
// and nothing is to be written for it: it was held for the same reason at
// its last check, or the service has no record of it (a record is made by
// a grant; a hold alone makes none, so that machine ids a client makes up
// cannot fill the store). Any other outcome ("" returned) is decided in
// the transaction.
func (s *Service) stillHeld(ctx context.Context, g Group, target string, c Check) Hold {
	data, err := s.store.Record(ctx, kindMachine, c.MachineID)
	recorded := err == nil
	if err != nil && !errors.Is(err, matchbox.ErrNotFound) {
		return ""
	}
	var m Machine
	if recorded && (json.Unmarshal(data, &m) != nil || m.State != StateOnHold || m.Version != c.Version || m.Group != g.Name) {
		return ""
	}
	rd, err := s.store.Record(ctx, kindRollout, g.Name)
	if err != nil && !errors.Is(err, matchbox.ErrNotFound) {
		return ""
	}
	r, err := decodeRollout(rd, target)
	if err != nil {
		return ""
	}
	now := s.now()
	expired := len(r.InFlight)
	r.expire(now, g.Policy)
	if len(r.InFlight) != expired {
		// Timed-out grants are to be counted: a write.
		return ""
	}
	if hold := g.Policy.Admit(now, r.counts()); hold != "" && (!recorded || hold == m.Hold) {
		return hold
	}
	return ""
}

func decodeRollout(data []byte, target string) (rollout, error) {
	var r rollout
	if data != nil {
		if err := json.Unmarshal(data, &r); err != nil {
			return r, err
		}
	}
	if r.Target != target {
		// A new target starts a new rollout: the canary and the
		// failures count again; machines in flight keep their grants.
		r = rollout{Target: target, InFlight: r.InFlight, Grants: r.Grants}
	}
	if r.InFlight == nil {
		r.InFlight = map[string]time.Time{}
	}
	return r, nil
}

// expire drops the grants older than the timeout (failures) and the
// grant times older than the period.
func (r *rollout) expire(now time.Time, p Policy) {
	for id, at := range r.InFlight {
		if now.Sub(at) >= p.GrantTimeout() {
			delete(r.InFlight, id)
			r.Failed++
		}
	}
	keep := 0
	for keep < len(r.Grants) && p.Period > 0 && now.Sub(r.Grants[keep]) >= p.Period {
		keep++
	}
	if p.Period == 0 {
		keep = len(r.Grants)
	}
	r.Grants = slices.Clone(r.Grants[keep:])
}

// counts is what the policy weighs.
func (r *rollout) counts() Rollout {
	return Rollout{InFlight: len(r.InFlight), InPeriod: len(r.Grants), Granted: r.Granted, Completed: r.Completed, Failed: r.Failed}
}

func encodeAll(g Group, r rollout, m Machine) ([][]byte, error) {
	out := make([][]byte, 3)
	for i, v := range []any{g, r, m} {
		data, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
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
// (to state), its completion, or its failure with code.
func (s *Service) Report(ctx context.Context, machineID string, outcome Outcome, to State, version string, code int) error {
	data, err := s.store.Record(ctx, kindMachine, machineID)
	if err != nil {
		return err
	}
	var m Machine
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	keys := []matchbox.RecordKey{{Kind: kindGroup, Key: m.Group}, {Kind: kindRollout, Key: m.Group}, {Kind: kindMachine, Key: machineID}}
	return s.store.UpdateRecords(ctx, keys, func(old [][]byte) ([][]byte, error) {
		now := s.now()
		var g Group
		if old[0] == nil || json.Unmarshal(old[0], &g) != nil {
			return nil, fmt.Errorf("update group %s: %w", matchbox.Quote(m.Group), matchbox.ErrNotFound)
		}
		var m Machine
		if err := json.Unmarshal(old[2], &m); err != nil || old[2] == nil {
			return nil, fmt.Errorf("update machine %s: %w", matchbox.Quote(machineID), matchbox.ErrNotFound)
		}
		r, err := decodeRollout(old[1], m.Target)
		if err != nil {
			return nil, err
		}
		_, granted := r.InFlight[machineID]
		switch {
		case !granted && outcome != Completed:
			// Not an update of ours in progress: nothing to count.
			return old, nil
		case outcome == Progress:
			m.State = to
		case outcome == Completed:
			if version != m.Target {
				return old, nil
			}
			delete(r.InFlight, machineID)
			if granted {
				r.Completed++
			}
			m.State, m.Version = StateComplete, version
		case outcome == Failed:
			delete(r.InFlight, machineID)
			r.Failed++
			m.State, m.ErrorCode = StateFailed, code
			if pause, why := g.Policy.PauseFor(r.counts()); pause {
				g.Policy.Paused, g.Policy.Reason = true, why
			}
		}
		m.Updated = now
		return encodeAll(g, r, m)
	})
}
