package tftp

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// rawClient speaks TFTP packet by packet, to drive the server through
// what a library client never does: windows, lost packets, duplicate
// ACKs, stray packets.
type rawClient struct {
	t      *testing.T
	conn   *net.UDPConn
	server *net.UDPAddr
	peer   *net.UDPAddr // the transfer's address, learnt from its first packet
}

type packet struct {
	op      uint16
	num     uint16 // block number, or error code
	payload []byte // data, or error message, or OACK body
}

func newRawClient(t *testing.T, server string) *rawClient {
	t.Helper()
	return newRawClientAt(t, server, net.IPv4(127, 0, 0, 1))
}

// newRawClientAt is a raw client sending from ip: on Linux all of
// 127.0.0.0/8 is loopback, so 127.0.0.2, 127.0.0.3, ... are distinct
// sources to the server.
func newRawClientAt(t *testing.T, server string, ip net.IP) *rawClient {
	t.Helper()
	sa, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		t.Fatal(err)
	}
	return &rawClient{t: t, conn: listenAt(t, ip), server: sa}
}

// listenAt opens a UDP socket on ip, closed when the test ends.
func listenAt(t *testing.T, ip net.IP) *net.UDPConn {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (c *rawClient) send(to *net.UDPAddr, p []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDP(p, to); err != nil {
		c.t.Fatal(err)
	}
}

// request sends an RRQ (or another opcode) with options as name, value pairs.
func (c *rawClient) request(op uint16, file, mode string, opts ...string) {
	c.t.Helper()
	c.send(c.server, requestPacket(op, file, mode, opts...))
}

// requestPacket is an RRQ (or another opcode) with options as name, value
// pairs.
func requestPacket(op uint16, file, mode string, opts ...string) []byte {
	p := binary.BigEndian.AppendUint16(nil, op)
	for _, s := range append([]string{file, mode}, opts...) {
		p = append(append(p, s...), 0)
	}
	return p
}

func (c *rawClient) ack(block uint16) {
	c.t.Helper()
	c.send(c.peer, binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, opACK), block))
}

// recv returns the next packet, or nil when none comes within wait.
func (c *rawClient) recv(wait time.Duration) *packet {
	c.t.Helper()
	buf := make([]byte, 70000)
	c.conn.SetReadDeadline(time.Now().Add(wait))
	n, from, err := c.conn.ReadFromUDP(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		c.t.Fatal(err)
	}
	if n < 4 {
		c.t.Fatalf("short packet of %d bytes", n)
	}
	if c.peer == nil {
		c.peer = from
	} else if from.Port != c.peer.Port {
		c.t.Fatalf("packet from port %d, the transfer is on %d", from.Port, c.peer.Port)
	}
	return &packet{op: binary.BigEndian.Uint16(buf), num: binary.BigEndian.Uint16(buf[2:]), payload: bytes.Clone(buf[4:n])}
}

func (c *rawClient) must(wait time.Duration) *packet {
	c.t.Helper()
	p := c.recv(wait)
	if p == nil {
		c.t.Fatalf("no packet within %s", wait)
	}
	return p
}

// oack parses an OACK's options.
func oackOptions(t *testing.T, p *packet) map[string]string {
	t.Helper()
	if p.op != opOACK {
		t.Fatalf("got opcode %d (%q), want OACK", p.op, p.payload)
	}
	body := append(binary.BigEndian.AppendUint16(nil, p.num), p.payload...)
	fields := strings.Split(strings.TrimSuffix(string(body), "\x00"), "\x00")
	if len(fields)%2 != 0 {
		t.Fatalf("OACK %q", body)
	}
	m := map[string]string{}
	for i := 0; i < len(fields); i += 2 {
		m[fields[i]] = fields[i+1]
	}
	return m
}

