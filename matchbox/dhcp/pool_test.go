package dhcp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/internal/logbuf"
	"matchbox.dev/matchbox/recorder"
	"matchbox.dev/matchbox/storage"
)

// poolServer is a full-mode server answered through handle: no sockets,
// and no store unless one is given (tests under synctest have none).
type poolServer struct {
	t    testing.TB
	srv  *Server
	reg  *prometheus.Registry
	logs *logbuf.Buffer
}

func newPoolServer(t testing.TB, subnets []Subnet, booter Booter, leases matchbox.LeaseStore, tune func(*Config)) *poolServer {
	t.Helper()
	ps := &poolServer{t: t, reg: prometheus.NewRegistry(), logs: &logbuf.Buffer{}}
	cfg := Config{
		Subnets:     subnets,
		BootURL:     func(ip netip.Addr) string { return "http://" + ip.String() + "/boot.ipxe" },
		HTTPBootURL: func(ip netip.Addr, f string) string { return "http://" + ip.String() + "/boot/" + f },
		Booter:      booter,
		Leases:      leases,
		Recorder:    recorder.New(nil, nil),
		Registry:    ps.reg,
		Logger:      slog.New(slog.NewTextHandler(ps.logs, nil)),
	}
	if tune != nil {
		tune(&cfg)
	}
	srv, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ps.srv = srv
	return ps
}

// ask has the server answer m on the interface of 10.0.0.1/24 and returns
// its reply, or nil.
func (ps *poolServer) ask(m *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	ps.t.Helper()
	r, err := ps.exchange(m)
	if err != nil {
		ps.t.Fatal(err)
	}
	return r
}

// exchange is ask for any goroutine.
func (ps *poolServer) exchange(m *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	conn := &captureConn{}
	l := Listener{Conn: conn, Interface: "test", ServerIP: serverIP, Prefix: netip.MustParsePrefix("10.0.0.1/24"), Mode: ModeFull}
	ps.srv.handle(context.Background(), l, m.ToBytes(), &net.UDPAddr{IP: net.IPv4zero, Port: 68})
	switch len(conn.writes) {
	case 0:
		return nil, nil
	case 1:
		return dhcpv4.FromBytes(conn.writes[0])
	}
	return nil, fmt.Errorf("%d replies to one %s", len(conn.writes), m.MessageType())
}

func (ps *poolServer) msg(hw net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	ps.t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(hw)}, mods...)...)
	if err != nil {
		ps.t.Fatal(err)
	}
	return m
}

// offer returns the address offered to hw, or an invalid one.
func (ps *poolServer) offer(hw net.HardwareAddr, mods ...dhcpv4.Modifier) netip.Addr {
	ps.t.Helper()
	r := ps.ask(ps.msg(hw, append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover)}, mods...)...))
	if r == nil {
		return netip.Addr{}
	}
	if r.MessageType() != dhcpv4.MessageTypeOffer {
		ps.t.Fatalf("DISCOVER answered with %s", r.MessageType())
	}
	return toAddr(r.YourIPAddr)
}

// request has hw REQUEST ip (SELECTING: with our server id) and returns
// the reply's type (MessageTypeNone for none).
func (ps *poolServer) request(hw net.HardwareAddr, ip netip.Addr, mods ...dhcpv4.Modifier) dhcpv4.MessageType {
	ps.t.Helper()
	r := ps.ask(ps.msg(hw, append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP(ip.AsSlice()))),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverIP.AsSlice())))}, mods...)...))
	if r == nil {
		return dhcpv4.MessageTypeNone
	}
	if r.MessageType() == dhcpv4.MessageTypeAck && toAddr(r.YourIPAddr) != ip {
		ps.t.Fatalf("REQUEST of %v ACKed with %v", ip, r.YourIPAddr)
	}
	return r.MessageType()
}

// dora runs a DISCOVER and a REQUEST of the offer; it returns the address
// bound, or an invalid one.
func (ps *poolServer) dora(hw net.HardwareAddr, mods ...dhcpv4.Modifier) netip.Addr {
	ps.t.Helper()
	ip := ps.offer(hw, mods...)
	if !ip.IsValid() {
		return ip
	}
	if mt := ps.request(hw, ip, mods...); mt != dhcpv4.MessageTypeAck {
		return netip.Addr{}
	}
	return ip
}

