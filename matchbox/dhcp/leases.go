package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
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

// errUnknownShare means unknown clients (neither a reservation nor a
// matching group) hold all of the pool they may: no new address for
// another one.
var errUnknownShare = errors.New("unknown clients hold their share of the pool")

// Defaults of the pool limits.
const (
	// DefaultOfferHold is how long an offer holds its address.
	DefaultOfferHold = 10 * time.Second
	// DefaultUnknownShare is the percent of a pool unknown clients may hold.
	DefaultUnknownShare = 50
)

// Bounds of the offer hold.
const (
	MinOfferHold = time.Second
	MaxOfferHold = 5 * time.Minute
)

type pool struct {
	subnet   Subnet
	byIP     map[netip.Addr]*lease
	byClient map[string]*lease
	cursor   netip.Addr

	// usable is how many addresses of the range a client may get; held
	// how many of them have an entry in byIP (in any state, expired or
	// not).
	usable, held int
	// fullUntil is, once a scan found no usable address free, when the
	// first bound or declined entry of the range expires. While every
	// usable address is held, no scan can succeed before: none is made,
	// so a flood against a full pool costs no scans of it.
	fullUntil time.Time
	// offers are the outstanding offers of addresses of the range, oldest
	// first: when no address is free, the first is reclaimed.
	offers offerQueue

	// unknownMax is how many addresses unknown clients may hold (bound or
	// declined); unknownHeld how many entries of theirs expire after
	// countedAt, so it is exact until unknownNext, when the first of them
	// expires, and counted again when it matters after that.
	unknownMax  int
	unknownHeld int
	countedAt   time.Time
	unknownNext time.Time

	// reclaimed counts offers taken back for another client.
	reclaimed uint64
	macs      *macIndex
}

// lease is the in-memory lease with the client key it belongs to.
type lease struct {
	matchbox.Lease
	key string
	// hw is the client's hardware address, when it has one of 6 bytes.
	hw    [6]byte
	hasHW bool
	// unknown marks a bound or declined address of an unknown client.
	unknown bool
	// Links in pool.offers.
	prev, next *lease
	queued     bool
}

// offerQueue is a list of offers, oldest first, linked through the leases.
type offerQueue struct {
	head, tail *lease
	n          int
}

func (q *offerQueue) push(l *lease) {
	l.prev, l.next, l.queued = q.tail, nil, true
	if q.tail != nil {
		q.tail.next = l
	} else {
		q.head = l
	}
	q.tail = l
	q.n++
}

func (q *offerQueue) remove(l *lease) {
	if !l.queued {
		return
	}
	if l.prev != nil {
		l.prev.next = l.next
	} else {
		q.head = l.next
	}
	if l.next != nil {
		l.next.prev = l.prev
	} else {
		q.tail = l.prev
	}
	l.prev, l.next, l.queued = nil, nil, false
	q.n--
}

// leaseTable hands out addresses. Its mutex makes every decision about an
// address atomic, so an address is never given to two clients; bound
// leases are committed to the store before the caller sends its ACK.
//
// Offers are tentative: an offered address that was never requested is
// reclaimed for another client when the pool has no free address (the
// oldest offer first), and a REQUEST takes an address from another
// client's offer. Bound leases, and declined addresses before their
// quarantine ends, are never reclaimed. In-memory state is bounded by the
// pools' sizes, however many clients ask: an address has one entry, and a
// client only the entries of its addresses.
type leaseTable struct {
	mu          sync.Mutex
	pools       []*pool
	store       matchbox.LeaseStore
	now         func() time.Time
	offerHold   time.Duration
	declineHold time.Duration
	macs        macIndex
}

