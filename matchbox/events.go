package matchbox

import (
	"context"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// EventKind names a step of a machine's boot (or later, its lifecycle).
type EventKind string

// Boot steps recorded on machines.
const (
	EventDHCPDiscover EventKind = "dhcp.discover"
	EventDHCPOffer    EventKind = "dhcp.offer"
	EventDHCPAck      EventKind = "dhcp.ack"
	EventDHCPNak      EventKind = "dhcp.nak"
	EventDHCPDecline  EventKind = "dhcp.decline"
	EventDHCPRelease  EventKind = "dhcp.release"
	EventDHCPInform   EventKind = "dhcp.inform"
	EventPXEOffer     EventKind = "pxe.offer"
	EventTFTPSent     EventKind = "tftp.sent"
	EventTFTPFailed   EventKind = "tftp.failed"
	EventHTTPServed   EventKind = "http.served"
	EventHTTPFailed   EventKind = "http.failed"
	EventAssetServed  EventKind = "http.asset"
)

// Event is one recorded step of a machine.
type Event struct {
	Time time.Time `json:"time"`
	MAC  string    `json:"mac"`
	Kind EventKind `json:"kind"`
	// Arch is the client architecture (DHCP option 93 name, or iPXE's
	// buildarch).
	Arch    string `json:"arch,omitempty"`
	IP      string `json:"ip,omitempty"`
	UUID    string `json:"uuid,omitempty"`
	File    string `json:"file,omitempty"`
	Group   string `json:"group,omitempty"`
	Profile string `json:"profile,omitempty"`
	// Detail is a short human-readable note (mode, status, error).
	Detail string `json:"detail,omitempty"`
}

// EventStore persists events and the machine records they update, in
// batches, keeping at most a bounded number of events per machine.
type EventStore interface {
	RecordEvents(ctx context.Context, events []Event) error
}

// Recorder records machine events: it logs each one, remembers which
// address belongs to which MAC (so requests without a MAC, such as asset
// downloads and TFTP transfers, can be attributed), and hands events to
// the store in batches in the background, off the request path.
type Recorder struct {
	store EventStore
	log   *slog.Logger

	mu      sync.Mutex
	pending []Event
	byIP    map[netip.Addr]string
	kick    chan struct{}
	dropped uint64
	// recent and older remember when an identical event was last stored,
	// so that retransmissions and request storms do not flood the
	// history. Keyed by a hash of the event's identity (pointer-free, so
	// the collector does not scan them). Every RepeatWindow recent becomes
	// older and older is dropped: expiry costs nothing under the lock,
	// however many machines are booting.
	recent, older map[uint64]int64
	rotated       int64 // when recent was started, Unix nanoseconds
	// urgent asks Run to write the pending events now.
	urgent bool
}

// eventHash identifies repeats of an event: same machine, step, address
// and file.
func eventHash(e *Event) uint64 {
	h := maphash.String(hashSeed, e.MAC)
	h = h*31 + maphash.String(hashSeed, string(e.Kind))
	h = h*31 + maphash.String(hashSeed, e.IP)
	return h*31 + maphash.String(hashSeed, e.File)
}

// hashSeed seeds eventHash for the life of the process.
var hashSeed = maphash.MakeSeed()

// RepeatWindow is how long an event identical to one already stored (same
// machine, step, address and file) is logged but not stored again.
const RepeatWindow = 10 * time.Second

// maxPending bounds events waiting for the store; beyond it new events are
// dropped (and counted) rather than growing memory without bound.
const maxPending = 100_000

// flushAt is how many pending events make Run write before the interval
// ends. Large batches matter for the store: a boot storm of many machines
// touches one database page per machine, and a page touched by several
// events of one batch is rewritten once.
const flushAt = 3_000

// NewRecorder returns a recorder writing to store (nil: log only).
func NewRecorder(store EventStore, log *slog.Logger) *Recorder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Recorder{store: store, log: log, byIP: make(map[netip.Addr]string), kick: make(chan struct{}, 1),
		recent: make(map[uint64]int64), older: make(map[uint64]int64), rotated: time.Now().UnixNano()}
}