func (ps *poolServer) decline(hw net.HardwareAddr, ip netip.Addr) {
	ps.t.Helper()
	if r := ps.ask(ps.msg(hw, dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP(ip.AsSlice()))),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverIP.AsSlice()))))); r != nil {
		ps.t.Fatalf("DECLINE answered: %s", r.Summary())
	}
}

func (ps *poolServer) counter(name string, labels ...string) float64 {
	ps.t.Helper()
	return gathered(ps.t, ps.reg, name, labels...)
}

// gathered is the value of the counter name with labels (name, value,
// …) in reg; 0 when there is none.
func gathered(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
				}
				if !found {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// checkPools checks the lease table's bookkeeping against its entries.
func checkPools(t testing.TB, srv *Server) {
	t.Helper()
	lt := srv.leases
	lt.mu.Lock()
	defer lt.mu.Unlock()
	bound := 0
	for _, p := range lt.pools {
		held, offers, unknown := 0, 0, 0
		for ip, l := range p.byIP {
			if l.IP != ip {
				t.Fatalf("entry of %v holds %v", ip, l.IP)
			}
			if p.usableAddr(ip) {
				held++
				if l.State == matchbox.LeaseOffered {
					offers++
					if !l.queued {
						t.Fatalf("offer of %v is not queued", ip)
					}
				}
			}
			if l.unknown && l.State != matchbox.LeaseOffered && l.Expires.After(p.countedAt) {
				unknown++
			}
			if l.State == matchbox.LeaseBound && l.hasHW {
				bound++
			}
		}
		if held != p.held || offers != p.offers.n || unknown != p.unknownHeld {
			t.Fatalf("pool %v: held %d (counted %d), offers %d (queued %d), unknown %d (counted %d)",
				p.subnet.Prefix, held, p.held, offers, p.offers.n, unknown, p.unknownHeld)
		}
		n := 0
		for l := p.offers.head; l != nil && n <= offers; l = l.next {
			if p.byIP[l.IP] != l || l.State != matchbox.LeaseOffered {
				t.Fatalf("queued offer of %v is not the entry of its address", l.IP)
			}
			if l.next != nil && l.next.Expires.Before(l.Expires) {
				t.Fatalf("offer queue out of order at %v", l.IP)
			}
			n++
		}
		if n != offers {
			t.Fatalf("pool %v: %d offers linked, %d queued", p.subnet.Prefix, n, offers)
		}
		for key, l := range p.byClient {
			if p.byIP[l.IP] != l || l.key != key {
				t.Fatalf("client %s: lease of %v is not the entry of its address", key, l.IP)
			}
		}
		if len(p.byClient) > len(p.byIP) {
			t.Fatalf("%d clients for %d entries", len(p.byClient), len(p.byIP))
		}
	}
	lt.macs.mu.RLock()
	defer lt.macs.mu.RUnlock()
	indexed := 0
	for hw, refs := range lt.macs.m {
		for _, r := range refs {
			if r.l.hw != hw || r.l.State != matchbox.LeaseBound || r.ip != r.l.IP {
				t.Fatalf("index of %x holds %+v", hw, r.l.Lease)
			}
		}
		indexed += len(refs)
	}
	if indexed != bound {
		t.Fatalf("%d bound leases, %d in the MAC index", bound, indexed)
	}
}

func pool3() []Subnet {
	return []Subnet{{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Start: netip.MustParseAddr("10.0.0.100"),
		End: netip.MustParseAddr("10.0.0.102"), LeaseTime: time.Hour}}
}

// Offers are tentative: with no address free, the oldest offer to another
// client is given to the next; the client it was offered to still gets it
// by REQUEST; a bound lease and a declined address are never reclaimed.
func TestOfferReclaim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps := newPoolServer(t, pool3(), everyone, nil, nil)
		a, b, c, d, e := mac(1), mac(2), mac(3), mac(4), mac(5)
		offA, offB, offC := ps.offer(a), ps.offer(b), ps.offer(c)
		if !offA.IsValid() || !offB.IsValid() || !offC.IsValid() {
			t.Fatalf("offers %v %v %v", offA, offB, offC)
		}
		// The pool is full of offers: d is given a's, the oldest.
		if got := ps.offer(d); got != offA {
			t.Fatalf("d offered %v, want the oldest offer's %v", got, offA)
		}
		if n := ps.counter("matchbox_dhcp_offers_reclaimed_total", "subnet", "10.0.0.0/24"); n != 1 {
			t.Errorf("offers reclaimed: %v", n)
		}
		// a's REQUEST still takes it, and d's is NAKed.
		if mt := ps.request(a, offA); mt != dhcpv4.MessageTypeAck {
			t.Fatalf("a's REQUEST of its reclaimed offer: %s", mt)
		}
		if mt := ps.request(d, offA); mt != dhcpv4.MessageTypeNak {
			t.Fatalf("d's REQUEST of an address bound to a: %s", mt)
		}
		// A client asking again gets its own offer back, never another's.
		if got := ps.offer(c); got != offC {
			t.Fatalf("c offered %v again, want its %v", got, offC)
		}
		// e is given b's offer, now the oldest; never a's bound lease.
		if got := ps.offer(e); got != offB {
			t.Fatalf("e offered %v, want %v", got, offB)
		}
		for i := range 20 {
			if got := ps.offer(mac(100 + i)); got == offA || !got.IsValid() {
				t.Fatalf("flood DISCOVER %d offered %v (a holds %v)", i, got, offA)
			}
		}
		// a declines its address: quarantined, it is not offered again
		// before the quarantine ends, however many ask.
		ps.decline(a, offA)
		for i := range 20 {
			if got := ps.offer(mac(200 + i)); got == offA || !got.IsValid() {
				t.Fatalf("DISCOVER %d after the decline offered %v", i, got)
			}
		}
		checkPools(t, ps.srv)
		time.Sleep(10*time.Minute + time.Second)
		seen := false
		for i := range 3 {
			seen = seen || ps.offer(mac(300+i)) == offA
		}
		if !seen {
			t.Errorf("%v not offered again after its quarantine", offA)
		}
		checkPools(t, ps.srv)
	})
}

