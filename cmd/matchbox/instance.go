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
	"os"
	"path/filepath"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/api"
	mbhttp "matchbox.dev/matchbox/http"
	"matchbox.dev/matchbox/recorder"
	"matchbox.dev/matchbox/release"
	"matchbox.dev/matchbox/render"
	"matchbox.dev/matchbox/sign"
	"matchbox.dev/matchbox/storage"
	"matchbox.dev/matchbox/update"
)

// instance is one `matchbox serve`. newServer opens and wires its parts
// from the flags, each setup step reading what the earlier ones made;
// run runs the parts under one errgroup until the context ends or one of
// them fails; close releases what newServer opened.
type instance struct {
	c   *serveConfig
	nbc *netbootConfig
	ac  *apiConfig
	lcc *lifecycleConfig
	rc  *releaseServeConfig
	bc  *bindingConfig
	fc  *fileConfig

	log *slog.Logger
	reg *prometheus.Registry
	tp  *transport

	db       storage.Store
	signer   *sign.Signer
	mirror   *release.Mirror
	engine   *render.Engine
	catalog  *matchbox.Catalog
	cm       *catalogMetrics
	mem      *memoryTuner
	rec      *recorder.Recorder
	lc       *lifecycle
	booter   *matchbox.Booter
	nb       *netboot
	releases *releaseAdmin
	// updates answers Flatcar's update checks (nil without a mirror).
	updates        *update.Service
	updatePayloads *mirrorUpdates
	// apiSrv serves the admin APIs (nil when neither is on).
	apiSrv *api.Server
	// ln is the boot endpoints' listener.
	ln    net.Listener
	ready atomic.Bool

	// parts run under run's errgroup, in this order; closers are undone
	// by close, the last first.
	parts   []part
	closers []func()
}

// part is one long-running piece of the server: a front-end, an engine,
// a watcher. run returns when ctx ends (nil) or it cannot go on (the
// error stops the server).
type part struct {
	name string
	run  func(ctx context.Context) error
}

func (s *instance) add(name string, run func(context.Context) error) {
	s.parts = append(s.parts, part{name, run})
}

func (s *instance) onClose(f func()) { s.closers = append(s.closers, f) }

// close releases what newServer opened, the last first.
func (s *instance) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

func serve(ctx context.Context, args []string, _, stderr io.Writer) error {
	s, err := newServer(ctx, args, stderr)
	if err != nil || s == nil {
		return err
	}
	defer s.close()
	return s.run(ctx)
}

// newServer parses the flags and opens every part; nil without an error
// when there is nothing to serve (-version).
func newServer(ctx context.Context, args []string, stderr io.Writer) (_ *instance, err error) {
	s := &instance{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	fs := flag.NewFlagSet("matchbox serve", flag.ContinueOnError)
	s.c = serveFlags(fs)
	s.nbc = netbootFlags(fs)
	s.ac = apiFlags(fs)
	s.lcc = lifecycleFlags(fs)
	s.rc = releaseServeFlags(fs)
	s.bc = bindingFlags(fs)
	tc := transportFlags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	set, err := parseFlagsSet(fs, args, stderr)
	if err != nil {
		return nil, err
	}
	if s.c.configFile != "" {
		if s.fc, err = loadFileConfig(s.c.configFile, fs); err != nil {
			return nil, err
		}
		if err := s.fc.apply(fs, set); err != nil {
			return nil, err
		}
	}
	if *showVersion {
		fmt.Fprintln(stderr, versionString())
		return nil, nil
	}
	if err := s.nbc.dhcpLimits(); err != nil {
		return nil, err
	}
	if s.log, err = newLogger(s.c.logLevel, s.c.logFormat, stderr); err != nil {
		return nil, err
	}
	if s.tp, err = setupTransport(tc, s.nbc, s.log); err != nil {
		return nil, err
	}
	steps := []func(context.Context) error{
		s.checkPaths, s.openSigner, s.openStore, s.openCatalog, s.listen,
		s.setupLifecycle, s.setupNetboot, s.setupBinding, s.setupReleases, s.setupUpdates,
		s.setupAPI, s.setupRPC, s.setupHTTP, s.setupDebug,
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// checkPaths checks the flags naming files and addresses before anything
// is opened.
func (s *instance) checkPaths(context.Context) error {
	c := s.c
	if c.rpcAddress != "" && addrsClash(c.rpcAddress, s.ac.address) {
		return fmt.Errorf("-rpc-address %s and -api-address %s share a port: the gRPC API (poseidon/matchbox's, often on 8081) and the REST admin API (on 127.0.0.1:8081 by default) need one each; give -api-address another, e.g. 127.0.0.1:8082, or -api-address \"\" to turn the REST API off", c.rpcAddress, s.ac.address)
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
			s.log.Warn("assets folder missing; /assets/ answers 404 until it exists", "path", c.assetsPath)
		}
	}
	return nil
}

// openSigner loads the key ring that signs configs, when one is given.
func (s *instance) openSigner(context.Context) error {
	if s.c.keyRingPath == "" {
		return nil
	}
	if err := checkSecretFile(s.log, "-key-ring-path", s.c.keyRingPath); err != nil {
		return err
	}
	var err error
	s.signer, err = sign.LoadKeyRing(s.c.keyRingPath, []byte(os.Getenv("MATCHBOX_PASSPHRASE")))
	return err
}

// openStore opens the database and the metrics registry.
func (s *instance) openStore(context.Context) error {
	db, err := storage.OpenBolt(s.c.dbPath)
	if err != nil {
		return fmt.Errorf("%w (set -db-path to a writable file)", err)
	}
	s.db = db
	s.onClose(func() { db.Close() })
	s.reg = prometheus.NewRegistry()
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "matchbox_build_info", Help: "Build information.", ConstLabels: prometheus.Labels{"version": versionString()},
	}, func() float64 { return 1 }))
	return nil
}

