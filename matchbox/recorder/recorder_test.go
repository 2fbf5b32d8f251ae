package recorder

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/internal/logbuf"
	"matchbox.dev/matchbox/loglimit"
)

// storeFunc adapts a function to EventStore.
type storeFunc func([]matchbox.Event) error

func (f storeFunc) RecordEvents(_ context.Context, ev []matchbox.Event) (matchbox.NotRecorded, error) {
	return matchbox.NotRecorded{}, f(ev)
}

func TestRecorder(t *testing.T) {
	var mu sync.Mutex
	var stored []matchbox.Event
	r := New(storeFunc(func(ev []matchbox.Event) error {
		mu.Lock()
		defer mu.Unlock()
		stored = append(stored, ev...)
		return nil
	}), nil)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		// A retransmitted offer within the window is stored once.
		r.Record(matchbox.Event{Time: t0.Add(time.Duration(i) * time.Second), MAC: "52:54:00:00:00:01", Kind: matchbox.EventDHCPOffer, IP: "10.0.0.5"})
	}
	r.Record(matchbox.Event{Time: t0.Add(RepeatWindow + time.Second), MAC: "52:54:00:00:00:01", Kind: matchbox.EventDHCPOffer, IP: "10.0.0.5"})
	r.Record(matchbox.Event{Time: t0.Add(2 * time.Second), MAC: "52:54:00:00:00:01", Kind: matchbox.EventHTTPServed, File: "/ipxe", IP: "10.0.0.5"})
	r.Record(matchbox.Event{Time: t0, Kind: matchbox.EventHTTPServed, File: "/ipxe"}) // no MAC: logged only
	r.Flush(context.Background())
	if len(stored) != 3 {
		t.Fatalf("stored %d events, want 3: %+v", len(stored), stored)
	}
	if mac, ok := r.MACOf(netip.MustParseAddr("10.0.0.5")); !ok || mac != "52:54:00:00:00:01" {
		t.Errorf("MACOf = %q, %v", mac, ok)
	}
	r.Learn(netip.MustParseAddr("10.0.0.6"), "52:54:00:00:00:02")
	if mac, _ := r.MACOf(netip.MustParseAddr("::ffff:10.0.0.6")); mac != "52:54:00:00:00:02" {
		t.Errorf("MACOf mapped address = %q", mac)
	}
	// Run flushes on its own and once more when stopped.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx, 10*time.Millisecond); close(done) }()
	r.Record(matchbox.Event{MAC: "52:54:00:00:00:03", Kind: matchbox.EventTFTPSent, File: "ipxe.efi"})
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if last := stored[len(stored)-1]; last.MAC != "52:54:00:00:00:03" || last.Time.IsZero() {
		t.Errorf("last stored %+v", last)
	}
	if r.Dropped() != 0 {
		t.Errorf("dropped %d", r.Dropped())
	}
}

// Repeats are recognised across the rotation of the repeat tables: an
// event is suppressed for a whole RepeatWindow after it was stored, however
// the window falls against the rotations.
func TestRecorderRepeatsAcrossRotation(t *testing.T) {
	var stored []time.Time
	r := New(storeFunc(func(ev []matchbox.Event) error {
		for _, e := range ev {
			stored = append(stored, e.Time)
		}
		return nil
	}), nil)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := func(d time.Duration) {
		r.Record(matchbox.Event{Time: t0.Add(d), MAC: "52:54:00:00:00:01", Kind: matchbox.EventHTTPServed, File: "/ipxe"})
	}
	other := func(d time.Duration) {
		r.Record(matchbox.Event{Time: t0.Add(d), MAC: "52:54:00:00:00:02", Kind: matchbox.EventHTTPServed, File: "/ipxe"})
	}
	w := RepeatWindow
	other(0)        // starts the tables at t0
	ev(w * 9 / 10)  // stored
	other(w + 1)    // rotation: the event moves to the older table
	ev(w * 3 / 2)   // 0.6 windows after it was stored: suppressed
	other(2*w + 2)  // second rotation: the event's entry is dropped
	ev(w*19/10 + 1) // a full window after it was stored: stored again
	ev(w * 2)       // suppressed
	r.Flush(context.Background())
	var mine []time.Duration
	for _, s := range stored {
		mine = append(mine, s.Sub(t0))
	}
	want := []time.Duration{0, w * 9 / 10, w + 1, 2*w + 2, w*19/10 + 1}
	if len(mine) != len(want) {
		t.Fatalf("stored at %v, want %v", mine, want)
	}
	for i := range want {
		if mine[i] != want[i] {
			t.Fatalf("stored at %v, want %v", mine, want)
		}
	}
}