// An offer holds its address for the offer hold (10 s by default), then
// the address is free without a reclaim.
func TestOfferHold(t *testing.T) {
	for _, hold := range []time.Duration{0, 3 * time.Second} {
		t.Run(fmt.Sprint(hold), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ps := newPoolServer(t, pool3(), everyone, nil, func(c *Config) { c.OfferHold = hold })
				want := hold
				if want == 0 {
					want = DefaultOfferHold
				}
				for i := range 3 {
					ps.offer(mac(i))
				}
				time.Sleep(want - time.Millisecond)
				ps.offer(mac(10))
				if n := ps.counter("matchbox_dhcp_offers_reclaimed_total", "subnet", "10.0.0.0/24"); n != 1 {
					t.Errorf("before the hold ends, offers reclaimed: %v, want 1", n)
				}
				time.Sleep(2 * time.Millisecond)
				ps.offer(mac(11))
				ps.offer(mac(12))
				if n := ps.counter("matchbox_dhcp_offers_reclaimed_total", "subnet", "10.0.0.0/24"); n != 1 {
					t.Errorf("after the hold, offers reclaimed: %v, want still 1", n)
				}
				checkPools(t, ps.srv)
			})
		})
	}
}

// A flood of DISCOVERs from random MACs holds no more state than the pool
// has addresses, writes one line per kind of trouble, and records a
// bounded number of events, counting what it drops.
func TestDiscoverFloodBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps := newPoolServer(t, pool101(), noOne{}, nil, nil)
		d := newDiscovers(t, 7)
		const flood = 20_000
		for range flood {
			pkt, _ := d.next()
			conn := &captureConn{}
			l := Listener{Conn: conn, Interface: "test", ServerIP: serverIP, Prefix: netip.MustParsePrefix("10.0.0.1/24"), Mode: ModeFull}
			ps.srv.handle(context.Background(), l, pkt, &net.UDPAddr{IP: net.IPv4zero, Port: 68})
			if len(conn.writes) != 1 {
				t.Fatalf("%d replies to a DISCOVER", len(conn.writes))
			}
		}
		checkPools(t, ps.srv)
		lt := ps.srv.leases
		if n, c := len(lt.pools[0].byIP), len(lt.pools[0].byClient); n > 101 || c > 101 {
			t.Errorf("%d entries and %d clients for a pool of 101", n, c)
		}
		if n := ps.counter("matchbox_dhcp_offers_reclaimed_total", "subnet", "10.0.0.0/24"); n != flood-101 {
			t.Errorf("offers reclaimed: %v, want %d", n, flood-101)
		}
		burst := DefaultUnknownEventRate * unknownEventBurst
		if n := ps.counter("matchbox_dhcp_events_dropped_total"); n != float64(flood-burst) {
			t.Errorf("events dropped: %v, want %d", n, flood-burst)
		}
		for _, line := range []string{"the oldest offer to another client is reclaimed", "beyond their rate are not recorded"} {
			if n := ps.logs.Count(line); n != 1 {
				t.Errorf("%d lines %q, want 1", n, line)
			}
		}
		if n := ps.logs.Count("level="); n > 3 {
			t.Errorf("%d log lines for a flood:\n%s", n, ps.logs.String())
		}
	})
}

