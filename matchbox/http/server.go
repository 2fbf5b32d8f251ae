package http

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	nethttp "net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/loglimit"
	"matchbox.dev/matchbox/metrics"
	"matchbox.dev/matchbox/netlimit"
	"matchbox.dev/matchbox/recorder"
	"matchbox.dev/matchbox/render"
	"matchbox.dev/matchbox/sign"
)

// Config configures a Server.
type Config struct {
	// Catalog is where the server takes the current snapshot from; the
	// boot decision is taken on it (with Lifecycle's gates) unless Booter
	// is set.
	Catalog matchbox.SnapshotSource
	// Booter takes the boot decision (default: one over Catalog and
	// Lifecycle).
	Booter *matchbox.Booter
	Engine *render.Engine
	// AssetsPath is served under /assets/; empty disables it.
	AssetsPath string
	// BootFilesPath (the TFTP root) is served under /boot/ for UEFI HTTP
	// Boot clients; empty disables it.
	BootFilesPath string
	// BootFilesPinned maps boot file names to absolute paths outside
	// BootFilesPath that are served all the same (see tftp.Config.Pinned).
	BootFilesPinned map[string]string
	// Signer, when set, enables the .sig and .asc endpoint variants. It
	// also keeps {{.request.host}} from following a client's Host header
	// unless that names the listening address or one of HostNames.
	Signer *sign.Signer
	// HostNames are the names (host or host:port) machines reach the boot
	// endpoints by, besides the listening address; a name without a port
	// stands for the listening port or none. Used with a Signer.
	HostNames []string
	// Transport bounds what clients can hold of the listener: open
	// connections, bodies being read, read and stall timeouts, header
	// size (zero fields: netlimit's defaults).
	Transport netlimit.Config
	Logger    *slog.Logger
	// Registry receives the server's metrics and is served at /metrics.
	Registry *prometheus.Registry
	// Ready reports whether the server is ready for traffic (/readyz).
	Ready func() error
	// ShutdownTimeout bounds the graceful drain (default 10s).
	ShutdownTimeout time.Duration
	// Recorder records boot steps on machines (nil: not recorded).
	Recorder *recorder.Recorder
	// Lifecycle, when set, gates what machines being reinstalled are
	// served and takes installers' reports at /lifecycle/report.
	Lifecycle Lifecycle
	// Leases, when set, binds configs to DHCP leases (-config-binding
	// lease): /ignition, /cloud, /generic and /metadata, any answer that
	// carries a reinstall token, and installers' reports are taken only
	// from the address that holds a current lease of the MAC the request
	// names; others get 403.
	Leases LeaseHolder
	// Updates and UpdatePayloads, when both set, answer Flatcar's update
	// checks at POST /v1/update/ (update.conf's SERVER=).
	Updates        Updates
	UpdatePayloads UpdatePayloads
}

// Lifecycle is the part of the reinstall engine (reinstall.Engine) the
// boot endpoints need: its gates (for the default Booter), the token check
// of reports, and the two moves machines make: fetching the install
// config (InstallStarted) and reporting.
type Lifecycle interface {
	Gate(mac string) (matchbox.Gate, bool)
	CheckToken(mac, token string) error
	InstallStarted(ctx context.Context, mac, token string) (matchbox.Workflow, error)
	Report(ctx context.Context, mac, token string, r matchbox.InstallReport) (matchbox.Workflow, error)
}

