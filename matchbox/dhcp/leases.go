package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"matchbox.dev/matchbox"
)

// errNoAddress means a pool has no free address left.
var errNoAddress = errors.New("no free address in the range")

// errNotYours means the requested address is held by another client or is
// outside the client's subnet: the answer is a NAK.
var errNotYours = errors.New("address not available to this client")

type pool struct {
	subnet   Subnet
	byIP     map[netip.Addr]*lease
	byClient map[string]*lease
	cursor   netip.Addr
}

// lease is the in-memory lease with the client key it belongs to.
type lease struct {
	matchbox.Lease
	key string
}

// leaseTable hands out addresses. Its mutex makes every decision about an
// address atomic, so an address is never given to two clients; bound
// leases are committed to the store before the caller sends its ACK.
type leaseTable struct {
	mu          sync.Mutex
	pools       []*pool
	store       matchbox.LeaseStore
	now         func() time.Time
	offerHold   time.Duration
	declineHold time.Duration
}

func newLeaseTable(subnets []Subnet, store matchbox.LeaseStore) *leaseTable {
	t := &leaseTable{store: store, now: time.Now, offerHold: 60 * time.Second, declineHold: 10 * time.Minute}
	for _, s := range subnets {
		t.pools = append(t.pools, &pool{subnet: s, byIP: make(map[netip.Addr]*lease), byClient: make(map[string]*lease), cursor: s.Start})
	}
	return t
}

// clientKey identifies a client: its client identifier (option 61) when
// sent, else its hardware address.
func clientKey(clientID, mac string) string {
	if clientID != "" {
		return "id:" + clientID
	}
	return "mac:" + mac
}

