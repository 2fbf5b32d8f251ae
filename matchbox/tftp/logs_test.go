package tftp

import (
	"log/slog"
	"strings"
	"testing"

	"matchbox.dev/matchbox/internal/logbuf"
)

// A transfer sent is a debug line; a refusal is an info line (through the
// limiter, see loglimit.Limiter).
func TestTransferLogLevels(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var logs logbuf.Buffer
		f := newFixture(t, func(c *Config) {
			c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: level}))
		})
		if _, err := fetch(t, f.addr, "sub/small", 0); err != nil {
			t.Fatal(err)
		}
		// The client is done when it has the last block; the server ends
		// the transfer (and logs it) when the last ACK arrives. Stopping
		// before that would end it as aborted.
		waitCount(t, f, "sent", 1)
		if _, err := fetch(t, f.addr, "nope.efi", 0); err == nil {
			t.Fatal("nope.efi served")
		}
		f.stop()
		sent := strings.Contains(logs.String(), `msg="tftp: sent"`)
		if sent != (level == slog.LevelDebug) {
			t.Errorf("at %v: tftp: sent logged %v:\n%s", level, sent, logs.String())
		}
		if !strings.Contains(logs.String(), `level=INFO msg="tftp: refused"`) || !strings.Contains(logs.String(), "result=not-found") {
			t.Errorf("at %v: refusal not logged at info:\n%s", level, logs.String())
		}
	}
}
