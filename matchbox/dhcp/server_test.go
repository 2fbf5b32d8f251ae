package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// booterFunc adapts a function to Booter.
type booterFunc func(map[string]string) (matchbox.Selection, error)

func (f booterFunc) Decide(l map[string]string) matchbox.Decision {
	sel, err := f(l)
	return matchbox.Decision{Selection: sel, Err: err}
}

// everyone boots, with a group and profile for events.
var everyone = booterFunc(func(map[string]string) (matchbox.Selection, error) {
	return matchbox.Selection{Group: &matchbox.Group{ID: "default", Metadata: map[string]any{"hostname": "node"}}, Profile: &matchbox.Profile{ID: "live"}}, nil
})

var serverIP = netip.MustParseAddr("10.0.0.1")

type testServer struct {
	srv    *Server
	addr   *net.UDPAddr // port 67 socket
	binl   *net.UDPAddr // port 4011 socket
	cancel context.CancelFunc
	done   chan error
	store  *storage.DB
}

func testSubnets() []Subnet {
	return []Subnet{
		{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Start: netip.MustParseAddr("10.0.0.100"), End: netip.MustParseAddr("10.0.0.199"),
			Routers: []netip.Addr{serverIP}, DNS: []netip.Addr{netip.MustParseAddr("10.0.0.53")}, Domain: "lab.example", LeaseTime: time.Hour},
		{Prefix: netip.MustParsePrefix("10.1.0.0/24"), Start: netip.MustParseAddr("10.1.0.10"), End: netip.MustParseAddr("10.1.0.20"), LeaseTime: 30 * time.Minute},
	}
}

// startServer runs a server on loopback sockets, with its leases in a
// store over db (nil: a new one). A second server over the same db, once
// the first has stopped, is that server restarted.
func startServer(t *testing.T, mode Mode, subnets []Subnet, booter Booter, db *storage.MemoryBackend) *testServer {
	t.Helper()
	if db == nil {
		db = storage.NewMemoryBackend()
	}
	store := storage.OpenMemory(db)
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, testConfig(subnets, booter, store))
	if err != nil {
		t.Fatal(err)
	}
	c67, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c4011, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, addr: c67.LocalAddr().(*net.UDPAddr), binl: c4011.LocalAddr().(*net.UDPAddr), cancel: cancel, done: make(chan error, 1), store: store}
	go func() {
		ts.done <- srv.Serve(ctx,
			Listener{Conn: c67, Interface: "test", ServerIP: serverIP, Prefix: netip.MustParsePrefix("10.0.0.1/24"), Mode: mode},
			Listener{Conn: c4011, Interface: "test", ServerIP: serverIP, Prefix: netip.MustParsePrefix("10.0.0.1/24"), Mode: mode, BINL: true})
	}()
	t.Cleanup(ts.stop)
	return ts
}

// testConfig is the configuration of the tests' servers: boot URLs on
// port 8080 of the receiving address, leases in store.
func testConfig(subnets []Subnet, booter Booter, store *storage.DB) Config {
	return Config{
		Subnets:     subnets,
		BootURL:     func(ip netip.Addr) string { return "http://" + ip.String() + ":8080/boot.ipxe" },
		HTTPBootURL: func(ip netip.Addr, f string) string { return "http://" + ip.String() + ":8080/boot/" + f },
		Booter:      booter,
		Leases:      store,
		Registry:    prometheus.NewRegistry(),
	}
}

func (ts *testServer) stop() {
	if ts.cancel == nil {
		return
	}
	ts.cancel()
	<-ts.done
	ts.store.Close()
	ts.cancel = nil
}

func mac(i int) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0, 0, byte(i >> 8), byte(i)} }

func newClient(t *testing.T, hw net.HardwareAddr, server *net.UDPAddr) *nclient4.Client {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := nclient4.NewWithConn(conn, hw, nclient4.WithServerAddr(server), nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var pxeUEFI = []dhcpv4.Modifier{
	dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")),
	dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)),
	dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, []byte("0123456789abcdef")...))),
}

