package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"matchbox.dev/matchbox"
)

// A stored BMC password goes only where it was given for: an update that
// moves the credential (address, provider, user name, certificate trust)
// without giving the password again is refused and changes nothing.
func TestBMCPasswordStaysWithItsDestination(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const mac = "52:54:00:00:00:0b"
	const pw = `pw-"quoted"\back%41 space&é`
	path := "/api/v1/machines/" + mac + "/bmc"
	first := map[string]any{"address": "bmc9.example:443", "provider": "redfish", "username": "root", "password": pw}
	if r := f.do(t, "PUT", path, f.admin, first); r.code != 200 {
		t.Fatalf("set BMC: %d %s", r.code, r.raw)
	}
	stored := func() matchbox.BMC {
		t.Helper()
		b, err := f.db.MachineBMC(ctx, mac)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	want := stored()
	for _, tc := range []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"another host", map[string]any{"address": "10.6.6.6:443", "provider": "redfish", "username": "root"}, "address"},
		{"another port", map[string]any{"address": "bmc9.example:8443", "provider": "redfish", "username": "root"}, "address"},
		{"no port", map[string]any{"address": "bmc9.example", "provider": "redfish", "username": "root"}, "address"},
		{"another provider", map[string]any{"address": "bmc9.example:443", "provider": "intelamt", "username": "root"}, "provider"},
		{"provider omitted", map[string]any{"address": "bmc9.example:443", "username": "root"}, "provider"},
		{"another user", map[string]any{"address": "bmc9.example:443", "provider": "redfish", "username": "admin"}, "username"},
		{"empty password", map[string]any{"address": "10.6.6.6:443", "provider": "redfish", "username": "root", "password": ""}, "address"},
	} {
		r := f.do(t, "PUT", path, f.admin, tc.body)
		if r.code != 400 || !strings.Contains(r.raw, tc.field) || !strings.Contains(r.raw, "password") {
			t.Errorf("%s without the password: %d %s", tc.name, r.code, r.raw)
		}
		if got := stored(); got != want {
			t.Errorf("%s without the password changed the settings: %+v", tc.name, got)
		}
	}
	// The same destination keeps the password (spelled differently:
	// the host's case, the providers' spacing).
	if r := f.do(t, "PUT", path, f.admin, map[string]any{"address": "BMC9.Example:443", "provider": " Redfish ", "username": "root"}); r.code != 200 {
		t.Errorf("same destination without the password: %d %s", r.code, r.raw)
	}
	if got := stored(); got.Password != pw {
		t.Errorf("password after an update to the same destination: %q", got.Password)
	}
	// With the password given again, the BMC moves.
	moved := map[string]any{"address": "10.0.0.10:443", "provider": "redfish", "username": "admin", "password": "new-" + pw}
	if r := f.do(t, "PUT", path, f.admin, moved); r.code != 200 {
		t.Fatalf("move with the password: %d %s", r.code, r.raw)
	}
	if got := stored(); got.Address != "10.0.0.10:443" || got.Username != "admin" || got.Password != "new-"+pw {
		t.Errorf("after the move: %+v", got)
	}
	// How the certificate is trusted is part of the destination, and
	// shown: a pin, or the explicit opt-out of verification.
	moved["tls_insecure_skip_verify"] = true
	delete(moved, "password")
	if r := f.do(t, "PUT", path, f.admin, moved); r.code != 400 || !strings.Contains(r.raw, "tls_insecure_skip_verify") {
		t.Errorf("skipping verification without the password: %d %s", r.code, r.raw)
	}
	moved["password"] = pw
	if r := f.do(t, "PUT", path, f.admin, moved); r.code != 200 || r.body["tls_insecure_skip_verify"] != true {
		t.Errorf("skipping verification: %d %s", r.code, r.raw)
	}
	if r := f.do(t, "GET", "/api/v1/machines/"+mac, f.admin, nil); r.code != 200 || !strings.Contains(r.raw, `"tls_insecure_skip_verify": true`) {
		t.Errorf("machine with verification skipped: %d %s", r.code, r.raw)
	}
	moved["tls_fingerprint"] = "sha256:" + strings.Repeat("AB", 32)
	if r := f.do(t, "PUT", path, f.admin, moved); r.code != 400 || !strings.Contains(r.raw, "exclude each other") {
		t.Errorf("pin and skip at once: %d %s", r.code, r.raw)
	}
	moved["tls_insecure_skip_verify"] = false
	if r := f.do(t, "PUT", path, f.admin, moved); r.code != 200 || r.body["tls_fingerprint"] != strings.Repeat("ab", 32) || r.body["tls_insecure_skip_verify"] != false {
		t.Errorf("pinned: %d %s", r.code, r.raw)
	}
}

// No answer a client can read holds a BMC password, in any form.
func TestBMCPasswordNeverRead(t *testing.T) {
	f := newFixture(t)
	const mac = "52:54:00:00:00:0c"
	const pw = `Qx7"Lm\Rv%41 Zp&Kw'Ét€Yb`
	c := f.do(t, "POST", "/api/v1/tokens", f.admin, map[string]any{"name": "viewer", "role": "read"})
	viewer, _ := c.body["token"].(string)
	r := f.do(t, "PUT", "/api/v1/machines/"+mac+"/bmc", f.admin, map[string]any{"address": "10.0.0.9", "provider": "redfish", "username": "root", "password": pw})
	if r.code != 200 || r.body["password_set"] != true {
		t.Fatalf("set BMC: %d %s", r.code, r.raw)
	}
	answers := []string{r.raw}
	for _, tok := range []string{f.admin, viewer} {
		for _, p := range []string{"/api/v1/machines/" + mac + "/bmc", "/api/v1/machines/" + mac, "/api/v1/machines", "/api/v1/machines/" + mac + "/events"} {
			r := f.do(t, "GET", p, tok, nil)
			if r.code != 200 {
				t.Errorf("GET %s: %d %s", p, r.code, r.raw)
			}
			answers = append(answers, r.raw)
		}
	}
	// A refused update says why without echoing the settings' secret.
	r = f.do(t, "PUT", "/api/v1/machines/"+mac+"/bmc", f.admin, map[string]any{"address": "10.6.6.6", "provider": "redfish", "username": "root"})
	answers = append(answers, r.raw)
	js, _ := json.Marshal(pw)
	q := fmt.Sprintf("%q", pw)
	for _, a := range answers {
		for _, form := range []string{pw, string(js[1 : len(js)-1]), q[1 : len(q)-1], url.QueryEscape(pw), url.PathEscape(pw), "Qx7", "Zp", "Kw"} {
			if strings.Contains(a, form) {
				t.Errorf("an answer holds the password (%q): %s", form, a)
			}
		}
	}
}
