package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/bmc"
	"matchbox.dev/matchbox/power"
	"matchbox.dev/matchbox/reinstall"
	"matchbox.dev/matchbox/storage"
)

// lifecycleConfig is the BMC and reinstall part of `matchbox serve`.
type lifecycleConfig struct {
	secretKey        string
	profile          string
	bootTimeout      time.Duration
	bootAttempts     int
	installTimeout   time.Duration
	firstBootTimeout time.Duration
	concurrency      int
	bmcTimeout       time.Duration
	providerTimeout  time.Duration
	bmcAttempts      int
	bmcRetryDelay    time.Duration
	ipmitoolPath     string
	cipherSuite      string
	bmcCAFile        string
}

func lifecycleFlags(fs *flag.FlagSet) *lifecycleConfig {
	c := &lifecycleConfig{}
	fs.StringVar(&c.secretKey, "secret-key-file", "", "key that seals BMC credentials in the database (default <data-path>/secret.key, created on first start, mode 0600)")
	fs.StringVar(&c.profile, "reinstall-profile", "flatcar-install", "install profile of reinstalls that name none")
	fs.DurationVar(&c.bootTimeout, "reinstall-boot-timeout", 10*time.Minute, "reinstall: how long a powered-on machine has to fetch its install config before the boot is retried")
	fs.IntVar(&c.bootAttempts, "reinstall-boot-attempts", 3, "reinstall: boots tried (power cycles) before the reinstall fails")
	fs.DurationVar(&c.installTimeout, "reinstall-install-timeout", 30*time.Minute, "reinstall: how long the installer has to report")
	fs.DurationVar(&c.firstBootTimeout, "reinstall-first-boot-timeout", 30*time.Minute, "reinstall: how long the installed system has to report its first boot")
	fs.IntVar(&c.concurrency, "reinstall-concurrency", 16, "reinstall: machines in flight at once (BMC steps, booting, installing)")
	fs.DurationVar(&c.bmcTimeout, "bmc-timeout", 60*time.Second, "deadline of one BMC operation, connection included")
	fs.DurationVar(&c.providerTimeout, "bmc-provider-timeout", 20*time.Second, "deadline of each provider's attempt within a BMC operation")
	fs.IntVar(&c.bmcAttempts, "bmc-attempts", 3, "reinstall: tries of each BMC step before the reinstall fails")
	fs.DurationVar(&c.bmcRetryDelay, "bmc-retry-delay", 5*time.Second, "reinstall: pause between tries of a BMC step")
	fs.StringVar(&c.ipmitoolPath, "ipmitool-path", "", "ipmitool binary of the ipmitool provider (default: found on PATH)")
	fs.StringVar(&c.cipherSuite, "ipmi-cipher-suite", "3", "IPMI v2 cipher suite of the ipmitool provider")
	fs.StringVar(&c.bmcCAFile, "bmc-ca-file", "", "PEM bundle of CAs trusted, besides the system's, for the TLS certificates of BMCs that pin none")
	return c
}

// lifecycle is the BMC control and reinstall workflow the server runs.
type lifecycle struct {
	bmcs *power.Service
	lc   *reinstall.Engine
}

// lifecycleMetrics counts BMC calls and reinstall transitions, and shows
// the reinstalls in progress by state.
type lifecycleMetrics struct {
	bmcCalls    *prometheus.CounterVec
	transitions *prometheus.CounterVec
}

func newLifecycleMetrics(reg prometheus.Registerer) *lifecycleMetrics {
	m := &lifecycleMetrics{
		bmcCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matchbox_bmc_operations_total",
			Help: "BMC operations by operation and result (ok or error).",
		}, []string{"op", "result"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matchbox_reinstall_transitions_total",
			Help: "Reinstall workflow transitions, by the state entered.",
		}, []string{"state"}),
	}
	reg.MustRegister(m.bmcCalls, m.transitions)
	return m
}

// countedController counts a controller's operations.
type countedController struct {
	matchbox.PowerController
	m *lifecycleMetrics
}

func (c countedController) count(op string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	c.m.bmcCalls.WithLabelValues(op, result).Inc()
}

func (c countedController) PowerState(ctx context.Context, b matchbox.BMC) (matchbox.PowerState, error) {
	st, err := c.PowerController.PowerState(ctx, b)
	c.count("power-status", err)
	return st, err
}

func (c countedController) SetPower(ctx context.Context, b matchbox.BMC, a matchbox.PowerAction) error {
	err := c.PowerController.SetPower(ctx, b, a)
	c.count("power-"+string(a), err)
	return err
}

