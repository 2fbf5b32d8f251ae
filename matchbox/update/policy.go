// Package update is matchbox's update service for Flatcar machines: it
// decides, machine by machine, whether an update check is granted the
// next release, under the rollout policy of the machine's update group.
//
// This file holds the groups and their policy as pure logic: what a
// group matches, which release it targets (with floors a machine must
// pass through), and whether one more grant is allowed now (paused,
// windows, machines in flight, grants per period, canary, automatic pause
// after failures). The Omaha protocol is in matchbox/omaha; payloads are
// mirrored and verified by matchbox/release.
package update

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"matchbox.dev/matchbox"
)

// Channels are Flatcar's release channels.
var Channels = []string{"stable", "beta", "alpha", "lts"}

// Newest targets the newest mirrored release of the group's channel.
const Newest = "newest"

// Group is an update group: the machines it holds, the release it takes
// them to, and the policy of the rollout.
type Group struct {
	Name    string `json:"name"`
	Channel string `json:"channel"`
	// Version is the target: a pinned X.Y.Z or Newest.
	Version string `json:"version"`
	Match   Match  `json:"match"`
	// Floors are versions a machine below them must be updated to first,
	// in order, before it may go further.
	Floors []string `json:"floors,omitempty"`
	Policy Policy   `json:"policy"`
}

// Match says which machines a group holds: those whose update client
// sends the group's name as its track (GROUP= in update.conf), those of a
// matchbox group, or those with a label.
type Match struct {
	// Kind is MatchTrack, MatchGroup or MatchLabel.
	Kind string `json:"kind"`
	// Value is the matchbox group id (MatchGroup) or the label's value
	// (MatchLabel); Key the label's key.
	Key   string `json:"key,omitempty"`
	Value string `json:"value,omitempty"`
}

// Kinds of Match.
const (
	MatchTrack = "track"
	MatchGroup = "group"
	MatchLabel = "label"
)

// ParseMatch reads a match as the CLI takes it: "track", "group:ID" or
// "label:K=V".
func ParseMatch(s string) (Match, error) {
	kind, rest, _ := strings.Cut(s, ":")
	var m Match
	switch {
	case s == MatchTrack:
		m = Match{Kind: MatchTrack}
	case kind == MatchGroup && rest != "":
		m = Match{Kind: MatchGroup, Value: rest}
	case kind == MatchLabel:
		k, v, ok := strings.Cut(rest, "=")
		if !ok || k == "" {
			return Match{}, fmt.Errorf("match %s: want label:KEY=VALUE: %w", matchbox.Quote(s), matchbox.ErrInvalid)
		}
		m = Match{Kind: MatchLabel, Key: k, Value: v}
	default:
		return Match{}, fmt.Errorf("match %s: want track, group:ID or label:KEY=VALUE: %w", matchbox.Quote(s), matchbox.ErrInvalid)
	}
	return m, m.check()
}

func (m Match) check() error {
	switch m.Kind {
	case MatchTrack:
		return nil
	case MatchGroup:
		return matchbox.CheckName("match group", m.Value)
	case MatchLabel:
		if err := matchbox.CheckName("match label", m.Key); err != nil {
			return err
		}
		return matchbox.CheckValue("match label value", m.Value, false)
	}
	return fmt.Errorf("match kind %s: want track, group or label: %w", matchbox.Quote(m.Kind), matchbox.ErrInvalid)
}

// String is the match as the CLI takes it.
func (m Match) String() string {
	switch m.Kind {
	case MatchGroup:
		return MatchGroup + ":" + m.Value
	case MatchLabel:
		return MatchLabel + ":" + m.Key + "=" + m.Value
	}
	return m.Kind
}

