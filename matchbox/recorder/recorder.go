// Package recorder records what machines do: every boot step (DHCP, TFTP,
// HTTP), BMC call, workflow transition and installer report becomes a
// machine event. The recorder logs events (bounded, since any machine on
// the network can cause them), remembers which address belongs to which
// MAC, and hands the events to the store in batches off the request path.
package recorder

import (
	"context"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/internal/bounded"
	"matchbox.dev/matchbox/loglimit"
)

// Recorder records machine events: it logs them, remembers which address
// belongs to which MAC (so requests without a MAC, such as asset downloads
// and TFTP transfers, can be attributed), and hands events to the store in
// batches in the background, off the request path.
//
// Every event is a debug line ("machine event"). At info, only what an
// operator follows is logged: a machine's first step since the start
// ("machine first seen"), a step that serves it another group or profile
// than the last one ("machine selection changed"), a failed step ("machine
// step failed": http.failed, tftp.failed, dhcp.nak, dhcp.decline) and the
// events of RecordDistinct (BMC calls, workflow transitions, installers'
// reports). The first three are limited by a loglimit.Limiter, since any machine
// on the network can cause them.
type Recorder struct {
	store matchbox.EventStore
	log   *slog.Logger
	limit *loglimit.Limiter

	// claimsIdentify: no DHCP server of ours sees the machines, so a
	// claimed event is all there is to identify one (SetClaimsIdentify).
	claimsIdentify atomic.Bool

	mu      sync.Mutex
	pending []matchbox.Event
	// byIP maps addresses (by hash) to the MAC last learned for them,
	// bounded as known is.
	byIP    bounded.Map[addrMAC]
	kick    chan struct{}
	dropped uint64
	// notRecorded counts what the store did not record, since the start.
	notRecorded matchbox.NotRecorded
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
	// known holds, for the machines seen lately (by MAC hash), a hash of
	// the group and profile they were last served (0: none yet); names
	// maps such hashes back to the names, for the log.
	known bounded.Map[uint64]
	names bounded.Map[served]
}

// served is the group and profile a machine was served.
type served struct{ group, profile string }

// addrMAC is one learned address and its MAC, pointer-free.
type addrMAC struct {
	ip  [16]byte
	mac [17]byte
}

// Bounds of the strings an event stores: they come from the network.
const (
	maxEventUUID   = 64
	maxEventArch   = 32
	maxEventFile   = 256
	maxEventDetail = 512
	maxEventName   = 256
)

// maxKnown bounds the machines (and, separately, the group and profile
// pairs) the recorder remembers in one generation: the last 65,536 to
// 131,072 machines seen are not logged as new again.
const maxKnown = 1 << 16

// Messages of the recorder's log lines.
const (
	logMachineEvent = "machine event"
	logFirstSeen    = "machine first seen"
	logChanged      = "machine selection changed"
	logStepFailed   = "machine step failed"
	logFull         = "inventory full: events of machines not in it are not recorded"
	logUnconfirmed  = "machine not recorded: no DHCP lease confirms its MAC"
)

// eventHash identifies repeats of an event: same machine, step, address
// and file.
func eventHash(e *matchbox.Event) uint64 {
	h := maphash.String(hashSeed, e.MAC)
	h = h*31 + maphash.String(hashSeed, string(e.Kind))
	h = h*31 + maphash.String(hashSeed, e.IP)
	return h*31 + maphash.String(hashSeed, e.File)
}

// hashSeed seeds eventHash for the life of the process.
var hashSeed = maphash.MakeSeed()

// RepeatWindow is how long an event identical to one already stored (same
// machine, step, address and file) is not stored again.
const RepeatWindow = 10 * time.Second

// maxPending bounds events waiting for the store; beyond it new events are
// dropped (and counted) rather than growing memory without bound.
const maxPending = 100_000

// flushAt is how many pending events make Run write before the interval
// ends. Large batches matter for the store: a boot storm of many machines
// touches one database page per machine, and a page touched by several
// events of one batch is rewritten once.
const flushAt = 3_000

