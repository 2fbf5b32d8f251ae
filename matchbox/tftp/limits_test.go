package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"matchbox.dev/matchbox/internal/logbuf"
	"matchbox.dev/matchbox/recorder"
)

// Every result a request ends with, for totals.
var allResults = []string{"sent", "size-probe", "not-found", "refused", "busy", "busy-source", "rate-limited", "failed", "unanswered", "evicted"}

// totalTransfers is how many requests the server has accounted for.
func totalTransfers(f *fixture) float64 {
	var n float64
	for _, r := range allResults {
		n += testutil.ToFloat64(f.srv.transfers.WithLabelValues(r))
	}
	return n
}

// waitFor polls cond every 10ms for up to wait.
func waitFor(wait time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// source is the i-th distinct loopback source address, 127.0.0.2 on.
func source(i int) net.IP { return net.IPv4(127, 0, byte((i+2)>>8), byte(i+2)) }

// readPacket reads one packet on conn, nil when none comes within wait.
func readPacket(t *testing.T, conn *net.UDPConn, wait time.Duration) (*packet, *net.UDPAddr) {
	t.Helper()
	buf := make([]byte, 70000)
	conn.SetReadDeadline(time.Now().Add(wait))
	n, from, err := conn.ReadFromUDP(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, nil
		}
		t.Fatal(err)
	}
	if n < 4 {
		t.Fatalf("short packet of %d bytes", n)
	}
	return &packet{op: binary.BigEndian.Uint16(buf), num: binary.BigEndian.Uint16(buf[2:]), payload: bytes.Clone(buf[4:n])}, from
}

// wire is what a datagram of n bytes takes on the wire above the link
// layer: IPv4 and UDP headers.
func wire(n int) int64 { return int64(n) + 28 }

