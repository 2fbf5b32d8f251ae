package update

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"time"

	"matchbox.dev/matchbox"
)

// Client is an update client as its request shows it: update_engine's
// machine id (/etc/machine-id) and alias (MACHINE_ALIAS= of update.conf,
// which matchbox's installed-system config sets to the machine's MAC),
// and the address it asks from.
type Client struct {
	MachineID string
	Alias     string
	Addr      netip.Addr
}

// Inventory is where the service finds the machines its clients are: the
// inventory's machine records and the DHCP server's leases.
type Inventory interface {
	GetMachine(ctx context.Context, mac string) (*matchbox.Machine, error)
	Lease(ctx context.Context, ip netip.Addr) (matchbox.Lease, error)
}

// LinkedBy says how an update client was linked to an inventory machine.
type LinkedBy string

// Ways of linking a client to a machine.
const (
	// LinkedByAlias: the alias is the MAC of a machine in the inventory.
	// It is the client's word (Omaha has no authentication), so it links
	// only to a machine the inventory already holds.
	LinkedByAlias LinkedBy = "alias"
	// LinkedByLease: the client asks from an address that matchbox's
	// DHCP server has leased to a machine.
	LinkedByLease LinkedBy = "lease"
)

// HoldLabel is the inventory label that holds a machine out of every
// rollout (any value but "false"); the API's hold does the same.
const HoldLabel = "update-hold"

// link is the inventory machine a client is, if any.
type link struct {
	machine *matchbox.Machine // nil: not linked
	by      LinkedBy
}

// key is the key of the client's update record: the MAC of a linked
// machine, so that its update history survives a reinstall (which makes a
// new machine id), else "id:" and the machine id.
func (l link) key(c Client) string {
	if l.machine != nil {
		return l.machine.MAC
	}
	return unlinkedKey(c.MachineID)
}

func unlinkedKey(machineID string) string { return "id:" + machineID }

// labelHeld reports whether the machine's labels hold it out of rollouts.
func (l link) labelHeld() bool {
	if l.machine == nil {
		return false
	}
	v, ok := l.machine.Labels[HoldLabel]
	return ok && v != "false"
}

// link finds the inventory machine a client is: the machine whose MAC is
// the alias, else the machine leased the address the client asks from.
func (s *Service) link(ctx context.Context, c Client) (link, error) {
	if s.inventory == nil {
		return link{}, nil
	}
	if c.Alias != "" {
		if mac, err := matchbox.NormalizeMAC(strings.TrimSpace(c.Alias)); err == nil && len(mac) == len("00:00:00:00:00:00") {
			m, err := s.inventory.GetMachine(ctx, mac)
			switch {
			case err == nil:
				return link{machine: m, by: LinkedByAlias}, nil
			case !errors.Is(err, matchbox.ErrNotFound):
				return link{}, err
			}
		}
	}
	if !c.Addr.IsValid() {
		return link{}, nil
	}
	l, err := s.inventory.Lease(ctx, c.Addr.Unmap())
	switch {
	case errors.Is(err, matchbox.ErrNotFound):
		return link{}, nil
	case err != nil:
		return link{}, err
	case l.State != matchbox.LeaseBound || !l.Active(s.now()) || l.MAC == "":
		return link{}, nil
	}
	m, err := s.inventory.GetMachine(ctx, l.MAC)
	switch {
	case errors.Is(err, matchbox.ErrNotFound):
		return link{}, nil
	case err != nil:
		return link{}, err
	}
	return link{machine: m, by: LinkedByLease}, nil
}

// groupFor picks a client's update group from groups (sorted by name): a
// group matching one of the machine's labels, else one matching its
// matchbox group, else the group named by its track; among groups of the
// same kind, the first by name.
func groupFor(groups []Group, l link, track string) (Group, bool) {
	best, bestRank := -1, 0
	for i := range groups {
		g := &groups[i]
		rank := 0
		switch g.Match.Kind {
		case MatchLabel:
			if l.machine != nil {
				if v, ok := l.machine.Labels[g.Match.Key]; ok && v == g.Match.Value {
					rank = 3
				}
			}
		case MatchGroup:
			if l.machine != nil && l.machine.Group == g.Match.Value {
				rank = 2
			}
		case MatchTrack:
			if g.Name == track {
				rank = 1
			}
		}
		if rank > bestRank {
			best, bestRank = i, rank
		}
	}
	if best < 0 {
		return Group{}, false
	}
	return groups[best], true
}

// event is a step of a linked machine's update, for its timeline.
// (Event.Group is the matchbox group a boot step served: the update group
// is named in the detail.)
func (l link) event(kind matchbox.EventKind, c Client, at time.Time, detail string) (matchbox.Event, bool) {
	if l.machine == nil {
		return matchbox.Event{}, false
	}
	e := matchbox.Event{Time: at, MAC: l.machine.MAC, Kind: kind, Detail: detail, Claimed: l.by == LinkedByAlias}
	if c.Addr.IsValid() {
		e.IP = c.Addr.Unmap().String()
	}
	return e, true
}
