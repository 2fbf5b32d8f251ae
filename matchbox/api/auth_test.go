package api_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/api"
	"matchbox.dev/matchbox/internal/logbuf"
	"matchbox.dev/matchbox/storage"
)

// testCA issues client certificates at test time.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	next int64
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "api test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, next: 2}
}

// client issues a client certificate with the given OUs.
func (ca *testCA) client(t testing.TB, cn string, ous ...string) tls.Certificate {
	t.Helper()
	return ca.issue(t, cn, false, ous...)
}

// server issues a server certificate for 127.0.0.1.
func (ca *testCA) server(t testing.TB) tls.Certificate {
	t.Helper()
	return ca.issue(t, "server", true)
}

func (ca *testCA) issue(t testing.TB, cn string, server bool, ous ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.next), Subject: pkix.Name{CommonName: cn, OrganizationalUnit: ous},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	ca.next++
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsAPI is the API over real TLS on loopback, asking for client
// certificates of ca, on a store in memory.
type tlsAPI struct {
	ts    *httptest.Server
	logs  *logbuf.Buffer
	admin string
}

func newTLSAPI(t *testing.T, ca *testCA, cfg api.Config) *tlsAPI {
	t.Helper()
	dir := t.TempDir()
	db := storage.NewMemory()
	ctx := context.Background()
	file, err := api.EnsureAdminToken(ctx, db, "", filepath.Join(dir, "admin.token"), nil)
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := os.ReadFile(file)
	logs := &logbuf.Buffer{}
	cat := matchbox.NewCatalog("db")
	cfg.Store, cfg.Catalog, cfg.Logger = db, cat, slog.New(slog.NewTextHandler(logs, nil))
	cfg.Reload = func(ctx context.Context) error {
		_, err := cat.Reload(ctx, "db", db.Objects)
		return err
	}
	srv, err := api.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.TLS = &tls.Config{ClientCAs: ca.pool, ClientAuth: tls.VerifyClientCertIfGiven}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return &tlsAPI{ts: ts, logs: logs, admin: strings.TrimSpace(string(secret))}
}