func TestFullDORA(t *testing.T) {
	ts := startServer(t, ModeFull, testSubnets(), everyone, nil)
	c := newClient(t, mac(1), ts.addr)
	lease, err := c.Request(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	ack := lease.ACK
	ip := toAddr(ack.YourIPAddr)
	if !inRange(testSubnets()[0], ip) {
		t.Errorf("yiaddr %v not in the range", ip)
	}
	if lease.Offer.YourIPAddr.String() != ack.YourIPAddr.String() {
		t.Errorf("offer %v, ack %v", lease.Offer.YourIPAddr, ack.YourIPAddr)
	}
	if got := toAddr(ack.ServerIdentifier()); got != serverIP {
		t.Errorf("server id %v", got)
	}
	if got := ack.IPAddressLeaseTime(0); got != time.Hour {
		t.Errorf("lease time %v", got)
	}
	if r := ack.Router(); len(r) != 1 || !r[0].Equal(net.IP(serverIP.AsSlice())) {
		t.Errorf("router %v", r)
	}
	if d := ack.DNS(); len(d) != 1 || d[0].String() != "10.0.0.53" {
		t.Errorf("dns %v", d)
	}
	if ack.DomainName() != "lab.example" || ack.HostName() != "node" {
		t.Errorf("domain %q hostname %q", ack.DomainName(), ack.HostName())
	}
	if m := ack.SubnetMask(); m.String() != "ffffff00" {
		t.Errorf("mask %v", m)
	}
	// A non-PXE client gets no boot file.
	if ack.BootFileName != "" || ack.GetOneOption(dhcpv4.OptionBootfileName) != nil {
		t.Errorf("boot file for a non-PXE client: %q", ack.BootFileName)
	}
	// The lease is persisted.
	leases, err := ts.store.Leases(context.Background())
	if err != nil || len(leases) != 1 || leases[0].IP != ip || leases[0].MAC != mac(1).String() || leases[0].State != matchbox.LeaseBound {
		t.Errorf("stored leases %+v, %v", leases, err)
	}
	// Renewing keeps the address.
	again, err := c.Request(ctxT(t))
	if err != nil || toAddr(again.ACK.YourIPAddr) != ip {
		t.Errorf("second DORA: %v, %v", again, err)
	}
}

func TestFullPXEAnswers(t *testing.T) {
	ts := startServer(t, ModeFull, testSubnets(), everyone, nil)
	tests := []struct {
		name   string
		mods   []dhcpv4.Modifier
		file   string
		vendor string
		tftp   bool
	}{
		{"uefi pxe", pxeUEFI, "ipxe.efi", "PXEClient", true},
		{"bios pxe", []dhcpv4.Modifier{
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
			dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
		}, "undionly.kpxe", "PXEClient", true},
		{"arch only in option 60", []dhcpv4.Modifier{
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00009:UNDI:003016")),
		}, "ipxe.efi", "PXEClient", true},
		{"ipxe", append([]dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE"))}, pxeUEFI...),
			"http://10.0.0.1:8080/boot.ipxe", "PXEClient", false},
		{"http boot", []dhcpv4.Modifier{
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016:UNDI:003016")),
			dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64_HTTP)),
		}, "http://10.0.0.1:8080/boot/ipxe.efi", "HTTPClient", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, mac(100+i), ts.addr)
			lease, err := c.Request(ctxT(t), tt.mods...)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []*dhcpv4.DHCPv4{lease.Offer, lease.ACK} {
				if p.BootFileName != tt.file || p.BootFileNameOption() != tt.file {
					t.Errorf("%s: file %q / option 67 %q, want %q", p.MessageType(), p.BootFileName, p.BootFileNameOption(), tt.file)
				}
				if p.ClassIdentifier() != tt.vendor {
					t.Errorf("%s: option 60 %q, want %q", p.MessageType(), p.ClassIdentifier(), tt.vendor)
				}
				if !p.ServerIPAddr.Equal(net.IP(serverIP.AsSlice())) {
					t.Errorf("%s: siaddr %v", p.MessageType(), p.ServerIPAddr)
				}
				if tt.tftp && p.TFTPServerName() != serverIP.String() {
					t.Errorf("%s: option 66 %q", p.MessageType(), p.TFTPServerName())
				}
			}
			if tt.name == "uefi pxe" {
				if g := lease.Offer.GetOneOption(dhcpv4.OptionClientMachineIdentifier); string(g[1:]) != "0123456789abcdef" {
					t.Errorf("option 97 not mirrored: %q", g)
				}
			}
		})
	}
	// A machine the core refuses gets an address but no boot file.
	refuse := booterFunc(func(map[string]string) (matchbox.Selection, error) {
		return matchbox.Selection{}, fmt.Errorf("no group matches: %w", matchbox.ErrNotFound)
	})
	ts2 := startServer(t, ModeFull, testSubnets(), refuse, nil)
	lease, err := newClient(t, mac(200), ts2.addr).Request(ctxT(t), pxeUEFI...)
	if err != nil {
		t.Fatal(err)
	}
	if lease.ACK.BootFileName != "" || lease.ACK.YourIPAddr.IsUnspecified() {
		t.Errorf("refused machine: file %q, yiaddr %v", lease.ACK.BootFileName, lease.ACK.YourIPAddr)
	}
}

