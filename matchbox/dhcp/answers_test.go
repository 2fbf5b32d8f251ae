package dhcp

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus"

	"matchbox.dev/matchbox"

	"matchbox.dev/matchbox/recorder"
)

func proxyServer(t testing.TB, booter Booter) *Server {
	t.Helper()
	srv, err := New(context.Background(), Config{
		BootURL:     func(ip netip.Addr) string { return "http://" + ip.String() + "/boot.ipxe" },
		HTTPBootURL: func(ip netip.Addr, f string) string { return "http://" + ip.String() + "/boot/" + f },
		Booter:      booter,
		Recorder:    recorder.New(nil, nil),
		Registry:    prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// answer has srv answer pkt on a proxy (or 4011) listener and returns what
// it sent.
func answer(srv *Server, binl bool, pkt []byte, peer net.Addr) [][]byte {
	conn := &captureConn{}
	l := Listener{Conn: conn, Interface: "test", ServerIP: serverIP, Mode: ModeProxy, BINL: binl}
	srv.handle(context.Background(), l, pkt, peer)
	return conn.writes
}

// withXID returns pkt with another transaction id and seconds field.
func withXID(pkt []byte, xid uint32, secs uint16) []byte {
	p := bytes.Clone(pkt)
	if len(p) >= 10 {
		binary.BigEndian.PutUint32(p[4:8], xid)
		binary.BigEndian.PutUint16(p[8:10], secs)
	}
	return p
}

// checkKeptAnswer: a repeat answered from the kept answer is byte for byte
// what a server that never saw the request answers.
func checkKeptAnswer(t *testing.T, pkt []byte, binl bool, peer net.Addr) {
	t.Helper()
	warm := proxyServer(t, everyone)
	first := answer(warm, binl, pkt, peer)
	repeat := withXID(pkt, 0xdeadbeef, 7)
	hits := warm.answers.hits.Load()
	got := answer(warm, binl, repeat, peer)
	if len(first) > 0 && warm.answers.hits.Load() != hits+1 {
		t.Fatalf("the repeat was not answered from the kept answer")
	}
	want := answer(proxyServer(t, everyone), binl, repeat, peer)
	if len(got) != len(want) {
		t.Fatalf("repeat: %d replies, a fresh server sends %d (first: %d)", len(got), len(want), len(first))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("kept answer differs from a fresh one:\n got %x\nwant %x", got[i], want[i])
		}
	}
}

func TestKeptAnswersEqualFreshOnes(t *testing.T) {
	broadcast := &net.UDPAddr{IP: net.IPv4zero, Port: 68}
	relay := &net.UDPAddr{IP: net.ParseIP("10.1.0.1"), Port: 67}
	for _, tt := range []struct {
		name string
		mods []dhcpv4.Modifier
		binl bool
		peer net.Addr
	}{
		{"uefi", append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover)}, pxeUEFI...), false, broadcast},
		{"bios", []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover), dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")), dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC))}, false, broadcast},
		{"ipxe", []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover), dhcpv4.WithUserClass("iPXE", false), dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient")), dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64))}, false, broadcast},
		{"relayed", append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover), dhcpv4.WithRelay(net.ParseIP("10.1.0.1"))}, pxeUEFI...), false, relay},
		{"binl", append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest)}, pxeUEFI...), true, &net.UDPAddr{IP: net.ParseIP("10.0.0.77"), Port: 4011}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac(3))}, tt.mods...)...)
			if err != nil {
				t.Fatal(err)
			}
			pkt := m.ToBytes()
			srv := proxyServer(t, everyone)
			if n := len(answer(srv, tt.binl, pkt, tt.peer)); n != 1 {
				t.Fatalf("first request: %d replies", n)
			}
			checkKeptAnswer(t, pkt, tt.binl, tt.peer)
			// The kept answer carries the repeat's transaction id.
			rep := answer(srv, tt.binl, withXID(pkt, 0x01020304, 1), tt.peer)
			if len(rep) != 1 || binary.BigEndian.Uint32(rep[0][4:8]) != 0x01020304 {
				t.Fatalf("repeat: %x", rep)
			}
			if len(srv.answers.m) != 1 || srv.answers.hits.Load() != 1 {
				t.Errorf("%d kept answers, %d answered from them; want 1 and 1", len(srv.answers.m), srv.answers.hits.Load())
			}
		})
	}
}

// noOne boots nobody.
type noOne struct{}

func (noOne) Decide(map[string]string) matchbox.Decision {
	return matchbox.Decision{Err: fmt.Errorf("no group matches: %w", matchbox.ErrNotFound)}
}

// switchable boots according to its current setting.
type switchable struct{ b Booter }

func (s *switchable) Decide(l map[string]string) matchbox.Decision { return s.b.Decide(l) }

// After ForgetAnswers the configuration's new decision counts at once.
func TestForgetAnswers(t *testing.T) {
	b := &switchable{everyone}
	srv := proxyServer(t, b)
	m, _ := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac(4)), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover)}, pxeUEFI...)...)
	peer := &net.UDPAddr{IP: net.IPv4zero, Port: 68}
	if n := len(answer(srv, false, m.ToBytes(), peer)); n != 1 {
		t.Fatalf("booted machine: %d replies", n)
	}
	b.b = noOne{}
	srv.ForgetAnswers()
	if n := len(answer(srv, false, withXID(m.ToBytes(), 9, 9), peer)); n != 0 {
		t.Errorf("after the configuration changed and ForgetAnswers: %d replies, want none", n)
	}
}

// FuzzKeptAnswers: for any packet, a repeat answered from the kept answer
// equals a fresh server's answer.
func FuzzKeptAnswers(f *testing.F) {
	for _, mods := range [][]dhcpv4.Modifier{
		append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover)}, pxeUEFI...),
		{dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover), dhcpv4.WithUserClass("iPXE", false)},
		append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest)}, pxeUEFI...),
	} {
		m, _ := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac(1))}, mods...)...)
		f.Add(m.ToBytes(), false)
		f.Add(m.ToBytes(), true)
	}
	f.Fuzz(func(t *testing.T, pkt []byte, binl bool) {
		checkKeptAnswer(t, pkt, binl, &net.UDPAddr{IP: net.IPv4zero, Port: 68})
	})
}
