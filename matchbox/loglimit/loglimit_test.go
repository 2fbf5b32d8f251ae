package loglimit

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
// Rate a second; the rest is counted and reported, and the limiter
// remembers only what it wrote.
func TestLimiterFlood(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, buf := logbuf.NewLogger(slog.LevelInfo)
		l := New(log)
		const msg = "dhcp: no boot answer"
		const flood = 100_000
		ctx := context.Background()
		for i := range flood {
			mac := fmt.Sprintf("02:%02x:%02x:%02x:00:01", i>>16, byte(i>>8), byte(i))
			l.Log(ctx, slog.LevelInfo, msg, mac, "mac", mac, "reason", "no group for this machine")
		}
		if n := len(buf.Lines("no boot answer", "mac=")); n != Burst {
			t.Errorf("%d lines written of %d, want %d", n, flood, Burst)
		}
		if got := l.Suppressed()[msg]; got != flood-Burst {
			t.Errorf("suppressed %d, want %d", got, flood-Burst)
		}
		if n := l.written.Len(); n != Burst {
			t.Errorf("limiter remembers %d keys, want %d (the lines written)", n, Burst)
		}
		if n, _ := reported(t, buf, msg); n != 0 {
			t.Errorf("reported before ReportEvery: %d", n)
		}
		time.Sleep(ReportEvery + time.Second)
		synctest.Wait()
		if n, r := reported(t, buf, msg); n != flood-Burst || r != 0 {
			t.Errorf("reported %d suppressed, %d repeats; want %d, 0", n, r, flood-Burst)
		}
		if n := len(buf.Lines("suppressed similar log lines")); n != 1 {
			t.Errorf("%d reports, want 1", n)
		}

		// The bucket refilled; 10 more seconds of flood write Rate a
		// second.
		before := len(buf.Lines("no boot answer", "mac="))
		for i := range flood {
			mac := fmt.Sprintf("06:%02x:%02x:%02x:00:01", i>>16, byte(i>>8), byte(i))
			l.Log(ctx, slog.LevelInfo, msg, mac, "mac", mac)
			if i%(flood/10) == flood/10-1 {
				time.Sleep(time.Second)
			}
		}
		if n := len(buf.Lines("no boot answer", "mac=")) - before; n != Burst+9*Rate {
			t.Errorf("%d lines written in 10 seconds of flood, want %d", n, Burst+9*Rate)
		}
		time.Sleep(ReportEvery + time.Second)
		synctest.Wait()
		if n, _ := reported(t, buf, msg); n != l.Suppressed()[msg] {
			t.Errorf("reports add up to %d, suppressed %d", n, l.Suppressed()[msg])
		}
	})
}

// A line repeating the key of one written is suppressed for
// RepeatWindow; other keys and other messages are not.
func TestLimiterRepeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, buf := logbuf.NewLogger(slog.LevelInfo)
		l := New(log)
		ctx := context.Background()
		for range 10 {
			l.Log(ctx, slog.LevelWarn, "request failed", "ipxe 400 52:54:00:00:00:01", "mac", "52:54:00:00:00:01")
			l.Log(ctx, slog.LevelWarn, "request failed", "ipxe 400 52:54:00:00:00:02", "mac", "52:54:00:00:00:02")
			l.Log(ctx, slog.LevelInfo, "tftp: refused", "ipxe 400 52:54:00:00:00:01", "mac", "52:54:00:00:00:01")
			time.Sleep(RepeatWindow / 10)
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
		time.Sleep(ReportEvery + time.Second)
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
func TestLimiterDisabledLevel(t *testing.T) {
	log, buf := logbuf.NewLogger(slog.LevelInfo)
	l := New(log)
	for range 2 * Burst {
		if l.Allow(context.Background(), slog.LevelDebug, "tftp: sent", "x") {
			t.Fatal("a debug line allowed at level info")
		}
	}
	if n := l.Suppressed()["tftp: sent"]; n != 0 || len(buf.Lines()) != 0 {
		t.Errorf("suppressed %d, logged %q", n, buf.Lines())
	}
}
