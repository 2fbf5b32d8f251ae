package matchbox

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"matchbox.dev/matchbox/internal/logbuf"
)

func newTestLogger(level slog.Level) (*slog.Logger, *logbuf.Buffer) {
	b := &logbuf.Buffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: level})), b
}

var suppressedRE = regexp.MustCompile(`suppressed=(\d+) repeats=(\d+)`)

// reported sums the counts of the "suppressed similar log lines" reports of
// msg.
func reported(t *testing.T, b *logbuf.Buffer, msg string) (suppressed, repeats uint64) {
	t.Helper()
	for _, line := range b.Lines("suppressed similar log lines", fmt.Sprintf("message=%q", msg)) {
		m := suppressedRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("report without counts: %s", line)
		}
		n, _ := strconv.ParseUint(m[1], 10, 64)
		r, _ := strconv.ParseUint(m[2], 10, 64)
		suppressed += n
		repeats += r
	}
	return suppressed, repeats
}

// A flood of distinct keys (random MACs) writes a burst of lines, then
// LogRate a second; the rest is counted and reported, and the limiter
// remembers only what it wrote.
func TestLogLimiterFlood(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, buf := newTestLogger(slog.LevelInfo)
		l := NewLogLimiter(log)
		const msg = "dhcp: no boot answer"
		const flood = 100_000
		ctx := context.Background()
		for i := range flood {
			mac := fmt.Sprintf("02:%02x:%02x:%02x:00:01", i>>16, byte(i>>8), byte(i))
			l.Log(ctx, slog.LevelInfo, msg, mac, "mac", mac, "reason", "no group for this machine")
		}
		if n := len(buf.Lines("no boot answer", "mac=")); n != LogBurst {
			t.Errorf("%d lines written of %d, want %d", n, flood, LogBurst)
		}
		if got := l.Suppressed()[msg]; got != flood-LogBurst {
			t.Errorf("suppressed %d, want %d", got, flood-LogBurst)
		}
		if n := len(l.written.recent) + len(l.written.older); n != LogBurst {
			t.Errorf("limiter remembers %d keys, want %d (the lines written)", n, LogBurst)
		}
		if n, _ := reported(t, buf, msg); n != 0 {
			t.Errorf("reported before LogReportEvery: %d", n)
		}
		time.Sleep(LogReportEvery + time.Second)
		synctest.Wait()
		if n, r := reported(t, buf, msg); n != flood-LogBurst || r != 0 {
			t.Errorf("reported %d suppressed, %d repeats; want %d, 0", n, r, flood-LogBurst)
		}
		if n := len(buf.Lines("suppressed similar log lines")); n != 1 {
			t.Errorf("%d reports, want 1", n)
		}

		// The bucket refilled; 10 more seconds of flood write LogRate a
		// second.
		before := len(buf.Lines("no boot answer", "mac="))
		for i := range flood {
			mac := fmt.Sprintf("06:%02x:%02x:%02x:00:01", i>>16, byte(i>>8), byte(i))
			l.Log(ctx, slog.LevelInfo, msg, mac, "mac", mac)
			if i%(flood/10) == flood/10-1 {
				time.Sleep(time.Second)
			}
		}
		if n := len(buf.Lines("no boot answer", "mac=")) - before; n != LogBurst+9*LogRate {
			t.Errorf("%d lines written in 10 seconds of flood, want %d", n, LogBurst+9*LogRate)
		}
		time.Sleep(LogReportEvery + time.Second)
		synctest.Wait()
		if n, _ := reported(t, buf, msg); n != l.Suppressed()[msg] {
			t.Errorf("reports add up to %d, suppressed %d", n, l.Suppressed()[msg])
		}
	})
}

// A line repeating the key of one written is suppressed for
// LogRepeatWindow; other keys and other messages are not.
func TestLogLimiterRepeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, buf := newTestLogger(slog.LevelInfo)
		l := NewLogLimiter(log)
		ctx := context.Background()
		for range 10 {
			l.Log(ctx, slog.LevelWarn, "request failed", "ipxe 400 52:54:00:00:00:01", "mac", "52:54:00:00:00:01")
			l.Log(ctx, slog.LevelWarn, "request failed", "ipxe 400 52:54:00:00:00:02", "mac", "52:54:00:00:00:02")
			l.Log(ctx, slog.LevelInfo, "tftp: refused", "ipxe 400 52:54:00:00:00:01", "mac", "52:54:00:00:00:01")
			time.Sleep(LogRepeatWindow / 10)
		}
		// 10 lines a tenth of a window apart: the first is written.
		if n := len(buf.Lines("request failed", "mac=52:54:00:00:00:01")); n != 1 {
			t.Errorf("repeated key written %d times within a window, want 1", n)
		}
		for _, want := range []string{"request failed", "tftp: refused"} {
			if n := len(buf.Lines(want, "mac=52:54:00:00:00:01")); n != 1 {
				t.Errorf("%s: %d lines, want 1", want, n)
			}
		}
		l.Log(ctx, slog.LevelWarn, "request failed", "ipxe 400 52:54:00:00:00:01", "mac", "52:54:00:00:00:01")
		if n := len(buf.Lines("request failed", "mac=52:54:00:00:00:01")); n != 2 {
			t.Errorf("after a window: %d lines, want 2", n)
		}
		time.Sleep(LogReportEvery + time.Second)
		synctest.Wait()
		if n, r := reported(t, buf, "request failed"); n != 18 || r != 18 {
			t.Errorf("request failed: reported %d suppressed, %d repeats; want 18, 18", n, r)
		}
		// Reported at the level of the lines suppressed.
		if lines := buf.Lines("suppressed similar log lines", `message="request failed"`); len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") {
			t.Errorf("report: %q", lines)
		}
	})
}

// Lines the logger would not write are neither written nor counted.
func TestLogLimiterDisabledLevel(t *testing.T) {
	log, buf := newTestLogger(slog.LevelInfo)
	l := NewLogLimiter(log)
	for range 2 * LogBurst {
		if l.Allow(context.Background(), slog.LevelDebug, "tftp: sent", "x") {
			t.Fatal("a debug line allowed at level info")
		}
	}
	if n := l.Suppressed()["tftp: sent"]; n != 0 || len(buf.Lines()) != 0 {
		t.Errorf("suppressed %d, logged %q", n, buf.Lines())
	}
}

func TestGenerations(t *testing.T) {
	g := newGenerations[int](4)
	for i := range 4 {
		g.put(uint64(i), i)
	}
	g.put(4, 4) // recent full: 0-3 move to older
	if len(g.recent) != 1 || len(g.older) != 4 {
		t.Fatalf("recent %v older %v", g.recent, g.older)
	}
	if v, ok := g.get(1); !ok || v != 1 { // moves back to recent
		t.Fatalf("get(1) = %v, %v", v, ok)
	}
	for i := 5; i < 7; i++ {
		g.put(uint64(i), i)
	}
	g.put(7, 7) // recent (4, 1, 5, 6) full: 0, 2 and 3 are forgotten
	for k, want := range map[uint64]bool{0: false, 1: true, 2: false, 3: false, 4: true, 7: true} {
		if _, ok := g.get(k); ok != want {
			t.Errorf("get(%d) found %v, want %v", k, ok, want)
		}
	}
	for i := range 1000 {
		g.put(uint64(100+i), i)
		if n := len(g.recent) + len(g.older); n > 8 {
			t.Fatalf("%d entries, bound 8", n)
		}
	}
}