// load restores persisted leases into their pools.
func (t *leaseTable) load(ctx context.Context) (int, error) {
	if t.store == nil {
		return 0, nil
	}
	all, err := t.store.Leases(ctx)
	if err != nil {
		return 0, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, l := range all {
		p := t.poolContaining(l.IP)
		if p == nil {
			continue
		}
		ls := &lease{Lease: l, key: clientKey(l.ClientID, l.MAC)}
		p.byIP[l.IP] = ls
		if l.State == matchbox.LeaseBound {
			p.byClient[ls.key] = ls
		}
		n++
	}
	return n, nil
}

func (t *leaseTable) poolContaining(ip netip.Addr) *pool {
	for _, p := range t.pools {
		if p.subnet.Prefix.Contains(ip) {
			return p
		}
	}
	return nil
}

func inRange(s Subnet, ip netip.Addr) bool {
	return !ip.Less(s.Start) && !s.End.Less(ip)
}

// free reports whether ip can be given to client key at now.
func (p *pool) free(ip netip.Addr, key string, now time.Time) bool {
	l, ok := p.byIP[ip]
	if !ok {
		return true
	}
	if l.State == matchbox.LeaseDeclined {
		return !l.Active(now)
	}
	return l.key == key || !l.Active(now)
}

// request describes the client asking.
type request struct {
	key, mac, clientID, hostname string
	relay, circuitID, remoteID   string
	requested                    netip.Addr
	reserved                     netip.Addr
}

// offer picks an address for a DISCOVER: the client's reservation, its
// current or previous address, the address it asks for, or the next free
// one. The offer is held in memory (not persisted) for offerHold.
func (t *leaseTable) offer(p *pool, r request) (netip.Addr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	pick := netip.Addr{}
	switch {
	case r.reserved.IsValid() && p.subnet.Prefix.Contains(r.reserved) && p.free(r.reserved, r.key, now):
		pick = r.reserved
	case p.byClient[r.key] != nil && p.free(p.byClient[r.key].IP, r.key, now) && inRange(p.subnet, p.byClient[r.key].IP):
		pick = p.byClient[r.key].IP
	case r.requested.IsValid() && inRange(p.subnet, r.requested) && p.free(r.requested, r.key, now):
		pick = r.requested
	default:
		ip, ok := p.nextFree(r.key, now)
		if !ok {
			return netip.Addr{}, errNoAddress
		}
		pick = ip
	}
	l := p.byIP[pick]
	if l == nil || l.key != r.key || !l.Active(now) || l.State != matchbox.LeaseBound {
		l = &lease{key: r.key, Lease: matchbox.Lease{IP: pick, State: matchbox.LeaseOffered, Expires: now.Add(t.offerHold)}}
	}
	l.MAC, l.ClientID, l.Hostname, l.Subnet, l.Updated = r.mac, r.clientID, r.hostname, p.subnet.Prefix.String(), now
	p.setLease(l)
	return pick, nil
}

func (p *pool) setLease(l *lease) {
	if old := p.byClient[l.key]; old != nil && old.IP != l.IP {
		if cur := p.byIP[old.IP]; cur == old {
			delete(p.byIP, old.IP)
		}
	}
	if prev := p.byIP[l.IP]; prev != nil && prev.key != l.key {
		if p.byClient[prev.key] == prev {
			delete(p.byClient, prev.key)
		}
	}
	p.byIP[l.IP] = l
	p.byClient[l.key] = l
}

// nextFree scans the range from the cursor for a free address.
func (p *pool) nextFree(key string, now time.Time) (netip.Addr, bool) {
	ip := p.cursor
	if !inRange(p.subnet, ip) {
		ip = p.subnet.Start
	}
	size := rangeSize(p.subnet)
	for range size {
		if p.free(ip, key, now) && !isNetworkOrBroadcast(p.subnet.Prefix, ip) {
			p.cursor = next(p.subnet, ip)
			return ip, true
		}
		ip = next(p.subnet, ip)
	}
	return netip.Addr{}, false
}

func next(s Subnet, ip netip.Addr) netip.Addr {
	n := ip.Next()
	if !n.IsValid() || !inRange(s, n) {
		return s.Start
	}
	return n
}

func rangeSize(s Subnet) int {
	a, b := s.Start.As4(), s.End.As4()
	av := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	bv := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	return int(bv-av) + 1
}

func isNetworkOrBroadcast(p netip.Prefix, ip netip.Addr) bool {
	if p.Bits() >= 31 {
		return false
	}
	if ip == p.Masked().Addr() {
		return true
	}
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	return ip == netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// bind commits ip to the client for the pool's lease time and returns the
// lease once it is durably stored. errNotYours means NAK.
func (t *leaseTable) bind(ctx context.Context, p *pool, r request, ip netip.Addr, leaseTime time.Duration) (matchbox.Lease, error) {
	t.mu.Lock()
	now := t.now()
	if !p.subnet.Prefix.Contains(ip) {
		t.mu.Unlock()
		return matchbox.Lease{}, fmt.Errorf("%w: %v is not in %v", errNotYours, ip, p.subnet.Prefix)
	}
	l := p.byIP[ip]
	mine := l != nil && l.key == r.key && l.State != matchbox.LeaseDeclined
	if !mine {
		// An address the client was never offered (INIT-REBOOT after our
		// restart lost nothing, or a client moving in): give it when it is
		// free and in the range, or reserved for this client.
		if !p.free(ip, r.key, now) || !(inRange(p.subnet, ip) || ip == r.reserved) {
			t.mu.Unlock()
			return matchbox.Lease{}, fmt.Errorf("%w: %v", errNotYours, ip)
		}
	}
	nl := &lease{key: r.key, Lease: matchbox.Lease{
		IP: ip, MAC: r.mac, ClientID: r.clientID, Hostname: r.hostname, State: matchbox.LeaseBound,
		Subnet: p.subnet.Prefix.String(), Expires: now.Add(leaseTime), Updated: now,
		Relay: r.relay, CircuitID: r.circuitID, RemoteID: r.remoteID,
	}}
	prev := p.byIP[ip]
	prevClient := p.byClient[r.key]
	p.setLease(nl)
	t.mu.Unlock()

	if t.store != nil {
		if err := t.store.PutLeases(ctx, nl.Lease); err != nil {
			// Not committed: undo, so the address is not promised.
			t.mu.Lock()
			if p.byIP[ip] == nl {
				delete(p.byIP, ip)
				delete(p.byClient, r.key)
				if prev != nil {
					p.byIP[ip] = prev
				}
				if prevClient != nil {
					p.byClient[r.key] = prevClient
				}
			}
			t.mu.Unlock()
			return matchbox.Lease{}, fmt.Errorf("commit lease %v: %w", ip, err)
		}
	}
	return nl.Lease, nil
}

// lookup returns the client's lease holding ip, if any.
func (t *leaseTable) lookup(p *pool, key string, ip netip.Addr) (matchbox.Lease, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := p.byIP[ip]
	if l == nil || l.key != key {
		return matchbox.Lease{}, false
	}
	return l.Lease, true
}

// forgetOffer drops an unconfirmed offer (the client chose another server).
func (t *leaseTable) forgetOffer(p *pool, key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l := p.byClient[key]; l != nil && l.State == matchbox.LeaseOffered {
		delete(p.byClient, key)
		if p.byIP[l.IP] == l {
			delete(p.byIP, l.IP)
		}
	}
}

// decline quarantines ip (the client found it in use) for declineHold.
func (t *leaseTable) decline(ctx context.Context, p *pool, key string, ip netip.Addr) error {
	t.mu.Lock()
	l := p.byIP[ip]
	if l == nil || l.key != key {
		t.mu.Unlock()
		return errNotYours
	}
	now := t.now()
	dl := &lease{key: "declined", Lease: matchbox.Lease{IP: ip, MAC: l.MAC, State: matchbox.LeaseDeclined,
		Subnet: p.subnet.Prefix.String(), Expires: now.Add(t.declineHold), Updated: now}}
	delete(p.byClient, key)
	p.byIP[ip] = dl
	t.mu.Unlock()
	if t.store != nil {
		return t.store.PutLeases(ctx, dl.Lease)
	}
	return nil
}

// release frees the client's lease on ip.
func (t *leaseTable) release(ctx context.Context, p *pool, key string, ip netip.Addr) error {
	_, err := t.free(ctx, p, ip, key)
	return err
}

// forceRelease frees whatever lease holds ip (an operator's release): the
// address returns to the pool and the client must ask again.
func (t *leaseTable) forceRelease(ctx context.Context, ip netip.Addr) (matchbox.Lease, error) {
	p := t.poolContaining(ip)
	if p == nil {
		return matchbox.Lease{}, fmt.Errorf("%w: %s is in no DHCP subnet of this server", matchbox.ErrNotFound, ip)
	}
	return t.free(ctx, p, ip, "")
}

// free removes the lease on ip from memory and the store: only the
// client's own when key is set, any otherwise.
func (t *leaseTable) free(ctx context.Context, p *pool, ip netip.Addr, key string) (matchbox.Lease, error) {
	t.mu.Lock()
	l := p.byIP[ip]
	switch {
	case l == nil && key == "":
		t.mu.Unlock()
		return matchbox.Lease{}, fmt.Errorf("lease of %s: %w", ip, matchbox.ErrNotFound)
	case l == nil || key != "" && l.key != key:
		t.mu.Unlock()
		return matchbox.Lease{}, errNotYours
	}
	delete(p.byIP, ip)
	if p.byClient[l.key] == l {
		delete(p.byClient, l.key)
	}
	t.mu.Unlock()
	if t.store != nil {
		if err := t.store.DeleteLeases(ctx, ip); err != nil {
			return l.Lease, err
		}
	}
	return l.Lease, nil
}

// inUse counts active bound leases per subnet.
func (t *leaseTable) inUse() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	out := make(map[string]int, len(t.pools))
	for _, p := range t.pools {
		n := 0
		for _, l := range p.byIP {
			if l.State == matchbox.LeaseBound && l.Active(now) {
				n++
			}
		}
		out[p.subnet.Prefix.String()] = n
	}
	return out
}

// all returns a copy of every lease held in memory.
func (t *leaseTable) all() []matchbox.Lease {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []matchbox.Lease
	for _, p := range t.pools {
		for _, l := range p.byIP {
			out = append(out, l.Lease)
		}
	}
	return out
}
