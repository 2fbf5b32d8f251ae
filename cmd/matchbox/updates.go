package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/omaha"
	"matchbox.dev/matchbox/release"
	"matchbox.dev/matchbox/update"
)

// mirrorUpdates is what the release mirror offers the update service and
// the update endpoint: the releases that hold a verified OS payload, and
// their payloads. The mirror's listing is read at most every
// mirrorListTTL, not on every update check.
type mirrorUpdates struct {
	m *release.Mirror

	mu      sync.Mutex
	listed  time.Time
	byBoard map[string][]release.Release // releases with an OS payload, by board
}

// mirrorListTTL is how long a listing of the mirror is used: a release
// pulled is offered after at most this long.
const mirrorListTTL = 10 * time.Second

// releases returns the mirror's releases with an OS payload, by board.
func (u *mirrorUpdates) releases() map[string][]release.Release {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.byBoard != nil && time.Since(u.listed) < mirrorListTTL {
		return u.byBoard
	}
	all, err := u.m.List()
	if err != nil && u.byBoard != nil {
		return u.byBoard
	}
	by := map[string][]release.Release{}
	for _, r := range all {
		if len(r.Payloads) > 0 && r.Payloads[0].Name == release.UpdatePayloadName {
			by[r.Board] = append(by[r.Board], r)
		}
	}
	u.byBoard, u.listed = by, time.Now()
	return by
}

// Versions lists the versions of a channel and board that can be offered.
func (u *mirrorUpdates) Versions(channel, board string) []string {
	var out []string
	for _, r := range u.releases()[board] {
		if r.Channel == channel {
			out = append(out, r.Version)
		}
	}
	return out
}

// Channel is a channel the version of the board is mirrored for.
func (u *mirrorUpdates) Channel(board, version string) (string, bool) {
	for _, r := range u.releases()[board] {
		if r.Version == version {
			return r.Channel, true
		}
	}
	return "", false
}

// Payloads returns a release's directory under /assets/ and its payloads
// as Omaha offers them.
func (u *mirrorUpdates) Payloads(channel, board, version string) (string, omaha.Package, []omaha.Package, error) {
	ps, err := u.m.Payloads(channel, board, version)
	if err != nil {
		return "", omaha.Package{}, nil, err
	}
	if len(ps) == 0 || ps[0].Name != release.UpdatePayloadName {
		return "", omaha.Package{}, nil, fmt.Errorf("release %s/%s/%s has no OS payload: %w", channel, board, version, matchbox.ErrNotFound)
	}
	pkg := func(p release.Payload) omaha.Package {
		out := omaha.Package{Name: p.Name, Size: p.Size}
		copy(out.SHA1[:], p.SHA1)
		copy(out.SHA256[:], p.SHA256)
		return out
	}
	var exts []omaha.Package
	for _, p := range ps[1:] {
		exts = append(exts, pkg(p))
	}
	return "flatcar/" + channel + "/" + board + "/" + version, pkg(ps[0]), exts, nil
}

// setupUpdates runs the update service when there is a release mirror:
// it answers at /v1/update/ with the mirror's payloads, starting with the
// default groups, paused.
func (s *instance) setupUpdates(ctx context.Context) error {
	if s.mirror == nil {
		return nil
	}
	s.updatePayloads = &mirrorUpdates{m: s.mirror}
	s.updates = update.New(s.db, s.updatePayloads)
	s.updates.SetEvents(s.rec.Record)
	s.reg.MustRegister(&updateCollector{svc: s.updates, log: s.log})
	// The groups other servers sharing the database write come through
	// its change feed (subscribed before the service first reads them).
	changes := s.db.Changes(ctx, matchbox.ChangeRecord)
	s.add("update-follow", func(ctx context.Context) error {
		s.updates.Follow(ctx, changes)
		return nil
	})
	return s.updates.EnsureDefaultGroups(ctx)
}

// updateCollector exports where the rollouts stand, from the update
// service's status: machines per group, version and update state, each
// group's paused state and its rollout's progress. The status reads every
// machine's update record, so a scrape reuses one at most
// updateStatusTTL old.
type updateCollector struct {
	svc *update.Service
	log *slog.Logger

	mu    sync.Mutex
	at    time.Time
	cache []update.GroupStatus
}

const updateStatusTTL = 10 * time.Second

// maxVersionLabels bounds the versions a group's machines are counted
// under; the rest (and anything that is not a version) count as "other",
// since clients say which version they run.
const maxVersionLabels = 20

var (
	updateMachinesDesc = prometheus.NewDesc("matchbox_update_machines", "Machines known to the update service, by update group, the version they run and their update state.", []string{"group", "version", "state"}, nil)
	updatePausedDesc   = prometheus.NewDesc("matchbox_update_group_paused", "1 when an update group is paused (by an operator or after failures).", []string{"group"}, nil)
	updateRolloutDesc  = prometheus.NewDesc("matchbox_update_rollout_machines", "The progress of each update group's rollout of its target: machines granted it, completed, failed, in flight.", []string{"group", "target", "count"}, nil)
)

func (c *updateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- updateMachinesDesc
	ch <- updatePausedDesc
	ch <- updateRolloutDesc
}

func (c *updateCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if c.cache == nil || time.Since(c.at) >= updateStatusTTL {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := c.svc.Status(ctx, "")
		cancel()
		if err != nil {
			c.log.Warn("update status for metrics not read", "err", err)
		} else {
			c.cache, c.at = st, time.Now()
		}
	}
	st := c.cache
	c.mu.Unlock()
	for _, g := range st {
		for _, v := range versionLabels(g.Machines) {
			for state, n := range v.States {
				ch <- prometheus.MustNewConstMetric(updateMachinesDesc, prometheus.GaugeValue, float64(n), g.Name, v.Version, string(state))
			}
		}
		if g.Name == "" {
			continue
		}
		paused := 0.0
		if g.Paused {
			paused = 1
		}
		ch <- prometheus.MustNewConstMetric(updatePausedDesc, prometheus.GaugeValue, paused, g.Name)
		r := g.Rollout
		if r.Target == "" {
			continue
		}
		for _, kv := range []struct {
			name string
			n    int
		}{{"granted", r.Granted}, {"completed", r.Completed}, {"failed", r.Failed}, {"in_flight", r.InFlight}} {
			ch <- prometheus.MustNewConstMetric(updateRolloutDesc, prometheus.GaugeValue, float64(kv.n), g.Name, r.Target, kv.name)
		}
	}
}

// versionLabels merges the counts of versions past the first
// maxVersionLabels, and of anything that is not a version, into "other".
func versionLabels(vs []update.VersionStates) []update.VersionStates {
	var out []update.VersionStates
	other := update.VersionStates{Version: "other", States: map[update.State]int{}}
	for _, v := range vs {
		if _, ok := matchbox.ParseVersion(v.Version); ok && len(out) < maxVersionLabels {
			out = append(out, v)
			continue
		}
		for st, n := range v.States {
			other.States[st] += n
		}
	}
	if len(other.States) > 0 {
		out = append(out, other)
	}
	return out
}