// call makes one request with a client certificate (none when cert is
// nil) on a connection of its own.
func (a *tlsAPI) call(t *testing.T, cert *tls.Certificate, method, path, body string) (int, string) {
	t.Helper()
	tr := a.ts.Client().Transport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	if cert != nil {
		tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(method, a.ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// Client certificates get the role their OU names, by an exact rule that
// fails closed: OU=Read is read (before: admin), OU=readonly and no OU are
// refused with the reason (before: admin), read and admin together are
// read; certificates without an OU work only with a default role.
func TestClientCertificateRoles(t *testing.T) {
	ca := newTestCA(t)
	for _, tc := range []struct {
		name        string
		ous         []string
		noOU        matchbox.Role
		read, write int
		reason      string // in the refusal of a read
	}{
		{"OU=admin", []string{"admin"}, "", 200, 201, ""},
		{"OU=Admin", []string{"Admin"}, "", 200, 201, ""},
		{"OU=read", []string{"read"}, "", 200, 403, ""},
		{"OU=Read", []string{"Read"}, "", 200, 403, ""},
		{"OU=readonly", []string{"readonly"}, "", 403, 403, `OU=\"readonly\" names no role`},
		{"OU=read+admin", []string{"read", "admin"}, "", 200, 403, ""},
		{"OU=admin+ops", []string{"admin", "ops"}, "", 403, 403, `OU=\"ops\" names no role`},
		{"no OU", nil, "", 403, 403, "no organizational unit"},
		{"no OU, default read", nil, matchbox.RoleRead, 200, 403, ""},
		{"no OU, default admin", nil, matchbox.RoleAdmin, 200, 201, ""},
		{"OU=readonly, default admin", []string{"readonly"}, matchbox.RoleAdmin, 403, 403, "names no role"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTLSAPI(t, ca, api.Config{CertDefaultRole: tc.noOU})
			cert := ca.client(t, "op-"+strings.ReplaceAll(tc.name, " ", "_"), tc.ous...)
			code, body := a.call(t, &cert, "GET", "/api/v1/groups", "")
			if code != tc.read {
				t.Errorf("read: %d %s, want %d", code, body, tc.read)
			}
			if tc.reason != "" {
				if !strings.Contains(body, tc.reason) || !strings.Contains(body, "forbidden") {
					t.Errorf("refusal %s does not say %q", body, tc.reason)
				}
				if lines := a.logs.Lines("admin API client certificate refused", "level=WARN"); len(lines) == 0 {
					t.Errorf("refusal not logged:\n%s", a.logs.String())
				}
			}
			code, body = a.call(t, &cert, "PUT", "/api/v1/profiles/p", `{"id": "p"}`)
			if code != tc.write {
				t.Errorf("write: %d %s, want %d", code, body, tc.write)
			}
		})
	}
	// Without a certificate, a token is needed, and works.
	a := newTLSAPI(t, ca, api.Config{})
	if code, body := a.call(t, nil, "GET", "/api/v1/groups", ""); code != 401 {
		t.Errorf("no certificate, no token: %d %s", code, body)
	}
}

// A client certificate that VerifyCertificate refuses (revoked) is refused
// at each request, also on a connection opened before the revocation.
func TestClientCertificateVerified(t *testing.T) {
	ca := newTestCA(t)
	var revoked atomic.Pointer[big.Int]
	a := newTLSAPI(t, ca, api.Config{VerifyCertificate: func(chains [][]*x509.Certificate) error {
		if r := revoked.Load(); r != nil && chains[0][0].SerialNumber.Cmp(r) == 0 {
			return errors.New("certificate is revoked")
		}
		return nil
	}})
	cert := ca.client(t, "ops", "admin")
	tr := a.ts.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	get := func() (int, string) {
		resp, err := client.Get(a.ts.URL + "/api/v1/groups")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	if code, body := get(); code != 200 {
		t.Fatalf("before the revocation: %d %s", code, body)
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	revoked.Store(leaf.SerialNumber)
	if code, body := get(); code != 403 || !strings.Contains(body, "revoked") {
		t.Errorf("after the revocation, same connection: %d %s", code, body)
	}
}

// Credentials are checked before any body is read: a request without
// them gets its answer while its (large) body is still unsent, and the
// connection is closed so the server never reads it. Authenticated bodies
// are bounded by MaxBody (1 MiB).
func TestAuthenticatesBeforeReadingBodies(t *testing.T) {
	f := newFixture(t)
	addr := strings.TrimPrefix(f.url, "http://")
	for _, tc := range []struct{ name, auth, path string }{
		{"no token", "", "/api/v1/groups/g"},
		{"wrong token", "Authorization: Bearer mbx_wrong_token_0123456789\r\n", "/api/v1/groups/g"},
		{"template without a token", "", "/api/v1/templates/generic/x.tmpl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// The header announces 200 KB of body; none of it is sent.
			fmt.Fprintf(conn, "PUT %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n", tc.path, tc.auth)
			// A bound on the wait, not a timing claim: the server answers
			// without the body, or never.
			conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer before the body was sent: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 || !resp.Close {
				t.Errorf("answer: %d, close %v; want 401 and the connection closed", resp.StatusCode, resp.Close)
			}
		})
	}
	big := strings.Repeat("x", 1<<20+1)
	if r := f.raw(t, "PUT", "/api/v1/templates/generic/big.tmpl", big); r.code != 413 {
		t.Errorf("a template over 1 MiB: %d %.200s", r.code, r.raw)
	}
}

// A revoked admin token stays revoked: the next start (a new store over
// the same database) does not import it again from the token file, and
// says so at error level, naming the file. The default file, which is
// matchbox's own, gets a new token; a file the operator gave
// (-api-token-file) is left alone.
func TestRevokedAdminTokenStaysRevoked(t *testing.T) {
	dir := t.TempDir()
	database := storage.NewMemoryBackend()
	def := filepath.Join(dir, "admin.token")
	ctx := context.Background()
	// start opens a store over the database, and the API, as the server
	// does, and returns the token in file (empty when there is none).
	start := func(t *testing.T, tokenFile string) (*fixture, *logbuf.Buffer) {
		t.Helper()
		db := storage.OpenMemory(database)
		t.Cleanup(func() { db.Close() })
		logs := &logbuf.Buffer{}
		file, err := api.EnsureAdminToken(ctx, db, tokenFile, def, slog.New(slog.NewTextHandler(logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		srv, err := api.New(ctx, api.Config{Store: db, Catalog: matchbox.NewCatalog("db")})
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewServer(srv.Handler())
		t.Cleanup(ts.Close)
		f := &fixture{dir: dir, url: ts.URL, db: db}
		if file != "" {
			secret, _ := os.ReadFile(file)
			f.admin = strings.TrimSpace(string(secret))
		}
		return f, logs
	}
	stop := func(f *fixture) { f.db.Close() }

	f, _ := start(t, "")
	old := f.admin
	if r := f.do(t, "DELETE", "/api/v1/tokens/admin", old, nil); r.code != 204 {
		t.Fatalf("revoke the admin token: %d %s", r.code, r.raw)
	}
	if r := f.do(t, "GET", "/api/v1/groups", old, nil); r.code != 401 {
		t.Errorf("the revoked token: %d", r.code)
	}
	stop(f)

	// Restart: the default file's revoked token is refused and replaced.
	f, logs := start(t, "")
	if r := f.do(t, "GET", "/api/v1/groups", old, nil); r.code != 401 {
		t.Errorf("the revoked token after a restart: %d %s", r.code, r.raw)
	}
	if lines := logs.Lines("level=ERROR", "revoked", "file="+def); len(lines) != 1 || !strings.Contains(lines[0], "a new admin token was generated into the file") {
		t.Errorf("the restart did not tell the operator:\n%s", logs.String())
	}
	if f.admin == "" || f.admin == old {
		t.Fatalf("the default file was not given a new token")
	}
	if st, err := os.Stat(def); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("new token file: %v %v", st.Mode(), err)
	}
	if r := f.do(t, "GET", "/api/v1/groups", f.admin, nil); r.code != 200 {
		t.Errorf("the new admin token: %d %s", r.code, r.raw)
	}
	// A revoked secret cannot come back as a new token either.
	if err := f.db.CreateToken(ctx, matchbox.Token{Name: "again", Role: matchbox.RoleAdmin, Hash: api.HashSecret(old)}); !errors.Is(err, matchbox.ErrConflict) {
		t.Errorf("a token with the revoked secret: %v", err)
	}
	stop(f)

	// An operator's -api-token-file: its token replaces the admin token
	// (which is revoked with it); revoked in turn, it is refused at the
	// next start and the file is left as it was.
	given := filepath.Join(t.TempDir(), "given.token")
	if err := os.WriteFile(given, []byte("mbx_given_token_0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, _ = start(t, given)
	replaced := f.admin
	if r := f.do(t, "GET", "/api/v1/groups", replaced, nil); r.code != 200 {
		t.Fatalf("-api-token-file's token: %d %s", r.code, r.raw)
	}
	if r := f.do(t, "DELETE", "/api/v1/tokens/admin", replaced, nil); r.code != 204 {
		t.Fatalf("revoke: %d %s", r.code, r.raw)
	}
	stop(f)
	f, logs = start(t, given)
	if f.admin != "" {
		t.Errorf("EnsureAdminToken named a file holding a revoked token")
	}
	if r := f.do(t, "GET", "/api/v1/groups", "mbx_given_token_0123456789", nil); r.code != 401 {
		t.Errorf("the revoked -api-token-file token after a restart: %d %s", r.code, r.raw)
	}
	if lines := logs.Lines("level=ERROR", "-api-token-file was revoked", "file="+given, "write a new token"); len(lines) != 1 {
		t.Errorf("the restart did not tell the operator:\n%s", logs.String())
	}
	if data, _ := os.ReadFile(given); string(data) != "mbx_given_token_0123456789\n" {
		t.Errorf("-api-token-file was changed: %q", data)
	}
	stop(f)
	// The token the default file had before -api-token-file was revoked
	// by the replacement.
	f, logs = start(t, "")
	if lines := logs.Lines("level=ERROR", "revoked", "file="+def); len(lines) != 1 {
		t.Errorf("the default file's replaced token:\n%s", logs.String())
	}
	if r := f.do(t, "GET", "/api/v1/groups", f.admin, nil); r.code != 200 || f.admin == replaced {
		t.Errorf("the regenerated default token: %d %s", r.code, r.raw)
	}
}
