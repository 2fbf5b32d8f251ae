package dhcp

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"matchbox.dev/matchbox"
)

// A PXE client retransmits its DISCOVER until it has what it needs, and a
// rack booting at once sends thousands. In proxy mode and on port 4011 the
// answer depends only on the request (and the configuration), so it is
// kept for a few seconds: a repeat of a request, which differs only in its
// transaction id and seconds field, is answered from the kept bytes without
// parsing the request or building the reply again. Kept answers are
// dropped when the configuration changes (ForgetAnswers) and after
// answerTTL.

// answerTTL bounds how long an answer is reused.
const answerTTL = 5 * time.Second

// maxAnswers bounds the number of kept answers.
const maxAnswers = 1 << 16

// keptAnswer is one kept reply and what answering it records.
type keptAnswer struct {
	// What identifies the request: the listener, where it came from and
	// the request bytes with transaction id and seconds zeroed.
	iface     string
	serverIP  netip.Addr
	binl      bool
	peer      netip.AddrPort
	request   []byte
	at        time.Time
	reply     []byte // transaction id zeroed
	dst       *net.UDPAddr
	mode      string
	reqType   string
	repKind   string
	event     matchbox.Event
	packetMAC string
}

type answerCache struct {
	seed maphash.Seed
	mu   sync.Mutex
	m    map[uint64]*keptAnswer
	hits atomic.Uint64 // requests answered from kept answers
	// dropped counts kept answers dropped because the table was full.
	dropped atomic.Uint64
}

func newAnswerCache() *answerCache {
	return &answerCache{seed: maphash.MakeSeed(), m: make(map[uint64]*keptAnswer)}
}

// cacheable reports whether answers on l may be kept.
func cacheable(l Listener) bool { return l.BINL || l.Mode == ModeProxy }

// normalized copies raw with the transaction id (bytes 4–7) and seconds
// (bytes 8–9) zeroed.
func normalized(raw []byte) []byte {
	n := bytes.Clone(raw)
	if len(n) >= 10 {
		clear(n[4:10])
	}
	return n
}

func (c *answerCache) key(l Listener, peer netip.AddrPort, raw []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(c.seed)
	h.WriteString(l.Interface)
	ip := l.ServerIP.As16()
	h.Write(ip[:])
	if l.BINL {
		h.WriteByte(1)
	}
	pa := peer.Addr().As16()
	h.Write(pa[:])
	var port [2]byte
	binary.BigEndian.PutUint16(port[:], peer.Port())
	h.Write(port[:])
	if len(raw) >= 10 {
		var zero [6]byte
		h.Write(raw[:4])
		h.Write(zero[:])
		h.Write(raw[10:])
	} else {
		h.Write(raw)
	}
	return h.Sum64()
}

// lookup returns a kept answer to raw, or nil.
func (c *answerCache) lookup(l Listener, peer netip.AddrPort, raw []byte, now time.Time) *keptAnswer {
	k := c.key(l, peer, raw)
	c.mu.Lock()
	a := c.m[k]
	c.mu.Unlock()
	if a == nil || now.Sub(a.at) > answerTTL || now.Before(a.at) || a.iface != l.Interface || a.serverIP != l.ServerIP ||
		a.binl != l.BINL || a.peer != peer || len(a.request) != len(raw) || len(raw) < 10 ||
		!bytes.Equal(a.request[:4], raw[:4]) || !bytes.Equal(a.request[10:], raw[10:]) {
		return nil
	}
	return a
}

// keep stores an answer.
func (c *answerCache) keep(l Listener, peer netip.AddrPort, raw []byte, a *keptAnswer) {
	a.iface, a.serverIP, a.binl, a.peer, a.request, a.at = l.Interface, l.ServerIP, l.BINL, peer, normalized(raw), time.Now()
	a.reply = bytes.Clone(a.reply)
	if len(a.reply) >= 8 {
		clear(a.reply[4:8])
	}
	k := c.key(l, peer, raw)
	c.mu.Lock()
	if len(c.m) >= maxAnswers {
		c.dropped.Add(uint64(len(c.m)))
		clear(c.m)
	}
	c.m[k] = a
	c.mu.Unlock()
}

// forget drops every kept answer.
func (c *answerCache) forget() {
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}

// replyBufs are the buffers repeats are answered from (the kernel has
// copied a datagram when WriteTo returns).
var replyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1500); return &b }}

// peerKey is the address a request came from, for keys.
func peerKey(peer net.Addr) netip.AddrPort {
	if u, ok := peer.(*net.UDPAddr); ok {
		return u.AddrPort()
	}
	return netip.AddrPort{}
}

// ForgetAnswers drops the answers kept for repeated requests; call it when
// the configuration that decides answers changes.
func (s *Server) ForgetAnswers() { s.answers.forget() }

// answerKept answers raw from a kept answer, if there is one.
func (s *Server) answerKept(l Listener, raw []byte, peer net.Addr) bool {
	if !cacheable(l) || len(raw) < 10 {
		return false
	}
	a := s.answers.lookup(l, peerKey(peer), raw, time.Now())
	if a == nil {
		return false
	}
	s.answers.hits.Add(1)
	s.count(s.packets, "req", a.mode, a.reqType)
	bp := replyBufs.Get().(*[]byte)
	reply := append((*bp)[:0], a.reply...)
	binary.BigEndian.PutUint32(reply[4:8], binary.BigEndian.Uint32(raw[4:8]))
	_, err := l.Conn.WriteTo(reply, a.dst)
	*bp = reply
	replyBufs.Put(bp)
	if err != nil {
		s.drop("send-failed")
		s.replyNotSent(l, a.packetMAC, err)
		return true
	}
	s.count(s.replies, "rep", a.mode, a.repKind)
	if a.event.Kind != "" {
		s.rec.Record(a.event)
	}
	return true
}