// 128 requests from 128 addresses that never answer, as forged source
// addresses never do, each asking for the longest timeout, take every
// slot (128 is the default cap). They must not lock the other machines
// out: the timeout they ask for is not granted, and a request that finds
// no free slot takes the place of the oldest transfer never answered.
func TestSpoofedSourcesCannotLockOut(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Timeout = 2 * time.Second })
	server, err := net.ResolveUDPAddr("udp4", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	const n = 128
	rrq := requestPacket(opRRQ, "ipxe.efi", "octet", "blksize", "1468", "timeout", "255")
	conns := make([]*net.UDPConn, n)
	for i := range conns {
		conns[i] = listenAt(t, source(i))
		if _, err := conns[i].WriteToUDP(rrq, server); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d requests, %d bytes on the wire", n, n*wire(len(rrq)))
	granted := 0
	for i, c := range conns {
		p, _ := readPacket(t, c, 5*time.Second)
		if p == nil {
			t.Fatalf("source %s: no answer", source(i))
		}
		if _, ok := oackOptions(t, p)["timeout"]; ok {
			granted++
		}
	}
	if granted > 0 {
		t.Errorf("%d of %d OACKs grant timeout=255", granted, n)
	}
	if len(f.srv.slots) != n {
		t.Fatalf("%d slots taken, want all %d", len(f.srv.slots), n)
	}

	// A machine that answers is served now, not when the forged transfers
	// time out.
	c := newRawClient(t, f.addr)
	c.request(opRRQ, "sub/small", "octet")
	p := c.must(5 * time.Second)
	if p.op != opDATA || string(p.payload) != "small" {
		t.Fatalf("with every slot held by unanswered transfers: got op %d %q, want the file", p.op, p.payload)
	}
	c.ack(1)
	waitCount(t, f, "sent", 1)
	if n := testutil.ToFloat64(f.srv.transfers.WithLabelValues("evicted")); n < 1 {
		t.Errorf("evicted transfers counted: %v", n)
	}
	// The forged transfers end on their own, after one retransmission.
	if !waitFor(15*time.Second, func() bool { return len(f.srv.slots) == 0 }) {
		t.Errorf("%d slots still taken", len(f.srv.slots))
	}
}

// The timeout option is granted up to a bound and then echoed exactly;
// beyond it, it is left out of the OACK and the server's own applies. A
// transfer never answered gets one retransmission; one the client has
// answered gets Retries.
func TestTimeoutOptionBounded(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Timeout = 300 * time.Millisecond; c.Retries = 5 })
	c := newRawClient(t, f.addr)
	c.request(opRRQ, "sub/small", "octet", "timeout", "2")
	if opts := oackOptions(t, c.must(3*time.Second)); opts["timeout"] != "2" {
		t.Fatalf("OACK %v, want timeout 2 granted", opts)
	}
	c.ack(0)
	if p := c.must(3 * time.Second); p.op != opDATA || string(p.payload) != "small" {
		t.Fatalf("got op %d %q", p.op, p.payload)
	}
	c.ack(1)
	waitCount(t, f, "sent", 1)

	// Not answered at all: the OACK twice, then nothing (an ERROR to an
	// address that never answered would be one more packet to whoever
	// owns it).
	c = newRawClient(t, f.addr)
	c.request(opRRQ, "sub/small", "octet", "timeout", "255", "tsize", "0")
	opts := oackOptions(t, c.must(3*time.Second))
	if _, ok := opts["timeout"]; ok || opts["tsize"] != "5" {
		t.Fatalf("OACK %v, want tsize only", opts)
	}
	if !waitFor(10*time.Second, func() bool { return totalTransfers(f) == 2 }) {
		t.Fatalf("the unanswered transfer did not end (results counted: %v)", totalTransfers(f))
	}
	var ops []uint16
	for p := c.recv(100 * time.Millisecond); p != nil; p = c.recv(100 * time.Millisecond) {
		ops = append(ops, p.op)
		if len(ops) > 10 {
			break
		}
	}
	if len(ops) != 1 || ops[0] != opOACK {
		t.Errorf("after the first OACK, the unanswered client got %v; want one OACK again", ops)
	}
	if n := testutil.ToFloat64(f.srv.transfers.WithLabelValues("unanswered")); n != 1 {
		t.Errorf("unanswered transfers counted: %v", n)
	}

	// Answered once: the last packet is sent 1+Retries times, then an
	// ERROR.
	c = newRawClient(t, f.addr)
	c.request(opRRQ, "ipxe.efi", "octet")
	if p := c.must(3 * time.Second); p.op != opDATA || p.num != 1 {
		t.Fatalf("got op %d block %d", p.op, p.num)
	}
	c.ack(1)
	waitCount(t, f, "failed", 1)
	var data, errs int
	for p := c.recv(100 * time.Millisecond); p != nil; p = c.recv(100 * time.Millisecond) {
		switch {
		case p.op == opDATA && p.num == 2:
			data++
		case p.op == opERROR:
			errs++
		default:
			t.Errorf("got op %d block %d", p.op, p.num)
		}
		if data+errs > 20 {
			break
		}
	}
	if data != 6 || errs != 1 {
		t.Errorf("a stalled client got block 2 %d times and %d ERRORs, want 6 and 1", data, errs)
	}
}