// New returns a recorder writing to store (nil: log only).
func New(store matchbox.EventStore, log *slog.Logger) *Recorder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Recorder{store: store, log: log, limit: loglimit.New(log), byIP: bounded.New[addrMAC](maxKnown), kick: make(chan struct{}, 1),
		recent: make(map[uint64]int64), older: make(map[uint64]int64), rotated: time.Now().UnixNano(),
		known: bounded.New[uint64](maxKnown), names: bounded.New[served](maxKnown)}
}

// Record records one event. It never blocks on storage. An event identical
// to one stored less than RepeatWindow ago is not stored.
func (r *Recorder) Record(e matchbox.Event) { r.record(e, false) }

// RecordDistinct records one event that is never taken for a repeat, such
// as a BMC call or a workflow transition: each one is a fact of its own.
func (r *Recorder) RecordDistinct(e matchbox.Event) { r.record(e, true) }

// SetClaimsIdentify says whether a claimed event (matchbox.Event.Claimed) may add a
// machine to the inventory and teach the recorder its address: true when
// no DHCP server of matchbox's sees the machines (DHCP off), since then a
// request naming a MAC is all that identifies a machine.
func (r *Recorder) SetClaimsIdentify(v bool) { r.claimsIdentify.Store(v) }

// clipEvent bounds the strings of an event to what they can hold when
// well-formed, and drops an address that is not one.
func clipEvent(e *matchbox.Event) {
	e.UUID = clip(e.UUID, maxEventUUID)
	e.Arch = clip(e.Arch, maxEventArch)
	e.File = clip(e.File, maxEventFile)
	e.Detail = clip(e.Detail, maxEventDetail)
	e.Group = clip(e.Group, maxEventName)
	e.Profile = clip(e.Profile, maxEventName)
	if e.IP != "" {
		if _, err := netip.ParseAddr(e.IP); err != nil {
			e.IP = ""
		}
	}
}

// clip cuts s to at most n bytes, at a character boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func (r *Recorder) record(e matchbox.Event, distinct bool) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	clipEvent(&e)
	if e.Claimed && r.claimsIdentify.Load() {
		e.Claimed = false
	}
	if e.MAC == "" {
		r.logEvent(&e, "", served{})
		return
	}
	key := eventHash(&e)
	now := e.Time.UnixNano()
	r.mu.Lock()
	if ip, err := netip.ParseAddr(e.IP); err == nil && !e.Claimed {
		r.learnLocked(ip, e.MAC)
	}
	msg, was := r.notableLocked(&e, distinct)
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
		r.logEvent(&e, msg, was)
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
	r.logEvent(&e, msg, was)
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// notableLocked says which info line e makes, if any (else ""), and for a
// change of selection what the machine was served before. It remembers
// what e serves.
func (r *Recorder) notableLocked(e *matchbox.Event, distinct bool) (string, served) {
	switch {
	case distinct:
		return logMachineEvent, served{}
	case e.Kind.Failed():
		// Failures do not make a machine known: a flood of requests for
		// unknown machines does not push the fleet out of known.
		return logStepFailed, served{}
	}
	mac := maphash.String(hashSeed, e.MAC)
	if _, ok := r.known.Get(mac); !ok && e.Claimed {
		// Nor do requests that only name a MAC.
		return "", served{}
	}
	var sel uint64
	if e.Group != "" {
		// Never 0, which stands for no selection.
		sel = (maphash.String(hashSeed, e.Group)*31 + maphash.String(hashSeed, e.Profile)) | 1
	}
	last, ok := r.known.Get(mac)
	if ok && (sel == 0 || sel == last) {
		return "", served{}
	}
	var was served
	if ok {
		was, _ = r.names.Get(last)
	}
	r.known.Put(mac, sel)
	if sel != 0 {
		r.names.Put(sel, served{e.Group, e.Profile})
	}
	if !ok {
		return logFirstSeen, served{}
	}
	return logChanged, was
}

