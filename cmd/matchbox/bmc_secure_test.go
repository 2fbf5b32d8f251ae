package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"matchbox.dev/matchbox/bmc/bmcsim"
)

// awkwardPassword has every character escaping changes; its fragments
// between them no escaping changes, so a leak in any form shows.
const awkwardPassword = `Qx7"Lm\Rv%41 Zp&Kw'Ét€Yb😀Hn`

var awkwardFragments = []string{"Qx7", "Lm\\", "Rv%", "Zp", "Kw", "Yb", "Hn"}

// checkNoPassword fails the test if text holds awkwardPassword in any
// form.
func checkNoPassword(t *testing.T, where, text string) {
	t.Helper()
	js, _ := json.Marshal(awkwardPassword)
	q := fmt.Sprintf("%q", awkwardPassword)
	for _, form := range append([]string{awkwardPassword, string(js[1 : len(js)-1]), q[1 : len(q)-1],
		url.QueryEscape(awkwardPassword), url.PathEscape(awkwardPassword), strings.ReplaceAll(awkwardPassword, "'", `'\''`)}, awkwardFragments...) {
		if strings.Contains(text, form) {
			t.Errorf("%s holds the password (%q): %s", where, form, text)
		}
	}
}

// A BMC whose error page quotes the credentials it got: what the read role
// can see (machine, events, workflow reason), the admin's API errors, the
// CLI and the server's log and standard output hold the password in no
// form, even with bmclib's request dump asked for.
func TestBMCPasswordInNoOutput(t *testing.T) {
	echo := bmcsim.StartRedfish(t, bmcsim.RedfishConfig{User: "admin", Password: "the-right-one", EchoCredentials: true})
	l := newReinstallLabEnv(t, []string{"DEBUG_BMCLIB=true"}, "-bmc-attempts", "1")
	const mac = "52:54:00:a1:9c:ae"
	if code, body := fetch(t, l.s.url+"/ipxe?mac="+mac); code != 200 {
		t.Fatalf("/ipxe: %d %s", code, body)
	}
	pw := filepath.Join(t.TempDir(), "pw")
	writeFile(t, pw, awkwardPassword+"\n")
	if code, out := l.cli("machine", "bmc", "set", mac, "-address", echo.Host+":"+echo.Port, "-provider", "redfish",
		"-username", "admin", "-password-file", pw, "-tls-fingerprint", echo.Fingerprint()); code != 0 {
		t.Fatalf("bmc set: %d %s", code, out)
	}
	admin := strings.TrimSpace(readFile(t, filepath.Join(l.data, "admin.token")))
	_, raw := apiCall(t, "POST", l.s.apiURL+"/api/v1/tokens", admin, map[string]any{"name": "viewer", "role": "read"})
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(raw), &tok); err != nil || tok.Token == "" {
		t.Fatalf("read token: %v %s", err, raw)
	}

	var seen []string
	code, raw := apiCall(t, "GET", l.s.apiURL+"/api/v1/machines/"+mac+"/power", admin, nil)
	if code != 502 || !strings.Contains(raw, "login refused") {
		t.Errorf("power status: %d %s", code, raw)
	}
	seen = append(seen, raw)
	code, out := l.cli("machine", "power", mac, "on")
	if code != 1 {
		t.Errorf("power on: %d %s", code, out)
	}
	seen = append(seen, out)
	if code, out := l.cli("machine", "reinstall", mac); code != 0 {
		t.Fatalf("reinstall: %d %s", code, out)
	}
	reason := l.waitState(mac, "failed")
	if !strings.Contains(reason, "login refused") {
		t.Errorf("reason: %s", reason)
	}
	for _, p := range []string{"/api/v1/machines/" + mac, "/api/v1/machines/" + mac + "/events", "/api/v1/machines/" + mac + "/workflow", "/api/v1/machines/" + mac + "/bmc"} {
		code, raw := apiCall(t, "GET", l.s.apiURL+p, tok.Token, nil)
		if code != 200 {
			t.Errorf("GET %s as read: %d %s", p, code, raw)
		}
		seen = append(seen, raw)
	}
	for i, text := range seen {
		checkNoPassword(t, fmt.Sprintf("answer %d", i), text)
	}
	log := l.s.log.String()
	checkNoPassword(t, "the server log", log)
	if !strings.Contains(log, "DEBUG_BMCLIB ignored") {
		t.Error("the server did not say it ignored DEBUG_BMCLIB")
	}
}