func TestProxyMode(t *testing.T) {
	var asked []map[string]string
	var mu sync.Mutex
	booter := booterFunc(func(l map[string]string) (matchbox.Selection, error) {
		mu.Lock()
		asked = append(asked, l)
		mu.Unlock()
		return everyone(l)
	})
	ts := startServer(t, ModeProxy, nil, booter, nil)
	c := newClient(t, mac(1), ts.addr)
	offer, err := c.DiscoverOffer(ctxT(t), pxeUEFI...)
	if err != nil {
		t.Fatal(err)
	}
	if !offer.YourIPAddr.IsUnspecified() {
		t.Errorf("proxy offer hands out an address: %v", offer.YourIPAddr)
	}
	if offer.BootFileName != "ipxe.efi" || offer.ClassIdentifier() != "PXEClient" || toAddr(offer.ServerIdentifier()) != serverIP {
		t.Errorf("proxy offer: file %q, option 60 %q, server id %v", offer.BootFileName, offer.ClassIdentifier(), offer.ServerIdentifier())
	}
	if offer.GetOneOption(dhcpv4.OptionVendorSpecificInformation) != nil {
		t.Error("UEFI proxy offer carries option 43: EDK2 would not move to 4011")
	}
	mu.Lock()
	if len(asked) == 0 || asked[0]["mac"] != mac(1).String() || asked[0]["uuid"] == "" {
		t.Errorf("core asked with %v", asked)
	}
	mu.Unlock()

	// BIOS PXE ROMs get discovery control in option 43.
	bios, err := newClient(t, mac(2), ts.addr).DiscoverOffer(ctxT(t),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)))
	if err != nil {
		t.Fatal(err)
	}
	if o43 := bios.GetOneOption(dhcpv4.OptionVendorSpecificInformation); string(o43) != "\x06\x01\x08\xff" {
		t.Errorf("BIOS proxy offer option 43 = %x", o43)
	}

	// Non-PXE clients are not answered in proxy mode.
	plain := newClient(t, mac(3), ts.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if p, err := plain.DiscoverOffer(ctx); err == nil {
		t.Errorf("proxy answered a non-PXE client: %v", p.Summary())
	}
	// And a REQUEST on port 67 is left to the real DHCP server.
	if got := ts.srv.Leases(); len(got) != 0 {
		t.Errorf("proxy mode holds leases: %v", got)
	}
}