// newLeaseTable makes the pools; unknownShare is the percent of each pool
// unknown clients may hold (100: no limit).
func newLeaseTable(subnets []Subnet, store matchbox.LeaseStore, offerHold time.Duration, unknownShare int) *leaseTable {
	t := &leaseTable{store: store, now: time.Now, offerHold: offerHold, declineHold: 10 * time.Minute,
		macs: macIndex{m: make(map[[6]byte][]boundRef)}}
	for _, s := range subnets {
		p := &pool{subnet: s, byIP: make(map[netip.Addr]*lease), byClient: make(map[string]*lease), cursor: s.Start, macs: &t.macs}
		p.usable = rangeSize(s)
		for _, a := range []netip.Addr{s.Prefix.Masked().Addr(), broadcast(s.Prefix)} {
			if inRange(s, a) && isNetworkOrBroadcast(s.Prefix, a) {
				p.usable--
			}
		}
		p.unknownMax = p.usable * unknownShare / 100
		t.pools = append(t.pools, p)
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

// load restores persisted leases into their pools; unknown says which
// clients (by MAC) are unknown, for the share they may hold.
func (t *leaseTable) load(ctx context.Context, unknown func(mac string) bool) (int, error) {
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
		if p := t.poolContaining(l.IP); p != nil {
			p.putStored(l, unknown)
			n++
		}
	}
	return n, nil
}

// putStored makes a stored lease (bound or declined) the entry of its
// address.
func (p *pool) putStored(l matchbox.Lease, unknown func(mac string) bool) {
	ls := &lease{Lease: l, key: clientKey(l.ClientID, l.MAC)}
	if l.State == matchbox.LeaseDeclined {
		ls.key = declinedKey
	}
	if hw, err := net.ParseMAC(l.MAC); err == nil && len(hw) == 6 {
		ls.hw, ls.hasHW = [6]byte(hw), true
	}
	ls.unknown = l.MAC != "" && unknown(l.MAC)
	p.put(ls)
	if l.State == matchbox.LeaseBound {
		p.byClient[ls.key] = ls
	}
}

// follow brings the entry of ip in line with the store, after a write to
// it (another server sharing the store bound, declined or freed it): the
// stored lease (found) becomes the entry, in place of whatever the table
// held, an offer of its own included, since the address is taken; when
// none is stored, a bound or declined entry is dropped (an offer is not
// stored: it stays). An entry that already is the stored lease (this
// table's own write) is left as it is.
func (t *leaseTable) follow(ip netip.Addr, l matchbox.Lease, found bool, unknown func(mac string) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.poolContaining(ip)
	if p == nil {
		return
	}
	e := p.byIP[ip]
	switch {
	case !found:
		if e != nil && e.State != matchbox.LeaseOffered {
			p.remove(ip)
		}
	case e != nil && sameLease(e.Lease, l):
	default:
		p.putStored(l, unknown)
	}
}

// sameLease reports whether a and b are one lease: one client holding one
// address in one state until one time, written at one time (times compare
// as instants: a stored one has lost its monotonic reading).
func sameLease(a, b matchbox.Lease) bool {
	return a.IP == b.IP && a.MAC == b.MAC && a.ClientID == b.ClientID && a.State == b.State &&
		a.Expires.Equal(b.Expires) && a.Updated.Equal(b.Updated)
}

// declinedKey is the client key of declined addresses: nobody's.
const declinedKey = "declined"

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

// usableAddr reports whether ip is an address of the range a client may get.
func (p *pool) usableAddr(ip netip.Addr) bool {
	return inRange(p.subnet, ip) && !isNetworkOrBroadcast(p.subnet.Prefix, ip)
}

// put makes l the entry of its address, in place of the one before.
func (p *pool) put(l *lease) {
	if prev := p.byIP[l.IP]; prev != nil {
		p.unlink(prev)
		if p.byClient[prev.key] == prev {
			delete(p.byClient, prev.key)
		}
	} else if p.usableAddr(l.IP) {
		p.held++
	}
	p.byIP[l.IP] = l
	p.link(l)
}

// remove drops the entry of ip.
func (p *pool) remove(ip netip.Addr) {
	l := p.byIP[ip]
	if l == nil {
		return
	}
	p.unlink(l)
	delete(p.byIP, ip)
	if p.byClient[l.key] == l {
		delete(p.byClient, l.key)
	}
	if p.usableAddr(ip) {
		p.held--
	}
}

// link accounts for l, just made an entry.
func (p *pool) link(l *lease) {
	switch l.State {
	case matchbox.LeaseOffered:
		if p.usableAddr(l.IP) {
			p.offers.push(l)
		}
		return
	case matchbox.LeaseBound:
		if l.hasHW {
			p.macs.add(l)
		}
	}
	if !p.fullUntil.IsZero() && l.Expires.Before(p.fullUntil) && p.usableAddr(l.IP) {
		p.fullUntil = l.Expires
	}
	if l.unknown && l.Expires.After(p.countedAt) {
		p.unknownHeld++
		if p.unknownNext.IsZero() || l.Expires.Before(p.unknownNext) {
			p.unknownNext = l.Expires
		}
	}
}

// unlink undoes link for l, no longer an entry.
func (p *pool) unlink(l *lease) {
	switch l.State {
	case matchbox.LeaseOffered:
		p.offers.remove(l)
		return
	case matchbox.LeaseBound:
		if l.hasHW {
			p.macs.remove(l)
		}
	}
	if l.unknown && l.Expires.After(p.countedAt) {
		p.unknownHeld--
	}
}

// unknownFull reports whether unknown clients hold all the addresses they
// may at now.
func (p *pool) unknownFull(now time.Time) bool {
	if p.unknownMax >= p.usable {
		return false
	}
	if p.unknownHeld >= p.unknownMax && !p.unknownNext.IsZero() && !now.Before(p.unknownNext) {
		// Some have expired since the count: count again.
		p.unknownHeld, p.countedAt, p.unknownNext = 0, now, time.Time{}
		for _, l := range p.byIP {
			if l.unknown && l.State != matchbox.LeaseOffered && l.Expires.After(now) {
				p.unknownHeld++
				if p.unknownNext.IsZero() || l.Expires.Before(p.unknownNext) {
					p.unknownNext = l.Expires
				}
			}
		}
	}
	return p.unknownHeld >= p.unknownMax
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
	hw                           [6]byte
	relay, circuitID, remoteID   string
	requested                    netip.Addr
	reserved                     netip.Addr
	// unknown: neither a reservation nor a matching group.
	unknown bool
}

func (r *request) lease(ip netip.Addr, state matchbox.LeaseState, subnet string, expires, now time.Time) *lease {
	return &lease{key: r.key, hw: r.hw, hasHW: true, Lease: matchbox.Lease{
		IP: ip, MAC: r.mac, ClientID: r.clientID, Hostname: r.hostname, State: state,
		Subnet: subnet, Expires: expires, Updated: now}}
}

// ownBound returns the client's bound lease in p that holds at now.
func (p *pool) ownBound(key string, now time.Time) *lease {
	if l := p.byClient[key]; l != nil && l.State == matchbox.LeaseBound && l.Active(now) && p.byIP[l.IP] == l {
		return l
	}
	return nil
}

// offer picks an address for a DISCOVER: the client's reservation, its
// current or previous address, the address it asks for, the next free
// one, or the oldest offer to another client. The offer is held in memory
// (not persisted) for offerHold. reclaimed reports an offer taken back.
func (t *leaseTable) offer(p *pool, r request) (ip netip.Addr, reclaimed bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	own := p.ownBound(r.key, now)
	if r.unknown && own == nil && p.unknownFull(now) {
		return netip.Addr{}, false, errUnknownShare
	}
	pick := netip.Addr{}
	switch prev := p.byClient[r.key]; {
	case r.reserved.IsValid() && p.subnet.Prefix.Contains(r.reserved) && p.free(r.reserved, r.key, now):
		pick = r.reserved
	case prev != nil && p.free(prev.IP, r.key, now) && inRange(p.subnet, prev.IP):
		pick = prev.IP
	case r.requested.IsValid() && inRange(p.subnet, r.requested) && p.free(r.requested, r.key, now):
		pick = r.requested
	default:
		var ok bool
		if pick, ok = p.nextFree(r.key, now); !ok {
			if pick, reclaimed, ok = p.reclaim(r.key, now); !ok {
				return netip.Addr{}, false, errNoAddress
			}
			if reclaimed {
				p.reclaimed++
			}
		}
	}
	var l *lease
	if cur := p.byIP[pick]; cur != nil && cur == own {
		// The client's bound lease, offered again: it stays bound.
		l = &lease{key: r.key, hw: r.hw, hasHW: true, unknown: own.unknown, Lease: own.Lease}
		l.MAC, l.ClientID, l.Hostname, l.Updated = r.mac, r.clientID, r.hostname, now
	} else {
		l = r.lease(pick, matchbox.LeaseOffered, p.subnet.Prefix.String(), now.Add(t.offerHold), now)
	}
	p.setLease(l)
	return pick, reclaimed, nil
}

// setLease makes l the client's lease and the entry of its address; the
// client's entry on another address goes.
func (p *pool) setLease(l *lease) {
	if old := p.byClient[l.key]; old != nil && old.IP != l.IP && p.byIP[old.IP] == old {
		p.remove(old.IP)
	}
	p.put(l)
	p.byClient[l.key] = l
}

// nextFree scans the range from the cursor for a free address.
func (p *pool) nextFree(key string, now time.Time) (netip.Addr, bool) {
	if p.held >= p.usable && now.Before(p.fullUntil) {
		return netip.Addr{}, false
	}
	ip := p.cursor
	if !inRange(p.subnet, ip) {
		ip = p.subnet.Start
	}
	var first time.Time
	for range rangeSize(p.subnet) {
		if !isNetworkOrBroadcast(p.subnet.Prefix, ip) {
			if p.free(ip, key, now) {
				p.cursor = next(p.subnet, ip)
				return ip, true
			}
			if l := p.byIP[ip]; l.State != matchbox.LeaseOffered && (first.IsZero() || l.Expires.Before(first)) {
				first = l.Expires
			}
		}
		ip = next(p.subnet, ip)
	}
	if p.held >= p.usable {
		p.fullUntil = first
		if first.IsZero() {
			// Only offers: they are reclaimed or expire in turn.
			p.fullUntil = now.Add(MaxOfferHold)
		}
	}
	return netip.Addr{}, false
}

// reclaim returns the address of the oldest offer to another client than
// key, if any, and whether that offer still held at now (else it had
// expired, and the address was free).
func (p *pool) reclaim(key string, now time.Time) (ip netip.Addr, held, ok bool) {
	for l := p.offers.head; l != nil; l = l.next {
		if l.key != key {
			return l.IP, l.Active(now), true
		}
	}
	return netip.Addr{}, false, false
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

// broadcast is the broadcast address of p.
func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func isNetworkOrBroadcast(p netip.Prefix, ip netip.Addr) bool {
	if p.Bits() >= 31 {
		return false
	}
	return ip == p.Masked().Addr() || ip == broadcast(p)
}

// bind commits ip to the client for the pool's lease time and returns the
// lease once it is durably stored. errNotYours means NAK; errUnknownShare
// that the client is unknown and unknown clients hold their share.
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
		// restart lost nothing, or a client moving in), or one offered
		// to another client (offers are tentative, a REQUEST is not):
		// give it when it is free or only offered, and in the range or
		// reserved for this client.
		taken := !p.free(ip, r.key, now) && l.State != matchbox.LeaseOffered
		if taken || !(inRange(p.subnet, ip) || ip == r.reserved) {
			t.mu.Unlock()
			return matchbox.Lease{}, fmt.Errorf("%w: %v", errNotYours, ip)
		}
	}
	renewing := mine && l.State == matchbox.LeaseBound && l.Active(now)
	if r.unknown && !renewing && p.unknownFull(now) {
		t.mu.Unlock()
		return matchbox.Lease{}, errUnknownShare
	}
	nl := r.lease(ip, matchbox.LeaseBound, p.subnet.Prefix.String(), now.Add(leaseTime), now)
	nl.Relay, nl.CircuitID, nl.RemoteID, nl.unknown = r.relay, r.circuitID, r.remoteID, r.unknown
	prev := p.byIP[ip]
	prevClient := p.byClient[r.key]
	p.setLease(nl)
	t.mu.Unlock()

	if t.store != nil {
		if err := t.store.PutLeases(ctx, nl.Lease); err != nil {
			// Not committed: undo, so the address is not promised.
			t.mu.Lock()
			if p.byIP[ip] == nl {
				p.remove(ip)
				if prev != nil {
					p.put(prev)
					if p.byClient[prev.key] == nil {
						p.byClient[prev.key] = prev
					}
				}
				if prevClient != nil && prevClient != prev && p.byIP[prevClient.IP] == nil {
					p.put(prevClient)
					p.byClient[r.key] = prevClient
				}
			}
			t.mu.Unlock()
			return matchbox.Lease{}, fmt.Errorf("commit lease %v: %w", ip, err)
		}
	}
	return nl.Lease, nil
}