// In proxy mode every PXE DISCOVER of a new MAC keeps an answer for its
// repeats: the table is bounded, and what it drops is counted.
func TestProxyFloodKeptAnswers(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, err := New(context.Background(), Config{
		BootURL:     func(ip netip.Addr) string { return "http://" + ip.String() + "/boot.ipxe" },
		HTTPBootURL: func(ip netip.Addr, f string) string { return "http://" + ip.String() + "/boot/" + f },
		Booter:      everyone,
		Registry:    reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := dhcpv4.New(dhcpv4.WithHwAddr(mac(1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)))
	if err != nil {
		t.Fatal(err)
	}
	pkt := m.ToBytes()
	peer := &net.UDPAddr{IP: net.IPv4zero, Port: 68}
	const flood = maxAnswers + 1000
	for i := range flood {
		copy(pkt[28:34], []byte{2, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
		if n := len(answer(srv, false, pkt, peer)); n != 1 {
			t.Fatalf("%d answers", n)
		}
	}
	srv.answers.mu.Lock()
	kept := len(srv.answers.m)
	srv.answers.mu.Unlock()
	if kept != flood-maxAnswers {
		t.Errorf("%d answers kept, want %d", kept, flood-maxAnswers)
	}
	if n := gathered(t, reg, "matchbox_dhcp_kept_answers_dropped_total"); n != maxAnswers {
		t.Errorf("kept answers dropped: %v, want %d", n, maxAnswers)
	}
}

// fleet knows the machines whose MAC starts with 52:54:00:aa by a group
// that selects each by MAC; others match no group.
var fleet = booterFunc(func(l map[string]string) (matchbox.Selection, error) {
	if strings.HasPrefix(l["mac"], "52:54:00:aa:") {
		g := &matchbox.Group{ID: "node", Profile: "live", Selector: map[string]string{"mac": l["mac"]}}
		return matchbox.Selection{Group: g, Profile: &matchbox.Profile{ID: "live"}}, nil
	}
	return matchbox.Selection{}, fmt.Errorf("no group matches: %w", matchbox.ErrNotFound)
})

func fleetMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, 0, 0xaa, byte(i >> 8), byte(i)}
}

// Full DORAs from random MACs bind at most the unknown clients' share of
// the pool (half by default); machines with a group or a reservation get
// the rest.
func TestUnknownShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reserved := netip.MustParseAddr("10.0.0.150")
		res := reservationsFunc(func(mac string) (netip.Addr, bool) {
			return reserved, mac == "52:54:00:bb:00:01"
		})
		ps := newPoolServer(t, pool101(), fleet, nil, func(c *Config) { c.Reservations = res })
		d := newDiscovers(t, 11)
		var unknown []net.HardwareAddr
		var unknownIPs []netip.Addr
		for range 80 {
			_, hw := d.next()
			if ip := ps.dora(hw); ip.IsValid() {
				unknown, unknownIPs = append(unknown, hw), append(unknownIPs, ip)
			}
		}
		if len(unknown) != 50 {
			t.Fatalf("%d of 80 unknown clients bound an address, want 50 (half of 101)", len(unknown))
		}
		if n := ps.counter("matchbox_dhcp_dropped_total", "reason", "unknown-share"); n != 30 {
			t.Errorf("dropped for the unknown share: %v, want 30", n)
		}
		if n := ps.logs.Count("hold their share of the pool"); n != 1 {
			t.Errorf("%d lines about the unknown share, want 1", n)
		}
		// A bound unknown client renews; one at the limit cannot REQUEST
		// its way in (INIT-REBOOT, no DISCOVER).
		if mt := ps.request(unknown[0], unknownIPs[0]); mt != dhcpv4.MessageTypeAck {
			t.Errorf("unknown client's renewal: %s", mt)
		}
		_, stranger := d.next()
		if mt := ps.request(stranger, netip.MustParseAddr("10.0.0.199")); mt != dhcpv4.MessageTypeNone {
			t.Errorf("unknown client's REQUEST beyond the share: %s", mt)
		}
		// A declined address still counts against the share.
		ps.decline(unknown[1], unknownIPs[1])
		if ip := ps.dora(stranger); ip.IsValid() {
			t.Errorf("after a decline, another unknown client bound %v", ip)
		}
		// The machine with a reservation gets it, the fleet the rest.
		if ip := ps.dora(net.HardwareAddr{0x52, 0x54, 0, 0xbb, 0, 1}); ip != reserved {
			t.Errorf("reserved machine got %v, want %v", ip, reserved)
		}
		got := 0
		for i := range 60 {
			if ps.dora(fleetMAC(i)).IsValid() {
				got++
			}
		}
		if got != 101-50-1 {
			t.Errorf("%d fleet machines bound an address, want the %d left", got, 101-50-1)
		}
		checkPools(t, ps.srv)
		// When their leases expire, unknown clients may bind again.
		time.Sleep(time.Hour + time.Second)
		if ip := ps.dora(stranger); !ip.IsValid() {
			t.Error("no address for an unknown client once the others' leases expired")
		}
		checkPools(t, ps.srv)
	})
}