// At info a machine's first step, a change of what it is served, failures
// and distinct events are logged, each once; at debug every event is.
func TestRecorderLogs(t *testing.T) {
	events := func(r *Recorder) {
		const mac = "52:54:00:00:00:01"
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		at := func(d time.Duration) time.Time { return t0.Add(d * time.Second) }
		r.Record(matchbox.Event{Time: at(0), MAC: mac, Kind: matchbox.EventDHCPOffer, IP: "10.0.0.5", Group: "live", Profile: "flatcar"})
		r.Record(matchbox.Event{Time: at(1), MAC: mac, Kind: matchbox.EventDHCPAck, IP: "10.0.0.5", Group: "live", Profile: "flatcar"})
		r.Record(matchbox.Event{Time: at(2), MAC: mac, Kind: matchbox.EventTFTPSent, IP: "10.0.0.5", File: "ipxe.efi"})
		for i := range 3 {
			r.Record(matchbox.Event{Time: at(3 + time.Duration(i)), MAC: mac, Kind: matchbox.EventHTTPServed, File: "/ipxe", Group: "live", Profile: "flatcar"})
		}
		// The operator moves the machine to another group.
		for i := range 3 {
			r.Record(matchbox.Event{Time: at(20 + time.Duration(i)), MAC: mac, Kind: matchbox.EventHTTPServed, File: "/ipxe", Group: "install", Profile: "flatcar-install"})
		}
		r.Record(matchbox.Event{Time: at(30), MAC: mac, Kind: matchbox.EventAssetServed, File: "/assets/flatcar/kernel"})
		r.Record(matchbox.Event{Time: at(31), MAC: mac, Kind: matchbox.EventHTTPFailed, File: "/ignition", Group: "install", Detail: "500: missing key"})
		r.RecordDistinct(matchbox.Event{Time: at(32), MAC: mac, Kind: matchbox.EventWorkflow, Profile: "flatcar-install", Detail: "booting -> installing"})
		r.Record(matchbox.Event{Time: at(33), MAC: "52:54:00:00:00:02", Kind: matchbox.EventHTTPFailed, File: "/ipxe", Detail: "404: no group"})
		r.Record(matchbox.Event{Time: at(34), MAC: "52:54:00:00:00:02", Kind: matchbox.EventDHCPOffer, IP: "10.0.0.6"})
	}
	const total = 14

	log, buf := logbuf.NewLogger(slog.LevelInfo)
	events(New(nil, log))
	for _, tc := range []struct {
		subs []string
		want int
	}{
		{[]string{"msg=\"machine first seen\"", "mac=52:54:00:00:00:01", "event=dhcp.offer", "group=live", "profile=flatcar"}, 1},
		{[]string{"msg=\"machine selection changed\"", "event=http.served", "group=install", "profile=flatcar-install", "was_group=live", "was_profile=flatcar"}, 1},
		{[]string{"msg=\"machine step failed\"", "event=http.failed", "detail=\"500: missing key\""}, 1},
		{[]string{"msg=\"machine event\"", "level=INFO", "event=workflow"}, 1},
		// A machine that failed first is new when it is served.
		{[]string{"msg=\"machine step failed\"", "mac=52:54:00:00:00:02"}, 1},
		{[]string{"msg=\"machine first seen\"", "mac=52:54:00:00:00:02", "event=dhcp.offer"}, 1},
	} {
		if got := buf.Lines(tc.subs...); len(got) != tc.want {
			t.Errorf("%d lines with %q, want %d", len(got), tc.subs, tc.want)
		}
	}
	if lines := buf.Lines(); len(lines) != 6 {
		t.Errorf("%d lines at info, want 6:\n%s", len(lines), strings.Join(lines, "\n"))
	}

	log, buf = logbuf.NewLogger(slog.LevelDebug)
	events(New(nil, log))
	if n := len(buf.Lines("level=DEBUG", "msg=\"machine event\"")); n != total-6 {
		t.Errorf("%d events at debug, want %d", n, total-6)
	}
	if n := len(buf.Lines("mac=")); n != total {
		t.Errorf("%d lines, want one per event (%d):\n%s", n, total, strings.Join(buf.Lines(), "\n"))
	}
}

