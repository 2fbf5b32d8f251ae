package dhcp

import (
	"net/netip"
	"sync"
	"time"
)

// BoundAddr returns the address of mac's current bound lease, in any
// subnet, if it has one that has not expired; mac is in lowercase colon
// form (52:54:00:12:34:56). When the machine holds several (its firmware
// and its OS asked with different client identifiers), the one bound last
// is returned. It reads no store and allocates nothing: it is meant for
// every HTTP request.
func (s *Server) BoundAddr(mac string) (netip.Addr, bool) {
	hw, ok := parseMAC(mac)
	if !ok {
		return netip.Addr{}, false
	}
	return s.leases.macs.bound(hw, s.leases.now())
}

// macIndex finds the bound leases of a hardware address. It has a lock of
// its own, so that readers (HTTP requests) do not wait on DHCP's.
type macIndex struct {
	mu  sync.RWMutex
	m   map[[6]byte][]boundRef
	seq uint64
}

// boundRef is a bound lease as the index keeps it: a copy of what readers
// need, and the lease itself only to find the entry again.
type boundRef struct {
	l       *lease
	ip      netip.Addr
	expires time.Time
	// since is when the lease was bound; seq orders leases bound at the
	// same time.
	since time.Time
	seq   uint64
}

// after reports whether r was bound after o.
func (r *boundRef) after(o *boundRef) bool {
	if !r.since.Equal(o.since) {
		return r.since.After(o.since)
	}
	return r.seq > o.seq
}

func (x *macIndex) add(l *lease) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.seq++
	x.m[l.hw] = append(x.m[l.hw], boundRef{l: l, ip: l.IP, expires: l.Expires, since: l.Updated, seq: x.seq})
}

func (x *macIndex) remove(l *lease) {
	x.mu.Lock()
	defer x.mu.Unlock()
	refs := x.m[l.hw]
	for i := range refs {
		if refs[i].l == l {
			refs[i] = refs[len(refs)-1]
			refs[len(refs)-1] = boundRef{}
			refs = refs[:len(refs)-1]
			break
		}
	}
	if len(refs) == 0 {
		delete(x.m, l.hw)
	} else {
		x.m[l.hw] = refs
	}
}

// bound returns the address of hw's lease bound last among those that
// hold at now.
func (x *macIndex) bound(hw [6]byte, now time.Time) (netip.Addr, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var best *boundRef
	for i := range x.m[hw] {
		r := &x.m[hw][i]
		if now.Before(r.expires) && (best == nil || r.after(best)) {
			best = r
		}
	}
	if best == nil {
		return netip.Addr{}, false
	}
	return best.ip, true
}

// holds reports whether hw holds a lease of ip at now.
func (x *macIndex) holds(hw [6]byte, ip netip.Addr, now time.Time) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for _, r := range x.m[hw] {
		if r.ip == ip && now.Before(r.expires) {
			return true
		}
	}
	return false
}

// parseMAC parses a 6-byte hardware address in colon form without
// allocating.
func parseMAC(s string) ([6]byte, bool) {
	var hw [6]byte
	if len(s) != 17 {
		return hw, false
	}
	for i := range hw {
		if i > 0 && s[3*i-1] != ':' {
			return hw, false
		}
		hi, ok1 := unhex(s[3*i])
		lo, ok2 := unhex(s[3*i+1])
		if !ok1 || !ok2 {
			return hw, false
		}
		hw[i] = hi<<4 | lo
	}
	return hw, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
