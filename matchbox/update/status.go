package update

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"matchbox.dev/matchbox"
)

// GroupStatus is where a group's rollout stands: its policy's state, the
// progress of the target being rolled out, and its machines counted by
// version and state.
type GroupStatus struct {
	Name    string `json:"name"`
	Channel string `json:"channel"`
	// Version is the group's target as set (X.Y.Z or newest).
	Version string `json:"version"`
	Paused  bool   `json:"paused"`
	Reason  string `json:"reason,omitempty"`
	// Rollout is the progress of the target last granted.
	Rollout RolloutStatus `json:"rollout"`
	// Machines counts the group's machines by the version they run and
	// their update state, versions newest first.
	Machines []VersionStates `json:"machines"`
	Total    int             `json:"total"`
}

// RolloutStatus is the stored progress of a group's rollout.
type RolloutStatus struct {
	// Target is the version being rolled out ("" before any grant).
	Target    string `json:"target,omitempty"`
	InFlight  int    `json:"in_flight"`
	InPeriod  int    `json:"in_period"`
	Granted   int    `json:"granted"`
	Completed int    `json:"completed"`
	Failed    int    `json:"failed"`
}

// VersionStates counts the machines running one version, by state.
type VersionStates struct {
	Version string        `json:"version"`
	States  map[State]int `json:"states"`
}

// Status returns the status of every group (name "") or of one (or
// ErrNotFound). A machine whose grant outlived the group's timeout counts
// as failed. Machines of no group (a group deleted, or none matching) are
// counted under the group name "" when every group is asked for.
func (s *Service) Status(ctx context.Context, name string) ([]GroupStatus, error) {
	groups, err := s.Groups(ctx)
	if err != nil {
		return nil, err
	}
	if name != "" {
		i := slices.IndexFunc(groups, func(g Group) bool { return g.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("update group %s: %w", matchbox.Quote(name), matchbox.ErrNotFound)
		}
		groups = groups[i : i+1]
	}
	type counts map[string]map[State]int
	byGroup := map[string]counts{}
	timeout := map[string]time.Duration{}
	for _, g := range groups {
		byGroup[g.Name] = counts{}
		timeout[g.Name] = g.Policy.GrantTimeout()
	}
	if name == "" {
		byGroup[""] = counts{}
		timeout[""] = DefaultTimeout
	}
	recs, err := s.store.Records(ctx, kindMachine)
	if err != nil {
		return nil, err
	}
	now := s.now()
	for _, r := range recs {
		var m Machine
		if json.Unmarshal(r.Value, &m) != nil {
			continue
		}
		c, ok := byGroup[m.Group]
		if !ok {
			if name != "" {
				continue
			}
			c = byGroup[""]
		}
		st := m.State
		if m.TimedOut(now, timeout[m.Group]) {
			st = StateFailed
		}
		if c[m.Version] == nil {
			c[m.Version] = map[State]int{}
		}
		c[m.Version][st]++
	}
	out := make([]GroupStatus, 0, len(groups)+1)
	add := func(gs GroupStatus, c counts) {
		for v, states := range c {
			gs.Machines = append(gs.Machines, VersionStates{Version: v, States: states})
			for _, n := range states {
				gs.Total += n
			}
		}
		slices.SortFunc(gs.Machines, func(a, b VersionStates) int { return matchbox.CompareVersions(b.Version, a.Version) })
		if gs.Machines == nil {
			gs.Machines = []VersionStates{}
		}
		out = append(out, gs)
	}
	for _, g := range groups {
		gs := GroupStatus{Name: g.Name, Channel: g.Channel, Version: g.Version, Paused: g.Policy.Paused, Reason: g.Policy.Reason}
		if data, err := s.store.Record(ctx, kindRollout, g.Name); err == nil {
			r, err := readRollout(data)
			if err != nil {
				return nil, fmt.Errorf("update group %s: rollout: %w", matchbox.Quote(g.Name), err)
			}
			c := r.counts(now, g.Policy)
			gs.Rollout = RolloutStatus{Target: r.Target, InFlight: c.InFlight, InPeriod: c.InPeriod, Granted: c.Granted, Completed: c.Completed, Failed: c.Failed}
		}
		add(gs, byGroup[g.Name])
	}
	if c := byGroup[""]; len(c) > 0 {
		add(GroupStatus{}, c)
	}
	return out, nil
}
