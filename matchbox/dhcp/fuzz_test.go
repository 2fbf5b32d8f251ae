package dhcp

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// captureConn records what the server writes; reads are never used.
type captureConn struct {
	mu     sync.Mutex
	writes [][]byte
}

func (c *captureConn) ReadFrom([]byte) (int, net.Addr, error) { return 0, nil, net.ErrClosed }
func (c *captureConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, append([]byte(nil), b...))
	return len(b), nil
}
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) LocalAddr() net.Addr              { return &net.UDPAddr{} }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzHandle feeds arbitrary packets to the handler in every mode: it never
// panics, and every reply answers the request (reply opcode, same
// transaction id and client hardware address, our server id), never hands
// out an address outside the pools, and never answers in proxy mode with
// an address; the lease table's bookkeeping stays true to its entries.
func FuzzHandle(f *testing.F) {
	seed := func(mods ...dhcpv4.Modifier) {
		m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac(1))}, mods...)...)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(m.ToBytes(), uint8(0))
		f.Add(m.ToBytes(), uint8(1))
		f.Add(m.ToBytes(), uint8(2))
	}
	seed(dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))
	seed(append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover)}, pxeUEFI...)...)
	seed(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.0.0.150"))))
	seed(dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover), dhcpv4.WithRelay(net.ParseIP("10.1.0.1")))
	seed(dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover), dhcpv4.WithUserClass("iPXE", false), dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)))
	seed(dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(net.ParseIP("10.0.0.7")))
	seed(dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.0.0.100"))))
	seed(dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(net.ParseIP("10.0.0.100")))
	seed(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.1.0.12"))),
		dhcpv4.WithRelay(net.ParseIP("10.1.0.1")), dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{0xff, 1})))
	f.Add([]byte{}, uint8(0))
	f.Add([]byte{1, 1, 6, 0}, uint8(2))

	srv, err := New(context.Background(), Config{
		Subnets:     testSubnets(),
		BootURL:     func(ip netip.Addr) string { return "http://" + ip.String() + "/boot.ipxe" },
		HTTPBootURL: func(ip netip.Addr, file string) string { return "http://" + ip.String() + "/boot/" + file },
		Booter:      everyone,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, pkt []byte, which uint8) {
		conn := &captureConn{}
		l := Listener{Conn: conn, Interface: "fuzz", ServerIP: serverIP, Prefix: netip.MustParsePrefix("10.0.0.1/24")}
		switch which % 3 {
		case 0:
			l.Mode = ModeFull
		case 1:
			l.Mode = ModeProxy
		case 2:
			l.Mode, l.BINL = ModeProxy, true
		}
		srv.handle(context.Background(), l, pkt, &net.UDPAddr{IP: net.IPv4zero, Port: 68})
		checkPools(t, srv)
		req, reqErr := dhcpv4.FromBytes(pkt)
		for _, w := range conn.writes {
			if reqErr != nil {
				t.Fatalf("replied to an unparseable packet")
			}
			rep, err := dhcpv4.FromBytes(w)
			if err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			if rep.OpCode != dhcpv4.OpcodeBootReply || rep.TransactionID != req.TransactionID || rep.ClientHWAddr.String() != req.ClientHWAddr.String() {
				t.Fatalf("reply does not answer the request: %s", rep.Summary())
			}
			if toAddr(rep.ServerIdentifier()) != serverIP {
				t.Fatalf("reply server id %v", rep.ServerIdentifier())
			}
			yi := toAddr(rep.YourIPAddr)
			if l.Mode == ModeProxy && yi.IsValid() && !yi.IsUnspecified() {
				t.Fatalf("proxy reply hands out %v", yi)
			}
			if l.Mode == ModeFull && yi.IsValid() && !yi.IsUnspecified() {
				ok := false
				for _, s := range testSubnets() {
					ok = ok || s.Prefix.Contains(yi)
				}
				if !ok {
					t.Fatalf("address %v outside every pool", yi)
				}
			}
		}
	})
}
