package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"matchbox.dev/matchbox/loglimit"
)

// The gRPC API (poseidon/matchbox's, see matchbox/api/grpc.go) is served
// on -rpc-address, only over TLS with client certificates signed by the
// CA of -ca-file: the flags, their defaults and their MATCHBOX_* variables
// are poseidon/matchbox's, so its unit files keep working.
const (
	defaultRPCCertFile = "/etc/matchbox/server.crt"
	defaultRPCKeyFile  = "/etc/matchbox/server.key"
	defaultRPCCAFile   = "/etc/matchbox/ca.crt"
)

// setupRPC opens the gRPC API's listener (nothing without -rpc-address).
func (s *instance) setupRPC(ctx context.Context) error {
	c := s.c
	if c.rpcAddress == "" {
		return nil
	}
	tlsCfg, crl, err := rpcTLS(c.certFile, c.keyFile, c.caFile, c.crlFile, s.log)
	if err != nil {
		return fmt.Errorf("-rpc-address %s: the gRPC API is served only over TLS with client certificates: %w", c.rpcAddress, err)
	}
	srv, err := s.apiServer(ctx, "", nil)
	if err != nil {
		return err
	}
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "matchbox_grpc_requests_total", Help: "gRPC API calls, by method and status code.",
	}, []string{"method", "code"})
	handshakes := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "matchbox_grpc_handshake_failures_total", Help: "gRPC API connections whose TLS handshake failed (no client certificate, one of another CA, a client that does not trust the server).",
	})
	s.reg.MustRegister(calls, handshakes)
	lines := loglimit.New(s.log)
	creds := loggedCreds{credentials.NewTLS(tlsCfg), func(remote string, err error) {
		handshakes.Inc()
		host, _, _ := net.SplitHostPort(remote)
		lines.Log(context.Background(), slog.LevelWarn, "gRPC API TLS handshake failed", host, "remote", remote, "err", err)
	}}
	var verify func([][]*x509.Certificate) error
	if crl != nil {
		verify = crl.check // a certificate revoked while its connection stays open
	}
	opts := append(srv.GRPCOptions(func(method string, code codes.Code) { calls.WithLabelValues(method, code.String()).Inc() }, verify),
		grpc.Creds(creds),
		// A client that does not finish its TLS handshake in this time
		// is dropped.
		grpc.ConnectionTimeout(10*time.Second),
		grpc.MaxConcurrentStreams(128),
	)
	gs := grpc.NewServer(opts...)
	srv.RegisterGRPC(gs)
	ln, err := net.Listen("tcp", c.rpcAddress)
	if err != nil {
		return fmt.Errorf("-rpc-address: %w", err)
	}
	// The admin API's connection limits (per source address and in all)
	// hold for this listener too.
	ln = s.ac.limits.Listener(ln)
	s.log.Info("gRPC API listening", "address", ln.Addr().String(), "cert_file", c.certFile, "ca_file", c.caFile)
	s.add("rpc", func(ctx context.Context) error {
		done := make(chan error, 1)
		go func() { done <- gs.Serve(ln) }()
		select {
		case err := <-done:
			return fmt.Errorf("gRPC API: %w", err)
		case <-ctx.Done():
			stopped := make(chan struct{})
			go func() { gs.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(5 * time.Second):
				gs.Stop()
			}
			<-done
			return nil
		}
	})
	return nil
}

