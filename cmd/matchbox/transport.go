package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	mbhttp "matchbox.dev/matchbox/http"
	"matchbox.dev/matchbox/loglimit"
	"matchbox.dev/matchbox/netlimit"
)

// transportConfig holds the flags that bound what HTTP clients can hold
// of the boot and API listeners, and the names of the boot endpoints.
type transportConfig struct {
	bootConns, bootConnsPerIP int
	apiConns, apiConnsPerIP   int
	readTimeout, stallTimeout time.Duration
	maxBodies, maxHeaderBytes int
	hostNames                 listFlag
}

// Automatic connection limits: a share of the open-file limit, at most a
// ceiling.
const (
	autoBootConns, autoBootShare = 4096, 4
	autoAPIConns, autoAPIShare   = 512, 16
	// fdReserve is what the process needs besides connections and TFTP
	// transfers: the database, listeners, DHCP sockets, the watcher.
	fdReserve = 128
)

func transportFlags(fs *flag.FlagSet) *transportConfig {
	t := &transportConfig{hostNames: listFlag{sep: ", "}}
	fs.IntVar(&t.bootConns, "http-max-conns", 0, fmt.Sprintf("open connections of the boot endpoints (-address) at once; more are closed when accepted (0: a quarter of the open-file limit, at most %d)", autoBootConns))
	fs.IntVar(&t.bootConnsPerIP, "http-max-conns-per-ip", netlimit.DefaultMaxConnsPerSource, "open connections of one client address to the boot endpoints")
	fs.IntVar(&t.apiConns, "api-max-conns", 0, fmt.Sprintf("open connections of the admin API at once (0: a sixteenth of the open-file limit, at most %d)", autoAPIConns))
	fs.IntVar(&t.apiConnsPerIP, "api-max-conns-per-ip", netlimit.DefaultMaxConnsPerSource, "open connections of one client address to the admin API")
	fs.DurationVar(&t.readTimeout, "http-read-timeout", netlimit.DefaultReadTimeout, "boot endpoints and admin API: time to read one whole request, header and body")
	fs.DurationVar(&t.stallTimeout, "http-stall-timeout", netlimit.DefaultStallTimeout, "boot endpoints and admin API: a response that makes no progress for this long is dropped")
	fs.IntVar(&t.maxBodies, "http-max-bodies", netlimit.DefaultMaxBodies, "boot endpoints and admin API, each: requests whose bodies are read at once; more get 503")
	fs.IntVar(&t.maxHeaderBytes, "http-max-header-bytes", netlimit.DefaultMaxHeaderBytes, "boot endpoints and admin API: size bound of a request's header")
	fs.Var(&t.hostNames, "http-host-names", "names (host or host:port) machines reach the boot endpoints by; with -key-ring-path, a Host header naming none of them, nor the listening address, is not rendered into configs (comma-separated; the host of -boot-url is added)")
	return t
}

// limits checks the flags and returns the limits of the boot and API
// listeners, the connection limits sized to the open-file limit when not
// given. tftpTransfers is -tftp-max-transfers: each holds two files.
func (t *transportConfig) limits(nofile uint64, tftpTransfers int) (boot, api netlimit.Config, err error) {
	for _, f := range []struct {
		name string
		v    int
		min  int
	}{
		{"-http-max-conns", t.bootConns, 0}, {"-api-max-conns", t.apiConns, 0},
		{"-http-max-conns-per-ip", t.bootConnsPerIP, 1}, {"-api-max-conns-per-ip", t.apiConnsPerIP, 1},
		{"-http-max-bodies", t.maxBodies, 1}, {"-http-max-header-bytes", t.maxHeaderBytes, 1024},
	} {
		if f.v < f.min {
			return boot, api, fmt.Errorf("%s %d: must be at least %d", f.name, f.v, f.min)
		}
	}
	if t.readTimeout <= 0 || t.stallTimeout <= 0 {
		return boot, api, errors.New("-http-read-timeout and -http-stall-timeout must be positive")
	}
	share := func(v int, div uint64, ceiling int) int {
		if v > 0 {
			return v
		}
		return int(max(1, min(uint64(ceiling), nofile/div)))
	}
	bootConns := share(t.bootConns, autoBootShare, autoBootConns)
	apiConns := share(t.apiConns, autoAPIShare, autoAPIConns)
	// A boot connection may hold a file open (an asset), a TFTP transfer
	// a socket and a file.
	if need := uint64(2*bootConns+apiConns+2*max(tftpTransfers, 0)) + fdReserve; need > nofile {
		return boot, api, fmt.Errorf("-http-max-conns %d, -api-max-conns %d and -tftp-max-transfers %d need up to %d open files, above the limit of %d (RLIMIT_NOFILE): raise it (LimitNOFILE= in the unit) or lower them",
			bootConns, apiConns, tftpTransfers, need, nofile)
	}
	common := netlimit.Config{ReadTimeout: t.readTimeout, StallTimeout: t.stallTimeout, MaxBodies: t.maxBodies, MaxHeaderBytes: t.maxHeaderBytes}
	boot, api = common, common
	boot.Listener, boot.MaxConns, boot.MaxConnsPerSource = "boot", bootConns, t.bootConnsPerIP
	api.Listener, api.MaxConns, api.MaxConnsPerSource = "api", apiConns, t.apiConnsPerIP
	return boot, api, nil
}

// bootHostNames returns -http-host-names, checked, and the host of
// bootURL (-boot-url).
func (t *transportConfig) bootHostNames(bootURL string) ([]string, error) {
	names := append([]string{}, t.hostNames.items...)
	for _, n := range names {
		if err := mbhttp.CheckHostName(n); err != nil {
			return nil, fmt.Errorf("-http-host-names: %w", err)
		}
	}
	// A -boot-url whose host is not a plain name (an iPXE setting such
	// as ${next-server}) adds nothing.
	if u, err := url.Parse(bootURL); err == nil && u.Host != "" && mbhttp.CheckHostName(u.Host) == nil {
		names = append(names, u.Host)
	}
	return names, nil
}

// transport is the checked transport settings of `matchbox serve`.
type transport struct {
	boot, api netlimit.Config
	hostNames []string
}

// setupTransport checks the transport flags and sizes the listeners'
// connection limits to the process's open-file limit.
func setupTransport(tc *transportConfig, nbc *netbootConfig, log *slog.Logger) (*transport, error) {
	nofile, err := netlimit.OpenFileLimit()
	if err != nil {
		nofile = 1024
		log.Warn("open-file limit unknown: sizing connection limits to 1024 files", "err", err)
	}
	tp := &transport{}
	if tp.boot, tp.api, err = tc.limits(nofile, nbc.tftpMax); err != nil {
		return nil, err
	}
	if tp.hostNames, err = tc.bootHostNames(nbc.bootURL); err != nil {
		return nil, err
	}
	log.Info("HTTP limits", "open_file_limit", nofile, "boot_conns", tp.boot.MaxConns, "api_conns", tp.api.MaxConns,
		"conns_per_ip", tp.boot.MaxConnsPerSource, "read_timeout", tc.readTimeout, "stall_timeout", tc.stallTimeout)
	return tp, nil
}

// apiLimits returns the admin API listener's limits, its metrics in reg.
func (tp *transport) apiLimits(reg prometheus.Registerer, log *slog.Logger) *netlimit.Limits {
	cfg := tp.api
	cfg.Logger, cfg.Lines, cfg.Registry = log, loglimit.New(log), reg
	return netlimit.New(cfg)
}
