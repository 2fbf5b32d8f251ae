package dhcp

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"

	"matchbox.dev/matchbox/recorder"
	"matchbox.dev/matchbox/storage"
)

// BenchmarkProxyOffer is the CPU cost of answering one PXE DISCOVER in
// proxy mode, without the network (see scripts/bench-netboot for the
// whole server against dnsmasq).
func BenchmarkProxyOffer(b *testing.B) {
	// 1,024 clients repeating their DISCOVERs: answered from kept answers.
	b.Run("repeat", func(b *testing.B) { benchProxyOffer(b, false) })
	// Every DISCOVER as if first seen.
	b.Run("first", func(b *testing.B) { benchProxyOffer(b, true) })
}

func benchProxyOffer(b *testing.B, forget bool) {
	srv := proxyServer(b, everyone)
	pkts := make([][]byte, 1024)
	for i := range pkts {
		m, _ := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac(i)), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover)}, pxeUEFI...)...)
		pkts[i] = m.ToBytes()
	}
	conn := &captureConn{}
	l := Listener{Conn: conn, Interface: "bench", ServerIP: serverIP, Mode: ModeProxy}
	peer := &net.UDPAddr{IP: net.ParseIP("10.0.0.2"), Port: 67}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		srv.handle(context.Background(), l, pkts[i%len(pkts)], peer)
		if len(conn.writes) > 1000 {
			conn.writes = conn.writes[:0]
		}
		if forget {
			srv.ForgetAnswers()
		}
	}
}

// BenchmarkFullDORA is the CPU cost of one DISCOVER→OFFER and
// REQUEST→ACK in full mode, leases committed to bbolt.
func BenchmarkFullDORA(b *testing.B) {
	store, err := storage.OpenBolt(filepath.Join(b.TempDir(), "m.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	subnets := []Subnet{{Prefix: netip.MustParsePrefix("10.0.0.0/16"), Start: netip.MustParseAddr("10.0.1.0"), End: netip.MustParseAddr("10.0.200.255")}}
	srv, err := New(context.Background(), Config{
		Subnets:     subnets,
		BootURL:     func(ip netip.Addr) string { return "http://" + ip.String() + "/boot.ipxe" },
		HTTPBootURL: func(ip netip.Addr, f string) string { return "http://" + ip.String() + "/boot/" + f },
		Booter:      everyone,
		Leases:      store,
		Recorder:    recorder.New(nil, nil),
		Registry:    prometheus.NewRegistry(),
	})
	if err != nil {
		b.Fatal(err)
	}
	conn := &captureConn{}
	l := Listener{Conn: conn, Interface: "bench", ServerIP: serverIP, Prefix: netip.MustParsePrefix("10.0.0.1/16"), Mode: ModeFull}
	peer := &net.UDPAddr{IP: net.ParseIP("10.0.0.2"), Port: 67}
	b.ReportAllocs()
	b.SetParallelism(64) // many clients at once, as the batch commit needs
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			hw := net.HardwareAddr{0x52, 0x54, byte(i >> 16), byte(i >> 8), byte(i), byte(len(conn.writes))}
			d, _ := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover)}, pxeUEFI...)...)
			cc := &captureConn{}
			ll := l
			ll.Conn = cc
			srv.handle(context.Background(), ll, d.ToBytes(), peer)
			if len(cc.writes) != 1 {
				continue
			}
			offer, _ := dhcpv4.FromBytes(cc.writes[0])
			r, _ := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverIP.AsSlice())))}, pxeUEFI...)...)
			srv.handle(context.Background(), ll, r.ToBytes(), peer)
		}
	})
}
