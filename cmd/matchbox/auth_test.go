package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	stdlog "log"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// crl writes a CRL of ca revoking the certificates in certFiles to path
// (written beside it and renamed into place, as tools do), PEM unless der.
func (ca *testCA) crl(t *testing.T, path string, next time.Time, der bool, certFiles ...string) {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, f := range certFiles {
		c := parseCertFile(t, f)
		entries = append(entries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now().Add(-time.Minute)})
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	data, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: n, ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: next, RevokedCertificateEntries: entries,
	}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if !der {
		data = pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: data})
	}
	replaceFile(t, path, data)
}

func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func parseCertFile(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tlsGet makes a request with a client certificate on a new connection:
// the status, or the error of a refused handshake.
func tlsGet(t *testing.T, url, caFile, certFile, keyFile string) (int, error) {
	t.Helper()
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pem)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// The revocation list of -api-crl-file: verified against the CA at start
// (a file that does not load is an error), checked on every handshake,
// read again when the file changes (a broken new version is logged and
// the old lists stay), stale lists logged.
func TestClientCertificateRevocationList(t *testing.T) {
	ca := newTestCA(t)
	caFile := filepath.Join(ca.dir, "ca.pem")
	srvCert, srvKey := ca.issue(t, "server", true)
	opsCert, opsKey := ca.issue(t, "ops", false, "admin")
	otherCert, otherKey := ca.issue(t, "other", false, "admin")
	crlFile := filepath.Join(t.TempDir(), "ca.crl")
	ca.crl(t, crlFile, time.Now().Add(time.Hour), false)

	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	cert, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	crl, err := setupClientCerts(cfg, caFile, crlFile, log)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := crl.check(r.TLS.VerifiedChains); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
		}
	}))
	ts.TLS = cfg
	ts.Config.ErrorLog = stdlog.New(io.Discard, "", 0) // refused handshakes are expected
	ts.StartTLS()
	defer ts.Close()
	get := func(certFile, keyFile string) (int, error) { return tlsGet(t, ts.URL, caFile, certFile, keyFile) }

	if code, err := get(opsCert, opsKey); err != nil || code != 200 {
		t.Fatalf("before any revocation: %d %v", code, err)
	}
	ca.crl(t, crlFile, time.Now().Add(time.Hour), false, opsCert)
	if code, err := get(opsCert, opsKey); err == nil {
		t.Errorf("revoked certificate: handshake accepted (%d)", code)
	}
	if !strings.Contains(logs.String(), "admin API TLS handshake refused") || !strings.Contains(logs.String(), "is revoked by the CRL") {
		t.Errorf("refusal not logged:\n%s", logs.String())
	}
	if code, err := get(otherCert, otherKey); err != nil || code != 200 {
		t.Errorf("a certificate not revoked: %d %v", code, err)
	}
	// A broken new version: logged, and the revocation stays.
	replaceFile(t, crlFile, []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"))
	if _, err := get(opsCert, opsKey); err == nil {
		t.Error("revoked certificate accepted after the CRL file broke")
	}
	if !strings.Contains(logs.String(), "changed and does not load") {
		t.Errorf("broken CRL not logged:\n%s", logs.String())
	}
	// A DER list without the certificate lets it in again.
	ca.crl(t, crlFile, time.Now().Add(time.Hour), true, otherCert)
	if code, err := get(opsCert, opsKey); err != nil || code != 200 {
		t.Errorf("after the CRL was rewritten without it: %d %v", code, err)
	}
	if _, err := get(otherCert, otherKey); err == nil {
		t.Error("certificate revoked by the DER CRL accepted")
	}
	// Past its NextUpdate: logged, once, and still in force.
	ca.crl(t, crlFile, time.Now().Add(-time.Minute), false, otherCert)
	for range 2 {
		if _, err := get(otherCert, otherKey); err == nil {
			t.Error("certificate revoked by a stale CRL accepted")
		}
	}
	if n := strings.Count(logs.String(), "past its next update"); n != 1 {
		t.Errorf("stale CRL logged %d times:\n%s", n, logs.String())
	}

	// At start, a CRL that does not load is an error.
	other := newTestCA(t)
	foreign := filepath.Join(t.TempDir(), "foreign.crl")
	other.crl(t, foreign, time.Now().Add(time.Hour), false)
	garbage := filepath.Join(t.TempDir(), "garbage.crl")
	writeFile(t, garbage, "not a CRL")
	empty := filepath.Join(t.TempDir(), "empty.crl")
	writeFile(t, empty, "")
	certAsCRL := opsCert
	for _, tc := range []struct{ file, want string }{
		{foreign, "signature not verified by the CA of that name in -api-ca-file"},
		{garbage, "CRL 1"},
		{empty, "no CRL in it"},
		{certAsCRL, `type "CERTIFICATE"`},
		{filepath.Join(t.TempDir(), "missing.crl"), "no such file"},
	} {
		_, err := setupClientCerts(&tls.Config{}, caFile, tc.file, log)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "-api-crl-file") {
			t.Errorf("CRL %s at start: %v, want an error with %q", filepath.Base(tc.file), err, tc.want)
		}
	}
}