// windowed downloads with the windowsize option, acknowledging each full
// window; lose, when set, says which blocks (1-based, 64-bit count) to
// treat as lost the first time they arrive: the client then acknowledges
// the last block it has in order, as RFC 7440 says.
func windowed(t *testing.T, c *rawClient, size, blksize, window int, lose func(k int) bool) []byte {
	t.Helper()
	var got []byte
	k := 0 // blocks received in order
	lost := map[int]bool{}
	inWindow := 0
	for {
		p := c.must(3 * time.Second)
		if p.op != opDATA {
			t.Fatalf("got opcode %d (%q) after %d blocks, want DATA", p.op, p.payload, k)
		}
		if p.num != uint16(k+1) {
			continue // past a gap: dropped, as the client waits for the resend
		}
		if lose != nil && lose(k+1) && !lost[k+1] {
			lost[k+1] = true
			c.ack(uint16(k)) // "I have everything up to k": resend from k+1
			inWindow = 0
			continue
		}
		k++
		got = append(got, p.payload...)
		inWindow++
		last := len(p.payload) < blksize
		if last || inWindow == window {
			c.ack(uint16(k))
			inWindow = 0
		}
		if last {
			if len(got) != size {
				t.Fatalf("received %d bytes, want %d", len(got), size)
			}
			return got
		}
	}
}

func TestWindowSize(t *testing.T) {
	f := newFixture(t)
	c := newRawClient(t, f.addr)
	// As OVMF asks.
	c.request(opRRQ, "ipxe.efi", "octet", "tsize", "0", "blksize", "1468", "windowsize", "4")
	opts := oackOptions(t, c.must(3*time.Second))
	if opts["tsize"] != "300000" || opts["blksize"] != "1468" || opts["windowsize"] != "4" {
		t.Fatalf("OACK %v", opts)
	}
	c.ack(0)
	// Every 7th block is lost once, some of them mid-window.
	got := windowed(t, c, len(f.content), 1468, 4, func(k int) bool { return k%7 == 0 })
	if !bytes.Equal(got, f.content) {
		t.Fatal("content differs")
	}
	waitCount(t, f, "sent", 1)
	if n := testutil.ToFloat64(f.srv.retransmits); n < 20 {
		t.Errorf("retransmits counted: %v, want the blocks resent after each loss", n)
	}
}

// Block numbers roll over to 0 after 65535, and ACKs are matched across
// the roll-over.
func TestBlockNumberRollover(t *testing.T) {
	f := newFixture(t)
	content := make([]byte, 70_000*8+3)
	rand.Read(content)
	if err := os.WriteFile(filepath.Join(f.root, "long"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	c := newRawClient(t, f.addr)
	c.request(opRRQ, "long", "octet", "blksize", "8", "windowsize", "64")
	opts := oackOptions(t, c.must(3*time.Second))
	if opts["blksize"] != "8" || opts["windowsize"] != "64" {
		t.Fatalf("OACK %v", opts)
	}
	c.ack(0)
	// windowed compares block numbers modulo 65536; losses on both sides
	// of the roll-over.
	got := windowed(t, c, len(content), 8, 64, func(k int) bool { return k == 65530 || k == 65536 || k == 65600 })
	if !bytes.Equal(got, content) {
		t.Fatal("content differs")
	}
	waitCount(t, f, "sent", 1)
}

// A duplicate ACK does not make the server send again (the Sorcerer's
// Apprentice bug); only a timeout does.
func TestDuplicateACKAndTimeout(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Timeout = 300 * time.Millisecond; c.Retries = 2 })
	c := newRawClient(t, f.addr)
	c.request(opRRQ, "ipxe.efi", "octet")
	if p := c.must(3 * time.Second); p.op != opDATA || p.num != 1 || len(p.payload) != 512 {
		t.Fatalf("first packet: op %d block %d, %d bytes", p.op, p.num, len(p.payload))
	}
	c.ack(1)
	c.ack(1)
	if p := c.must(3 * time.Second); p.op != opDATA || p.num != 2 {
		t.Fatalf("after ACK 1: op %d block %d", p.op, p.num)
	}
	// The duplicate brought nothing; the same block comes again only after
	// the timeout, twice (Retries), then the server gives up.
	for i := range 2 {
		p := c.must(3 * time.Second)
		if p.op != opDATA || p.num != 2 {
			t.Fatalf("packet %d after ACK 1: op %d block %d, want block 2 resent on timeout", i, p.op, p.num)
		}
	}
	p := c.must(3 * time.Second)
	if p.op != opERROR || !strings.Contains(string(p.payload), "timeout") {
		t.Fatalf("after the retries: op %d %q, want a timeout error", p.op, p.payload)
	}
	waitCount(t, f, "failed", 1)
}

