package matchbox

import (
	"context"
	"net/netip"
	"time"
)

// LeaseState is where an address lease stands.
type LeaseState string

// Lease states. Offered leases live only in memory; bound and declined
// ones are persisted.
const (
	LeaseOffered  LeaseState = "offered"
	LeaseBound    LeaseState = "bound"
	LeaseDeclined LeaseState = "declined"
)

// Lease is an IPv4 address given (or offered, or declined) to a client by
// matchbox's DHCP server in full mode.
type Lease struct {
	IP netip.Addr `json:"ip"`
	// MAC is the client's hardware address (lowercase, colon-separated).
	MAC string `json:"mac,omitempty"`
	// ClientID is DHCP option 61 (hex), when the client sent one.
	ClientID string     `json:"client_id,omitempty"`
	Hostname string     `json:"hostname,omitempty"`
	State    LeaseState `json:"state"`
	// Subnet is the subnet (CIDR) the address belongs to.
	Subnet  string    `json:"subnet"`
	Expires time.Time `json:"expires"`
	Updated time.Time `json:"updated"`
	// Relay is the relay agent address (giaddr) the request came through.
	Relay string `json:"relay,omitempty"`
	// CircuitID and RemoteID are the relay agent's option 82 sub-options
	// 1 and 2 (hex), recorded as the relay sent them.
	CircuitID string `json:"circuit_id,omitempty"`
	RemoteID  string `json:"remote_id,omitempty"`
}

// Active reports whether the lease holds its address at t.
func (l *Lease) Active(t time.Time) bool { return t.Before(l.Expires) }

// LeaseStore persists leases. PutLeases returns only once the leases are
// durably committed: a DHCP ACK is sent after it.
type LeaseStore interface {
	Leases(ctx context.Context) ([]Lease, error)
	// Lease returns the lease of one address, or ErrNotFound.
	Lease(ctx context.Context, ip netip.Addr) (Lease, error)
	PutLeases(ctx context.Context, leases ...Lease) error
	DeleteLeases(ctx context.Context, ips ...netip.Addr) error
}