// Server serves boot configs to machines.
type Server struct {
	cfg      Config
	log      *slog.Logger
	limit    *loglimit.Limiter
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	failures *prometheus.CounterVec
	handler  nethttp.Handler
	limits   *netlimit.Limits
	// hostNames indexes Config.HostNames (see ownHost).
	hostNames map[string]bool
	booter    *matchbox.Booter
	// updateChecks, updateEvents and updateGrants count the update
	// endpoint's work (nil without an update service).
	updateChecks, updateEvents, updateGrants *prometheus.CounterVec
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Ready == nil {
		cfg.Ready = func() error { return nil }
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.Booter == nil {
		var gates matchbox.Gates
		if cfg.Lifecycle != nil {
			gates = cfg.Lifecycle
		}
		cfg.Booter = matchbox.NewBooter(cfg.Catalog, gates)
	}
	if cfg.Recorder == nil {
		cfg.Recorder = recorder.New(nil, nil)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, limit: loglimit.New(cfg.Logger), booter: cfg.Booter}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "matchbox_http_requests_total",
		Help: "Boot HTTP requests by endpoint and status code.",
	}, []string{"endpoint", "code"})
	s.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "matchbox_http_request_duration_seconds",
		Help:    "Time to answer boot HTTP requests, by endpoint.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1},
	}, []string{"endpoint"})
	s.failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "matchbox_render_failures_total",
		Help: "Requests that matched a profile but could not be rendered, by endpoint.",
	}, []string{"endpoint"})
	// The recorder's suppressed lines are exported here, with the
	// registry /metrics serves.
	cfg.Registry.MustRegister(s.requests, s.duration, s.failures, metrics.SuppressedLines(s.limit.Suppressed), metrics.SuppressedLines(cfg.Recorder.Suppressed))
	if cfg.Updates != nil && cfg.UpdatePayloads != nil {
		s.updateChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matchbox_update_checks_total", Help: "Flatcar update checks answered, by answer: update, none (up to date), held (with the reason), error.",
		}, []string{"answer", "reason"})
		s.updateEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matchbox_update_events_total", Help: "Flatcar update events taken, by what they say: downloading, downloaded, installed, completed, failed (with update_engine's error code).",
		}, []string{"event", "code"})
		s.updateGrants = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matchbox_update_grants_total", Help: "Flatcar updates granted, by update group.",
		}, []string{"group"})
		cfg.Registry.MustRegister(s.updateChecks, s.updateEvents, s.updateGrants)
	}
	t := cfg.Transport
	if t.Listener == "" {
		t.Listener = "boot"
	}
	if t.Logger == nil {
		t.Logger = cfg.Logger
	}
	if t.Lines == nil {
		t.Lines = s.limit
	}
	if t.Registry == nil {
		t.Registry = cfg.Registry
	}
	s.limits = netlimit.New(t)
	s.hostNames = hostNames(cfg.HostNames)
	s.handler = s.checkHost(s.routes())
	return s
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() nethttp.Handler { return s.handler }