// A flood of distinct unknown machines logs a burst of "machine first seen"
// lines and counts the rest; the recorder's memory of machines stays
// bounded.
func TestRecorderFloodOfMachines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, buf := logbuf.NewLogger(slog.LevelInfo)
		r := New(nil, log)
		const flood = 100_000
		for i := range flood {
			mac := fmt.Sprintf("02:%02x:%02x:%02x:00:01", i>>16, byte(i>>8), byte(i))
			r.Record(matchbox.Event{MAC: mac, Kind: matchbox.EventDHCPOffer, IP: "10.0.0.5"})
			r.Record(matchbox.Event{MAC: mac, Kind: matchbox.EventHTTPFailed, File: "/ipxe", Detail: "404: no group"})
			if i%10_000 == 0 {
				r.Flush(context.Background())
			}
		}
		for _, msg := range []string{logFirstSeen, logStepFailed} {
			if n := len(buf.Lines(fmt.Sprintf("msg=%q", msg))); n != loglimit.Burst {
				t.Errorf("%d %q lines, want %d", n, msg, loglimit.Burst)
			}
			if n := r.Suppressed()[msg]; n != flood-loglimit.Burst {
				t.Errorf("%q: %d suppressed, want %d", msg, n, flood-loglimit.Burst)
			}
		}
		if n := r.known.Len(); n > 2*maxKnown {
			t.Errorf("%d machines remembered, bound %d", n, 2*maxKnown)
		}
		time.Sleep(loglimit.ReportEvery + time.Second)
		synctest.Wait()
		want := fmt.Sprintf("suppressed=%d ", flood-loglimit.Burst)
		if lines := buf.Lines("suppressed similar log lines", fmt.Sprintf("message=%q", logFirstSeen)); len(lines) != 1 || !strings.Contains(lines[0], want) {
			t.Errorf("reports %q, want one with %s", lines, want)
		}
	})
}

// A request that only names a MAC neither teaches the recorder an address
// (so the requester's later TFTP and asset events do not land on that
// machine) nor brings a long string into the history; with no DHCP server
// of ours (SetClaimsIdentify) it is all there is, and counts.
func TestRecorderClaims(t *testing.T) {
	var stored []matchbox.Event
	r := New(storeFunc(func(ev []matchbox.Event) error {
		stored = append(stored, ev...)
		return nil
	}), nil)
	const victim = "52:54:00:00:00:01"
	attacker := netip.MustParseAddr("10.0.0.66")
	r.Learn(netip.MustParseAddr("10.0.0.5"), victim)
	huge := strings.Repeat("u", 900<<10)
	r.Record(matchbox.Event{MAC: victim, Kind: matchbox.EventHTTPServed, File: "/ipxe", IP: attacker.String(), UUID: huge, Arch: huge, Detail: huge, Claimed: true})
	if mac, ok := r.MACOf(attacker); ok {
		t.Errorf("a claimed request taught the recorder %v is %s", attacker, mac)
	}
	if mac, _ := r.MACOf(netip.MustParseAddr("10.0.0.5")); mac != victim {
		t.Errorf("the machine's own address now maps to %q", mac)
	}
	r.Flush(context.Background())
	if len(stored) != 1 || !stored[0].Claimed {
		t.Fatalf("stored %+v, want the one claimed event (the store decides whether to keep it)", stored)
	}
	if e := stored[0]; len(e.UUID) > maxEventUUID+3 || len(e.Arch) > maxEventArch+3 || len(e.Detail) > maxEventDetail+3 {
		t.Errorf("event strings not bounded: uuid %d, arch %d, detail %d bytes", len(e.UUID), len(e.Arch), len(e.Detail))
	}
	r.SetClaimsIdentify(true)
	r.Record(matchbox.Event{MAC: victim, Kind: matchbox.EventHTTPServed, File: "/grub", IP: attacker.String(), Claimed: true})
	r.Flush(context.Background())
	if last := stored[len(stored)-1]; last.Claimed || last.File != "/grub" {
		t.Errorf("with claims identifying, stored %+v", last)
	}
	if mac, _ := r.MACOf(attacker); mac != victim {
		t.Errorf("with claims identifying, MACOf = %q", mac)
	}
}

// The address map is bounded: a DHCP INFORM flood of distinct addresses
// does not grow it without end, and the latest addresses are kept.
func TestRecorderAddressesBounded(t *testing.T) {
	r := New(nil, nil)
	for i := range 3 * maxKnown {
		r.Learn(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), "52:54:00:00:00:01")
	}
	r.mu.Lock()
	n := r.byIP.Len()
	r.mu.Unlock()
	if n > 2*maxKnown {
		t.Errorf("%d addresses remembered, bound %d", n, 2*maxKnown)
	}
	last := 3*maxKnown - 1
	if _, ok := r.MACOf(netip.AddrFrom4([4]byte{10, byte(last >> 16), byte(last >> 8), byte(last)})); !ok {
		t.Error("the last address learned is forgotten")
	}
}
