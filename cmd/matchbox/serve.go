package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	nethttp "net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/render"
)

// serveConfig is everything `matchbox serve` is told.
type serveConfig struct {
	address         string
	dataPath        string
	assetsPath      string
	dbPath          string
	logLevel        string
	logFormat       string
	keyRingPath     string
	watch           bool
	settle          time.Duration
	ignoreBroken    bool
	shutdownTimeout time.Duration
	cacheMB         int
	memoryLimit     string
	configFile      string
	debugAddress    string
	render          renderLimits
	// poseidon/matchbox's gRPC API (rpcserve.go): its address, TLS
	// certificate and key, and the CA of its client certificates.
	rpcAddress, certFile, keyFile, caFile, crlFile string
}

func serveFlags(fs *flag.FlagSet) *serveConfig {
	c := &serveConfig{}
	fs.StringVar(&c.address, "address", "127.0.0.1:8080", "HTTP listen address for the boot endpoints")
	fs.StringVar(&c.dataPath, "data-path", "/var/lib/matchbox", "data dir: groups/, profiles/, ignition/, cloud/, generic/")
	fs.StringVar(&c.assetsPath, "assets-path", "/var/lib/matchbox/assets", "folder served under /assets/ (empty disables)")
	fs.StringVar(&c.dbPath, "db-path", "", "embedded database file (default <data-path>/matchbox.db)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.keyRingPath, "key-ring-path", "", "private OpenPGP key ring that signs configs (.sig/.asc endpoints); passphrase in MATCHBOX_PASSPHRASE")
	fs.BoolVar(&c.watch, "watch", true, "reload the data dir when its files change")
	fs.DurationVar(&c.settle, "watch-settle", 200*time.Millisecond, "wait this long after the last change before reloading")
	fs.BoolVar(&c.ignoreBroken, "ignore-broken-groups", false, "serve the machines a group file that does not load may select the next matching group, as poseidon/matchbox does, instead of no group (risky: that may be a default group that installs to disk)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long to drain open requests on shutdown")
	fs.IntVar(&c.cacheMB, "ignition-cache-mb", 32, "memory bound of the Butane→Ignition translation cache, in MiB")
	fs.StringVar(&c.debugAddress, "debug-address", "", "serve Go's profiling endpoints (/debug/pprof/, no authentication) on this loopback address, e.g. 127.0.0.1:6060 (off when empty)")
	fs.StringVar(&c.configFile, "config", "", "config file (YAML or JSON): serve flags by name, and a dhcp section for per-interface modes and per-subnet options")
	c.render.define(fs)
	fs.StringVar(&c.memoryLimit, "memory-limit", "auto", `soft memory limit of the Go runtime: "auto" (from the loaded configuration), "off", or MiB`)
	fs.StringVar(&c.rpcAddress, "rpc-address", "", "listen address of the gRPC API (poseidon/matchbox's, for terraform-provider-matchbox); served only over TLS with client certificates (empty disables it)")
	fs.StringVar(&c.certFile, "cert-file", defaultRPCCertFile, "TLS certificate of the gRPC API (PEM), read again when it changes")
	fs.StringVar(&c.keyFile, "key-file", defaultRPCKeyFile, "TLS private key of the gRPC API (PEM)")
	fs.StringVar(&c.caFile, "ca-file", defaultRPCCAFile, "CA certificate(s) (PEM) whose client certificates the gRPC API accepts (role from the OU: read, admin, or none: admin)")
	fs.StringVar(&c.crlFile, "crl-file", "", "certificate revocation lists (PEM or DER) of the -ca-file CAs, for the gRPC API; checked on every handshake and call, read again when the file changes")
	return c
}

// claims drops the claims of group files that do not load when the
// operator accepts the risk (-ignore-broken-groups): their machines then get
// the next matching group. The files are still reported.
func (c *serveConfig) claims(objs matchbox.Objects) matchbox.Objects {
	if c.ignoreBroken {
		objs.Claims = nil
	}
	return objs
}

// claimsError says, for /readyz, which group files that do not load
// withhold groups from which machines.
func claimsError(claims []matchbox.Claim) error {
	if len(claims) == 0 {
		return nil
	}
	var b strings.Builder
	for i, cl := range claims {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s does not load (%s): no group is served to %s", cl.Origin, cl.Reason, cl.Covers())
	}
	return errors.New(b.String())
}

func newLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level: %q is not one of debug, info, warn, error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format: %q is not text or json", format)
}

// catalogMetrics exports the shape and health of the configuration.
type catalogMetrics struct {
	groups, profiles, templates prometheus.Gauge
	problems                    *prometheus.GaugeVec
	reloads                     prometheus.Counter
}