// Settings that pin no certificate (as all did before pins existed) reach
// a BMC only over a verified certificate: the error names the fingerprint
// to pin; pinning, or moving the BMC, needs the password again; -bmc-ca-file
// trusts a CA; skipping verification is shown and logged.
func TestBMCCertificatesAndDestinations(t *testing.T) {
	ca := bmcsim.NewCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, caFile, string(ca.PEM))
	issued := ca.Issue(t, "127.0.0.1")
	selfSigned := bmcsim.StartRedfish(t, bmcsim.RedfishConfig{User: "admin", Password: bmcPassword})
	signed := bmcsim.StartRedfish(t, bmcsim.RedfishConfig{User: "admin", Password: bmcPassword, Certificate: &issued})
	attacker := bmcsim.StartRedfish(t, bmcsim.RedfishConfig{User: "admin", Password: bmcPassword})
	l := newReinstallLab(t, "-bmc-ca-file", caFile)
	const mac, mac2 = "52:54:00:a1:9c:ae", "52:54:00:00:00:b2"
	for _, m := range []string{mac, mac2} {
		if code, body := fetch(t, l.s.url+"/ipxe?mac="+m); code != 200 {
			t.Fatalf("/ipxe: %d %s", code, body)
		}
	}
	pw := filepath.Join(t.TempDir(), "pw")
	writeFile(t, pw, bmcPassword+"\n")
	set := func(m string, args ...string) (int, string) {
		t.Helper()
		return l.cli(append([]string{"machine", "bmc", "set", m, "-provider", "redfish", "-username", "admin"}, args...)...)
	}
	at := func(sim *bmcsim.RedfishSim) string { return sim.Host + ":" + sim.Port }

	if code, out := set(mac, "-address", at(selfSigned), "-password-file", pw); code != 0 {
		t.Fatalf("bmc set: %d %s", code, out)
	}
	code, out := l.cli("machine", "power", mac, "status")
	if code != 1 || !strings.Contains(out, "not trusted") || !strings.Contains(out, selfSigned.Fingerprint()) || !strings.Contains(out, "-tls-fingerprint") {
		t.Errorf("power status of an unpinned self-signed BMC: %d %s", code, out)
	}
	if n := len(selfSigned.Requests()); n != 0 {
		t.Errorf("the untrusted BMC got %d requests", n)
	}
	if code, out := set(mac, "-address", at(selfSigned), "-tls-fingerprint", selfSigned.Fingerprint()); code != 1 || !strings.Contains(out, "tls_fingerprint changed") || !strings.Contains(out, "give the password again") {
		t.Errorf("pinning without the password: %d %s", code, out)
	}
	if code, out := set(mac, "-address", at(selfSigned), "-tls-fingerprint", selfSigned.Fingerprint(), "-password-file", pw); code != 0 || !strings.Contains(out, "pinned") {
		t.Fatalf("pinning: %d %s", code, out)
	}
	if code, out := l.cli("machine", "power", mac, "status"); code != 0 {
		t.Errorf("power status, pinned: %d %s", code, out)
	}
	// Repointed without the password, the BMC is not moved, and the new
	// address gets nothing.
	if code, out := set(mac, "-address", at(attacker), "-tls-fingerprint", attacker.Fingerprint()); code != 1 || !strings.Contains(out, "address, tls_fingerprint changed") {
		t.Errorf("repointing without the password: %d %s", code, out)
	}
	if code, out := l.cli("machine", "power", mac, "status"); code != 0 {
		t.Errorf("power status after a refused repoint: %d %s", code, out)
	}
	if n := len(attacker.Requests()); n != 0 {
		t.Errorf("the new address got %d requests", n)
	}

	// A certificate from the CA of -bmc-ca-file needs no pin.
	if code, out := set(mac2, "-address", at(signed), "-password-file", pw); code != 0 {
		t.Fatalf("bmc set: %d %s", code, out)
	}
	if code, out := l.cli("machine", "power", mac2, "status"); code != 0 {
		t.Errorf("power status, CA-signed: %d %s", code, out)
	}
	// Skipping verification works, and shows.
	if code, out := set(mac2, "-address", at(attacker), "-tls-insecure-skip-verify", "-password-file", pw); code != 0 || !strings.Contains(out, "NOT verified") {
		t.Fatalf("skipping verification: %d %s", code, out)
	}
	if code, out := l.cli("machine", "power", mac2, "status"); code != 0 {
		t.Errorf("power status, verification skipped: %d %s", code, out)
	}
	if code, out := l.cli("machine", "bmc", "get", mac2); code != 0 || !strings.Contains(out, `"tls_insecure_skip_verify": true`) {
		t.Errorf("bmc get: %d %s", code, out)
	}
	if log := l.s.log.String(); !strings.Contains(log, "bmc TLS certificate not verified") || !strings.Contains(log, "skip TLS certificate verification") {
		t.Errorf("the log does not show verification skipped:\n%s", log)
	}
}
