package dhcp

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"

	"matchbox.dev/matchbox"
)

// Several servers may share one store (replicas): the leases one binds,
// declines or frees reach the others through the store's change feed, so
// that an address bound by one is not offered by another and lease
// binding holds whichever replica a machine asks.

// followLeases applies the lease changes other servers sharing the store
// make, until ctx ends or the feed closes. A change of an address is
// applied by reading its lease again; a change whose address is unknown
// (the feed dropped changes) by reading them all.
func (s *Server) followLeases(ctx context.Context, changes <-chan matchbox.Change) {
	for {
		var c matchbox.Change
		var ok bool
		select {
		case <-ctx.Done():
			return
		case c, ok = <-changes:
			if !ok {
				return
			}
		}
		if c.Local {
			// This server's own write: the table made it.
			continue
		}
		if err := s.applyLeaseChange(ctx, c.Key); err != nil && ctx.Err() == nil {
			s.limit.Log(ctx, slog.LevelWarn, "dhcp: lease written elsewhere not applied", c.Key, "ip", c.Key, "err", err)
		}
	}
}

// applyLeaseChange reads the stored lease of key (an address; "": all of
// them) into the table.
func (s *Server) applyLeaseChange(ctx context.Context, key string) error {
	if key == "" {
		all, err := s.cfg.Leases.Leases(ctx)
		if err != nil {
			return err
		}
		s.leases.resync(all, s.unknownMAC)
		return nil
	}
	ip, err := netip.ParseAddr(key)
	if err != nil {
		return err
	}
	l, err := s.cfg.Leases.Lease(ctx, ip)
	found := err == nil
	if err != nil && !errors.Is(err, matchbox.ErrNotFound) {
		return err
	}
	s.leases.follow(ip, l, found, s.unknownMAC)
	return nil
}

// unknownMAC reports whether the client with mac is unknown (see known).
func (s *Server) unknownMAC(mac string) bool {
	d := s.cfg.Booter.Decide(map[string]string{"mac": mac})
	return !s.known(mac, &d)
}

// resync brings the whole table in line with the stored leases all: each
// becomes its address's entry (see follow), and bound or declined entries
// of addresses no longer stored are dropped.
func (t *leaseTable) resync(all []matchbox.Lease, unknown func(mac string) bool) {
	stored := make(map[netip.Addr]bool, len(all))
	for _, l := range all {
		stored[l.IP] = true
		t.follow(l.IP, l, true, unknown)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.pools {
		for ip, e := range p.byIP {
			if !stored[ip] && e.State != matchbox.LeaseOffered {
				p.remove(ip)
			}
		}
	}
}