// openCatalog builds the render engine (over the release mirror) and the
// catalog, and loads the data dir and the database into it, watching the
// data dir when asked.
func (s *instance) openCatalog(ctx context.Context) error {
	c, log := s.c, s.log
	syncChannels, err := s.rc.channels()
	if err != nil {
		return err
	}
	engineOpts := render.Options{TranslateCacheBytes: c.cacheMB << 20, ReleaseBaseURL: s.rc.baseURL, RenderTimeout: c.render.timeoutValue(), RenderMaxBytes: c.render.maxBytes()}
	if c.assetsPath != "" {
		if s.mirror, err = openMirror(c.assetsPath, s.rc.mirror(), log.With("component", "release")); err != nil {
			return err
		}
		engineOpts.Releases = s.mirror
	} else if len(syncChannels) > 0 {
		return errors.New("-release-sync needs -assets-path: the release mirror lives in it")
	}
	s.engine = render.NewEngine(engineOpts)
	s.catalog = matchbox.NewCatalog("datadir", "db")
	s.cm = newCatalogMetrics(s.reg, s.engine)
	registerRenderLimitMetrics(s.reg, s.engine)
	reported := map[string]bool{}
	s.catalog.OnChange(func(snap *matchbox.Snapshot) {
		s.engine.Prune(snap)
		probs := append(append([]matchbox.Problem{}, snap.Problems()...), s.engine.CheckTemplates(snap)...)
		s.cm.update(snap, probs)
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
	if c.watch {
		watcher, err := dd.NewWatcher()
		if err != nil {
			return err
		}
		s.onClose(func() { watcher.Close() })
		s.add("datadir-watch", func(ctx context.Context) error {
			return watcher.Run(ctx, c.settle, func(objs matchbox.Objects) {
				t := time.Now()
				snap := s.catalog.Update(ctx, "datadir", c.claims(objs))
				s.cm.reloads.Inc()
				s.mem.loaded(true)
				ng, np, nt := snap.Counts()
				log.Info("data dir reloaded", "groups", ng, "profiles", np,
					"templates", nt, "took", time.Since(t).Round(time.Millisecond))
			})
		})
	}
	// The initial load allocates mostly what it keeps: collect less often
	// while it runs.
	gcPercent := debug.SetGCPercent(400)
	objs, err := dd.Load(ctx)
	if err != nil {
		return err
	}
	objs = c.claims(objs)
	// The objects other servers sharing the database write come through
	// its change feed (subscribed before the load: nothing is missed).
	changes := s.db.Changes(ctx, matchbox.ChangeGroup, matchbox.ChangeProfile, matchbox.ChangeTemplate)
	s.add("catalog-follow", func(ctx context.Context) error {
		s.catalog.Follow(ctx, "db", s.db.Objects, changes, func(err error) {
			log.Error("objects written by another server not loaded: serving the ones before", "err", err)
		})
		return nil
	})
	dbObjs, err := s.db.Objects(ctx)
	if err != nil {
		return err
	}
	snap := s.catalog.UpdateSources(ctx, map[string]matchbox.Objects{"datadir": objs, "db": dbObjs})
	// Hand the garbage of the initial load back to the OS.
	debug.SetGCPercent(gcPercent)
	debug.FreeOSMemory()
	if s.mem, err = newMemoryTuner(c.memoryLimit, c.cacheMB<<20, log); err != nil {
		return err
	}
	s.mem.loaded(false)
	if s.mem.auto {
		// The machine inventory grows with the fleet: follow the live heap.
		s.add("memory-limit", func(ctx context.Context) error {
			s.mem.follow(ctx, 15*time.Second)
			return nil
		})
	}
	ng, np, nt := snap.Counts()
	log.Info("configuration loaded", "data_path", c.dataPath, "groups", ng,
		"profiles", np, "templates", nt, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// listen opens the boot endpoints' listener and the event recorder.
func (s *instance) listen(context.Context) error {
	ln, err := net.Listen("tcp", s.c.address)
	if err != nil {
		return fmt.Errorf("-address: %w", err)
	}
	s.ln = ln
	s.onClose(func() { ln.Close() })
	s.rec = recorder.New(s.db, s.log)
	s.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "matchbox_events_dropped_total", Help: "Machine events not stored because storage fell behind.",
	}, func() float64 { return float64(s.rec.Dropped()) }))
	return nil
}

// setupBinding decides config binding and the inventory's bound, once the
// DHCP setup is known.
func (s *instance) setupBinding(context.Context) error {
	holder, err := s.bc.leaseHolder(s.nb, s.log)
	if err != nil {
		return err
	}
	s.nb.holder = holder
	// Without a DHCP server of ours, a request naming a MAC is all that
	// identifies a machine.
	s.rec.SetClaimsIdentify(!s.nb.anyDHCP)
	s.db.SetMaxMachines(s.bc.maxMachines)
	inventoryMetrics(s.reg, s.db, s.rec, s.bc.maxMachines)
	return nil
}

// setupReleases runs the release mirror's admin and its sync, when there
// is a mirror.
func (s *instance) setupReleases(context.Context) error {
	if s.mirror == nil {
		return nil
	}
	log := s.log.With("component", "release")
	s.releases = newReleaseAdmin(s.mirror, s.rc.keep, log)
	syncChannels, err := s.rc.channels()
	if err != nil {
		return err
	}
	if len(syncChannels) > 0 {
		s.add("release-sync", func(ctx context.Context) error {
			return s.releases.sync(ctx, syncChannels, s.rc.arch, s.rc.every)
		})
		s.log.Info("release sync", "channels", syncChannels, "arch", s.rc.arch, "every", s.rc.every, "keep", s.rc.keep)
	}
	return nil
}

// setupHTTP builds the boot endpoints' server.
func (s *instance) setupHTTP(context.Context) error {
	bootFiles := ""
	if s.nbc.dhcpMode != "off" || s.fc != nil && s.fc.dhcp != nil || s.nbc.tftpAddress != "" {
		bootFiles = s.nbc.tftpRoot
	}
	cfg := mbhttp.Config{
		Catalog:         s.catalog,
		Booter:          s.booter,
		Engine:          s.engine,
		Recorder:        s.rec,
		Lifecycle:       s.lc.lc,
		Leases:          s.nb.holder,
		BootFilesPath:   bootFiles,
		BootFilesPinned: s.nb.pinned,
		AssetsPath:      s.c.assetsPath,
		Signer:          s.signer,
		HostNames:       s.tp.hostNames,
		Transport:       s.tp.boot,
		Logger:          s.log,
		Registry:        s.reg,
		Ready: func() error {
			if !s.ready.Load() {
				return errors.New("starting")
			}
			return claimsError(s.catalog.Snapshot().Claims())
		},
		ShutdownTimeout: s.c.shutdownTimeout,
	}
	if s.updates != nil {
		cfg.Updates, cfg.UpdatePayloads = s.updates, s.updatePayloads
	}
	srv := mbhttp.New(cfg)
	s.add("http", func(ctx context.Context) error { return srv.Serve(ctx, s.ln) })
	return nil
}

// setupDebug opens the profiling endpoints' listener, when asked.
func (s *instance) setupDebug(context.Context) error {
	if s.c.debugAddress == "" {
		return nil
	}
	dln, err := net.Listen("tcp", s.c.debugAddress)
	if err == nil && !loopbackOnly(dln.Addr().String()) {
		// A name such as localhost resolved to another address.
		dln.Close()
		err = fmt.Errorf("%s is not a loopback address", dln.Addr())
	}
	if err != nil {
		return fmt.Errorf("-debug-address: %w", err)
	}
	dsrv := &nethttp.Server{Handler: debugHandler(), ReadHeaderTimeout: 10 * time.Second}
	s.onClose(func() { dsrv.Close() })
	s.add("debug", func(ctx context.Context) error {
		go func() {
			<-ctx.Done()
			dsrv.Close()
		}()
		_ = dsrv.Serve(dln)
		return nil
	})
	s.log.Info("profiling endpoints serving", "address", dln.Addr().String())
	return nil
}

// run runs every part until ctx ends (nil) or a part fails (its error):
// then the others are stopped and waited for. The recorder runs beside
// them and stops last, writing what the front-ends recorded.
func (s *instance) run(ctx context.Context) error {
	recCtx, recCancel := context.WithCancel(context.Background())
	recDone := make(chan struct{})
	go func() {
		s.rec.Run(recCtx, time.Second)
		close(recDone)
	}()
	defer func() {
		recCancel()
		<-recDone
	}()
	g, gctx := errgroup.WithContext(ctx)
	for _, p := range s.parts {
		g.Go(func() error { return p.run(gctx) })
	}
	s.ready.Store(true)
	s.log.Info("matchbox serving", "version", versionString(), "address", s.ln.Addr().String(),
		"assets_path", s.c.assetsPath, "db_path", s.c.dbPath, "signing", s.signer != nil)
	<-gctx.Done()
	var runErr error
	if ctx.Err() != nil {
		s.log.Info("shutting down")
	} else {
		runErr = context.Cause(gctx)
		s.log.Error("stopping", "err", runErr)
	}
	s.ready.Store(false)
	// What the parts return while they stop is not why the server
	// stopped.
	_ = g.Wait()
	return runErr
}
