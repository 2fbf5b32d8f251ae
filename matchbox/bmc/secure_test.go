package bmc

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/bmc/bmcsim"
	"matchbox.dev/matchbox/internal/logbuf"
)

// nastyPassword has every character that changes when text is escaped:
// quotes, backslash, percent, spaces, ampersand, non-ASCII, a shell quote;
// between them, fragments no encoding changes, so that a leak in any
// escaped form still shows.
const nastyPassword = `Qx7"Lm\Rv%41 Zp&Kw'Ét€Yb😀Hn`

// nastyFragments are the pieces of nastyPassword that escaping leaves as
// they are.
var nastyFragments = []string{"Qx7", "Lm", "Rv", "Zp", "Kw", "Yb", "Hn"}

// secretForms are the forms a secret takes in text, computed here
// independently of the redaction under test.
func secretForms(s string) map[string]string {
	js, _ := json.Marshal(s)
	q := fmt.Sprintf("%q", s)
	return map[string]string{
		"raw":          s,
		"JSON":         string(js[1 : len(js)-1]),
		"Go-quoted":    q[1 : len(q)-1],
		"query":        url.QueryEscape(s),
		"path":         url.PathEscape(s),
		"shell-quoted": strings.ReplaceAll(s, "'", `'\''`),
	}
}

// checkNoSecret fails the test if text holds the secret in any form, or
// one of its fragments.
func checkNoSecret(t *testing.T, where, text, secret string, fragments ...string) {
	t.Helper()
	for form, v := range secretForms(secret) {
		if strings.Contains(text, v) {
			t.Errorf("%s holds the password (%s form %q): %s", where, form, v, text)
		}
	}
	for _, f := range fragments {
		if strings.Contains(text, f) {
			t.Errorf("%s holds a fragment %q of the password: %s", where, f, text)
		}
	}
}

// A BMC whose error page quotes the credentials it was sent (raw, in the
// JSON of the request, query- and path-escaped) gets none of them into the
// controller's errors.
func TestRedfishErrorsRedactEveryForm(t *testing.T) {
	sim := bmcsim.StartRedfish(t, bmcsim.RedfishConfig{User: testUser, Password: testPassword, EchoCredentials: true})
	b := matchbox.BMC{Address: net.JoinHostPort(sim.Host, sim.Port), Provider: "redfish", Username: testUser, Password: nastyPassword, TLSFingerprint: sim.Fingerprint()}
	c := New(Config{OperationTimeout: 10 * time.Second, ProviderTimeout: 5 * time.Second})
	_, err := within(t, "power status", func() error { _, err := c.PowerState(testContext(t), b); return err })
	if err == nil {
		t.Fatal("power status with a wrong password: no error")
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), "login refused") {
		t.Errorf("the error lost the BMC's reason: %v", err)
	}
	checkNoSecret(t, "the error", err.Error(), nastyPassword, nastyFragments...)
}

// A BMC that redirects the login elsewhere does not get the credentials
// sent there, even to an endpoint whose certificate is trusted.
func TestRedfishLoginRedirectNotFollowed(t *testing.T) {
	ca := bmcsim.NewCA(t)
	cert := ca.Issue(t, "127.0.0.1")
	elsewhere := bmcsim.StartRedfish(t, bmcsim.RedfishConfig{User: testUser, Password: testPassword, Certificate: &cert})
	sim := bmcsim.StartRedfish(t, bmcsim.RedfishConfig{User: testUser, Password: testPassword, Certificate: &cert,
		LoginRedirect: elsewhere.URL + "/redfish/v1/SessionService/Sessions"})
	b := matchbox.BMC{Address: net.JoinHostPort(sim.Host, sim.Port), Provider: "redfish", Username: testUser, Password: testPassword}
	c := New(Config{OperationTimeout: 10 * time.Second, ProviderTimeout: 5 * time.Second, RootCAs: caPool(t, ca)})
	_, err := within(t, "power status", func() error { _, err := c.PowerState(testContext(t), b); return err })
	t.Logf("error: %v", err)
	if err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Errorf("a login redirected to another endpoint: %v", err)
	}
	if got := elsewhere.Requests(); len(got) != 0 {
		t.Errorf("the redirect target got requests: %q", got)
	}
	// The same BMC without the redirect is trusted: the refusal was the
	// redirect's.
	checkState(t, testContext(t), c, matchbox.BMC{Address: net.JoinHostPort(elsewhere.Host, elsewhere.Port), Provider: "redfish", Username: testUser, Password: testPassword}, matchbox.PowerOff)
}

func caPool(t *testing.T, ca *bmcsim.CA) *x509.CertPool {
	t.Helper()
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pool, err := LoadCAFile(file)
	if err != nil {
		t.Fatalf("LoadCAFile: %v", err)
	}
	return pool
}