// The server with -api-crl-file: a client certificate revoked by a
// rewrite of the file is refused at the next handshake, without a restart;
// a CRL that does not load stops the start.
func TestServeRevocationList(t *testing.T) {
	ca := newTestCA(t)
	caFile := filepath.Join(ca.dir, "ca.pem")
	srvCert, srvKey := ca.issue(t, "server", true)
	opsCert, opsKey := ca.issue(t, "ops", false, "admin")
	crlFile := filepath.Join(t.TempDir(), "ca.crl")
	ca.crl(t, crlFile, time.Now().Add(time.Hour), false)
	args := func() []string {
		return []string{"-data-path", t.TempDir(), "-assets-path", "", "-db-path", filepath.Join(t.TempDir(), "m.db"),
			"-api-cert-file", srvCert, "-api-key-file", srvKey, "-api-ca-file", caFile, "-api-crl-file", crlFile}
	}
	s := startServer(t, nil, args()...)
	url := strings.Replace(s.apiURL, "http://", "https://", 1) + "/api/v1/groups"
	if code, err := tlsGet(t, url, caFile, opsCert, opsKey); err != nil || code != 200 {
		t.Fatalf("before the revocation: %d %v", code, err)
	}
	ca.crl(t, crlFile, time.Now().Add(time.Hour), false, opsCert)
	if code, err := tlsGet(t, url, caFile, opsCert, opsKey); err == nil {
		t.Errorf("revoked certificate: %d", code)
	}
	waitFor(t, 10*time.Second, "the refusal in the log", func() bool { return strings.Contains(s.log.String(), "admin API TLS handshake refused") })

	writeFile(t, crlFile, "broken")
	code, out := serveRefused(t, append(args(), "-address", "127.0.0.1:0", "-api-address", "127.0.0.1:0")...)
	if code == 0 || !strings.Contains(out, "-api-crl-file") {
		t.Errorf("start with a broken CRL: exit %d\n%s", code, out)
	}
	code, out = serveRefused(t, "-data-path", t.TempDir(), "-db-path", filepath.Join(t.TempDir(), "m.db"), "-address", "127.0.0.1:0",
		"-api-address", "127.0.0.1:0", "-api-cert-default-role", "root")
	if code == 0 || !strings.Contains(out, "-api-cert-default-role") {
		t.Errorf("-api-cert-default-role root: exit %d\n%s", code, out)
	}
}

// serveRefused runs `matchbox serve` expecting it to refuse to start: its
// exit code and output. One that serves instead is stopped and failed.
func serveRefused(t *testing.T, args ...string) (int, string) {
	t.Helper()
	return serveRefusedEnv(t, nil, args...)
}