// A FIFO (or a socket, or a directory) under the root or pinned is refused
// at once, without taking a slot or blocking: opening a FIFO for reading
// waits for a writer, for ever.
func TestNonRegularFilesRefused(t *testing.T) {
	pinned := filepath.Join(t.TempDir(), "boot.fifo")
	f := newFixture(t, func(c *Config) {
		c.MaxTransfers = 2
		c.Pinned = map[string]string{"pinned.efi": pinned}
	})
	fifos := []string{pinned, filepath.Join(f.root, "fifo"), filepath.Join(f.root, "sub", "fifo.efi")}
	for _, p := range fifos {
		if err := syscall.Mkfifo(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A reader left waiting in open (as it would be if the server blocked)
	// is let go when the test ends, so that the server can stop.
	t.Cleanup(func() {
		for _, p := range fifos {
			if w, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
		}
	})
	ln, err := net.Listen("unix", filepath.Join(f.root, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	// More requests than slots: none may hold one.
	for _, name := range []string{"fifo", "sub/fifo.efi", "pinned.efi", "fifo", "sock", "sub", "fifo"} {
		c := newRawClient(t, f.addr)
		c.request(opRRQ, name, "octet")
		p := c.must(3 * time.Second)
		if p.op != opERROR || p.num != errAccessDenied {
			t.Errorf("%s: got op %d code %d %q, want an access violation", name, p.op, p.num, p.payload)
		}
	}
	got, err := fetch(t, f.addr, "ipxe.efi", 1468)
	if err != nil {
		t.Fatalf("a regular file after the refusals: %v", err)
	}
	if !bytes.Equal(got, f.content) {
		t.Fatal("content differs")
	}
	waitCount(t, f, "sent", 1)
	if n := len(f.srv.slots); n != 0 {
		t.Errorf("%d slots taken after every transfer ended", n)
	}
}

// One address holds at most MaxPerSource transfers (default 8); its
// requests beyond are refused with an ERROR from the server's port, and
// the other addresses are served.
func TestPerSourceCap(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Timeout = 500 * time.Millisecond })
	server, err := net.ResolveUDPAddr("udp4", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := listenAt(t, source(0))
	const n = 20
	rrq := requestPacket(opRRQ, "ipxe.efi", "octet", "blksize", "1468")
	for range n {
		if _, err := conn.WriteToUDP(rrq, server); err != nil {
			t.Fatal(err)
		}
	}
	// Each request has one first answer: an OACK from its transfer's own
	// port (sent again later from the same port), or an ERROR from the
	// server's.
	admitted := map[int]bool{}
	refused := 0
	for i := 0; len(admitted)+refused < n && i < 10*n; i++ {
		p, from := readPacket(t, conn, 3*time.Second)
		switch {
		case p == nil:
			t.Fatalf("after %d transfers and %d refusals, no more answers", len(admitted), refused)
		case from.Port == server.Port && p.op == opERROR:
			refused++
			if !strings.Contains(string(p.payload), "this address") {
				t.Errorf("refusal %q", p.payload)
			}
		case p.op == opOACK:
			admitted[from.Port] = true
		default:
			t.Fatalf("got op %d from port %d", p.op, from.Port)
		}
	}
	if len(admitted) != 8 || refused != n-8 {
		t.Errorf("%d requests from one address: %d transfers, %d refused; want 8 and %d", n, len(admitted), refused, n-8)
	}
	if got := testutil.ToFloat64(f.srv.transfers.WithLabelValues("busy-source")); got != n-8 {
		t.Errorf("busy-source counted: %v", got)
	}
	if _, err := fetch(t, f.addr, "sub/small", 0); err != nil {
		t.Errorf("another address: %v", err)
	}
}

// A client that never answers, as a forged source address does not (the
// answers go to whoever owns the address), gets few bytes for each byte
// it sends: counted here on the wire, IPv4 and UDP headers included.
func TestAmplification(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Timeout = 200 * time.Millisecond })
	server, err := net.ResolveUDPAddr("udp4", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := listenAt(t, source(0))
	var received, dataPackets atomic.Int64
	transfers := map[int]bool{} // ports that sent DATA
	var done atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 70000)
		for range 1_000_000 {
			conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				// All that was sent is queued by the time the server has
				// accounted for every request.
				if done.Load() {
					return
				}
				continue
			}
			received.Add(wire(n))
			if n >= 2 && binary.BigEndian.Uint16(buf) == opDATA {
				dataPackets.Add(1)
				transfers[from.Port] = true
			}
		}
	}()
	// No options: each transfer starts with a 516-byte DATA packet.
	const n = 40
	rrq := requestPacket(opRRQ, "ipxe.efi", "octet")
	for range n {
		if _, err := conn.WriteToUDP(rrq, server); err != nil {
			t.Fatal(err)
		}
	}
	sent := n * wire(len(rrq))
	if !waitFor(30*time.Second, func() bool { return totalTransfers(f) == n }) {
		t.Fatalf("%v of %d requests accounted for", totalTransfers(f), n)
	}
	done.Store(true)
	wg.Wait()
	ratio := float64(received.Load()) / float64(sent)
	t.Logf("%d requests (%d bytes): %d bytes back, %.1f times as many; %d DATA packets in %d transfers",
		n, sent, received.Load(), ratio, dataPackets.Load(), len(transfers))
	if ratio > 10 {
		t.Errorf("a client that never answers gets %.1f bytes for each byte it sends", ratio)
	}
	if d := dataPackets.Load(); d > 2*int64(len(transfers)) {
		t.Errorf("%d DATA packets in %d unanswered transfers: more than one retransmission each", d, len(transfers))
	}
}

