package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA makes a CA and certificates signed by it, written as PEM files.
type testCA struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "matchbox test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{dir: t.TempDir(), cert: cert, key: key}
	ca.write(t, "ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(ca.dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// issue writes a certificate and key for name; server certificates are
// for 127.0.0.1.
func (ca *testCA) issue(t *testing.T, name string, server bool, ou ...string) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name, OrganizationalUnit: ou},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	return ca.write(t, name+".pem", "CERTIFICATE", der), ca.write(t, name+"-key.pem", "EC PRIVATE KEY", kd)
}

// The admin API over TLS: tokens work, client certificates signed by the
// -api-ca-file CA work without a token (OU=admin, or OU=read to only
// read), a certificate from another CA does not, nor one without an OU
// unless -api-cert-default-role gives it a role.
func TestAPITLSAndClientCertificates(t *testing.T) {
	ca := newTestCA(t)
	srvCert, srvKey := ca.issue(t, "server", true)
	adminCert, adminKey := ca.issue(t, "ops", false, "admin")
	readCert, readKey := ca.issue(t, "viewer", false, "read")
	plainCert, plainKey := ca.issue(t, "plain", false)
	other := newTestCA(t)
	strangerCert, strangerKey := other.issue(t, "stranger", false)

	data := t.TempDir()
	s := startServer(t, nil, "-data-path", data, "-assets-path", "", "-db-path", filepath.Join(t.TempDir(), "m.db"),
		"-api-cert-file", srvCert, "-api-key-file", srvKey, "-api-ca-file", filepath.Join(ca.dir, "ca.pem"))
	endpoint := strings.Replace(s.apiURL, "http://", "https://", 1)
	base := []string{"MATCHBOX_ENDPOINT=" + endpoint, "MATCHBOX_CA_FILE=" + filepath.Join(ca.dir, "ca.pem")}
	withToken := append(append([]string{}, base...), "MATCHBOX_TOKEN_FILE="+filepath.Join(data, "admin.token"))
	if code, out := runCLI(t, withToken, "group", "list"); code != 0 {
		t.Errorf("token over TLS: %d %s", code, out)
	}
	pf := filepath.Join(t.TempDir(), "p.json")
	writeFile(t, pf, `{"id": "p1"}`)
	if code, out := runCLI(t, base, "profile", "apply", "-f", pf, "-client-cert", adminCert, "-client-key", adminKey); code != 0 || !strings.Contains(out, "created") {
		t.Errorf("admin client certificate: %d %s", code, out)
	}
	if code, out := runCLI(t, base, "profile", "list", "-client-cert", readCert, "-client-key", readKey); code != 0 || !strings.Contains(out, "p1") {
		t.Errorf("read client certificate reading: %d %s", code, out)
	}
	if code, out := runCLI(t, base, "profile", "delete", "p1", "-client-cert", readCert, "-client-key", readKey); code != 1 || !strings.Contains(out, "forbidden") {
		t.Errorf("read client certificate writing: %d %s", code, out)
	}
	if code, out := runCLI(t, append(base, "MATCHBOX_TOKEN=none"), "profile", "list", "-client-cert", strangerCert, "-client-key", strangerKey); code != 1 {
		t.Errorf("certificate of another CA: %d %s", code, out)
	}
	if code, out := runCLI(t, base, "profile", "list", "-client-cert", plainCert, "-client-key", plainKey); code != 1 || !strings.Contains(out, "no organizational unit") {
		t.Errorf("certificate without an OU: %d %s", code, out)
	}
	// Without the CA the CLI refuses the server's certificate.
	if code, out := runCLI(t, []string{"MATCHBOX_ENDPOINT=" + endpoint, "MATCHBOX_TOKEN=x"}, "group", "list"); code != 1 || !strings.Contains(out, "certificate") {
		t.Errorf("unknown server CA: %d %s", code, out)
	}
}