func TestBINL4011(t *testing.T) {
	for _, mode := range []Mode{ModeProxy, ModeFull} {
		t.Run(string(mode), func(t *testing.T) {
			ts := startServer(t, mode, testSubnets(), everyone, nil)
			c := newClient(t, mac(9), ts.binl)
			req, err := dhcpv4.New(append([]dhcpv4.Modifier{
				dhcpv4.WithHwAddr(mac(9)),
				dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
				dhcpv4.WithClientIP(net.ParseIP("192.168.7.20")),
			}, pxeUEFI...)...)
			if err != nil {
				t.Fatal(err)
			}
			ack, err := c.SendAndRead(ctxT(t), ts.binl, req, nclient4.IsMessageType(dhcpv4.MessageTypeAck))
			if err != nil {
				t.Fatal(err)
			}
			if ack.BootFileName != "ipxe.efi" || ack.ClassIdentifier() != "PXEClient" || ack.ClientIPAddr.String() != "192.168.7.20" || !ack.YourIPAddr.IsUnspecified() {
				t.Errorf("4011 ack: file %q, 60 %q, ciaddr %v, yiaddr %v", ack.BootFileName, ack.ClassIdentifier(), ack.ClientIPAddr, ack.YourIPAddr)
			}
			if g := ack.GetOneOption(dhcpv4.OptionClientMachineIdentifier); len(g) != 17 {
				t.Errorf("option 97 not mirrored on 4011: %x", g)
			}
		})
	}
}

func TestRelay(t *testing.T) {
	ts := startServer(t, ModeFull, testSubnets(), everyone, nil)
	c := newClient(t, mac(5), ts.addr)
	relay := net.ParseIP("10.1.0.1")
	opt82 := dhcpv4.OptRelayAgentInfo(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(1), []byte("port7")), dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(2), []byte("sw1")))
	lease, err := c.Request(ctxT(t), dhcpv4.WithRelay(relay), dhcpv4.WithOption(opt82))
	if err != nil {
		t.Fatal(err)
	}
	ip := toAddr(lease.ACK.YourIPAddr)
	if !netip.MustParsePrefix("10.1.0.0/24").Contains(ip) {
		t.Fatalf("relayed client got %v, want an address of the relay's subnet", ip)
	}
	if !lease.ACK.GatewayIPAddr.Equal(relay) {
		t.Errorf("giaddr not kept: %v", lease.ACK.GatewayIPAddr)
	}
	if ri := lease.ACK.RelayAgentInfo(); ri == nil || string(ri.Get(dhcpv4.GenericOptionCode(1))) != "port7" {
		t.Errorf("option 82 not echoed: %v", ri)
	}
	if got := lease.ACK.IPAddressLeaseTime(0); got != 30*time.Minute {
		t.Errorf("relayed subnet lease time %v", got)
	}
	stored, _ := ts.store.Leases(context.Background())
	if len(stored) != 1 || stored[0].Relay != "10.1.0.1" || stored[0].CircuitID != fmt.Sprintf("%x", "port7") || stored[0].RemoteID != fmt.Sprintf("%x", "sw1") {
		t.Errorf("stored lease %+v", stored)
	}
	// A relay from an unknown subnet gets nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if _, err := newClient(t, mac(6), ts.addr).DiscoverOffer(ctx, dhcpv4.WithRelay(net.ParseIP("172.31.0.1"))); err == nil {
		t.Error("answered a relay from an unknown subnet")
	}
}

func TestLeaseSurvivesRestart(t *testing.T) {
	db := storage.NewMemoryBackend()
	ts := startServer(t, ModeFull, testSubnets(), everyone, db)
	lease, err := newClient(t, mac(1), ts.addr).Request(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	ip := lease.ACK.YourIPAddr
	ts.stop()

	ts2 := startServer(t, ModeFull, testSubnets(), everyone, db)
	// Another client does not get the address.
	other, err := newClient(t, mac(2), ts2.addr).Request(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if other.ACK.YourIPAddr.Equal(ip) {
		t.Fatalf("address %v given to a second client after restart", ip)
	}
	// The first client, rebooting (INIT-REBOOT: requested address, no
	// server id), keeps its address.
	c := newClient(t, mac(1), ts2.addr)
	req, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)))
	ack, err := c.SendAndRead(ctxT(t), ts2.addr, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(ip) {
		t.Errorf("init-reboot: %s yiaddr %v", ack.MessageType(), ack.YourIPAddr)
	}
	// And the first client's DISCOVER is offered its old address.
	offer, err := newClient(t, mac(1), ts2.addr).DiscoverOffer(ctxT(t))
	if err != nil || !offer.YourIPAddr.Equal(ip) {
		t.Errorf("rediscover: %v, %v", offer, err)
	}
}

