package dhcp

import (
	"net/netip"

	"matchbox.dev/matchbox"
)

// HoldsLease reports whether ip holds a current bound lease of mac
// (lowercase colon form): what lease binding asks of every request for a
// machine's config. Cheap: one map lookup under the table's lock.
func (s *Server) HoldsLease(mac string, ip netip.Addr) bool {
	if s.leases == nil {
		return false
	}
	return s.leases.holds(mac, ip.Unmap())
}

func (t *leaseTable) holds(mac string, ip netip.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.poolContaining(ip)
	if p == nil {
		return false
	}
	l := p.byIP[ip]
	return l != nil && l.State == matchbox.LeaseBound && l.MAC == mac && l.Active(t.now())
}