// Redfish certificates are verified: an untrusted one is refused before any
// request (the error names its fingerprint and how to pin it); a pinned
// one, one issued by a CA of -bmc-ca-file for the BMC's address, or any
// with the explicit opt-out (logged) is accepted.
func TestRedfishTLSVerification(t *testing.T) {
	ca := bmcsim.NewCA(t)
	caSigned := ca.Issue(t, "127.0.0.1")
	otherName := ca.Issue(t, "bmc.example")
	var logs logbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	withCA := New(Config{OperationTimeout: 10 * time.Second, ProviderTimeout: 5 * time.Second, RootCAs: caPool(t, ca), Logger: logger})
	systemOnly := New(Config{OperationTimeout: 10 * time.Second, ProviderTimeout: 5 * time.Second, Logger: logger})
	wrongPin := strings.Repeat("ab", 32)

	for _, tc := range []struct {
		name    string
		cert    *tls.Certificate
		c       *Controller
		pin     func(*bmcsim.RedfishSim) string
		skip    bool
		refused string // what the error says; "" for accepted
	}{
		{name: "self-signed, untrusted", c: withCA, refused: "not trusted"},
		{name: "self-signed, pinned", c: systemOnly, pin: (*bmcsim.RedfishSim).Fingerprint},
		{name: "self-signed, pinned (openssl's spelling)", c: systemOnly, pin: opensslFingerprint},
		{name: "self-signed, another pinned", c: withCA, pin: func(*bmcsim.RedfishSim) string { return wrongPin }, refused: "not the pinned " + wrongPin},
		{name: "self-signed, verification skipped", c: systemOnly, skip: true},
		{name: "CA-signed, CA trusted", cert: &caSigned, c: withCA},
		{name: "CA-signed, CA not trusted", cert: &caSigned, c: systemOnly, refused: "not trusted"},
		{name: "CA-signed for another name", cert: &otherName, c: withCA, refused: "not trusted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim := bmcsim.StartRedfish(t, bmcsim.RedfishConfig{User: testUser, Password: testPassword, Certificate: tc.cert})
			b := matchbox.BMC{Address: net.JoinHostPort(sim.Host, sim.Port), Provider: "redfish", Username: testUser, Password: testPassword, TLSInsecure: tc.skip}
			if tc.pin != nil {
				b.TLSFingerprint = tc.pin(sim)
			}
			logs.Reset()
			st, err := within(t, "power status", func() error { _, err := tc.c.PowerState(testContext(t), b); return err })
			_ = st
			if tc.refused == "" {
				if err != nil {
					t.Fatalf("power status: %v", err)
				}
			} else {
				if err == nil {
					t.Fatal("power status: accepted")
				}
				t.Logf("error: %v", err)
				msg := err.Error()
				for _, want := range []string{tc.refused, sim.Fingerprint(), "tls_fingerprint", b.Address} {
					if !strings.Contains(msg, want) {
						t.Errorf("error does not say %q: %s", want, msg)
					}
				}
				if tc.pin == nil && !strings.Contains(msg, "-bmc-ca-file") {
					t.Errorf("error does not name -bmc-ca-file: %s", msg)
				}
				// Refused at the handshake: not one request, so no
				// password, reached the BMC.
				if got := sim.Requests(); len(got) != 0 {
					t.Errorf("an untrusted BMC got requests: %q", got)
				}
				checkNoSecret(t, "the error", msg, testPassword)
			}
			warned := strings.Contains(logs.String(), "not verified")
			if warned != tc.skip {
				t.Errorf("log warns of skipped verification: %v, want %v:\n%s", warned, tc.skip, logs.String())
			}
		})
	}
}

// opensslFingerprint spells the simulator's fingerprint as openssl prints
// it: "SHA256 Fingerprint=AB:CD:…".
func opensslFingerprint(sim *bmcsim.RedfishSim) string {
	fp := strings.ToUpper(sim.Fingerprint())
	var pairs []string
	for i := 0; i < len(fp); i += 2 {
		pairs = append(pairs, fp[i:i+2])
	}
	return "SHA256 Fingerprint=" + strings.Join(pairs, ":")
}

// ipmitool gets the password in its environment, never on its command
// line: a password of shell and URL metacharacters works as it is, and a
// wrong one of every awkward character (IPMI passwords are at most 20
// bytes) comes back in no form.
func TestIPMIPasswordsOfAnyCharacter(t *testing.T) {
	if err := bmcsim.IPMIAvailable(); err != nil {
		t.Skipf("IPMI tests need ipmi_sim and ipmitool: %v", err)
	}
	// ipmi_sim's configuration takes printable ASCII but space and '"'.
	const awkward = `Qx\Lm%41&Kw'Yb$(`
	sim := bmcsim.StartIPMI(t, bmcsim.IPMIConfig{User: testUser, Password: awkward, InitialPower: true})
	b := matchbox.BMC{Address: sim.Addr, Provider: "ipmitool", Username: testUser, Password: awkward}
	c := New(Config{OperationTimeout: 15 * time.Second, ProviderTimeout: 10 * time.Second})
	checkState(t, testContext(t), c, b, matchbox.PowerOn)

	const wrong = `Qx"\%4 &'É€Yb`
	b.Password = wrong
	_, err := within(t, "power status", func() error { _, err := c.PowerState(testContext(t), b); return err })
	if err == nil {
		t.Fatal("power status with a wrong password: no error")
	}
	t.Logf("error: %v", err)
	if strings.Contains(err.Error(), "longer than") {
		t.Fatalf("the wrong password did not reach the BMC: %v", err)
	}
	checkNoSecret(t, "the error", err.Error(), wrong, "Qx", "Yb")
}
