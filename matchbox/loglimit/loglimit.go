// Package loglimit keeps the log lines machines on the network cause from
// flooding the log: repeats of a line are suppressed, each message is
// rate-limited, and what was suppressed is counted and reported (see
// Limiter). Every front-end and the recorder log through one.
package loglimit

import (
	"cmp"
	"context"
	"hash/maphash"
	"log/slog"
	"slices"
	"sync"
	"time"

	"matchbox.dev/matchbox/internal/bounded"
)

// Limits of a Limiter.
const (
	// RepeatWindow is how long a line repeating the message and key of
	// one written is suppressed.
	RepeatWindow = time.Minute
	// Burst is how many lines of one message are written at once;
	// Rate how many a second after that.
	Burst = 100
	Rate  = 5
	// ReportEvery is how long after a line is suppressed the count of
	// suppressed lines is logged.
	ReportEvery = time.Minute
)

// maxLogKeys bounds the keys a Limiter remembers in one generation. Only
// written lines are remembered, which the rate bounds far below this; the
// bound is a guard.
const maxLogKeys = 1 << 13

// hashSeed seeds the hashes of messages and keys for the life of the
// process.
var hashSeed = maphash.MakeSeed()

// A Limiter keeps the log lines that machines on the network cause (a
// line per packet or request of an unknown machine, per failed transfer)
// from flooding the log, whatever they send: a line repeating the message
// and key (a MAC, a reason) of one written less than RepeatWindow ago
// is suppressed, and each message is written at most Burst times at
// once and Rate times a second after that. Suppressed lines are counted
// (Suppressed, for metrics) and, ReportEvery after the first of them,
// reported in one line per message ("suppressed similar log lines").
// Memory stays bounded: messages are constants of the code, and only
// written lines are remembered.
type Limiter struct {
	log   *slog.Logger
	epoch time.Time // times are durations since, on the monotonic clock

	mu      sync.Mutex
	kinds   map[string]*logKind
	written bounded.Map[time.Duration] // when a line of a message and key was written
	rotated time.Duration              // when written last rotated
	armed   bool                       // a report is scheduled
}

// logKind is the state of one message.
type logKind struct {
	tokens float64
	filled time.Duration // when tokens was last refilled
	total  uint64        // suppressed since the start
	// Suppressed since the last report, as repeats and beyond the rate,
	// and the highest level among them.
	repeats, overRate uint64
	level             slog.Level
}

// New returns a limiter of lines written to log, which also
// receives its reports.
func New(log *slog.Logger) *Limiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Limiter{log: log, epoch: time.Now(), kinds: make(map[string]*logKind), written: bounded.New[time.Duration](maxLogKeys)}
}

// Allow reports whether a line of msg at level, identified by key, is to
// be written; a line suppressed is counted. Lines the logger would not
// write at level are neither allowed nor counted. msg must be a constant.
func (l *Limiter) Allow(ctx context.Context, level slog.Level, msg, key string) bool {
	if !l.log.Enabled(ctx, level) {
		return false
	}
	h := maphash.String(hashSeed, msg)*31 + maphash.String(hashSeed, key)
	now := time.Since(l.epoch)
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.kinds[msg]
	if k == nil {
		k = &logKind{tokens: Burst, filled: now}
		l.kinds[msg] = k
	}
	if now-l.rotated >= RepeatWindow {
		// Entries live between one and two windows.
		l.written.Rotate()
		l.rotated = now
	}
	if last, ok := l.written.Get(h); ok && now-last < RepeatWindow {
		k.repeats++
		l.suppressedLocked(k, level)
		return false
	}
	k.tokens = min(Burst, k.tokens+(now-k.filled).Seconds()*Rate)
	k.filled = now
	if k.tokens < 1 {
		k.overRate++
		l.suppressedLocked(k, level)
		return false
	}
	k.tokens--
	l.written.Put(h, now)
	return true
}

// Log writes a line as slog.Logger.Log does, if Allow lets it.
func (l *Limiter) Log(ctx context.Context, level slog.Level, msg, key string, args ...any) {
	if l.Allow(ctx, level, msg, key) {
		l.log.Log(ctx, level, msg, args...)
	}
}

func (l *Limiter) suppressedLocked(k *logKind, level slog.Level) {
	k.total++
	if k.repeats+k.overRate == 1 || level > k.level {
		k.level = level
	}
	if !l.armed {
		l.armed = true
		time.AfterFunc(ReportEvery, l.report)
	}
}

// report logs how many lines of each message were suppressed since the
// last report.
func (l *Limiter) report() {
	type line struct {
		msg               string
		level             slog.Level
		repeats, overRate uint64
	}
	var lines []line
	l.mu.Lock()
	for msg, k := range l.kinds {
		if k.repeats+k.overRate > 0 {
			lines = append(lines, line{msg, k.level, k.repeats, k.overRate})
			k.repeats, k.overRate = 0, 0
		}
	}
	l.armed = false
	l.mu.Unlock()
	slices.SortFunc(lines, func(a, b line) int { return cmp.Compare(a.msg, b.msg) })
	for _, ln := range lines {
		l.log.LogAttrs(context.Background(), ln.level, "suppressed similar log lines", slog.String("message", ln.msg),
			slog.Uint64("suppressed", ln.repeats+ln.overRate), slog.Uint64("repeats", ln.repeats))
	}
}

// Suppressed returns how many lines of each message were suppressed since
// the limiter was made (zero for messages never suppressed).
func (l *Limiter) Suppressed() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]uint64, len(l.kinds))
	for msg, k := range l.kinds {
		out[msg] = k.total
	}
	return out
}