// A refused name is logged quoted and cut: a client chooses it.
func TestRefusedNameQuoted(t *testing.T) {
	var logs logbuf.Buffer
	f := newFixture(t, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	long := strings.Repeat("a", 240) + "/" + strings.Repeat("a", 240) + ".efi" // name components up to 255 bytes
	c := newRawClient(t, f.addr)
	c.request(opRRQ, long, "octet")
	if p := c.must(3 * time.Second); p.op != opERROR || p.num != errNotFound {
		t.Fatalf("got op %d code %d", p.op, p.num)
	}
	c = newRawClient(t, f.addr)
	c.request(opRRQ, "../"+long, "octet")
	if p := c.must(3 * time.Second); p.op != opERROR || p.num != errAccessDenied {
		t.Fatalf("got op %d code %d", p.op, p.num)
	}
	f.stop()
	lines := logs.Lines(`msg="tftp: refused"`)
	if len(lines) != 2 {
		t.Fatalf("refusals logged:\n%s", logs.String())
	}
	for _, line := range lines {
		if strings.Contains(line, strings.Repeat("a", 200)) || !strings.Contains(line, " bytes)") {
			t.Errorf("the name is logged whole (%d bytes): %.300s", len(line), line)
		}
	}
}

// An address whose transfers go unanswered spends its allowance and is
// then refused; one whose transfers are answered keeps it.
func TestUnansweredRate(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Timeout = 200 * time.Millisecond; c.MaxPerSource = 2; c.UnansweredRate = 0.001 })
	c := newRawClientAt(t, f.addr, source(0))
	for range 2 {
		c.request(opRRQ, "sub/small", "octet")
	}
	if !waitFor(10*time.Second, func() bool { return testutil.ToFloat64(f.srv.transfers.WithLabelValues("unanswered")) == 2 }) {
		t.Fatalf("unanswered transfers counted: %v", testutil.ToFloat64(f.srv.transfers.WithLabelValues("unanswered")))
	}
	server, err := net.ResolveUDPAddr("udp4", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	for p, from := readPacket(t, c.conn, 100*time.Millisecond); p != nil; p, from = readPacket(t, c.conn, 100*time.Millisecond) {
		if p.op != opDATA {
			t.Fatalf("before the allowance was spent: op %d from port %d %q", p.op, from.Port, p.payload)
		}
	}
	c.request(opRRQ, "sub/small", "octet")
	p, from := readPacket(t, c.conn, 3*time.Second)
	if p == nil || p.op != opERROR || from.Port != server.Port || !strings.Contains(string(p.payload), "this address") {
		t.Fatalf("with the allowance spent: got %+v from %v, want a refusal", p, from)
	}
	waitCount(t, f, "rate-limited", 1)

	// 127.0.0.1 answers: each transfer gives its token back.
	for i := range 5 {
		if _, err := fetch(t, f.addr, "sub/small", 0); err != nil {
			t.Fatalf("fetch %d: %v", i, err)
		}
		waitCount(t, f, "sent", float64(i+1))
	}
}