// UEFI firmware takes the size from the OACK and ends with error 8.
func TestSizeProbe(t *testing.T) {
	f := newFixture(t)
	c := newRawClient(t, f.addr)
	c.request(opRRQ, "ipxe.efi", "octet", "tsize", "0")
	if opts := oackOptions(t, c.must(3*time.Second)); opts["tsize"] != "300000" {
		t.Fatalf("OACK %v", opts)
	}
	c.send(c.peer, appendError(nil, errOptionRefuse, "size known"))
	waitCount(t, f, "size-probe", 1)
}

func TestNetascii(t *testing.T) {
	f := newFixture(t)
	if err := os.WriteFile(filepath.Join(f.root, "text"), []byte("a\nb\rc\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newRawClient(t, f.addr)
	c.request(opRRQ, "text", "NetASCII")
	p := c.must(3 * time.Second)
	if p.op != opDATA || string(p.payload) != "a\r\nb\r\x00c\r\x00\r\n" {
		t.Fatalf("got op %d %q", p.op, p.payload)
	}
	c.ack(1)
	waitCount(t, f, "sent", 1)
}

func TestOptionsAndRefusals(t *testing.T) {
	f := newFixture(t)

	// Out-of-range and unknown options are left out of the OACK; a
	// timeout within the bound is echoed (beyond it: see
	// TestTimeoutOptionBounded).
	c := newRawClient(t, f.addr)
	c.request(opRRQ, "sub/small", "octet", "blksize", "4", "timeout", "4", "colour", "blue", "windowsize", "0")
	if opts := oackOptions(t, c.must(3*time.Second)); len(opts) != 1 || opts["timeout"] != "4" {
		t.Fatalf("OACK %v, want timeout only", opts)
	}
	c.ack(0)
	if p := c.must(3 * time.Second); p.op != opDATA || string(p.payload) != "small" {
		t.Fatalf("got op %d %q", p.op, p.payload)
	}
	c.ack(1)

	// Bigger windows are cut down to what the server allows.
	c = newRawClient(t, f.addr)
	c.request(opRRQ, "sub/small", "octet", "windowsize", "1000")
	if opts := oackOptions(t, c.must(3*time.Second)); opts["windowsize"] != "64" {
		t.Fatalf("OACK %v, want windowsize 64", opts)
	}

	for _, tc := range []struct {
		op         uint16
		file, mode string
		code       uint16
	}{
		{opWRQ, "new", "octet", errAccessDenied},
		{opRRQ, "ipxe.efi", "mail", errIllegalOp},
		{opRRQ, "nope", "octet", errNotFound},
		{opRRQ, "../x", "octet", errAccessDenied},
	} {
		c := newRawClient(t, f.addr)
		c.request(tc.op, tc.file, tc.mode)
		p := c.must(3 * time.Second)
		if p.op != opERROR || p.num != tc.code {
			t.Errorf("op %d %q %q: got op %d code %d %q, want error %d", tc.op, tc.file, tc.mode, p.op, p.num, p.payload, tc.code)
		}
	}

	// Stray packets on the server's port are dropped without an answer,
	// and the server goes on.
	c = newRawClient(t, f.addr)
	c.send(c.server, []byte{0, opACK, 0, 1})
	c.send(c.server, []byte{0xff})
	c.send(c.server, []byte{0, opRRQ, 'x'}) // no NUL: malformed
	if p := c.must(3 * time.Second); p.op != opERROR || p.num != errIllegalOp {
		t.Errorf("malformed request: op %d code %d", p.op, p.num)
	}
	if p := c.recv(200 * time.Millisecond); p != nil {
		t.Errorf("answer to a stray packet: op %d %q", p.op, p.payload)
	}
	if _, err := fetch(t, f.addr, "sub/small", 0); err != nil {
		t.Errorf("after stray packets: %v", err)
	}
}

// Stopping the server ends a stalled transfer with an error to its client.
func TestShutdownEndsTransfers(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Timeout = 2 * time.Second })
	c := newRawClient(t, f.addr)
	c.request(opRRQ, "ipxe.efi", "octet")
	c.must(3 * time.Second)
	f.stop()
	for range 10 {
		p := c.must(5 * time.Second)
		if p.op == opERROR {
			if !strings.Contains(string(p.payload), "shutting down") {
				t.Errorf("error %q", p.payload)
			}
			return
		}
	}
	t.Fatal("no error from the stopping server")
}