func TestNoSharedAddresses(t *testing.T) {
	subnets := []Subnet{{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Start: netip.MustParseAddr("10.0.0.100"), End: netip.MustParseAddr("10.0.0.139"), LeaseTime: time.Hour}}
	ts := startServer(t, ModeFull, subnets, everyone, nil)
	const clients = 60 // more clients than the 40 addresses
	var mu sync.Mutex
	got := map[string]string{}
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			lease, err := newClient(t, mac(1000+i), ts.addr).Request(ctx)
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ip := lease.ACK.YourIPAddr.String()
			if prev, ok := got[ip]; ok {
				t.Errorf("%s given to %s and %s", ip, prev, mac(1000+i))
			}
			got[ip] = mac(1000 + i).String()
		}()
	}
	wg.Wait()
	if len(got) != 40 {
		t.Errorf("%d clients got addresses, want all 40 of the pool used", len(got))
	}
	// The store agrees: one lease per address, each with its own MAC.
	stored, _ := ts.store.Leases(context.Background())
	macs := map[string]bool{}
	for _, l := range stored {
		if macs[l.MAC] {
			t.Errorf("MAC %s holds two leases", l.MAC)
		}
		macs[l.MAC] = true
		if got[l.IP.String()] != l.MAC {
			t.Errorf("stored %v for %s, ACKed to %s", l.IP, l.MAC, got[l.IP.String()])
		}
	}
}

func TestDeclineReleaseNak(t *testing.T) {
	ts := startServer(t, ModeFull, testSubnets(), everyone, nil)
	c1 := newClient(t, mac(1), ts.addr)
	l1, err := c1.Request(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	ip1 := l1.ACK.YourIPAddr

	// Another client asking for ip1 is NAKed.
	c2 := newClient(t, mac(2), ts.addr)
	req, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(2)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip1)))
	nak, err := c2.SendAndRead(ctxT(t), ts.addr, req, nil)
	if err != nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("request for a held address: %v, %v", nak, err)
	}
	// A request for an address outside the subnet is NAKed too.
	req, _ = dhcpv4.New(dhcpv4.WithHwAddr(mac(2)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("192.168.99.5"))))
	if nak, err := c2.SendAndRead(ctxT(t), ts.addr, req, nil); err != nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("request for a foreign address: %v, %v", nak, err)
	}

	// DECLINE quarantines ip1: nobody gets it next.
	decline, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip1)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverIP.AsSlice()))))
	if _, err := c1Conn(t).WriteTo(decline.ToBytes(), ts.addr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the declined address to be quarantined", func() bool {
		for _, l := range ts.srv.Leases() {
			if l.IP == toAddr(ip1) && l.State == matchbox.LeaseDeclined {
				return true
			}
		}
		return false
	})
	for i := range 3 {
		l, err := newClient(t, mac(10+i), ts.addr).Request(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if l.ACK.YourIPAddr.Equal(ip1) {
			t.Fatalf("declined address %v handed out again", ip1)
		}
	}

	// RELEASE frees the client's address.
	l3, err := newClient(t, mac(3), ts.addr).Request(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	rel, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(3)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease),
		dhcpv4.WithClientIP(l3.ACK.YourIPAddr), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverIP.AsSlice()))))
	if _, err := c1Conn(t).WriteTo(rel.ToBytes(), ts.addr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the released lease to leave the store", func() bool {
		stored, _ := ts.store.Leases(context.Background())
		for _, l := range stored {
			if l.IP == toAddr(l3.ACK.YourIPAddr) {
				return false
			}
		}
		return true
	})

	// INFORM gets options but no address.
	inform, err := newClient(t, mac(4), ts.addr).Inform(ctxT(t), net.ParseIP("10.0.0.77"))
	if err != nil {
		t.Fatal(err)
	}
	if !inform.YourIPAddr.IsUnspecified() || inform.DomainName() != "lab.example" || inform.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
		t.Errorf("inform reply: yiaddr %v domain %q lease time %v", inform.YourIPAddr, inform.DomainName(), inform.Options.Has(dhcpv4.OptionIPAddressLeaseTime))
	}
}