// With -dhcp-unknown-share 100 unknown clients may take the whole pool.
func TestUnknownShareOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps := newPoolServer(t, pool101(), noOne{}, nil, func(c *Config) { c.UnknownShare = 100 })
		d := newDiscovers(t, 13)
		n := 0
		for range 110 {
			_, hw := d.next()
			if ps.dora(hw).IsValid() {
				n++
			}
		}
		if n != 101 {
			t.Errorf("%d unknown clients bound an address, want 101", n)
		}
		checkPools(t, ps.srv)
	})
}

// reservationsFunc adapts a function to Reservations.
type reservationsFunc func(mac string) (netip.Addr, bool)

func (f reservationsFunc) Reserved(mac string) (netip.Addr, bool) { return f(mac) }

// After a power cut a rack of 500 machines PXE-boots at once, into a pool
// of exactly 500 addresses: every DISCOVER (each sent twice) comes before
// any REQUEST. With the default limits every machine gets an address,
// whether groups select the machines by MAC or one group matches all.
func TestRackPowerCut(t *testing.T) {
	subnets := []Subnet{{Prefix: netip.MustParsePrefix("10.0.0.0/23"), Start: netip.MustParseAddr("10.0.0.1"),
		End: netip.MustParseAddr("10.0.1.244"), LeaseTime: time.Hour}}
	for _, tt := range []struct {
		name   string
		booter Booter
	}{{"groups by mac", fleet}, {"one group for all", everyone}} {
		t.Run(tt.name, func(t *testing.T) {
			store := storage.NewMemory()
			ps := newPoolServer(t, subnets, tt.booter, store, nil)
			if u := ps.srv.leases.pools[0].usable; u != 500 {
				t.Fatalf("pool of %d addresses", u)
			}
			pxe := []dhcpv4.Modifier{
				dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")),
				dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)),
			}
			const rack = 500
			offers := make([]netip.Addr, rack)
			for round := range 2 {
				for i := range rack {
					ip := ps.offer(fleetMAC(i), pxe...)
					if !ip.IsValid() || round == 1 && ip != offers[i] {
						t.Fatalf("machine %d, DISCOVER %d: offered %v (first %v)", i, round+1, ip, offers[i])
					}
					offers[i] = ip
				}
			}
			// The REQUESTs arrive together and are handled at once.
			acks := make([]string, rack)
			var wg sync.WaitGroup
			for i := range rack {
				req, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(fleetMAC(i)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
					dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP(offers[i].AsSlice()))),
					dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverIP.AsSlice())))}, pxe...)...)
				if err != nil {
					t.Fatal(err)
				}
				wg.Go(func() {
					r, err := ps.exchange(req)
					switch {
					case err != nil:
						acks[i] = err.Error()
					case r == nil:
						acks[i] = "no reply"
					default:
						acks[i] = r.MessageType().String() + " " + r.YourIPAddr.String()
					}
				})
			}
			wg.Wait()
			seen := map[netip.Addr]bool{}
			for i := range rack {
				if want := "ACK " + offers[i].String(); acks[i] != want {
					t.Fatalf("machine %d: REQUEST of %v: %s", i, offers[i], acks[i])
				}
				if seen[offers[i]] {
					t.Fatalf("%v bound twice", offers[i])
				}
				seen[offers[i]] = true
			}
			stored, err := store.Leases(context.Background())
			if err != nil || len(stored) != rack {
				t.Errorf("%d leases stored, %v", len(stored), err)
			}
			checkPools(t, ps.srv)
		})
	}
}