// serveRefusedEnv is serveRefused with env added to the environment.
func serveRefusedEnv(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if !hasFlag(args, "secret-key-file") {
		args = append(args, "-secret-key-file", filepath.Join(t.TempDir(), "secret.key"))
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("serve %v did not refuse to start:\n%s", args, out)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// A revoked admin token is not imported again at the next start; the log
// says so at error level, naming the file.
func TestServeRevokedAdminToken(t *testing.T) {
	data := t.TempDir()
	db := filepath.Join(t.TempDir(), "m.db")
	given := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(given, []byte("mbx_operator_token_0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-data-path", data, "-assets-path", "", "-db-path", db, "-api-token-file", given}
	s := startServer(t, nil, args...)
	token := "mbx_operator_token_0123456789"
	if code, body := apiCall(t, "DELETE", s.apiURL+"/api/v1/tokens/admin", token, nil); code != 204 {
		t.Fatalf("revoke the admin token: %d %s", code, body)
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()

	s = startServer(t, nil, args...)
	if code, body := apiCall(t, "GET", s.apiURL+"/api/v1/groups", token, nil); code != 401 {
		t.Errorf("the revoked token after a restart: %d %s", code, body)
	}
	var said bool
	for _, line := range strings.Split(s.log.String(), "\n") {
		if strings.Contains(line, "level=ERROR") && strings.Contains(line, "revoked") && strings.Contains(line, "file="+given) {
			said = true
		}
	}
	if !said {
		t.Errorf("the log does not say that %s holds a revoked token:\n%s", given, s.log.String())
	}
	if got := readFile(t, given); got != token+"\n" {
		t.Errorf("-api-token-file was rewritten: %q", got)
	}
}

// Secret files that others may read start with a warning naming the file
// and mode; ones that others may write are refused. Files matchbox makes
// are 0600.
func TestSecretFileModes(t *testing.T) {
	data := t.TempDir()
	token := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(token, []byte("mbx_operator_token_0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(token, 0o644)
	key := filepath.Join(t.TempDir(), "secret.key")
	s := startServer(t, nil, "-data-path", data, "-assets-path", "", "-db-path", filepath.Join(t.TempDir(), "m.db"),
		"-api-token-file", token, "-secret-key-file", key)
	if !strings.Contains(s.log.String(), "secret file readable by group or others") || !strings.Contains(s.log.String(), "file="+token) ||
		!strings.Contains(s.log.String(), "mode=0644") {
		t.Errorf("no warning about %s (0644):\n%s", token, s.log.String())
	}
	for _, line := range strings.Split(s.log.String(), "\n") {
		if strings.Contains(line, "secret file readable") && strings.Contains(line, "file="+key) {
			t.Errorf("warning about the secret key matchbox created: %s", line)
		}
	}
	for _, f := range []string{key, filepath.Join(data, "matchbox.db")} {
		if st, err := os.Stat(f); err == nil && st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", f, st.Mode().Perm())
		}
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()

	defaultData := t.TempDir()
	s = startServer(t, nil, "-data-path", defaultData, "-assets-path", "", "-db-path", filepath.Join(t.TempDir(), "m.db"))
	if st, err := os.Stat(filepath.Join(defaultData, "admin.token")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("generated admin token: %v %v", st.Mode(), err)
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()

	for _, tc := range []struct{ flag, content string }{
		{"-api-token-file", "mbx_operator_token_0123456789\n"},
		{"-secret-key-file", strings.Repeat("ab", 32) + "\n"},
		{"-key-ring-path", "not read: refused before"},
	} {
		f := filepath.Join(t.TempDir(), "secret")
		if err := os.WriteFile(f, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chmod(f, 0o666)
		code, out := serveRefused(t, "-data-path", t.TempDir(), "-db-path", filepath.Join(t.TempDir(), "m.db"), "-address", "127.0.0.1:0",
			"-api-address", "127.0.0.1:0", tc.flag, f)
		if code == 0 || !strings.Contains(out, tc.flag+" "+f+" has mode 0666") {
			t.Errorf("%s of mode 0666: exit %d\n%s", tc.flag, code, out)
		}
	}
}

// The profiling endpoints have no authentication: only a loopback
// -debug-address is accepted.
func TestDebugAddressLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:6060"} {
		code, out := serveRefused(t, "-data-path", t.TempDir(), "-db-path", filepath.Join(t.TempDir(), "m.db"), "-address", "127.0.0.1:0",
			"-api-address", "", "-debug-address", addr)
		if code == 0 || !strings.Contains(out, "-debug-address "+addr+" is not a loopback address") || !strings.Contains(out, "SSH tunnel") {
			t.Errorf("-debug-address %s: exit %d\n%s", addr, code, out)
		}
	}
	s := startServer(t, nil, "-data-path", t.TempDir(), "-assets-path", "", "-db-path", filepath.Join(t.TempDir(), "m.db"),
		"-api-address", "", "-debug-address", "127.0.0.1:0")
	if !strings.Contains(s.log.String(), "profiling endpoints serving") {
		t.Errorf("loopback -debug-address:\n%s", s.log.String())
	}
}