// Serve answers requests on ln until ctx ends, then drains open requests
// for up to ShutdownTimeout. The limits of Config.Transport apply.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := s.limits.Server(s.handler)
	srv.ErrorLog = slog.NewLogLogger(limitedHandler{s.log.Handler(), s.limit}, slog.LevelWarn)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.limits.Listener(ln)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http: %w", err)
	case <-ctx.Done():
	}
	// A fresh context: the serve context is already cancelled.
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("http: shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, nethttp.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}

// bootIPXE is the static script that makes iPXE send what it knows about
// the machine to /ipxe.
const bootIPXE = "#!ipxe\nchain ipxe?uuid=${uuid}&mac=${mac:hexhyp}&domain=${domain}&hostname=${hostname}&serial=${serial}&arch=${buildarch:uristring}\n"

const (
	textType = "text/plain; charset=utf-8"
	jsonType = "application/json"
	sigType  = "application/pgp-signature"
)

// answer is a rendered body ready to write.
type answer struct {
	body        []byte
	contentType string
}

// renderFunc produces the body for one endpoint.
type renderFunc func(r *nethttp.Request, q *query) (answer, error)

// query is one parsed boot request.
type query struct {
	file   string // "/" + the endpoint, for events
	labels map[string]string
	raw    string
	host   string
	// d is the boot decision for the machine the request names.
	d   matchbox.Decision
	eng *render.Engine
	// confirmed: the request comes from the holder of the DHCP lease of
	// the MAC it names (lease binding only).
	confirmed bool
}

func (q *query) data(withHost bool) map[string]any {
	req := render.Request{Labels: q.labels, RawQuery: q.raw}
	if withHost {
		req.Host = q.host
	}
	return q.eng.BootData(&q.d, req, q.host)
}

func (s *Server) routes() nethttp.Handler {
	mux := nethttp.NewServeMux()
	static := func(*nethttp.Request, *query) (answer, error) {
		return answer{[]byte(bootIPXE), textType}, nil
	}
	eng := s.cfg.Engine
	endpoints := []struct {
		path    string
		selects bool
		fn      renderFunc
	}{
		// /metadata needs only the group (as in poseidon/matchbox): it
		// answers even when the group names a missing profile.
		{"/boot.ipxe", false, static},
		{"/boot.ipxe.0", false, static},
		{"/ipxe", true, func(r *nethttp.Request, q *query) (answer, error) {
			if q.d.Held && q.d.Gate.State == matchbox.StateInstalled {
				return answer{render.LocalBootIPXE, textType}, nil
			}
			b, err := eng.IPXE(r.Context(), q.d.Selection, q.data(true))
			return answer{b, textType}, err
		}},
		{"/grub", true, func(r *nethttp.Request, q *query) (answer, error) {
			if q.d.Held && q.d.Gate.State == matchbox.StateInstalled {
				return answer{render.LocalBootGRUB, textType}, nil
			}
			b, err := eng.GRUB(r.Context(), q.d.Selection, q.data(true))
			return answer{b, textType}, err
		}},
		{"/ignition", true, func(r *nethttp.Request, q *query) (answer, error) {
			b, err := eng.Ignition(r.Context(), q.d.Snapshot, q.d.Selection, q.data(true))
			return answer{b, jsonType}, err
		}},
		{"/cloud", true, func(r *nethttp.Request, q *query) (answer, error) {
			b, err := eng.Template(r.Context(), q.d.Snapshot, q.d.Selection, matchbox.KindCloud, q.data(true))
			return answer{b, textType}, err
		}},
		{"/generic", true, func(r *nethttp.Request, q *query) (answer, error) {
			b, err := eng.Template(r.Context(), q.d.Snapshot, q.d.Selection, matchbox.KindGeneric, q.data(true))
			return answer{b, textType}, err
		}},
		{"/metadata", true, func(_ *nethttp.Request, q *query) (answer, error) {
			return answer{render.Metadata(q.data(false)), textType}, nil
		}},
	}
	for _, ep := range endpoints {
		name := strings.TrimPrefix(ep.path, "/")
		sel := selectNone
		if ep.selects {
			sel = selectProfile
			if ep.path == "/metadata" {
				sel = selectGroup
			}
		}
		mux.Handle(ep.path, s.boot(name, sel, ep.fn, ""))
		if s.cfg.Signer != nil {
			mux.Handle(ep.path+".sig", s.boot(name+".sig", sel, ep.fn, "sig"))
			mux.Handle(ep.path+".asc", s.boot(name+".asc", sel, ep.fn, "asc"))
		}
	}
	if s.cfg.Updates != nil && s.cfg.UpdatePayloads != nil {
		h := s.instrument("update", nethttp.HandlerFunc(s.updateEndpoint))
		mux.Handle("/v1/update", h)
		mux.Handle("/v1/update/{$}", h)
	}
	if s.cfg.Lifecycle != nil {
		mux.Handle("/lifecycle/report", s.instrument("lifecycle-report", nethttp.HandlerFunc(s.report)))
	}
	if s.cfg.AssetsPath != "" {
		mux.Handle("/assets/", s.instrument("assets", s.assets()))
	}
	if s.cfg.BootFilesPath != "" {
		mux.Handle("/boot/", s.instrument("boot-files", s.files(s.cfg.BootFilesPath, "/boot/", s.cfg.BootFilesPinned)))
	}
	mux.Handle("/healthz", s.instrument("healthz", getOnly(func(w nethttp.ResponseWriter, _ *nethttp.Request) {
		writeBody(w, textType, []byte("ok\n"))
	})))
	mux.Handle("/readyz", s.instrument("readyz", getOnly(func(w nethttp.ResponseWriter, _ *nethttp.Request) {
		if err := s.cfg.Ready(); err != nil {
			w.Header().Set("Content-Type", textType)
			w.WriteHeader(nethttp.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		writeBody(w, textType, []byte("ready\n"))
	})))
	mux.Handle("/metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))
	mux.Handle("/{$}", s.instrument("home", getOnly(func(w nethttp.ResponseWriter, _ *nethttp.Request) {
		writeBody(w, textType, []byte("matchbox\n"))
	})))
	return mux
}

// statusWriter remembers the status code for metrics and logs.
type statusWriter struct {
	nethttp.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = nethttp.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps sendfile for assets.
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.code == 0 {
		w.code = nethttp.StatusOK
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(w.ResponseWriter, r)
}

func (s *Server) instrument(endpoint string, h nethttp.Handler) nethttp.Handler {
	hist := s.duration.WithLabelValues(endpoint)
	return nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = nethttp.StatusOK
		}
		hist.Observe(time.Since(start).Seconds())
		s.requests.WithLabelValues(endpoint, strconv.Itoa(sw.code)).Inc()
	})
}

func getOnly(fn nethttp.HandlerFunc) nethttp.Handler {
	return nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		if r.Method != nethttp.MethodGet && r.Method != nethttp.MethodHead {
			methodNotAllowed(w)
			return
		}
		fn(w, r)
	})
}