// Eviction takes only transfers never answered: with every slot held by
// clients that answered and then stalled, a new request waits and is
// refused as busy, and the stalled transfers go on.
func TestAnsweredTransfersKeepTheirSlots(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxTransfers = 2; c.Timeout = time.Second; c.Retries = 5 })
	var stalled []*rawClient
	for i := range 2 {
		c := newRawClientAt(t, f.addr, source(i))
		c.request(opRRQ, "ipxe.efi", "octet")
		if p := c.must(3 * time.Second); p.op != opDATA || p.num != 1 {
			t.Fatalf("got op %d block %d", p.op, p.num)
		}
		c.ack(1)
		if p := c.must(3 * time.Second); p.op != opDATA || p.num != 2 {
			t.Fatalf("got op %d block %d", p.op, p.num)
		}
		stalled = append(stalled, c)
	}
	c := newRawClientAt(t, f.addr, source(2))
	c.request(opRRQ, "sub/small", "octet")
	if p := c.must(5 * time.Second); p.op != opERROR || !strings.Contains(string(p.payload), "busy") {
		t.Fatalf("with every slot answered: got op %d %q, want busy", p.op, p.payload)
	}
	for i, c := range stalled {
		c.ack(2)
		for {
			p := c.must(3 * time.Second)
			if p.op != opDATA {
				t.Fatalf("stalled client %d: op %d %q", i, p.op, p.payload)
			}
			if p.num == 3 {
				break
			}
		}
	}
	if n := testutil.ToFloat64(f.srv.transfers.WithLabelValues("evicted")); n != 0 {
		t.Errorf("evicted: %v", n)
	}
}

// What firmware does keeps working within tight bounds: UEFI's size probe
// (ended with error 8) followed by the download in windows, again and
// again from one address; and a request sent twice (firmware resends it
// when the first answer is slow), whose second transfer the client ends
// with error 5 as RFC 1350 says.
func TestFirmwareFlowsWithinLimits(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxPerSource = 2; c.UnansweredRate = 0.001 })
	for i := range 6 {
		c := newRawClient(t, f.addr)
		c.request(opRRQ, "ipxe.efi", "octet", "tsize", "0", "blksize", "1468", "windowsize", "4")
		if opts := oackOptions(t, c.must(3*time.Second)); opts["tsize"] != "300000" {
			t.Fatalf("probe %d: OACK %v", i, opts)
		}
		c.send(c.peer, appendError(nil, errOptionRefuse, "size known"))
		c = newRawClient(t, f.addr)
		c.request(opRRQ, "ipxe.efi", "octet", "blksize", "1468", "windowsize", "4")
		oackOptions(t, c.must(3*time.Second))
		c.ack(0)
		if got := windowed(t, c, len(f.content), 1468, 4, nil); !bytes.Equal(got, f.content) {
			t.Fatalf("download %d: content differs", i)
		}
		waitCount(t, f, "sent", float64(i+1))
		waitCount(t, f, "size-probe", float64(i+1))
	}

	server, err := net.ResolveUDPAddr("udp4", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := listenAt(t, net.IPv4(127, 0, 0, 1))
	rrq := requestPacket(opRRQ, "sub/small", "octet")
	for range 2 {
		if _, err := conn.WriteToUDP(rrq, server); err != nil {
			t.Fatal(err)
		}
	}
	var peer *net.UDPAddr
	for answers := 0; answers < 2; answers++ {
		p, from := readPacket(t, conn, 3*time.Second)
		if p == nil || p.op != opDATA || string(p.payload) != "small" {
			t.Fatalf("answer %d: %+v", answers, p)
		}
		if peer == nil {
			peer = from
			conn.WriteToUDP(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, opACK), 1), from)
		} else {
			conn.WriteToUDP(appendError(nil, 5, "unknown transfer ID"), from)
		}
	}
	waitCount(t, f, "sent", 7)
	waitCount(t, f, "failed", 1) // the second, ended by the client
}