// Record records one event. It never blocks on storage. An event identical
// to one stored less than RepeatWindow ago is logged but not stored.
func (r *Recorder) Record(e Event) { r.record(e, false) }

// RecordDistinct records one event that is never taken for a repeat, such
// as a BMC call or a workflow transition: each one is a fact of its own.
func (r *Recorder) RecordDistinct(e Event) { r.record(e, true) }

func (r *Recorder) record(e Event, distinct bool) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if r.log.Enabled(context.Background(), slog.LevelInfo) {
		attrs := []slog.Attr{slog.String("mac", e.MAC), slog.String("event", string(e.Kind))}
		for _, kv := range [][2]string{{"arch", e.Arch}, {"ip", e.IP}, {"uuid", e.UUID}, {"file", e.File}, {"group", e.Group}, {"profile", e.Profile}, {"detail", e.Detail}} {
			if kv[1] != "" {
				attrs = append(attrs, slog.String(kv[0], kv[1]))
			}
		}
		r.log.LogAttrs(context.Background(), slog.LevelInfo, "machine event", attrs...)
	}
	if e.MAC == "" {
		return
	}
	key := eventHash(&e)
	now := e.Time.UnixNano()
	r.mu.Lock()
	if ip, err := netip.ParseAddr(e.IP); err == nil {
		r.byIP[ip] = e.MAC
	}
	switch {
	case now < r.rotated: // an event from before the last rotation
		r.rotated = now
	case now-r.rotated >= int64(RepeatWindow):
		// Entries live between one and two windows: long enough.
		r.older, r.recent, r.rotated = r.recent, make(map[uint64]int64, len(r.recent)), now
	}
	last, ok := r.recent[key]
	if !ok {
		last, ok = r.older[key]
	}
	if !distinct && ok && now-last < int64(RepeatWindow) && now >= last {
		r.mu.Unlock()
		return
	}
	if !distinct {
		r.recent[key] = now
	} else {
		// BMC calls and workflow transitions are rare and must survive
		// a crash that follows them: written at once, not with the next
		// batch.
		r.urgent = true
	}
	if len(r.pending) >= maxPending {
		r.dropped++
	} else {
		r.pending = append(r.pending, e)
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Learn remembers that ip belongs to mac (e.g. from a DHCP lease).
func (r *Recorder) Learn(ip netip.Addr, mac string) {
	r.mu.Lock()
	r.byIP[ip] = mac
	r.mu.Unlock()
}

// MACOf returns the MAC last seen with ip.
func (r *Recorder) MACOf(ip netip.Addr) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	mac, ok := r.byIP[ip.Unmap()]
	return mac, ok
}

// Dropped is the number of events dropped because storage fell behind.
func (r *Recorder) Dropped() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// Run writes pending events to the store every interval (or sooner when
// many are waiting) until ctx ends, then writes what is left.
func (r *Recorder) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.Flush(context.Background())
			return
		case <-t.C:
			r.Flush(ctx)
		case <-r.kick:
			r.mu.Lock()
			n, urgent := len(r.pending), r.urgent
			r.urgent = false
			r.mu.Unlock()
			if n >= flushAt || urgent {
				r.Flush(ctx)
			}
		}
	}
}

// Flush writes the pending events to the store now.
func (r *Recorder) Flush(ctx context.Context) {
	r.mu.Lock()
	batch := r.pending
	r.pending = nil
	r.mu.Unlock()
	if len(batch) == 0 || r.store == nil {
		return
	}
	if err := r.store.RecordEvents(ctx, batch); err != nil {
		r.log.Error("recording machine events failed", "events", len(batch), "err", err)
	}
}