// Limits out of their range are refused with the reason.
func TestPoolLimitsConfig(t *testing.T) {
	for _, tt := range []struct {
		tune func(*Config)
		err  string
	}{
		{func(c *Config) { c.OfferHold = 500 * time.Millisecond }, "offer hold 500ms: want 1s to 5m0s"},
		{func(c *Config) { c.OfferHold = time.Hour }, "offer hold 1h0m0s"},
		{func(c *Config) { c.UnknownShare = 101 }, "share 101%: want 1 to 100"},
		{func(c *Config) { c.UnknownShare = -1 }, "share -1%"},
		{func(c *Config) { c.UnknownEventRate = -1 }, "event rate -1/s"},
		{func(c *Config) { c.UnknownEventRate = 1e9 }, "at most 100000"},
	} {
		cfg := Config{
			Subnets: pool3(),
			BootURL: func(netip.Addr) string { return "" }, HTTPBootURL: func(netip.Addr, string) string { return "" },
			Booter: everyone,
		}
		tt.tune(&cfg)
		if _, err := New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("err %v, want %q", err, tt.err)
		}
	}
}

// An INFORM names the client's address itself (ciaddr): the recorder,
// which attributes later TFTP and asset requests by address, learns it
// only when it is leased to that client.
func TestInformClaimedAddress(t *testing.T) {
	ps := newPoolServer(t, pool101(), everyone, nil, nil)
	inform := func(hw net.HardwareAddr, ip netip.Addr) {
		t.Helper()
		r := ps.ask(ps.msg(hw, dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(net.IP(ip.AsSlice()))))
		if r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("INFORM answered with %v", r)
		}
	}
	victim := netip.MustParseAddr("10.0.0.7")
	inform(mac(9), victim)
	if m, ok := ps.srv.rec.MACOf(victim); ok {
		t.Errorf("an INFORM claiming %v made it %s's", victim, m)
	}
	ip := ps.dora(mac(1))
	inform(mac(9), ip)
	if m, _ := ps.srv.rec.MACOf(ip); m != mac(1).String() {
		t.Errorf("an INFORM claiming %v, leased to %s, made it %s's", ip, mac(1), m)
	}
	inform(mac(1), ip)
	if m, _ := ps.srv.rec.MACOf(ip); m != mac(1).String() {
		t.Errorf("%v is %s's, want %s", ip, m, mac(1))
	}
}