// The bookkeeping of addresses forgets those that hold nothing and have
// their whole allowance: answered transfers at once, unanswered ones once
// the allowance has refilled.
func TestSourceLimitsForget(t *testing.T) {
	l := newSourceLimits(2, 1)
	now := time.Now()
	for i := range 5000 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		if r := l.admit(a, now); r != "" {
			t.Fatalf("%s: %s", a, r)
		}
		l.release(a, i%2 == 0, now)
	}
	if n := len(l.m); n != 2500 {
		t.Fatalf("%d addresses remembered, want the 2500 left unanswered", n)
	}
	a := netip.MustParseAddr("10.1.0.1")
	l.admit(a, now)
	if r := l.admit(a, now); r != "" {
		t.Fatalf("second transfer: %s", r)
	}
	if r := l.admit(a, now); r != "busy-source" {
		t.Fatalf("third transfer: %q, want busy-source", r)
	}
	l.release(a, false, now)
	if r := l.admit(a, now.Add(500*time.Millisecond)); r != "rate-limited" {
		t.Fatalf("with no token: %q, want rate-limited", r)
	}
	if r := l.admit(a, now.Add(1100*time.Millisecond)); r != "" {
		t.Fatalf("a second later: %q", r)
	}

	// A stream of new addresses, each leaving one transfer unanswered, a
	// thousand a second: an address refills in 2s, so some 2000 are live
	// at any time, and the sweeps keep the map within twice that.
	l = newSourceLimits(2, 1)
	most := 0
	for i := range 100_000 {
		at := now.Add(time.Duration(i) * time.Millisecond)
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.admit(a, at)
		l.release(a, false, at)
		most = max(most, len(l.m))
	}
	if most > 2*2000+minSweep {
		t.Errorf("up to %d addresses remembered", most)
	}
}

// Refusals over the bounds are not recorded on the machine whose address
// sent the request (a flood from a forged address would fill its
// history); a refusal of the request itself is.
func TestBoundRefusalsNotRecorded(t *testing.T) {
	var logs logbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	rec := recorder.New(nil, log)
	rec.Learn(netip.MustParseAddr("127.0.0.1"), "52:54:00:00:00:01")
	f := newFixture(t, func(c *Config) { c.MaxPerSource = 1; c.Recorder = rec })
	held := newRawClient(t, f.addr)
	held.request(opRRQ, "ipxe.efi", "octet")
	held.must(3 * time.Second)
	for _, name := range []string{"sub/small", "nope.efi"} {
		c := newRawClient(t, f.addr)
		c.request(opRRQ, name, "octet")
		if p := c.must(3 * time.Second); p.op != opERROR {
			t.Fatalf("%s: op %d", name, p.op)
		}
	}
	waitCount(t, f, "busy-source", 1)
	waitCount(t, f, "not-found", 1)
	if lines := logs.Lines("machine step failed"); len(lines) != 1 || !strings.Contains(lines[0], "nope.efi") {
		t.Errorf("machine events of failures: %q, want the not-found one only", lines)
	}
}

// Whatever options a request carries, the transfer's timeout stays within
// the bound, and the OACK grants timeout as the client wrote it or not at
// all (RFC 2349).
func FuzzNegotiate(f *testing.F) {
	for _, s := range []string{
		"\x00\x01a\x00octet\x00timeout\x00255\x00", "\x00\x01a\x00octet\x00timeout\x005\x00tsize\x000\x00",
		"\x00\x01a\x00octet\x00TimeOut\x00007\x00blksize\x001468\x00windowsize\x004\x00", "\x00\x01a\x00octet\x00timeout\x00-1\x00",
	} {
		f.Add([]byte(s))
	}
	srv := New(Config{})
	f.Fuzz(func(t *testing.T, p []byte) {
		req, err := parseRequest(p)
		if err != nil {
			return
		}
		tr := srv.negotiate(req, 1000, 0)
		if tr.timeout != srv.cfg.Timeout && (tr.timeout > srv.cfg.MaxClientTimeout || tr.timeout < time.Second) {
			t.Fatalf("%q: timeout %s", p, tr.timeout)
		}
		if tr.blksize < minBlockSize || tr.blksize > maxBlockSize || tr.window < 1 || tr.window > maxWindowSize {
			t.Fatalf("%q: blksize %d window %d", p, tr.blksize, tr.window)
		}
		if tr.oack == nil {
			return
		}
		fields := strings.Split(strings.TrimSuffix(string(tr.oack[2:]), "\x00"), "\x00")
		for i := 0; i+1 < len(fields); i += 2 {
			if fields[i] == "timeout" && fields[i+1] != req.options["timeout"] {
				t.Fatalf("%q: OACK timeout %q, the client asked %q", p, fields[i+1], req.options["timeout"])
			}
		}
	})
}