// rpcTLS is the gRPC listener's TLS: TLS 1.2 or newer (ECDHE with AES-GCM
// or ChaCha20 under 1.2), a client certificate required and verified
// against the CAs of caFile (and, with crlFile, not revoked: the list is
// returned for the calls to check too), the server certificate read again
// from its files when they change (checked at each handshake), so a
// renewed certificate needs no restart.
func rpcTLS(certFile, keyFile, caFile, crlFile string, log *slog.Logger) (*tls.Config, *revocationList, error) {
	for _, f := range [][2]string{{"-cert-file", certFile}, {"-key-file", keyFile}, {"-ca-file", caFile}} {
		if f[1] == "" {
			return nil, nil, fmt.Errorf("%s is empty", f[0])
		}
		if _, err := os.Stat(f[1]); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", f[0], err)
		}
	}
	if err := checkSecretFile(log, "-key-file", keyFile); err != nil {
		return nil, nil, err
	}
	cas, err := readCertificates(caFile)
	if err != nil {
		return nil, nil, fmt.Errorf("-ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}
	kp, err := newKeyPairFiles(certFile, keyFile, log)
	if err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      pool,
		GetCertificate: kp.get,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
	if crlFile == "" {
		return cfg, nil, nil
	}
	crl, err := loadRevocationList(rpcCRLFlags, crlFile, cas, log)
	if err != nil {
		return nil, nil, err
	}
	cfg.VerifyConnection = crl.verifyConnection
	return cfg, crl, nil
}

// keyPairFiles is a certificate and key kept in line with their files: at
// each handshake the files are looked at (size and modification time) and
// read again when either changed. A pair that does not load is logged and
// the one before is kept.
type keyPairFiles struct {
	certFile, keyFile string
	log               *slog.Logger
	limit             *loglimit.Limiter

	mu    sync.Mutex
	cert  *tls.Certificate
	stamp [2]fileStamp
}

type fileStamp struct {
	size int64
	mod  time.Time
}

func stampOf(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{st.Size(), st.ModTime()}, nil
}

func newKeyPairFiles(certFile, keyFile string, log *slog.Logger) (*keyPairFiles, error) {
	k := &keyPairFiles{certFile: certFile, keyFile: keyFile, log: log, limit: loglimit.New(log)}
	if err := k.load(); err != nil {
		return nil, err
	}
	return k, nil
}

// load reads the pair; the caller holds mu, or nobody else has k yet.
func (k *keyPairFiles) load() error {
	var stamp [2]fileStamp
	for i, f := range []string{k.certFile, k.keyFile} {
		st, err := stampOf(f)
		if err != nil {
			return err
		}
		stamp[i] = st
	}
	cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return fmt.Errorf("-cert-file %s, -key-file %s: %w", k.certFile, k.keyFile, err)
	}
	k.cert, k.stamp = &cert, stamp
	return nil
}

func (k *keyPairFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cs, err1 := stampOf(k.certFile)
	ks, err2 := stampOf(k.keyFile)
	if err := errors.Join(err1, err2); err != nil {
		k.limit.Log(context.Background(), slog.LevelWarn, "gRPC API certificate files cannot be looked at; the certificate read before is served", err.Error(), "err", err)
		return k.cert, nil
	}
	if cs == k.stamp[0] && ks == k.stamp[1] {
		return k.cert, nil
	}
	old := k.cert
	if err := k.load(); err != nil {
		k.limit.Log(context.Background(), slog.LevelWarn, "gRPC API certificate files changed but do not load; the certificate read before is served", err.Error(), "err", err)
		k.cert = old
		return k.cert, nil
	}
	k.log.Info("gRPC API certificate read again", "cert_file", k.certFile)
	return k.cert, nil
}

// addrsClash reports whether two listen addresses would take the same
// port: the same port number, on the same host or one of them on every
// address.
func addrsClash(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" || pa == "" {
		return false
	}
	any := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || any(ha) || any(hb)
}

// loggedCreds are TLS credentials that tell failed of every server
// handshake that fails: grpc-go drops such connections without a word.
type loggedCreds struct {
	credentials.TransportCredentials
	failed func(remote string, err error)
}

func (c loggedCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.failed(conn.RemoteAddr().String(), err)
	}
	return out, info, err
}

func (c loggedCreds) Clone() credentials.TransportCredentials {
	return loggedCreds{c.TransportCredentials.Clone(), c.failed}
}