func methodNotAllowed(w nethttp.ResponseWriter) {
	w.Header().Set("Allow", "GET, HEAD")
	w.Header().Set("Content-Type", textType)
	w.WriteHeader(nethttp.StatusMethodNotAllowed)
	fmt.Fprintln(w, "method not allowed: use GET or HEAD")
}

func writeBody(w nethttp.ResponseWriter, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(nethttp.StatusOK)
	_, _ = w.Write(body)
}

// selection says what an endpoint needs selected before it renders.
type selection int

const (
	selectNone    selection = iota // static answer
	selectGroup                    // a matching group
	selectProfile                  // a matching group and its profile
)

// boot builds the handler of one boot endpoint; sig is "", "sig" or "asc".
func (s *Server) boot(endpoint string, need selection, fn renderFunc, sig string) nethttp.Handler {
	selects := need != selectNone
	file := "/" + endpoint
	binds := bindsConfig[strings.TrimSuffix(strings.TrimSuffix(endpoint, ".sig"), ".asc")]
	return s.instrument(endpoint, nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		if r.Method != nethttp.MethodGet && r.Method != nethttp.MethodHead {
			methodNotAllowed(w)
			return
		}
		q := &query{file: file, raw: r.URL.RawQuery, host: requestHost(r), eng: s.cfg.Engine}
		if selects {
			var err error
			if q.labels, err = matchbox.ParseQueryLabels(r.URL.RawQuery); err != nil {
				s.fail(w, r, endpoint, q, err)
				return
			}
			s.confirm(r, q)
			if binds && s.cfg.Leases != nil && !q.confirmed {
				s.fail(w, r, endpoint, q, s.refuseUnbound(r, q, "the config"))
				return
			}
			q.d = s.booter.Decide(q.labels)
			if q.d.Refused != nil {
				s.fail(w, r, endpoint, q, q.d.Refused)
				return
			}
			if s.cfg.Leases != nil && !q.confirmed && q.d.Token() != "" && !(q.d.Gate.State == matchbox.StateInstalled && !binds) {
				// The answer would carry the reinstall's token (an
				// installed machine's iPXE and GRUB answers do not: they
				// boot from disk).
				s.fail(w, r, endpoint, q, s.refuseUnbound(r, q, "a reinstall's boot"))
				return
			}
			if err := q.d.Err; err != nil && !(need == selectGroup && q.d.Group != nil) {
				s.fail(w, r, endpoint, q, err)
				return
			}
		}
		ans, err := fn(r, q)
		if err != nil {
			s.fail(w, r, endpoint, q, err)
			return
		}
		if sig != "" {
			var buf bytes.Buffer
			if sig == "asc" {
				err = s.cfg.Signer.SignArmored(&buf, ans.body)
			} else {
				err = s.cfg.Signer.Sign(&buf, ans.body)
			}
			if err != nil {
				s.fail(w, r, endpoint, q, fmt.Errorf("sign: %w", err))
				return
			}
			ans = answer{buf.Bytes(), sigType}
		}
		writeBody(w, ans.contentType, ans.body)
		if selects {
			if s.log.Enabled(r.Context(), slog.LevelDebug) {
				s.log.LogAttrs(r.Context(), slog.LevelDebug, "served", s.attrs(r, endpoint, q, nethttp.StatusOK)...)
			}
			detail := ""
			if q.d.Held {
				detail = "reinstall: " + string(q.d.Gate.State)
			}
			s.record(r, endpoint, q, matchbox.EventHTTPServed, detail)
			if q.d.Gate.State == matchbox.StateBooting && q.labels["token"] != "" && endpoint != "ipxe" && endpoint != "grub" {
				s.installStarted(r, q)
			}
		}
	}))
}

