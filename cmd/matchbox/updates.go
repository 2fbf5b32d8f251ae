package main

import (
	"context"
	"fmt"
	"sync"
	"time"

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
	// The groups other servers sharing the database write come through
	// its change feed (subscribed before the service first reads them).
	changes := s.db.Changes(ctx, matchbox.ChangeRecord)
	s.add("update-follow", func(ctx context.Context) error {
		s.updates.Follow(ctx, changes)
		return nil
	})
	return s.updates.EnsureDefaultGroups(ctx)
}
