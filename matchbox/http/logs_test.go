package http

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/loglimit"
	"matchbox.dev/matchbox/recorder"
	"matchbox.dev/matchbox/render"

	"matchbox.dev/matchbox/internal/logbuf"
)

// Requests for unknown machines fail with 404: a flood of distinct MACs
// writes a bounded number of "request failed" (and of the recorder's
// "machine step failed") lines; /metrics counts the rest.
func TestFailedRequestFlood(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs logbuf.Buffer
		log := slog.New(slog.NewTextHandler(&logs, nil))
		cat := matchbox.NewCatalog("test")
		cat.Update(context.Background(), "test", matchbox.Objects{})
		srv := New(Config{Catalog: cat, Engine: render.NewEngine(render.Options{}), Logger: log, Recorder: recorder.New(nil, log)})
		h := srv.Handler()
		const flood = 20_000
		for i := range flood {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", fmt.Sprintf("/ipxe?mac=02:00:00:%02x:%02x:%02x", byte(i>>16), byte(i>>8), byte(i)), nil))
			if rec.Code != 404 {
				t.Fatalf("unknown machine: %d %s", rec.Code, rec.Body)
			}
		}
		for _, msg := range []string{"request failed", "machine step failed"} {
			if n := logs.Count(fmt.Sprintf("msg=%q", msg)); n != loglimit.Burst {
				t.Errorf("%d %q lines for %d requests, want %d", n, msg, flood, loglimit.Burst)
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		for _, msg := range []string{"request failed", "machine step failed"} {
			want := fmt.Sprintf("matchbox_log_suppressed_total{message=%q} %d\n", msg, flood-loglimit.Burst)
			if !strings.Contains(rec.Body.String(), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		time.Sleep(loglimit.ReportEvery + time.Second)
		synctest.Wait()
		for _, msg := range []string{"request failed", "machine step failed"} {
			report := fmt.Sprintf("msg=\"suppressed similar log lines\" message=%q suppressed=%d", msg, flood-loglimit.Burst)
			if n := logs.Count(report); n != 1 {
				t.Errorf("%d lines %s, want 1", n, report)
			}
		}
	})
}

// net/http's own lines go through the limiter too.
func TestServerErrorLogLimited(t *testing.T) {
	var logs logbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	el := slog.NewLogLogger(limitedHandler{log.Handler(), loglimit.New(log)}, slog.LevelWarn)
	for range 1000 {
		el.Print("http: URL query contains semicolon, which is no longer a supported separator")
	}
	if n := logs.Count("semicolon"); n != 1 {
		t.Errorf("%d lines of one repeated net/http message, want 1", n)
	}
}