func newCatalogMetrics(reg *prometheus.Registry, eng *render.Engine) *catalogMetrics {
	m := &catalogMetrics{
		groups:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "matchbox_groups", Help: "Groups loaded."}),
		profiles:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "matchbox_profiles", Help: "Profiles loaded."}),
		templates: prometheus.NewGauge(prometheus.GaugeOpts{Name: "matchbox_templates", Help: "Templates loaded."}),
		problems: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "matchbox_config_problems", Help: "Problems in the current configuration, by severity.",
		}, []string{"severity"}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{Name: "matchbox_datadir_reloads_total", Help: "Data dir reloads after file changes."}),
	}
	reg.MustRegister(m.groups, m.profiles, m.templates, m.problems, m.reloads,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "matchbox_ignition_translate_cache_hits_total", Help: "Butane translations answered from the cache.",
		}, func() float64 { return float64(eng.Stats().TranslateHits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "matchbox_ignition_translate_cache_misses_total", Help: "Butane translations computed.",
		}, func() float64 { return float64(eng.Stats().TranslateMisses) }),
	)
	return m
}

func (m *catalogMetrics) update(snap *matchbox.Snapshot, probs []matchbox.Problem) {
	g, p, t := snap.Counts()
	m.groups.Set(float64(g))
	m.profiles.Set(float64(p))
	m.templates.Set(float64(t))
	counts := map[string]float64{"error": 0, "warning": 0}
	for _, p := range probs {
		counts[strings.ToLower(string(p.Severity))]++
	}
	for sev, n := range counts {
		m.problems.WithLabelValues(sev).Set(n)
	}
}

// memoryTuner sets the Go runtime's soft memory limit from the size of the
// loaded configuration: the live heap, plus as much again as the
// configuration took when it was loaded (the garbage allowed between
// collections grows with what each collection has to walk), plus the
// translation cache bound and 64 MiB for requests. The live heap is
// sampled again every interval (lease tables and caches grow), but the
// headroom is only re-measured when the configuration is reloaded, so a
// heap inflated by a burst of requests does not inflate it. Below the
// limit garbage may reach 4 times the live heap (GOGC 400) before a
// collection, so small servers are not collecting many times a second
// under load. GOMEMLIMIT or GOGC in the environment, or -memory-limit,
// override it.
type memoryTuner struct {
	auto       bool
	cacheBytes int64
	log        *slog.Logger
	// config is the live heap right after the last configuration load.
	config atomic.Int64
}

func newMemoryTuner(mode string, cacheBytes int, log *slog.Logger) (*memoryTuner, error) {
	t := &memoryTuner{cacheBytes: int64(cacheBytes), log: log}
	switch {
	case os.Getenv("GOMEMLIMIT") != "":
		log.Info("memory limit from GOMEMLIMIT", "bytes", debug.SetMemoryLimit(-1))
	case mode == "off":
	case mode == "auto":
		t.auto = true
		// With the limit bounding memory, collect less often than Go's
		// default below it: a small heap would otherwise be collected
		// many times a second under a DHCP storm, stalling replies.
		if os.Getenv("GOGC") == "" {
			debug.SetGCPercent(400)
		}
	default:
		mib, err := strconv.ParseInt(mode, 10, 64)
		if err != nil || mib <= 0 {
			return nil, fmt.Errorf(`-memory-limit: %q is not "auto", "off" or a number of MiB`, mode)
		}
		debug.SetMemoryLimit(mib << 20)
	}
	return t, nil
}

// follow recomputes the limit every interval from the live heap measured
// by the last collection, until ctx ends.
func (t *memoryTuner) follow(ctx context.Context, interval time.Duration) {
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			t.tune()
		}
	}
}

// loaded re-measures the configuration's size and the limit; call it after
// the configuration changed, with collect set unless a collection just ran.
func (t *memoryTuner) loaded(collect bool) {
	if !t.auto {
		return
	}
	if collect {
		runtime.GC()
	}
	if live, ok := liveHeap(); ok {
		t.config.Store(live)
	}
	t.tune()
}

// tune recomputes the automatic limit from the current live heap.
func (t *memoryTuner) tune() {
	if !t.auto {
		return
	}
	live, ok := liveHeap()
	if !ok {
		return
	}
	limit := live + t.config.Load() + t.cacheBytes + 64<<20
	debug.SetMemoryLimit(limit)
	t.log.Debug("memory limit set", "live_bytes", live, "config_bytes", t.config.Load(), "limit_bytes", limit)
}

// liveHeap is the heap the last collection found live.
func liveHeap() (int64, bool) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return 0, false
	}
	return int64(sample[0].Value.Uint64()), true
}

// debugHandler serves Go's profiling endpoints.
func debugHandler() nethttp.Handler {
	mux := nethttp.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
