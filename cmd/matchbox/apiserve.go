package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/api"
	"matchbox.dev/matchbox/netlimit"
)

// apiConfig is the admin API's part of `matchbox serve`.
type apiConfig struct {
	address   string
	limits    *netlimit.Limits // set by serve, from the transport flags
	tokenFile string
	certFile  string
	keyFile   string
	caFile    string
	crlFile   string
	certRole  string
	insecure  bool
}

func apiFlags(fs *flag.FlagSet) *apiConfig {
	c := &apiConfig{}
	fs.StringVar(&c.address, "api-address", "127.0.0.1:8081", "admin API listen address (empty disables the API)")
	fs.StringVar(&c.tokenFile, "api-token-file", "", "file holding the admin API token (default: one is generated on first start into <data-path>/admin.token)")
	fs.StringVar(&c.certFile, "api-cert-file", "", "TLS certificate of the admin API (PEM)")
	fs.StringVar(&c.keyFile, "api-key-file", "", "TLS private key of the admin API (PEM)")
	fs.StringVar(&c.caFile, "api-ca-file", "", "CA certificate(s) (PEM) whose client certificates the admin API accepts instead of a token (role from the OU: read or admin)")
	fs.StringVar(&c.crlFile, "api-crl-file", "", "certificate revocation lists (PEM or DER) of the -api-ca-file CAs; checked on every handshake, read again when the file changes")
	fs.StringVar(&c.certRole, "api-cert-default-role", "", `role of client certificates without an OU: "" (refuse them), read or admin`)
	fs.BoolVar(&c.insecure, "api-insecure", false, "allow the admin API without TLS on an address other than loopback")
	return c
}

// apiServer returns the server behind the admin APIs (REST and gRPC),
// made on first use: certRole and verifyCert are the REST API's client
// certificate settings (the gRPC API has its own rule, see
// api.Server.GRPCOptions).
func (s *instance) apiServer(ctx context.Context, certRole matchbox.Role, verifyCert func([][]*x509.Certificate) error) (*api.Server, error) {
	if s.apiSrv != nil {
		return s.apiSrv, nil
	}
	db, catalog := s.db, s.catalog
	var ra api.ReleaseAdmin
	if s.releases != nil {
		ra = s.releases // a nil *releaseAdmin must stay a nil interface
	}
	var updates api.Updates
	if s.updates != nil {
		updates = s.updates // likewise a nil *update.Service
	}
	apiCfg := api.Config{
		Releases:  ra,
		Updates:   updates,
		BMC:       db,
		Power:     s.lc.bmcs,
		Lifecycle: s.lc.lc,
		Store:     db,
		Machines:  db,
		Leases:    s.nb.leases,
		Catalog:   catalog,
		Booter:    s.booter,
		Engine:    s.engine,
		BootHost:  s.ln.Addr().String(),
		Logger:    s.log,
		Changes:   db,
		Reload: func(ctx context.Context) error {
			_, err := catalog.Reload(ctx, "db", db.Objects)
			return err
		},
	}
	apiCfg.CertDefaultRole, apiCfg.VerifyCertificate = certRole, verifyCert
	srv, err := api.New(ctx, apiCfg)
	if err != nil {
		return nil, err
	}
	s.add("api-tokens", srv.Follow)
	s.apiSrv = srv
	return srv, nil
}

// loopbackOnly reports whether addr listens on loopback only.
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// setupAPI opens the admin API's listener and adds what serves it to the
// server's parts (nothing when the API is off).
func (s *instance) setupAPI(ctx context.Context) error {
	s.ac.limits = s.tp.apiLimits(s.reg, s.log)
	run, err := s.openAPI(ctx)
	if err != nil || run == nil {
		return err
	}
	s.add("api", run)
	return nil
}

// openAPI opens the admin API and returns what serves it (nil when the
// API is off).
func (s *instance) openAPI(ctx context.Context) (func(context.Context) error, error) {
	ac, dataPath, db, log := s.ac, s.c.dataPath, s.db, s.log
	if ac.address == "" {
		return nil, nil
	}
	useTLS := ac.certFile != "" || ac.keyFile != ""
	if useTLS && (ac.certFile == "" || ac.keyFile == "") {
		return nil, errors.New("-api-cert-file and -api-key-file go together")
	}
	if ac.caFile != "" && !useTLS {
		return nil, errors.New("-api-ca-file needs -api-cert-file and -api-key-file (client certificates are checked over TLS)")
	}
	if ac.crlFile != "" && ac.caFile == "" {
		return nil, errors.New("-api-crl-file needs -api-ca-file: it revokes client certificates of those CAs")
	}
	certRole := matchbox.Role(ac.certRole)
	if certRole != "" && !certRole.Valid() {
		return nil, fmt.Errorf(`-api-cert-default-role %q: want "" (refuse certificates without an OU), read or admin`, ac.certRole)
	}
	if !useTLS && !loopbackOnly(ac.address) && !ac.insecure {
		return nil, fmt.Errorf("-api-address %s is not a loopback address: give -api-cert-file and -api-key-file, or -api-insecure to send tokens in the clear", ac.address)
	}
	defaultTokenFile := filepath.Join(dataPath, "admin.token")
	tokenWhat, tokenFile := "-api-token-file", ac.tokenFile
	if tokenFile == "" {
		tokenWhat, tokenFile = "the admin API token file", defaultTokenFile
	}
	for _, f := range [][2]string{{tokenWhat, tokenFile}, {"-api-key-file", ac.keyFile}} {
		if f[1] == "" {
			continue
		}
		if err := checkSecretFile(log, f[0], f[1]); err != nil {
			return nil, err
		}
	}
	var tlsConfig *tls.Config
	var verifyCert func([][]*x509.Certificate) error
	if useTLS {
		cert, err := tls.LoadX509KeyPair(ac.certFile, ac.keyFile)
		if err != nil {
			return nil, fmt.Errorf("admin API TLS: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if ac.caFile != "" {
			crl, err := setupClientCerts(tlsConfig, ac.caFile, ac.crlFile, log)
			if err != nil {
				return nil, err
			}
			if crl != nil {
				verifyCert = crl.check
			}
		}
	}
	if _, err := api.EnsureAdminToken(ctx, db, ac.tokenFile, defaultTokenFile, log); err != nil {
		return nil, err
	}
	srv, err := s.apiServer(ctx, certRole, verifyCert)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", ac.address)
	if err != nil {
		return nil, fmt.Errorf("-api-address: %w", err)
	}
	ln = ac.limits.Listener(ln)
	hs := ac.limits.Server(srv.Handler())
	hs.TLSConfig = tlsConfig
	log.Info("admin API listening", "address", ln.Addr().String(), "tls", useTLS)
	return func(ctx context.Context) error {
		done := make(chan error, 1)
		go func() {
			if useTLS {
				done <- hs.ServeTLS(ln, "", "")
			} else {
				done <- hs.Serve(ln)
			}
		}()
		select {
		case err := <-done:
			return fmt.Errorf("admin API: %w", err)
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = hs.Shutdown(sctx)
			<-done
			return nil
		}
	}, nil
}
