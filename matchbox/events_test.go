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
