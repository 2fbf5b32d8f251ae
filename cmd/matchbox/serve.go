package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	nethttp "net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"matchbox.dev/matchbox"
	mbhttp "matchbox.dev/matchbox/http"
	"matchbox.dev/matchbox/recorder"
	"matchbox.dev/matchbox/release"
	"matchbox.dev/matchbox/render"
	"matchbox.dev/matchbox/sign"
	"matchbox.dev/matchbox/storage"
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
	// Flags of poseidon/matchbox's gRPC API, accepted so existing unit
	// files keep working; the API is not served.
	rpcAddress, certFile, keyFile, caFile string
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
	fs.StringVar(&c.rpcAddress, "rpc-address", "", "poseidon/matchbox gRPC API address (not served; accepted for compatibility)")
	fs.StringVar(&c.certFile, "cert-file", "", "poseidon/matchbox gRPC TLS certificate (accepted for compatibility)")
	fs.StringVar(&c.keyFile, "key-file", "", "poseidon/matchbox gRPC TLS key (accepted for compatibility)")
	fs.StringVar(&c.caFile, "ca-file", "", "poseidon/matchbox gRPC client CA (accepted for compatibility)")
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

func serve(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("matchbox serve", flag.ContinueOnError)
	c := serveFlags(fs)
	nbc := netbootFlags(fs)
	ac := apiFlags(fs)
	lcc := lifecycleFlags(fs)
	rc := releaseServeFlags(fs)
	bc := bindingFlags(fs)
	tc := transportFlags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	set, err := parseFlagsSet(fs, args, stderr)
	if err != nil {
		return err
	}
	var fc *fileConfig
	if c.configFile != "" {
		if fc, err = loadFileConfig(c.configFile, fs); err != nil {
			return err
		}
		if err := fc.apply(fs, set); err != nil {
			return err
		}
	}
	if *showVersion {
		fmt.Fprintln(stderr, versionString())
		return nil
	}
	if err := nbc.dhcpLimits(); err != nil {
		return err
	}
	log, err := newLogger(c.logLevel, c.logFormat, stderr)
	if err != nil {
		return err
	}
	tp, err := setupTransport(tc, nbc, log)
	if err != nil {
		return err
	}
	if c.rpcAddress != "" || c.certFile != "" || c.keyFile != "" || c.caFile != "" {
		log.Warn("the poseidon/matchbox gRPC API is not served; -rpc-address, -cert-file, -key-file and -ca-file are ignored")
	}
	if c.debugAddress != "" && !loopbackOnly(c.debugAddress) {
		return fmt.Errorf("-debug-address %s is not a loopback address: the profiling endpoints have no authentication; listen on 127.0.0.1 and reach them through an SSH tunnel (ssh -L 6060:127.0.0.1:6060 HOST)", c.debugAddress)
	}
	if c.dbPath == "" {
		c.dbPath = filepath.Join(c.dataPath, "matchbox.db")
	}
	if st, err := os.Stat(c.dataPath); err != nil || !st.IsDir() {
		return fmt.Errorf("-data-path %s: not a readable directory", c.dataPath)
	}
	if c.assetsPath != "" {
		if st, err := os.Stat(c.assetsPath); err != nil || !st.IsDir() {
			log.Warn("assets folder missing; /assets/ answers 404 until it exists", "path", c.assetsPath)
		}
	}

	var signer *sign.Signer
	if c.keyRingPath != "" {
		if err := checkSecretFile(log, "-key-ring-path", c.keyRingPath); err != nil {
			return err
		}
		signer, err = sign.LoadKeyRing(c.keyRingPath, []byte(os.Getenv("MATCHBOX_PASSPHRASE")))
		if err != nil {
			return err
		}
	}

	db, err := storage.OpenBolt(c.dbPath)
	if err != nil {
		return fmt.Errorf("%w (set -db-path to a writable file)", err)
	}
	defer db.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "matchbox_build_info", Help: "Build information.", ConstLabels: prometheus.Labels{"version": versionString()},
	}, func() float64 { return 1 }))

	syncChannels, err := rc.channels()
	if err != nil {
		return err
	}
	engineOpts := render.Options{TranslateCacheBytes: c.cacheMB << 20, ReleaseBaseURL: rc.baseURL, RenderTimeout: c.render.timeoutValue(), RenderMaxBytes: c.render.maxBytes()}
	var mirror *release.Mirror
	if c.assetsPath != "" {
		if mirror, err = openMirror(c.assetsPath, rc.baseURL, rc.key, log.With("component", "release")); err != nil {
			return err
		}
		engineOpts.Releases = mirror
	} else if len(syncChannels) > 0 {
		return errors.New("-release-sync needs -assets-path: the release mirror lives in it")
	}
	engine := render.NewEngine(engineOpts)
	catalog := matchbox.NewCatalog("datadir", "db")
	cm := newCatalogMetrics(reg, engine)
	registerRenderLimitMetrics(reg, engine)
	reported := map[string]bool{}
	catalog.OnChange(func(snap *matchbox.Snapshot) {
		engine.Prune(snap)
		probs := append(append([]matchbox.Problem{}, snap.Problems()...), engine.CheckTemplates(snap)...)
		cm.update(snap, probs)
		// Log each problem once, not again on every reload.
		now := map[string]bool{}
		for _, p := range probs {
			key := p.String()
			now[key] = true
			if reported[key] {
				continue
			}
			if p.Severity == matchbox.SeverityError {
				log.Error("config problem", "file", p.Origin, "problem", p.Message)
			} else {
				log.Warn("config problem", "file", p.Origin, "problem", p.Message)
			}
		}
		reported = now
	})

	start := time.Now()
	dd := storage.NewDataDir(c.dataPath, log)
	// Watch before loading, so that no edit can fall between the two.
	var watcher *storage.Watcher
	if c.watch {
		if watcher, err = dd.NewWatcher(); err != nil {
			return err
		}
		defer watcher.Close()
	}
	// The initial load allocates mostly what it keeps: collect less often
	// while it runs.
	gcPercent := debug.SetGCPercent(400)
	objs, err := dd.Load(ctx)
	if err != nil {
		return err
	}
	objs = c.claims(objs)
	dbObjs, err := db.Objects(ctx)
	if err != nil {
		return err
	}
	snap := catalog.UpdateSources(ctx, map[string]matchbox.Objects{"datadir": objs, "db": dbObjs})
	// Hand the garbage of the initial load back to the OS.
	debug.SetGCPercent(gcPercent)
	debug.FreeOSMemory()
	mem, err := newMemoryTuner(c.memoryLimit, c.cacheMB<<20, log)
	if err != nil {
		return err
	}
	mem.loaded(false)
	ng, np, nt := snap.Counts()
	log.Info("configuration loaded", "data_path", c.dataPath, "groups", ng,
		"profiles", np, "templates", nt, "took", time.Since(start).Round(time.Millisecond))

	ln, err := net.Listen("tcp", c.address)
	if err != nil {
		return fmt.Errorf("-address: %w", err)
	}
	var ready atomic.Bool
	rec := recorder.New(db, log)
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "matchbox_events_dropped_total", Help: "Machine events not stored because storage fell behind.",
	}, func() float64 { return float64(rec.Dropped()) }))
	lc, settings, err := setupLifecycle(ctx, lcc, c.dataPath, db, catalog, rec, reg, log)
	if err != nil {
		ln.Close()
		return err
	}
	// One boot decision for every front-end.
	booter := matchbox.NewBooter(catalog, lc.lc)
	nb, err := setupNetboot(ctx, nbc, fc, ln.Addr().String(), catalog, db, rec, booter, reg, log)
	if err != nil {
		ln.Close()
		return err
	}
	nb.run = append(nb.run, lc.lc.Run)
	holder, err := bc.leaseHolder(nb, log)
	if err != nil {
		ln.Close()
		return err
	}
	// Without a DHCP server of ours, a request naming a MAC is all that
	// identifies a machine.
	rec.SetClaimsIdentify(!nb.anyDHCP)
	db.SetMaxMachines(bc.maxMachines)
	inventoryMetrics(reg, db, rec, bc.maxMachines)
	var releases *releaseAdmin
	if mirror != nil {
		releases = newReleaseAdmin(mirror, rc.keep, log.With("component", "release"))
		if len(syncChannels) > 0 {
			nb.run = append(nb.run, func(ctx context.Context) error {
				return releases.sync(ctx, syncChannels, rc.arch, rc.every)
			})
			log.Info("release sync", "channels", syncChannels, "arch", rc.arch, "every", rc.every, "keep", rc.keep)
		}
	}
	ac.limits = tp.apiLimits(reg, log)
	runAPI, err := setupAPI(ctx, ac, c.dataPath, db, catalog, booter, engine, ln.Addr().String(), nb.leases, settings, lc, releases, log)
	if err != nil {
		ln.Close()
		return err
	}
	if runAPI != nil {
		nb.run = append(nb.run, runAPI)
	}
	bootFiles := ""
	if nbc.dhcpMode != "off" || fc != nil && fc.dhcp != nil || nbc.tftpAddress != "" {
		bootFiles = nbc.tftpRoot
	}
	srv := mbhttp.New(mbhttp.Config{
		Catalog:         catalog,
		Booter:          booter,
		Engine:          engine,
		Recorder:        rec,
		Lifecycle:       lc.lc,
		Leases:          holder,
		BootFilesPath:   bootFiles,
		BootFilesPinned: nb.pinned,
		AssetsPath:      c.assetsPath,
		Signer:          signer,
		HostNames:       tp.hostNames,
		Transport:       tp.boot,
		Logger:          log,
		Registry:        reg,
		Ready: func() error {
			if !ready.Load() {
				return errors.New("starting")
			}
			return claimsError(catalog.Snapshot().Claims())
		},
		ShutdownTimeout: c.shutdownTimeout,
	})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2+len(nb.run))
	if watcher != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := watcher.Run(ctx, c.settle, func(objs matchbox.Objects) {
				t := time.Now()
				snap := catalog.Update(ctx, "datadir", c.claims(objs))
				cm.reloads.Inc()
				mem.loaded(true)
				ng, np, nt := snap.Counts()
				log.Info("data dir reloaded", "groups", ng, "profiles", np,
					"templates", nt, "took", time.Since(t).Round(time.Millisecond))
			})
			if err != nil {
				errc <- err
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ctx, ln); err != nil {
			errc <- err
		}
	}()
	for _, run := range nb.run {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil {
				errc <- err
			}
		}()
	}
	if mem.auto {
		// The machine inventory grows with the fleet: follow the live heap.
		go mem.follow(ctx, 15*time.Second)
	}
	// The recorder stops last, after the front-ends, and writes what is
	// left.
	recDone := make(chan struct{})
	recCtx, recCancel := context.WithCancel(context.Background())
	go func() {
		rec.Run(recCtx, time.Second)
		close(recDone)
	}()
	defer func() {
		recCancel()
		<-recDone
	}()
	if c.debugAddress != "" {
		dln, err := net.Listen("tcp", c.debugAddress)
		if err == nil && !loopbackOnly(dln.Addr().String()) {
			// A name such as localhost resolved to another address.
			dln.Close()
			err = fmt.Errorf("%s is not a loopback address", dln.Addr())
		}
		if err != nil {
			cancel()
			wg.Wait()
			return fmt.Errorf("-debug-address: %w", err)
		}
		dsrv := &nethttp.Server{Handler: debugHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = dsrv.Serve(dln) }()
		defer dsrv.Close()
		log.Info("profiling endpoints serving", "address", dln.Addr().String())
	}
	ready.Store(true)
	log.Info("matchbox serving", "version", versionString(), "address", ln.Addr().String(),
		"assets_path", c.assetsPath, "db_path", c.dbPath, "signing", signer != nil)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errc:
		log.Error("stopping", "err", runErr)
	}
	ready.Store(false)
	cancel()
	wg.Wait()
	return runErr
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
