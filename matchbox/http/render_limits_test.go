package http

import (
	"bytes"
	"context"
	"log/slog"
	nethttp "net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/render"
)

// limitsServer serves a machine whose generic template never ends
// (52:54:00:00:00:01), one whose generic template makes 3 GB
// (52:54:00:00:00:02) and one whose kernel arguments never end
// (52:54:00:00:00:03).
func limitsServer(t *testing.T, opts render.Options) (nethttp.Handler, *bytes.Buffer) {
	cat := matchbox.NewCatalog("test")
	cat.Update(context.Background(), "test", matchbox.Objects{
		Profiles: []*matchbox.Profile{
			{ID: "busy", GenericID: "busy.tmpl"},
			{ID: "big", GenericID: "big.tmpl"},
			{ID: "args", Boot: matchbox.Boot{Kernel: "/k", Args: []string{"a={{range 1000000000000}}{{end}}"}}},
		},
		Groups: []*matchbox.Group{
			{ID: "busy", Profile: "busy", Selector: map[string]string{"mac": "52:54:00:00:00:01"}},
			{ID: "big", Profile: "big", Selector: map[string]string{"mac": "52:54:00:00:00:02"}},
			{ID: "args", Profile: "args", Selector: map[string]string{"mac": "52:54:00:00:00:03"}},
		},
		Templates: []*matchbox.Template{
			{Kind: matchbox.KindGeneric, Name: "busy.tmpl", Content: []byte("{{range 1000000000000}}{{end}}")},
			{Kind: matchbox.KindGeneric, Name: "big.tmpl", Content: []byte(`{{repeat 3000000000 "x"}}`)},
		},
	})
	var logs bytes.Buffer
	srv := New(Config{Catalog: cat, Engine: render.NewEngine(opts),
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	return srv.Handler(), &logs
}

// serveWithin answers req, failing the test if that takes more than a
// minute: without render limits these requests are never answered.
func serveWithin(t *testing.T, h nethttp.Handler, req *nethttp.Request) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(rec, req)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("no answer")
	}
	return rec
}

// TestRenderLimitAnswers: a template that hits a render limit is a render
// failure: 500 with the limit and its setting, counted.
func TestRenderLimitAnswers(t *testing.T) {
	h, _ := limitsServer(t, render.Options{RenderTimeout: 50 * time.Millisecond})
	for _, tt := range []struct{ path, says string }{
		{"/generic?mac=52:54:00:00:00:01", "the render ran past its deadline of 50ms (-render-timeout sets the limit)"},
		{"/generic?mac=52:54:00:00:00:02", "repeat would make 3000000000 bytes, more than 16 MiB (-render-max-mb sets the limit)"},
		{"/ipxe?mac=52:54:00:00:00:03", "the render ran past its deadline of 50ms"},
	} {
		rec := serveWithin(t, h, httptest.NewRequest("GET", tt.path, nil))
		if rec.Code != 500 || !strings.Contains(rec.Body.String(), tt.says) {
			t.Errorf("%s: %d %q; want 500 saying %q", tt.path, rec.Code, rec.Body, tt.says)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`matchbox_render_failures_total{endpoint="generic"} 2`, `matchbox_render_failures_total{endpoint="ipxe"} 1`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// leavingClient is the context of a request whose client goes away while
// its answer is rendered: it ends the n-th time anyone looks at it.
type leavingClient struct {
	context.Context
	cancel context.CancelFunc
	looks  atomic.Int64
	n      int64
}

func (c *leavingClient) Err() error {
	if c.looks.Add(1) == c.n {
		c.cancel()
	}
	return c.Context.Err()
}

// TestRenderStopsWhenClientLeaves: a render that would never end stops
// when its client goes away, and that is not a render failure.
func TestRenderStopsWhenClientLeaves(t *testing.T) {
	h, logs := limitsServer(t, render.Options{RenderTimeout: time.Hour})
	for _, path := range []string{"/generic?mac=52:54:00:00:00:01", "/ipxe?mac=52:54:00:00:00:03"} {
		inner, cancel := context.WithCancel(t.Context())
		ctx := &leavingClient{Context: inner, cancel: cancel, n: 1000}
		serveWithin(t, h, httptest.NewRequest("GET", path, nil).WithContext(ctx))
		cancel()
		if ctx.looks.Load() < ctx.n {
			t.Errorf("%s: answered before the client left", path)
		}
	}
	if strings.Contains(logs.String(), "level=ERROR") || strings.Count(logs.String(), "request abandoned by the client") != 2 {
		t.Errorf("logs:\n%s", logs.String())
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if strings.Contains(rec.Body.String(), "matchbox_render_failures_total{") {
		t.Errorf("an abandoned render counted as a failure:\n%s", rec.Body.String())
	}
}
