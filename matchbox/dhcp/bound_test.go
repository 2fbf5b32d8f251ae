package dhcp

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"matchbox.dev/matchbox/storage"
)

// BoundAddr answers from the lease table: the address of a MAC's bound
// lease in any subnet, nothing for an offer, a release or another MAC,
// the same after a restart, and without allocating.
func TestBoundAddr(t *testing.T) {
	db := storage.NewMemoryBackend()
	ts := startServer(t, ModeFull, testSubnets(), everyone, db)
	lease, err := newClient(t, mac(1), ts.addr).Request(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	ip1 := toAddr(lease.ACK.YourIPAddr)
	relayed, err := newClient(t, mac(5), ts.addr).Request(ctxT(t), dhcpv4.WithRelay(net.ParseIP("10.1.0.1")))
	if err != nil {
		t.Fatal(err)
	}
	ip5 := toAddr(relayed.ACK.YourIPAddr)
	if _, err := newClient(t, mac(2), ts.addr).DiscoverOffer(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		mac  string
		want netip.Addr
	}{
		{mac(1).String(), ip1},
		{strings.ToUpper(mac(1).String()), ip1},
		{mac(5).String(), ip5},
		{mac(2).String(), netip.Addr{}}, // offered, not bound
		{mac(3).String(), netip.Addr{}},
		{"", netip.Addr{}},
		{"52-54-00-00-00-01", netip.Addr{}},
		{"52:54:00:00:00:0g", netip.Addr{}},
		{"52:54:00:00:00:01:02", netip.Addr{}},
	} {
		got, ok := ts.srv.BoundAddr(tt.mac)
		if got != tt.want || ok != tt.want.IsValid() {
			t.Errorf("BoundAddr(%q) = %v, %v; want %v", tt.mac, got, ok, tt.want)
		}
	}
	m1 := mac(1).String()
	if n := testing.AllocsPerRun(100, func() { ts.srv.BoundAddr(m1) }); n != 0 {
		t.Errorf("BoundAddr allocates %v times", n)
	}
	if _, err := ts.srv.Release(context.Background(), ip1); err != nil {
		t.Fatal(err)
	}
	if got, ok := ts.srv.BoundAddr(m1); ok {
		t.Errorf("after the release, BoundAddr = %v", got)
	}
	ts.stop()
	ts2 := startServer(t, ModeFull, testSubnets(), everyone, db)
	if got, ok := ts2.srv.BoundAddr(mac(5).String()); got != ip5 || !ok {
		t.Errorf("after a restart, BoundAddr = %v, %v; want %v", got, ok, ip5)
	}
}

// A lease ends for BoundAddr when it expires or is declined; of a MAC's
// leases under two client identifiers (its firmware's and its OS's), the
// one bound last is given.
func TestBoundAddrLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		subnets := pool101()
		subnets[0].LeaseTime = time.Minute
		ps := newPoolServer(t, subnets, everyone, nil, nil)
		hw := mac(1)
		ip := ps.dora(hw, pxeUEFI...)
		if got, ok := ps.srv.BoundAddr(hw.String()); got != ip || !ok {
			t.Fatalf("BoundAddr = %v, %v; want %v", got, ok, ip)
		}
		time.Sleep(time.Minute - time.Second)
		if got, ok := ps.srv.BoundAddr(hw.String()); got != ip || !ok {
			t.Fatalf("before expiry, BoundAddr = %v, %v", got, ok)
		}
		time.Sleep(time.Second)
		if got, ok := ps.srv.BoundAddr(hw.String()); ok {
			t.Fatalf("after expiry, BoundAddr = %v", got)
		}
		// Bound again by the firmware (keyed by MAC), then by the OS with
		// a client identifier of its own: the OS's address is given.
		fw := ps.dora(hw, pxeUEFI...)
		os := ps.dora(hw, dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{0xff, 1, 2, 3, 4})))
		if !fw.IsValid() || !os.IsValid() || fw == os {
			t.Fatalf("firmware %v, OS %v", fw, os)
		}
		if got, _ := ps.srv.BoundAddr(hw.String()); got != os {
			t.Errorf("BoundAddr = %v, want the OS's %v", got, os)
		}
		// The OS declines its address: the firmware's lease is left.
		ps.ask(ps.msg(hw, dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
			dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{0xff, 1, 2, 3, 4})),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP(os.AsSlice())))))
		if got, _ := ps.srv.BoundAddr(hw.String()); got != fw {
			t.Errorf("after the decline, BoundAddr = %v, want %v", got, fw)
		}
		checkPools(t, ps.srv)
	})
}
