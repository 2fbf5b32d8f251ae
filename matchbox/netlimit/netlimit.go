package netlimit

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of the zero fields of a Config.
const (
	DefaultMaxConns          = 1024
	DefaultMaxConnsPerSource = 64
	DefaultMaxBodies         = 64
	DefaultReadTimeout       = 30 * time.Second
	DefaultStallTimeout      = 30 * time.Second
	DefaultMaxHeaderBytes    = 16 << 10
)

// Timeouts that are not settings: the header must arrive within
// readHeaderTimeout (or the read timeout, if shorter), and a connection
// idle between requests is closed after idleTimeout.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
)

// Config sets the limits of one listener.
type Config struct {
	// Listener names the listener in metrics and log lines ("boot",
	// "api").
	Listener string
	// MaxConns bounds the open connections; MaxConnsPerSource those of
	// one source address.
	MaxConns, MaxConnsPerSource int
	// MaxBodies bounds the requests whose bodies are being read at once.
	MaxBodies int
	// ReadTimeout bounds the reading of one request, header and body.
	ReadTimeout time.Duration
	// StallTimeout is how long a write may make no progress before it
	// fails and its connection is dropped.
	StallTimeout time.Duration
	// MaxHeaderBytes bounds a request's header, request line included.
	MaxHeaderBytes int
	// Logger receives a line for each limit hit, if Lines allows it.
	Logger *slog.Logger
	// Lines rate-limits those lines (nil: each is written).
	Lines LineLimiter
	// Registry receives the metrics (nil: not registered).
	Registry prometheus.Registerer
}

// LineLimiter decides whether a log line is written (loglimit.Limiter
// is one): msg is a constant, key names what the line is about.
type LineLimiter interface {
	Allow(ctx context.Context, level slog.Level, msg, key string) bool
}

// Limits holds the state of one listener's limits.
type Limits struct {
	cfg    Config
	log    *slog.Logger
	bodies chan struct{}

	mu       sync.Mutex
	open     int
	bySource map[netip.Addr]int

	refused       *prometheus.CounterVec
	bodiesRefused prometheus.Counter
	stalled       prometheus.Counter
}

// Reasons a connection is refused, the reason label of
// matchbox_http_connections_refused_total.
const (
	reasonTotal  = "total"
	reasonSource = "source"
)

// New returns the limits cfg sets; zero fields take the defaults.
func New(cfg Config) *Limits {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerSource <= 0 {
		cfg.MaxConnsPerSource = DefaultMaxConnsPerSource
	}
	if cfg.MaxBodies <= 0 {
		cfg.MaxBodies = DefaultMaxBodies
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Limits{cfg: cfg, log: cfg.Logger.With("listener", cfg.Listener),
		bodies: make(chan struct{}, cfg.MaxBodies), bySource: make(map[netip.Addr]int)}
	labels := prometheus.Labels{"listener": cfg.Listener}
	l.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "matchbox_http_connections_refused_total", ConstLabels: labels,
		Help: "Connections closed as soon as accepted, by the limit they were over: total or source (one address).",
	}, []string{"reason"})
	l.bodiesRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "matchbox_http_bodies_refused_total", ConstLabels: labels,
		Help: "Requests answered 503 because too many request bodies were being read.",
	})
	l.stalled = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "matchbox_http_responses_stalled_total", ConstLabels: labels,
		Help: "Connections dropped because a response made no progress for the stall timeout.",
	})
	open := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "matchbox_http_connections_open", ConstLabels: labels,
		Help: "Connections open now.",
	}, func() float64 { return float64(l.Open()) })
	// Both reasons appear from the start, at zero.
	l.refused.WithLabelValues(reasonTotal)
	l.refused.WithLabelValues(reasonSource)
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(l.refused, l.bodiesRefused, l.stalled, open)
	}
	return l
}

// Config returns the limits in force, defaults filled in.
func (l *Limits) Config() Config { return l.cfg }

// Open returns the number of connections open now.
func (l *Limits) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// Server returns an http.Server for h with these limits' timeouts and
// header bound, h behind Handler. Serve it on a listener from Listener.
func (l *Limits) Server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           l.Handler(h),
		ReadHeaderTimeout: min(readHeaderTimeout, l.cfg.ReadTimeout),
		ReadTimeout:       l.cfg.ReadTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    l.cfg.MaxHeaderBytes,
	}
}

// Handler bounds the requests with a body that h serves at once: beyond
// MaxBodies such a request is answered 503, its body unread. Requests
// without a body are never refused. A body's place is held until h
// returns, since what h read of it lives until then, or until h calls
// BodyDone.
func (l *Limits) Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			h.ServeHTTP(w, r)
			return
		}
		select {
		case l.bodies <- struct{}{}:
		default:
			l.bodiesRefused.Inc()
			src := sourceOf(r.RemoteAddr)
			l.logLine(r.Context(), "request body refused: too many being read", src, "remote", r.RemoteAddr, "limit", l.cfg.MaxBodies)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Retry-After", "5")
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "too many request bodies being read: retry")
			return
		}
		var once sync.Once
		release := func() { once.Do(func() { <-l.bodies }) }
		defer release()
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), bodyKey{}, release)))
	})
}

type bodyKey struct{}

// BodyDone tells the limits that the handler of r is done with its body
// (read and dropped, say parsed into something small): its place goes to
// the next request before the handler returns, so that a handler that
// then waits (on a store write) does not hold it. Without Handler's
// limits it does nothing.
func BodyDone(r *http.Request) {
	if release, ok := r.Context().Value(bodyKey{}).(func()); ok {
		release()
	}
}

// logLine writes a warning about src, if the line limiter allows it.
func (l *Limits) logLine(ctx context.Context, msg string, src netip.Addr, args ...any) {
	if l.cfg.Lines != nil && !l.cfg.Lines.Allow(ctx, slog.LevelWarn, msg, src.String()) {
		return
	}
	l.log.Warn(msg, args...)
}

// admit takes a place for a connection from src, or returns why there is
// none.
func (l *Limits) admit(src netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= l.cfg.MaxConns {
		return reasonTotal
	}
	n := l.bySource[src]
	if n >= l.cfg.MaxConnsPerSource {
		return reasonSource
	}
	l.open++
	l.bySource[src] = n + 1
	return ""
}

// release gives back the place of a connection from src.
func (l *Limits) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if n := l.bySource[src] - 1; n > 0 {
		l.bySource[src] = n
	} else {
		delete(l.bySource, src)
	}
}

// sourceOf is the address of a host:port (the zero Addr when it has
// none, such as a Unix socket's peer).
func sourceOf(hostport string) netip.Addr {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// OpenFileLimit returns the process's limit of open files (the soft
// RLIMIT_NOFILE, which the Go runtime raises to the hard limit at start).
func OpenFileLimit() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("RLIMIT_NOFILE: %w", err)
	}
	return r.Cur, nil
}