func c1Conn(t *testing.T) net.PacketConn {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// waitFor polls cond every 10ms, failing the test with what it waited
// for if cond is still false after 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestParseRange(t *testing.T) {
	for _, tt := range []struct {
		in, fallback, prefix, err string
	}{
		{in: "10.0.0.100,10.0.0.200", prefix: "10.0.0.0/24"},
		{in: "10.0.0.100,10.0.0.200,255.255.0.0", prefix: "10.0.0.0/16"},
		{in: "10.0.0.100,10.0.3.200,22", prefix: "10.0.0.0/22"},
		{in: "10.0.5.100,10.0.5.200", fallback: "10.0.4.1/23", prefix: "10.0.4.0/23"},
		{in: "10.0.0.200,10.0.0.100", err: "end is before start"},
		{in: "10.0.0.100,10.0.1.100", err: "not in one subnet"},
		{in: "10.0.0.100", err: "want START,END"},
		{in: "x,10.0.0.1", err: "not an IPv4"},
		{in: "10.0.0.1,10.0.0.2,255.0.255.0", err: "not contiguous"},
	} {
		var fb netip.Prefix
		if tt.fallback != "" {
			fb = netip.MustParsePrefix(tt.fallback)
		}
		s, err := ParseRange(tt.in, fb)
		if tt.err != "" {
			if err == nil || !contains(err.Error(), tt.err) {
				t.Errorf("%s: err %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || s.Prefix.String() != tt.prefix {
			t.Errorf("%s: %v %v, want %s", tt.in, s.Prefix, err, tt.prefix)
		}
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0))
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func TestLeasesSorted(t *testing.T) {
	// isNetworkOrBroadcast keeps .0 and .255 out of a /24 range.
	p := netip.MustParsePrefix("10.0.0.0/24")
	var got []string
	for _, s := range []string{"10.0.0.0", "10.0.0.255", "10.0.0.1"} {
		if isNetworkOrBroadcast(p, netip.MustParseAddr(s)) {
			got = append(got, s)
		}
	}
	sort.Strings(got)
	if fmt.Sprint(got) != "[10.0.0.0 10.0.0.255]" {
		t.Errorf("network/broadcast: %v", got)
	}
}

func TestFormatGUID(t *testing.T) {
	b := make([]byte, 16)
	for round := range 200 {
		for i := range b {
			b[i] = byte(round*31 + i*17)
		}
		want := fmt.Sprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15])
		if got := formatGUID(b); got != want {
			t.Fatalf("formatGUID(%x) = %s, want %s", b, got, want)
		}
	}
}

// An operator's release frees a bound lease: gone from memory and from the
// store, the address free for the next client, and a second release is
// not found.
func TestOperatorRelease(t *testing.T) {
	one := testSubnets()[:1]
	one[0].End = one[0].Start // a pool of one address
	ts := startServer(t, ModeFull, one, everyone, nil)
	lease, err := newClient(t, mac(1), ts.addr).Request(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	ip := toAddr(lease.ACK.YourIPAddr)
	l, err := ts.srv.Release(context.Background(), ip)
	if err != nil || l.MAC != mac(1).String() {
		t.Fatalf("Release(%v) = %+v, %v", ip, l, err)
	}
	if got := ts.srv.Leases(); len(got) != 0 {
		t.Errorf("leases in memory after the release: %+v", got)
	}
	if stored, err := ts.store.Leases(context.Background()); err != nil || len(stored) != 0 {
		t.Errorf("stored leases after the release: %+v, %v", stored, err)
	}
	if _, err := ts.srv.Release(context.Background(), ip); !errors.Is(err, matchbox.ErrNotFound) {
		t.Errorf("second release: %v", err)
	}
	if _, err := ts.srv.Release(context.Background(), netip.MustParseAddr("192.0.2.1")); !errors.Is(err, matchbox.ErrNotFound) {
		t.Errorf("release outside every subnet: %v", err)
	}
	// The next client gets the only address.
	other, err := newClient(t, mac(2), ts.addr).Request(ctxT(t))
	if err != nil || toAddr(other.ACK.YourIPAddr) != ip {
		t.Errorf("next client got %v, %v; want the released %v", other, err, ip)
	}
}