// forgetOffer drops an unconfirmed offer (the client chose another server).
func (t *leaseTable) forgetOffer(p *pool, key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l := p.byClient[key]; l != nil && l.State == matchbox.LeaseOffered && p.byIP[l.IP] == l {
		p.remove(l.IP)
	}
}

// decline quarantines ip (the client found it in use after its ACK) for
// declineHold. Only the client's bound address can be declined: an
// address that was merely offered is not the client's to withdraw.
func (t *leaseTable) decline(ctx context.Context, p *pool, key string, ip netip.Addr) error {
	t.mu.Lock()
	l := p.byIP[ip]
	if l == nil || l.key != key || l.State != matchbox.LeaseBound {
		t.mu.Unlock()
		return errNotYours
	}
	now := t.now()
	dl := &lease{key: declinedKey, unknown: l.unknown, Lease: matchbox.Lease{IP: ip, MAC: l.MAC, State: matchbox.LeaseDeclined,
		Subnet: p.subnet.Prefix.String(), Expires: now.Add(t.declineHold), Updated: now}}
	p.put(dl)
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
	p.remove(ip)
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

// reclaimedBySubnet returns, per subnet, the offers reclaimed so far.
func (t *leaseTable) reclaimedBySubnet() map[string]uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]uint64, len(t.pools))
	for _, p := range t.pools {
		out[p.subnet.Prefix.String()] = p.reclaimed
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
