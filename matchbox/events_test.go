package matchbox

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// storeFunc adapts a function to EventStore.
type storeFunc func([]Event) error

func (f storeFunc) RecordEvents(_ context.Context, ev []Event) error { return f(ev) }

func TestRecorder(t *testing.T) {
	var mu sync.Mutex
	var stored []Event
	r := NewRecorder(storeFunc(func(ev []Event) error {
		mu.Lock()
		defer mu.Unlock()
		stored = append(stored, ev...)
		return nil
	}), nil)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		// A retransmitted offer within the window is stored once.
		r.Record(Event{Time: t0.Add(time.Duration(i) * time.Second), MAC: "52:54:00:00:00:01", Kind: EventDHCPOffer, IP: "10.0.0.5"})
	}
	r.Record(Event{Time: t0.Add(RepeatWindow + time.Second), MAC: "52:54:00:00:00:01", Kind: EventDHCPOffer, IP: "10.0.0.5"})
	r.Record(Event{Time: t0.Add(2 * time.Second), MAC: "52:54:00:00:00:01", Kind: EventHTTPServed, File: "/ipxe", IP: "10.0.0.5"})
	r.Record(Event{Time: t0, Kind: EventHTTPServed, File: "/ipxe"}) // no MAC: logged only
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
	r.Record(Event{MAC: "52:54:00:00:00:03", Kind: EventTFTPSent, File: "ipxe.efi"})
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
	r := NewRecorder(storeFunc(func(ev []Event) error {
		for _, e := range ev {
			stored = append(stored, e.Time)
		}
		return nil
	}), nil)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := func(d time.Duration) {
		r.Record(Event{Time: t0.Add(d), MAC: "52:54:00:00:00:01", Kind: EventHTTPServed, File: "/ipxe"})
	}
	other := func(d time.Duration) {
		r.Record(Event{Time: t0.Add(d), MAC: "52:54:00:00:00:02", Kind: EventHTTPServed, File: "/ipxe"})
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
