package http

import (
	"fmt"
	nethttp "net/http"
	"net/netip"

	"matchbox.dev/matchbox"
)

// LeaseHolder tells whether an address holds a current DHCP lease of a
// MAC: matchbox's own DHCP server in full mode.
type LeaseHolder interface {
	HoldsLease(mac string, ip netip.Addr) bool
}

// MaxReportBody bounds the body of an installer's report (the end of its
// log); a longer one is refused unread.
const MaxReportBody = 64 << 10

// bindsConfig lists the endpoints whose answers are a machine's own
// configuration: under lease binding only the holder of the machine's
// lease gets them.
var bindsConfig = map[string]bool{"ignition": true, "cloud": true, "generic": true, "metadata": true}

// confirm sets q.confirmed when lease binding is on and the request comes
// from the address holding the lease of the MAC it names.
func (s *Server) confirm(r *nethttp.Request, q *query) {
	if s.cfg.Leases == nil {
		return
	}
	mac := q.labels["mac"]
	q.confirmed = mac != "" && s.cfg.Leases.HoldsLease(mac, remoteIP(r))
}

// refuseUnbound is the error for a request lease binding refuses.
func (s *Server) refuseUnbound(r *nethttp.Request, q *query, what string) error {
	mac := q.labels["mac"]
	if mac == "" {
		return fmt.Errorf("%w: config binding: %s is served only to the holder of the machine's DHCP lease, and the request names no MAC (add mac=${mac:hexhyp})", matchbox.ErrForbidden, what)
	}
	return fmt.Errorf("%w: config binding: %s of %s is served only to the address holding its DHCP lease, not to %s", matchbox.ErrForbidden, what, mac, remoteIP(r))
}
