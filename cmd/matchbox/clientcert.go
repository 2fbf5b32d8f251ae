package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"strings"
	"sync"
	"time"

	"matchbox.dev/matchbox"

	"matchbox.dev/matchbox/loglimit"
)

// setupClientCerts makes a TLS listener accept client certificates signed
// by a CA of caFile, checked on every handshake against the revocation
// lists of crlFile (when given). Certificates are asked for, not required,
// so that bearer tokens keep working; what a certificate may do is decided
// per request by matchbox.CertificateRole. The returned list (nil without
// crlFile) also checks each request, so a certificate revoked while its
// connection stays open is refused at its next request.
func setupClientCerts(cfg *tls.Config, caFile, crlFile string, log *slog.Logger) (*revocationList, error) {
	cas, err := readCertificates(caFile)
	if err != nil {
		return nil, fmt.Errorf("-api-ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}
	cfg.ClientCAs, cfg.ClientAuth = pool, tls.VerifyClientCertIfGiven
	if crlFile == "" {
		return nil, nil
	}
	crl, err := loadRevocationList(apiCRLFlags, crlFile, cas, log)
	if err != nil {
		return nil, err
	}
	cfg.VerifyConnection = crl.verifyConnection
	return crl, nil
}

// readCertificates reads the PEM certificates of a file.
func readCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", path, len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return out, nil
}

// revocationList holds the certificate revocation lists (CRLs) of
// -api-crl-file, each signed by a CA of -api-ca-file. Every check first
// looks whether the file changed (size, modification time, or another
// file renamed into place) and reads it again if so: a revocation takes
// effect at the next handshake, without a restart. A changed file that
// does not load is logged, and the lists read before stay in force.
type revocationList struct {
	flags crlFlags
	path  string
	cas   []*x509.Certificate
	log   *slog.Logger
	limit *loglimit.Limiter

	mu         sync.Mutex
	info       os.FileInfo                // of the file as last read
	statErr    string                     // why the file could not be looked at, last time
	revoked    map[string]map[string]bool // issuer (DER subject) → revoked serials
	nextUpdate time.Time                  // earliest NextUpdate of the lists (zero: none says)
	staleSaid  bool                       // the lists' staleness was logged
}

// crlFlags name a listener's flags, in messages, and the line it logs
// when it refuses a revoked certificate.
type crlFlags struct{ crl, ca, refused string }

var (
	apiCRLFlags = crlFlags{"-api-crl-file", "-api-ca-file", "admin API TLS handshake refused"}
	rpcCRLFlags = crlFlags{"-crl-file", "-ca-file", "gRPC API TLS handshake refused: client certificate revoked"}
)

func loadRevocationList(flags crlFlags, path string, cas []*x509.Certificate, log *slog.Logger) (*revocationList, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flags.crl, err)
	}
	revoked, next, n, err := readCRLs(path, cas, flags.ca)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flags.crl, path, err)
	}
	l := &revocationList{flags: flags, path: path, cas: cas, log: log, limit: loglimit.New(log), info: info, revoked: revoked, nextUpdate: next}
	log.Info("client certificate revocation list loaded", "file", path, "revoked", n, "next_update", next)
	l.mu.Lock()
	l.staleLocked(time.Now())
	l.mu.Unlock()
	return l, nil
}

// readCRLs reads a file of PEM ("X509 CRL" blocks) or DER CRLs, each
// verified against the CA that issued it: the revoked serials by issuer,
// the earliest NextUpdate, and how many serials there are.
func readCRLs(path string, cas []*x509.Certificate, caFlag string) (map[string]map[string]bool, time.Time, int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, time.Time{}, 0, err
	}
	var ders [][]byte
	if bytes.Contains(data, []byte("-----BEGIN")) {
		for rest := data; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			if b.Type != "X509 CRL" {
				return nil, time.Time{}, 0, fmt.Errorf("a PEM block of type %q: want X509 CRL", b.Type)
			}
			ders = append(ders, b.Bytes)
		}
	} else if len(data) > 0 {
		ders = [][]byte{data}
	}
	if len(ders) == 0 {
		return nil, time.Time{}, 0, errors.New(`no CRL in it (want PEM "X509 CRL" blocks or one DER CRL)`)
	}
	revoked := map[string]map[string]bool{}
	var next time.Time
	n := 0
	for i, der := range ders {
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			if strings.Contains(err.Error(), "version") {
				err = fmt.Errorf("%w (want a version 2 CRL; openssl ca writes one when its configuration names a crlnumber file)", err)
			}
			return nil, time.Time{}, 0, fmt.Errorf("CRL %d: %w", i+1, err)
		}
		if err := checkCRLIssuer(rl, cas, caFlag); err != nil {
			return nil, time.Time{}, 0, fmt.Errorf("CRL %d (issuer %s): %w", i+1, rl.Issuer, err)
		}
		serials := revoked[string(rl.RawIssuer)]
		if serials == nil {
			serials = map[string]bool{}
			revoked[string(rl.RawIssuer)] = serials
		}
		for _, e := range rl.RevokedCertificateEntries {
			serials[serialKey(e.SerialNumber)] = true
			n++
		}
		if !rl.NextUpdate.IsZero() && (next.IsZero() || rl.NextUpdate.Before(next)) {
			next = rl.NextUpdate
		}
	}
	return revoked, next, n, nil
}