// logEvent logs e: at info with msg when msg is set and the limiter lets
// it, otherwise as a debug "machine event".
func (r *Recorder) logEvent(e *matchbox.Event, msg string, was served) {
	ctx := context.Background()
	level := slog.LevelInfo
	switch msg {
	case "":
	case logMachineEvent:
		// Distinct events are not limited: machines on the network
		// cannot cause them (reports need a reinstall's token).
	case logFirstSeen:
		if !r.limit.Allow(ctx, level, msg, e.MAC) {
			msg = ""
		}
	case logChanged:
		if !r.limit.Allow(ctx, level, msg, e.MAC+" "+e.Group+" "+e.Profile) {
			msg = ""
		}
	default:
		if !r.limit.Allow(ctx, level, msg, e.MAC+" "+string(e.Kind)+" "+e.File) {
			msg = ""
		}
	}
	if msg == "" {
		msg, level = logMachineEvent, slog.LevelDebug
	}
	if !r.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 11)
	attrs = append(attrs, slog.String("mac", e.MAC), slog.String("event", string(e.Kind)))
	for _, kv := range [...][2]string{{"arch", e.Arch}, {"ip", e.IP}, {"uuid", e.UUID}, {"file", e.File}, {"group", e.Group},
		{"profile", e.Profile}, {"detail", e.Detail}, {"was_group", was.group}, {"was_profile", was.profile}} {
		if kv[1] != "" {
			attrs = append(attrs, slog.String(kv[0], kv[1]))
		}
	}
	r.log.LogAttrs(ctx, level, msg, attrs...)
}

// Suppressed returns how many of the recorder's info lines were suppressed
// (repeats, or beyond the rate of their message), by message.
func (r *Recorder) Suppressed() map[string]uint64 { return r.limit.Suppressed() }

// Learn remembers that ip belongs to mac (e.g. from a DHCP lease).
func (r *Recorder) Learn(ip netip.Addr, mac string) {
	r.mu.Lock()
	r.learnLocked(ip, mac)
	r.mu.Unlock()
}

func (r *Recorder) learnLocked(ip netip.Addr, mac string) {
	var v addrMAC
	if len(mac) != len(v.mac) {
		return
	}
	v.ip = ip.Unmap().As16()
	copy(v.mac[:], mac)
	r.byIP.Put(addrHash(v.ip), v)
}

func addrHash(ip [16]byte) uint64 { return maphash.Bytes(hashSeed, ip[:]) }

// MACOf returns the MAC last seen with ip.
func (r *Recorder) MACOf(ip netip.Addr) (string, bool) {
	a := ip.Unmap().As16()
	r.mu.Lock()
	v, ok := r.byIP.Get(addrHash(a))
	r.mu.Unlock()
	if !ok || v.ip != a {
		return "", false
	}
	return string(v.mac[:]), true
}

// matchbox.NotRecorded is what the store did not record since the start, because
// the events' machines were not in the inventory and could not enter it.
func (r *Recorder) NotRecorded() matchbox.NotRecorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.notRecorded
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
	skipped, err := r.store.RecordEvents(ctx, batch)
	if err != nil {
		r.log.Error("recording machine events failed", "events", len(batch), "err", err)
		return
	}
	if skipped == (matchbox.NotRecorded{}) {
		return
	}
	r.mu.Lock()
	r.notRecorded.Unconfirmed += skipped.Unconfirmed
	r.notRecorded.Full += skipped.Full
	r.mu.Unlock()
	if skipped.Full > 0 && r.limit.Allow(ctx, slog.LevelWarn, logFull, "") {
		r.log.Warn(logFull, "events", skipped.Full, "hint", "raise -max-machines, or delete machines that are gone")
	}
	if skipped.Unconfirmed > 0 && r.limit.Allow(ctx, slog.LevelInfo, logUnconfirmed, "") {
		r.log.Info(logUnconfirmed, "events", skipped.Unconfirmed)
	}
}