// installStarted moves a booting machine's reinstall to installing: the
// installer fetched its install config with the reinstall's token (Decide
// checked it).
func (s *Server) installStarted(r *nethttp.Request, q *query) {
	mac := q.labels["mac"]
	if _, err := s.cfg.Lifecycle.InstallStarted(r.Context(), mac, q.labels["token"]); err != nil {
		// Another request of the installer moved it first.
		s.log.Debug("reinstall not moved to installing", "mac", mac, "endpoint", q.file, "err", err)
	}
}

// report takes an installer's or installed system's report:
// POST /lifecycle/report?mac=M&token=T&status=installed|failed|booted[&exit=N]
// with the end of the installer's log as the body. The sender and the
// token are checked before the body is read.
func (s *Server) report(w nethttp.ResponseWriter, r *nethttp.Request) {
	q := &query{file: "/lifecycle/report", raw: r.URL.RawQuery, host: requestHost(r)}
	if r.Method != nethttp.MethodPost {
		w.Header().Set("Allow", "POST")
		nethttp.Error(w, "method not allowed: POST a report", nethttp.StatusMethodNotAllowed)
		return
	}
	vals := r.URL.Query()
	mac, err := matchbox.NormalizeMAC(vals.Get("mac"))
	if err != nil {
		s.fail(w, r, "lifecycle-report", q, err)
		return
	}
	q.labels = map[string]string{"mac": mac}
	s.confirm(r, q)
	if s.cfg.Leases != nil && !q.confirmed {
		s.fail(w, r, "lifecycle-report", q, s.refuseUnbound(r, q, "a report"))
		return
	}
	token := vals.Get("token")
	if err := s.cfg.Lifecycle.CheckToken(mac, token); err != nil {
		s.fail(w, r, "lifecycle-report", q, err)
		return
	}
	rep := matchbox.InstallReport{Status: matchbox.ReportStatus(vals.Get("status"))}
	if e := vals.Get("exit"); e != "" {
		n, err := strconv.Atoi(e)
		if err != nil {
			s.fail(w, r, "lifecycle-report", q, fmt.Errorf("exit status %s is not a number: %w", matchbox.Quote(e), matchbox.ErrInvalid))
			return
		}
		rep.ExitStatus = &n
	}
	if r.ContentLength > MaxReportBody {
		s.fail(w, r, "lifecycle-report", q, fmt.Errorf("%w: report body over %d bytes (send the end of the log)", matchbox.ErrInvalid, MaxReportBody))
		return
	}
	body, err := io.ReadAll(nethttp.MaxBytesReader(w, r.Body, MaxReportBody))
	if err != nil {
		var tooLarge *nethttp.MaxBytesError
		if errors.As(err, &tooLarge) {
			err = fmt.Errorf("%w: report body over %d bytes (send the end of the log)", matchbox.ErrInvalid, MaxReportBody)
		} else {
			err = fmt.Errorf("read report: %w", err)
		}
		s.fail(w, r, "lifecycle-report", q, err)
		return
	}
	rep.Log = string(body)
	wf, err := s.cfg.Lifecycle.Report(r.Context(), mac, token, rep)
	if err != nil {
		s.fail(w, r, "lifecycle-report", q, err)
		return
	}
	s.log.Info("install report", "mac", mac, "status", rep.Status, "state", wf.State)
	writeBody(w, textType, []byte("ok: "+string(wf.State)+"\n"))
}

func (s *Server) attrs(r *nethttp.Request, endpoint string, q *query, code int) []slog.Attr {
	attrs := []slog.Attr{
		slog.String("endpoint", endpoint),
		slog.Int("status", code),
		slog.String("remote", r.RemoteAddr),
	}
	if mac := q.labels["mac"]; mac != "" {
		attrs = append(attrs, slog.String("mac", mac))
	} else if raw := r.URL.Query().Get("mac"); raw != "" {
		attrs = append(attrs, slog.String("mac", matchbox.Quote(raw)))
	}
	if q.d.Group != nil {
		attrs = append(attrs, slog.String("group", q.d.Group.ID))
	}
	if q.d.Profile != nil {
		attrs = append(attrs, slog.String("profile", q.d.Profile.ID))
	}
	return attrs
}