// checkCRLIssuer verifies that a CA of cas signed rl.
func checkCRLIssuer(rl *x509.RevocationList, cas []*x509.Certificate, caFlag string) error {
	var last error
	for _, ca := range cas {
		if !bytes.Equal(ca.RawSubject, rl.RawIssuer) {
			continue
		}
		if last = rl.CheckSignatureFrom(ca); last == nil {
			return nil
		}
	}
	if last != nil {
		return fmt.Errorf("signature not verified by the CA of that name in %s: %w", caFlag, last)
	}
	return fmt.Errorf("no CA of that name in %s", caFlag)
}

// serialKey is a serial number as it is looked up and shown: hexadecimal,
// as openssl prints it.
func serialKey(n *big.Int) string { return strings.ToUpper(n.Text(16)) }

// verifyConnection refuses a TLS handshake whose client certificate is
// revoked (tls.Config.VerifyConnection: also run on resumed sessions).
func (l *revocationList) verifyConnection(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 {
		return nil // no client certificate: the request needs a token
	}
	if err := l.check(cs.VerifiedChains); err != nil {
		leaf := cs.VerifiedChains[0][0]
		l.limit.Log(context.Background(), slog.LevelWarn, l.flags.refused, serialKey(leaf.SerialNumber), "reason", err)
		return err
	}
	return nil
}

// check refuses certificate chains that each hold a revoked certificate.
func (l *revocationList) check(chains [][]*x509.Certificate) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.refreshLocked()
	l.staleLocked(now)
	var err error
	for _, chain := range chains {
		if err = l.chainLocked(chain); err == nil {
			return nil
		}
	}
	return err
}

func (l *revocationList) chainLocked(chain []*x509.Certificate) error {
	for _, c := range chain {
		if l.revoked[string(c.RawIssuer)][serialKey(c.SerialNumber)] {
			return fmt.Errorf("certificate %s (serial %s) is revoked by the CRL of %s (%s)",
				matchbox.Quote(c.Subject.CommonName), serialKey(c.SerialNumber), c.Issuer, l.flags.crl)
		}
	}
	return nil
}

// refreshLocked reads the file again when it changed since it was read.
func (l *revocationList) refreshLocked() {
	info, err := os.Stat(l.path)
	if err != nil {
		if err.Error() != l.statErr {
			l.log.Error("the client certificate revocation list is not readable; the lists read before stay in force", "file", l.path, "err", err)
			l.statErr = err.Error()
		}
		return
	}
	l.statErr = ""
	if os.SameFile(info, l.info) && info.Size() == l.info.Size() && info.ModTime().Equal(l.info.ModTime()) {
		return
	}
	// Remember this version even if it does not load, so that it is
	// reported once, not at every handshake.
	l.info = info
	revoked, next, n, err := readCRLs(l.path, l.cas, l.flags.ca)
	if err != nil {
		l.log.Error("the client certificate revocation list changed and does not load; the lists read before stay in force", "file", l.path, "err", err)
		return
	}
	l.revoked, l.nextUpdate, l.staleSaid = revoked, next, false
	l.log.Info("client certificate revocation list reloaded", "file", l.path, "revoked", n, "next_update", next)
}

// staleLocked logs, once per version of the lists, that they are past
// their NextUpdate: the CA has published newer ones, which may revoke
// more. They stay in force.
func (l *revocationList) staleLocked(now time.Time) {
	if l.staleSaid || l.nextUpdate.IsZero() || !now.After(l.nextUpdate) {
		return
	}
	l.staleSaid = true
	l.log.Warn("the client certificate revocation list is past its next update: fetch a fresh one from the CA", "file", l.path, "next_update", l.nextUpdate)
}
