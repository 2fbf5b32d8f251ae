package dhcp

import (
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// HoldsLease is true only for the address of a current bound lease of the
// MAC: not for an offer, another address, or another MAC.
func TestHoldsLease(t *testing.T) {
	ts := startServer(t, ModeFull, testSubnets(), everyone, nil)
	c := newClient(t, mac(1), ts.addr)
	offer, err := c.DiscoverOffer(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	offered := toAddr(offer.YourIPAddr)
	if ts.srv.HoldsLease(mac(1).String(), offered) {
		t.Error("an offered address holds the lease")
	}
	lease, err := c.Request(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	ip := toAddr(lease.ACK.YourIPAddr)
	for _, tc := range []struct {
		mac  string
		ip   netip.Addr
		want bool
	}{
		{mac(1).String(), ip, true},
		{mac(1).String(), netip.AddrFrom16(ip.As16()), true}, // as a mapped IPv6 address
		{mac(2).String(), ip, false},
		{mac(1).String(), ip.Next(), false},
		{mac(1).String(), netip.MustParseAddr("192.0.2.1"), false},
	} {
		if got := ts.srv.HoldsLease(tc.mac, tc.ip); got != tc.want {
			t.Errorf("HoldsLease(%s, %v) = %v, want %v", tc.mac, tc.ip, got, tc.want)
		}
	}
	// A RELEASE ends it (sent to the server's loopback socket).
	rel, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease),
		dhcpv4.WithClientIP(lease.ACK.YourIPAddr), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverIP.AsSlice()))))
	conn := c1Conn(t)
	// Sent again at each look: a datagram may be lost, even on loopback.
	waitFor(t, "the RELEASE to end the lease", func() bool {
		if _, err := conn.WriteTo(rel.ToBytes(), ts.addr); err != nil {
			t.Fatal(err)
		}
		return !ts.srv.HoldsLease(mac(1).String(), ip)
	})
}

// HoldsLease and BoundAddr agree, and HoldsLease allocates nothing.
func TestHoldsLeaseAgreesWithBoundAddr(t *testing.T) {
	ts := startServer(t, ModeFull, testSubnets(), everyone, nil)
	lease, err := newClient(t, mac(1), ts.addr).Request(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	ip := toAddr(lease.ACK.YourIPAddr)
	if got, ok := ts.srv.BoundAddr(mac(1).String()); !ok || got != ip || !ts.srv.HoldsLease(mac(1).String(), got) {
		t.Errorf("BoundAddr = %v, %v; HoldsLease of it false", got, ok)
	}
	m := mac(1).String()
	if n := testing.AllocsPerRun(100, func() { ts.srv.HoldsLease(m, ip) }); n != 0 {
		t.Errorf("HoldsLease allocates %v times", n)
	}
}

// In proxy mode the client's REQUEST to the network's DHCP server names
// the address it takes: the recorder learns it, so its MAC-less downloads
// are attributed to it (HTTP requests that only name a MAC teach nothing).
func TestProxyLearnsRequestedAddress(t *testing.T) {
	ts := startServer(t, ModeProxy, nil, everyone, nil)
	want := netip.MustParseAddr("10.0.0.150")
	req, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(7)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP(want.AsSlice()))),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 0, 53))))
	conn := c1Conn(t)
	waitFor(t, "the recorder to learn the requested address", func() bool {
		if _, err := conn.WriteTo(req.ToBytes(), ts.addr); err != nil {
			t.Fatal(err)
		}
		got, ok := ts.srv.rec.MACOf(want)
		return ok && got == mac(7).String()
	})
}