// waitCount waits up to 5s for want transfers to be counted with result.
func waitCount(t *testing.T, f *fixture, result string, want float64) {
	t.Helper()
	count := func() float64 { return testutil.ToFloat64(f.srv.transfers.WithLabelValues(result)) }
	waitFor(5*time.Second, func() bool { return count() >= want })
	if n := count(); n != want {
		t.Errorf("%s transfers counted: %v, want %v (waited 5s)", result, n, want)
	}
}

func TestBlockOf(t *testing.T) {
	tr := newTransfer(1<<30, 512, 4)
	tr.sent, tr.acked = 70_000, 69_990
	for b, want := range map[uint16]uint64{
		uint16(70_000 % 65536): 70_000,
		uint16(69_995 % 65536): 69_995,
		uint16(65_535):         65_535, // before the roll-over
		uint16(0):              65_536,
	} {
		if got, ok := tr.blockOf(b); !ok || got != want {
			t.Errorf("blockOf(%d) = %d, %v; want %d", b, got, ok, want)
		}
	}
	if tr.ack(uint16(69_990%65536)) || tr.ack(uint16(69_000%65536)) {
		t.Error("a stale ACK moved the transfer")
	}
	if !tr.ack(uint16(69_995%65536)) || tr.acked != 69_995 {
		t.Errorf("ACK 69995: acked %d", tr.acked)
	}
	short := newTransfer(100, 512, 1)
	short.sent = 1
	if _, ok := short.blockOf(5); ok {
		t.Error("blockOf found a block never sent")
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"\x00\x01ipxe.efi\x00octet\x00", "\x00\x01a\x00octet\x00blksize\x001468\x00tsize\x000\x00",
		"\x00\x02x\x00netascii\x00", "\x00\x01\x00\x00", "\x00\x01a\x00b\x00c\x00", "\x00\x03\x00\x01",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := parseRequest(p)
		if err != nil {
			return
		}
		if r.op != opRRQ && r.op != opWRQ || r.filename == "" || strings.ContainsRune(r.filename, 0) {
			t.Fatalf("parsed %q as %+v", p, r)
		}
		if len(r.order) != len(r.options) {
			t.Fatalf("options %v, order %v", r.options, r.order)
		}
		for name := range r.options {
			if name != strings.ToLower(name) || name == "" {
				t.Fatalf("option name %q", name)
			}
		}
	})
}

func TestSpinnerAdapts(t *testing.T) {
	var s spinner
	for range 5 {
		s.slept(20 * time.Microsecond) // woken soon: a spin would have caught it
	}
	if s.d != spinMax {
		t.Fatalf("after short sleeps the spin is %s, want %s", s.d, spinMax)
	}
	for range 4 {
		s.slept(5 * time.Millisecond) // the spin was wasted
	}
	if s.d != 0 {
		t.Fatalf("after long sleeps the spin is %s, want none", s.d)
	}
	s.slept(time.Microsecond)
	if s.d != spinMin {
		t.Fatalf("a short sleep after none: spin %s, want %s", s.d, spinMin)
	}
}