// Policy is how fast a group's rollout may go. Zero limits are no limit.
type Policy struct {
	// Paused stops all grants; Reason says why (an operator's pause, or
	// the automatic pause after failures).
	Paused bool   `json:"paused"`
	Reason string `json:"reason,omitempty"`
	// MaxInFlight bounds the machines granted an update that have neither
	// completed it nor failed (a grant older than Timeout has failed).
	MaxInFlight int `json:"max_in_flight,omitempty"`
	// MaxPerPeriod bounds the grants made in any Period.
	MaxPerPeriod int           `json:"max_per_period,omitempty"`
	Period       time.Duration `json:"period,omitempty"`
	// Timeout is how long a granted update may take until it completes;
	// past it the update counts as failed (default DefaultTimeout).
	Timeout time.Duration `json:"timeout,omitempty"`
	// Canary is how many machines must complete the target before more
	// than that many are granted it.
	Canary int `json:"canary,omitempty"`
	// PauseAfterFailures pauses the group once this many machines failed
	// the target since the rollout was last resumed.
	PauseAfterFailures int `json:"pause_after_failures,omitempty"`
	// Windows are when grants may be made (none: any time).
	Windows []Window `json:"windows,omitempty"`
}

// DefaultTimeout is a grant's timeout when the policy names none: an
// update downloads, installs and reboots well within it.
const DefaultTimeout = 2 * time.Hour

// DefaultGroups are the groups that exist before an operator makes any:
// one per channel, matched by track, paused until an operator resumes it,
// so that nothing updates by surprise.
func DefaultGroups() []Group {
	var out []Group
	for _, ch := range Channels {
		out = append(out, Group{Name: ch, Channel: ch, Version: Newest, Match: Match{Kind: MatchTrack},
			Policy: Policy{Paused: true, Reason: "created paused: resume it (matchbox update resume " + ch + ") to start updating"}})
	}
	return out
}

// Check reports what is wrong with a group, if anything.
func (g *Group) Check() error {
	if err := matchbox.CheckName("update group", g.Name); err != nil {
		return err
	}
	if !slices.Contains(Channels, g.Channel) {
		return fmt.Errorf("update group %s: channel %s: want one of %s: %w", g.Name, matchbox.Quote(g.Channel), strings.Join(Channels, ", "), matchbox.ErrInvalid)
	}
	if g.Version != Newest {
		if _, ok := matchbox.ParseVersion(g.Version); !ok {
			return fmt.Errorf("update group %s: version %s: want X.Y.Z or %s: %w", g.Name, matchbox.Quote(g.Version), Newest, matchbox.ErrInvalid)
		}
	}
	if err := g.Match.check(); err != nil {
		return fmt.Errorf("update group %s: %w", g.Name, err)
	}
	for i, f := range g.Floors {
		if _, ok := matchbox.ParseVersion(f); !ok {
			return fmt.Errorf("update group %s: floor %s: want X.Y.Z: %w", g.Name, matchbox.Quote(f), matchbox.ErrInvalid)
		}
		if i > 0 && matchbox.CompareVersions(g.Floors[i-1], f) >= 0 {
			return fmt.Errorf("update group %s: floors must rise: %s after %s: %w", g.Name, f, g.Floors[i-1], matchbox.ErrInvalid)
		}
	}
	p := g.Policy
	switch {
	case p.MaxInFlight < 0 || p.MaxPerPeriod < 0 || p.Canary < 0 || p.PauseAfterFailures < 0 || p.Period < 0 || p.Timeout < 0:
		return fmt.Errorf("update group %s: limits, counts and durations may not be negative: %w", g.Name, matchbox.ErrInvalid)
	case p.MaxPerPeriod > 0 && p.Period == 0:
		return fmt.Errorf("update group %s: -max-per-period needs -period: %w", g.Name, matchbox.ErrInvalid)
	case p.Period > 0 && p.MaxPerPeriod == 0:
		return fmt.Errorf("update group %s: -period needs -max-per-period: %w", g.Name, matchbox.ErrInvalid)
	case p.MaxInFlight > maxTracked:
		return fmt.Errorf("update group %s: -max-in-flight %d: at most %d (0: no limit): %w", g.Name, p.MaxInFlight, maxTracked, matchbox.ErrInvalid)
	case p.Canary > maxTracked:
		return fmt.Errorf("update group %s: -canary %d: at most %d: %w", g.Name, p.Canary, maxTracked, matchbox.ErrInvalid)
	case p.MaxInFlight > 0 && p.Canary > p.MaxInFlight:
		// Allowed: the canary only bounds grants further.
	}
	return nil
}

