package dhcp

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"matchbox.dev/matchbox/storage"
)

// pool101 is one subnet with a dynamic range of 101 addresses.
func pool101() []Subnet {
	return []Subnet{{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Start: netip.MustParseAddr("10.0.0.100"),
		End: netip.MustParseAddr("10.0.0.200"), LeaseTime: time.Hour}}
}

// nsServer is a full-mode server on UDP 67 and 4011 of a network namespace
// of its own, on the sockets production opens (ListenInterface).
type nsServer struct {
	ns   *netns
	srv  *Server
	addr *net.UDPAddr
}

func startNetnsServer(t *testing.T, subnets []Subnet, booter Booter, tune func(*Config)) *nsServer {
	t.Helper()
	ns := newNetns(t)
	ctx, cancel := context.WithCancel(context.Background())
	var c67, c4011 net.PacketConn
	if err := ns.run(func() error {
		var err error
		if c67, err = ListenInterface(ctx, "lo", dhcpv4.ServerPort); err != nil {
			return err
		}
		if c4011, err = ListenInterface(ctx, "lo", 4011); err != nil {
			c67.Close()
			return err
		}
		return nil
	}); err != nil {
		cancel()
		t.Fatal(err)
	}
	cfg := testConfig(subnets, booter, storage.NewMemory())
	if tune != nil {
		tune(&cfg)
	}
	srv, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	prefix := netip.MustParsePrefix("10.0.0.1/24")
	go func() {
		done <- srv.Serve(ctx,
			Listener{Conn: c67, Interface: "lo", ServerIP: serverIP, Prefix: prefix, Mode: ModeFull},
			Listener{Conn: c4011, Interface: "lo", ServerIP: serverIP, Prefix: prefix, Mode: ModeFull, BINL: true})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &nsServer{ns: ns, srv: srv, addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: dhcpv4.ServerPort}}
}

// conn opens a UDP socket on the namespace's loopback.
func (s *nsServer) conn(t *testing.T) net.PacketConn {
	t.Helper()
	var c net.PacketConn
	if err := s.ns.run(func() error {
		var err error
		c, err = net.ListenPacket("udp4", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// client is a DHCP client on the namespace's loopback.
func (s *nsServer) client(t *testing.T, hw net.HardwareAddr) *nclient4.Client {
	t.Helper()
	c, err := nclient4.NewWithConn(s.conn(t), hw, nclient4.WithServerAddr(s.addr), nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// randomMAC is a locally administered unicast address, as a flooding tool
// makes them.
func randomMAC(rng *rand.Rand) net.HardwareAddr {
	var b [8]byte
	v := rng.Uint64()
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
	b[0] = b[0]&^1 | 2
	return net.HardwareAddr(b[:6])
}

// discovers makes plain DISCOVERs (no PXE options) of random MACs, each
// with a transaction id of its own, as a flooding tool sends them.
type discovers struct {
	tmpl []byte
	rng  *rand.Rand
}

func newDiscovers(t testing.TB, seed uint64) *discovers {
	m, err := dhcpv4.New(dhcpv4.WithHwAddr(net.HardwareAddr{2, 0, 0, 0, 0, 0}), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))
	if err != nil {
		t.Fatal(err)
	}
	return &discovers{tmpl: m.ToBytes(), rng: rand.New(rand.NewPCG(seed, seed+1))}
}

// next returns a DISCOVER and its MAC.
func (d *discovers) next() ([]byte, net.HardwareAddr) {
	p := bytes.Clone(d.tmpl)
	hw := randomMAC(d.rng)
	binary.BigEndian.PutUint32(p[4:8], d.rng.Uint32())
	copy(p[28:34], hw)
	return p, hw
}

// handledDiscovers is how many DISCOVERs srv has decided: offered, or not
// for want of an address.
func handledDiscovers(srv *Server) int {
	return int(testutil.ToFloat64(srv.replies.WithLabelValues("full", "offer")) +
		testutil.ToFloat64(srv.dropped.WithLabelValues("pool-exhausted")))
}

// waitHandled polls until srv has decided n DISCOVERs.
func waitHandled(t *testing.T, srv *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for handledDiscovers(srv) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d DISCOVERs decided within 10s", handledDiscovers(srv), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// 110 DISCOVERs from random MACs at a pool of 101 addresses, on the real
// DHCP port: a real client's DORA that follows gets an address.
func TestStarvationByDiscoverFlood(t *testing.T) {
	s := startNetnsServer(t, pool101(), everyone, nil)
	flood := s.conn(t)
	d := newDiscovers(t, 1)
	const n = 110
	for range n {
		pkt, _ := d.next()
		if _, err := flood.WriteTo(pkt, s.addr); err != nil {
			t.Fatal(err)
		}
	}
	waitHandled(t, s.srv, n)
	real := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	lease, err := s.client(t, real).Request(ctxT(t))
	if err != nil {
		t.Fatalf("after %d DISCOVERs from random MACs, a real client's DORA: %v", n, err)
	}
	if ip := toAddr(lease.ACK.YourIPAddr); !inRange(pool101()[0], ip) {
		t.Errorf("real client got %v", ip)
	}
}

// A real client's DORA succeeds while DISCOVERs from random MACs keep
// arriving, far faster than the pool's 101 addresses can hold offers. The
// flood keeps 64 DISCOVERs outstanding, a new one for each answer, as fast
// as the server answers: a flood beyond that overflows socket buffers, and
// what it denies is packet processing, which no pool policy can give back
// (docs/network-setup.md says what protects against it).
func TestDORADuringDiscoverFlood(t *testing.T) {
	s := startNetnsServer(t, pool101(), everyone, nil)
	flood := s.conn(t)
	stop := make(chan struct{})
	flooded := make(chan int, 1)
	d := newDiscovers(t, 3)
	go func() {
		// Until the client is done, bounded in count and time.
		const window = 64
		deadline := time.Now().Add(30 * time.Second)
		buf := make([]byte, 1500)
		sent := 0
		send := func(n int) bool {
			for range n {
				pkt, _ := d.next()
				if _, err := flood.WriteTo(pkt, s.addr); err != nil {
					return false
				}
				sent++
			}
			return true
		}
		ok := send(window)
		for ok && sent < 1_000_000 && time.Now().Before(deadline) {
			select {
			case <-stop:
				flooded <- sent
				return
			default:
			}
			flood.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, _, err := flood.ReadFrom(buf); err != nil {
				ok = send(window) // answers lost: fill the window again
				continue
			}
			ok = send(1)
		}
		flooded <- sent
	}()
	// The pool is full of the flood's offers before the client starts.
	waitHandled(t, s.srv, 101)
	real := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x57}
	lease, err := s.client(t, real).Request(ctxT(t))
	close(stop)
	sent := <-flooded
	if err != nil {
		t.Fatalf("during a flood of DISCOVERs from random MACs (%d sent), a real client's DORA: %v", sent, err)
	}
	if ip := toAddr(lease.ACK.YourIPAddr); !inRange(pool101()[0], ip) {
		t.Errorf("real client got %v", ip)
	}
	t.Logf("%d DISCOVERs from random MACs sent; the real client got %v", sent, lease.ACK.YourIPAddr)
}
