package dhcp

import (
	"net/netip"
)

// HoldsLease reports whether ip holds a current bound lease of mac
// (lowercase colon form): what lease binding asks of every request for a
// machine's config. Cheap: answered from the index BoundAddr reads, which
// does not wait on DHCP's lock, reads no store and allocates nothing.
func (s *Server) HoldsLease(mac string, ip netip.Addr) bool {
	hw, ok := parseMAC(mac)
	return ok && s.leases.macs.holds(hw, ip.Unmap(), s.leases.now())
}