func (c countedController) SetBootDevice(ctx context.Context, b matchbox.BMC, d matchbox.BootDevice, efi bool) error {
	err := c.PowerController.SetBootDevice(ctx, b, d, efi)
	c.count("bootdev-"+string(d), err)
	return err
}

// reinstallGauge shows the reinstalls in progress by state.
type reinstallGauge struct {
	lc   *reinstall.Engine
	desc *prometheus.Desc
}

func (g reinstallGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g reinstallGauge) Collect(ch chan<- prometheus.Metric) {
	counts := g.lc.Counts()
	for _, st := range []matchbox.WorkflowState{matchbox.StateRequested, matchbox.StateBMCPrep, matchbox.StateBooting, matchbox.StateInstalling, matchbox.StateInstalled} {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, float64(counts[st]), string(st))
	}
}

// setupLifecycle opens the secret key and builds BMC control and the
// reinstall workflow, with the stored workflows loaded so that netboot
// gating holds from the first request; the boot decision is taken with
// its gates.
func (s *instance) setupLifecycle(ctx context.Context) error {
	c, db, catalog, rec, reg, log := s.lcc, s.db, s.catalog, s.rec, s.reg, s.log
	keyFile := c.secretKey
	if keyFile == "" {
		keyFile = filepath.Join(s.c.dataPath, "secret.key")
	}
	if err := checkSecretFile(log, "-secret-key-file", keyFile); err != nil {
		return err
	}
	key, created, err := storage.LoadOrCreateSecretKey(keyFile)
	if err != nil {
		return err
	}
	if created {
		log.Info("secret key created (keep it: BMC credentials in the database open only with it)", "file", keyFile)
	}
	db.SetSecretKey(key)
	if c.bootAttempts < 1 || c.bmcAttempts < 1 || c.concurrency < 1 {
		return fmt.Errorf("-reinstall-boot-attempts, -bmc-attempts and -reinstall-concurrency must be at least 1")
	}
	if c.ipmitoolPath == "" {
		if _, err := exec.LookPath("ipmitool"); err != nil {
			log.Info("ipmitool not found on PATH: the ipmitool BMC provider is unavailable (install ipmitool, or give -ipmitool-path)")
		}
	}
	var rootCAs *x509.CertPool
	if c.bmcCAFile != "" {
		if rootCAs, err = bmc.LoadCAFile(c.bmcCAFile); err != nil {
			return fmt.Errorf("-bmc-ca-file: %w", err)
		}
	}
	// bmclib's Redfish client prints every request, login passwords
	// included, to standard output when this is set.
	if v, ok := os.LookupEnv("DEBUG_BMCLIB"); ok {
		os.Unsetenv("DEBUG_BMCLIB")
		log.Warn("DEBUG_BMCLIB ignored: it would print BMC passwords", "value", matchbox.Quote(v))
	}
	metrics := newLifecycleMetrics(reg)
	bmcs := &power.Service{
		Settings: db,
		Controller: countedController{bmc.New(bmc.Config{
			OperationTimeout: c.bmcTimeout,
			ProviderTimeout:  c.providerTimeout,
			IPMIToolPath:     c.ipmitoolPath,
			IPMICipherSuite:  c.cipherSuite,
			RootCAs:          rootCAs,
			Logger:           log.With("component", "bmc"),
		}), metrics},
		Recorder: rec,
	}
	lc := reinstall.New(reinstall.Config{
		Store:          db,
		Changes:        db,
		BMCs:           bmcs,
		Machines:       db,
		Recorder:       rec,
		Logger:         log.With("component", "reinstall"),
		DefaultProfile: c.profile,
		ProfileExists: func(id string) bool {
			_, ok := catalog.Snapshot().Profile(id)
			return ok
		},
		BootTimeout:      c.bootTimeout,
		BootAttempts:     c.bootAttempts,
		InstallTimeout:   c.installTimeout,
		FirstBootTimeout: c.firstBootTimeout,
		BMCAttempts:      c.bmcAttempts,
		BMCRetryDelay:    c.bmcRetryDelay,
		Concurrency:      c.concurrency,
		OnTransition: func(_, to matchbox.WorkflowState) {
			metrics.transitions.WithLabelValues(string(to)).Inc()
		},
	})
	reg.MustRegister(reinstallGauge{lc, prometheus.NewDesc("matchbox_reinstalls",
		"Reinstalls in progress, by state.", []string{"state"}, nil)})
	if err := lc.Load(ctx); err != nil {
		return err
	}
	s.lc = &lifecycle{bmcs: bmcs, lc: lc}
	s.booter = matchbox.NewBooter(catalog, lc)
	s.add("reinstall", lc.Run)
	return nil
}
