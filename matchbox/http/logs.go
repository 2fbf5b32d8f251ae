package http

import (
	"context"
	"log/slog"
	"matchbox.dev/matchbox/loglimit"
	nethttp "net/http"
	"strconv"
)

// logKey identifies a request's log line for the limiter: the endpoint,
// the status and the machine (its MAC, else its address).
func logKey(r *nethttp.Request, endpoint string, q *query, code int) string {
	who := q.labels["mac"]
	if who == "" {
		who = remoteIP(r).String()
	}
	return endpoint + " " + strconv.Itoa(code) + " " + who
}

// limitedHandler passes net/http's own log lines (which a client can cause
// on every request, such as a query with a semicolon) through the
// limiter, keyed by their text.
type limitedHandler struct {
	slog.Handler
	limit *loglimit.Limiter
}

func (h limitedHandler) Handle(ctx context.Context, r slog.Record) error {
	if !h.limit.Allow(ctx, r.Level, "http server", r.Message) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h limitedHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return limitedHandler{h.Handler.WithAttrs(attrs), h.limit}
}

func (h limitedHandler) WithGroup(name string) slog.Handler {
	return limitedHandler{h.Handler.WithGroup(name), h.limit}
}