// Target returns the version a machine at current is to be updated to
// now, given the versions mirrored for the group's channel: the first
// floor above current (when below the target), else the target (the
// pinned version, or the newest mirrored one); false when current is at
// or above it, or nothing is mirrored to go to.
func (g *Group) Target(current string, mirrored []string) (string, bool) {
	target := g.Version
	if target == Newest {
		target = ""
		for _, v := range mirrored {
			if target == "" || matchbox.CompareVersions(v, target) > 0 {
				target = v
			}
		}
		if target == "" {
			return "", false
		}
	} else if !slices.Contains(mirrored, target) {
		return "", false
	}
	if matchbox.CompareVersions(current, target) >= 0 {
		return "", false
	}
	for _, f := range g.Floors {
		if matchbox.CompareVersions(current, f) < 0 && matchbox.CompareVersions(f, target) < 0 {
			if slices.Contains(mirrored, f) {
				return f, true
			}
			// A floor not mirrored cannot be passed through: wait.
			return "", false
		}
	}
	return target, true
}

// Rollout is what a group's policy weighs, counted over the group's
// machines for the version being rolled out.
type Rollout struct {
	// InFlight are the machines granted an update that have neither
	// completed nor failed it (timed out grants are failures).
	InFlight int
	// InPeriod are the grants made in the last Period.
	InPeriod int
	// Granted are the grants of the version since the rollout began;
	// Completed and Failed the machines that completed or failed it
	// (Failed since the group was last resumed).
	Granted, Completed, Failed int
}

// Hold says why a machine is not granted an update now.
type Hold string

// Reasons of a hold.
const (
	HoldPaused   Hold = "paused"
	HoldWindow   Hold = "outside the update windows"
	HoldInFlight Hold = "max in flight reached"
	HoldPeriod   Hold = "max updates per period reached"
	HoldCanary   Hold = "waiting for the canary machines to complete"
	HoldFailures Hold = "paused after failures"
	HoldMachine  Hold = "machine on hold"
	// HoldRetry: the machine failed to update to this version less than
	// RetryAfterFailure ago.
	HoldRetry Hold = "failed this version lately: retried after an hour"
	// HoldRolledBack: the machine rolled back from this version (it did
	// not boot); an operator's release lets it try again.
	HoldRolledBack Hold = "rolled back from this version: release the machine to retry"
	// HoldNoGroup: no update group matches the machine.
	HoldNoGroup Hold = "no update group matches"
	// HoldUnlinked: the client is not linked to an inventory machine
	// and the records of such clients are at their maximum
	// (MaxUnlinked).
	HoldUnlinked Hold = "too many clients not linked to the inventory"
)

// Admit decides whether one more machine may be granted an update at
// now: "" when it may, else why not. A grant that Admit allows must be
// counted (InFlight, InPeriod, Granted) before the next decision: the
// caller commits it first.
func (p *Policy) Admit(now time.Time, r Rollout) Hold {
	switch {
	case p.Paused:
		return HoldPaused
	case p.PauseAfterFailures > 0 && r.Failed >= p.PauseAfterFailures:
		return HoldFailures
	case len(p.Windows) > 0 && !slices.ContainsFunc(p.Windows, func(w Window) bool { return w.Contains(now) }):
		return HoldWindow
	case p.Canary > 0 && r.Completed < p.Canary && r.Granted >= p.Canary:
		return HoldCanary
	case p.MaxInFlight > 0 && r.InFlight >= p.MaxInFlight:
		return HoldInFlight
	case p.MaxPerPeriod > 0 && r.InPeriod >= p.MaxPerPeriod:
		return HoldPeriod
	}
	return ""
}

// PauseFor reports whether the rollout's failures pause the group, and
// the reason to record: the group pauses itself, and stays paused until
// an operator resumes it.
func (p *Policy) PauseFor(r Rollout) (bool, string) {
	if p.Paused || p.PauseAfterFailures == 0 || r.Failed < p.PauseAfterFailures {
		return false, ""
	}
	return true, fmt.Sprintf("paused automatically: %d machines failed the update (limit %d)", r.Failed, p.PauseAfterFailures)
}

// tracks reports whether the policy weighs the grants in flight one by
// one: a limit in flight, a canary, or a pause after failures (which
// counts the grants that time out).
func (p *Policy) tracks() bool {
	return p.MaxInFlight > 0 || p.Canary > 0 || p.PauseAfterFailures > 0
}

// GrantTimeout is how long a grant of this policy may take.
func (p *Policy) GrantTimeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return DefaultTimeout
}