// fail maps an error to its HTTP answer: the one place that does so.
func (s *Server) fail(w nethttp.ResponseWriter, r *nethttp.Request, endpoint string, q *query, err error) {
	if r.Context().Err() != nil && errors.Is(err, r.Context().Err()) {
		// The client went away (or the server is shutting down) while
		// its answer was rendered: nothing failed, and nobody is
		// listening for a status.
		if s.limit.Allow(r.Context(), slog.LevelInfo, "request abandoned by the client", logKey(r, endpoint, q, 0)) {
			s.log.LogAttrs(r.Context(), slog.LevelInfo, "request abandoned by the client", append(s.attrs(r, endpoint, q, 0), slog.String("err", err.Error()))...)
		}
		return
	}
	code := nethttp.StatusInternalServerError
	level := slog.LevelError
	var rerr *render.Error
	switch {
	case errors.Is(err, matchbox.ErrInvalid):
		code, level = nethttp.StatusBadRequest, slog.LevelWarn
	case errors.Is(err, matchbox.ErrNotFound):
		code, level = nethttp.StatusNotFound, slog.LevelInfo
	case errors.Is(err, matchbox.ErrStaleToken), errors.Is(err, matchbox.ErrForbidden):
		code, level = nethttp.StatusForbidden, slog.LevelWarn
	case errors.Is(err, matchbox.ErrConflict):
		code, level = nethttp.StatusConflict, slog.LevelWarn
	case errors.Is(err, matchbox.ErrUnavailable):
		// Withheld, not broken here: the machine asks again, and gets
		// its answer once the configuration allows one.
		code, level = nethttp.StatusServiceUnavailable, slog.LevelWarn
		w.Header().Set("Retry-After", "10")
	case errors.As(err, &rerr):
		s.failures.WithLabelValues(endpoint).Inc()
	}
	if s.limit.Allow(r.Context(), level, "request failed", logKey(r, endpoint, q, code)) {
		s.log.LogAttrs(r.Context(), level, "request failed", append(s.attrs(r, endpoint, q, code), slog.String("err", err.Error()))...)
	}
	s.record(r, endpoint, q, matchbox.EventHTTPFailed, fmt.Sprintf("%d: %s", code, shortReason(err)))
	if r.ContentLength != 0 {
		// A refused body is not read: answer at once and close, rather
		// than read what is left of it first, as net/http would to keep
		// the connection.
		w.Header().Set("Connection", "close")
	}
	w.Header().Set("Content-Type", textType)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintln(w, shortReason(err))
}

// record records a boot request on the machine named by its mac label, and
// remembers the machine's address for requests that carry no MAC (assets).
func (s *Server) record(r *nethttp.Request, endpoint string, q *query, kind matchbox.EventKind, detail string) {
	mac := q.labels["mac"]
	if mac == "" {
		return
	}
	// Only lease binding confirms that the MAC is the requester's.
	ev := matchbox.Event{MAC: mac, Kind: kind, File: q.file, Arch: q.labels["arch"], UUID: q.labels["uuid"], Detail: detail, Claimed: !q.confirmed}
	if ip := remoteIP(r); ip.IsValid() {
		ev.IP = ip.String()
	}
	if q.d.Group != nil {
		ev.Group = q.d.Group.ID
	}
	if q.d.Profile != nil {
		ev.Profile = q.d.Profile.ID
	}
	s.cfg.Recorder.Record(ev)
}

func remoteIP(r *nethttp.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// shortReason is the first line of an error, bounded, for response bodies.
func shortReason(err error) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if len(msg) > 512 {
		msg = msg[:512] + "…"
	}
	return msg
}

// requestHost is the host:port the client used to reach us: its Host
// header (checked by checkHost), else the address it came in on.
func requestHost(r *nethttp.Request) string {
	if r.Host != "" {
		return r.Host
	}
	return localHost(r)
}
