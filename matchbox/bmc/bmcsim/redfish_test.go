package bmcsim

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
)

const (
	testRedfishUser = "admin"
	testRedfishPass = "s3cret"
)

// newRedfishClient returns a bmclib client restricted to the redfish
// ("gofish") provider, pointed at sim.
func newRedfishClient(sim *RedfishSim, pass string) *bmclib.Client {
	c := bmclib.NewClient(sim.Host, testRedfishUser, pass,
		bmclib.WithRedfishPort(sim.Port),
		bmclib.WithPerProviderTimeout(5*time.Second))
	c.Registry.Drivers = c.Registry.For("gofish")
	return c
}

// openRedfish starts a simulator and an opened bmclib client; the client is
// closed at the end of the test.
func openRedfish(t *testing.T, initialPower bool) (*RedfishSim, *bmclib.Client, context.Context) {
	t.Helper()
	sim := StartRedfish(t, RedfishConfig{User: testRedfishUser, Password: testRedfishPass, InitialPower: initialPower})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	c := newRedfishClient(sim, testRedfishPass)
	if err := c.Open(ctx); err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return sim, c, ctx
}

func TestRedfishGetPowerState(t *testing.T) {
	for _, on := range []bool{true, false} {
		sim, c, ctx := openRedfish(t, on)
		got, err := c.GetPowerState(ctx)
		if err != nil {
			t.Fatalf("GetPowerState: %v", err)
		}
		if want := sim.Power(); got != want {
			t.Errorf("InitialPower=%v: GetPowerState = %q, want %q", on, got, want)
		}
	}
}

func TestRedfishSetPowerState(t *testing.T) {
	sim, c, ctx := openRedfish(t, false)

	steps := []struct {
		state     string
		wantPower string
		wantReset string // "" when bmclib sends no request (already in state)
		wantOK    bool
	}{
		{"off", "Off", "", true}, // already off: no request
		{"on", "On", "On", true},
		{"on", "On", "", true}, // already on: no request
		{"reset", "On", "PowerCycle", true},
		{"cycle", "On", "ForceRestart", true},
		{"off", "Off", "ForceOff", true},
		{"on", "On", "On", true},
		// bmclib's SystemPowerOff returns ok=false after a successful
		// GracefulShutdown, so SetPowerState reports an error.
		{"soft", "Off", "GracefulShutdown", false},
		{"soft", "Off", "", true}, // already off: ok=true, no request
		{"reset", "On", "PowerCycle", true},
	}
	var wantResets []string
	for i, st := range steps {
		ok, err := c.SetPowerState(ctx, st.state)
		if st.wantOK && (err != nil || !ok) {
			t.Fatalf("step %d SetPowerState(%q) = %v, %v", i, st.state, ok, err)
		}
		if !st.wantOK {
			if ok || err == nil {
				t.Errorf("step %d SetPowerState(%q) = %v, %v; expected bmclib to report failure", i, st.state, ok, err)
			}
			t.Logf("SetPowerState(%q) works but returns ok=%v err=%q", st.state, ok, err)
		}
		if got := sim.Power(); got != st.wantPower {
			t.Errorf("step %d after %q: Power() = %q, want %q", i, st.state, got, st.wantPower)
		}
		if st.wantReset != "" {
			wantResets = append(wantResets, st.wantReset)
		}
		if got := sim.Resets(); !slices.Equal(got, wantResets) {
			t.Errorf("step %d after %q: Resets() = %q, want %q", i, st.state, got, wantResets)
		}
		state, err := c.GetPowerState(ctx)
		if err != nil || state != st.wantPower {
			t.Errorf("step %d GetPowerState = %q, %v; want %q", i, state, err, st.wantPower)
		}
	}
}

func TestRedfishCycleOffRejectedByBmclib(t *testing.T) {
	sim, c, ctx := openRedfish(t, false)
	ok, err := c.SetPowerState(ctx, "cycle")
	if ok || err == nil {
		t.Fatalf("SetPowerState(cycle) on an Off system = %v, %v; want error", ok, err)
	}
	t.Logf("cycle while off: %v", err)
	if len(sim.Resets()) != 0 || sim.Power() != "Off" {
		t.Errorf("Resets() = %q, Power() = %q; want no reset, Off", sim.Resets(), sim.Power())
	}
}

func TestRedfishSetBootDevice(t *testing.T) {
	sim, c, ctx := openRedfish(t, true)

	if got := sim.Boot(); got != (RedfishBoot{Target: "None", Enabled: "Disabled"}) {
		t.Errorf("initial Boot() = %+v", got)
	}
	cases := []struct {
		device          string
		persistent, efi bool
		want            RedfishBoot
	}{
		{"pxe", false, true, RedfishBoot{Target: "Pxe", Enabled: "Once", Mode: "UEFI"}},
		{"pxe", false, false, RedfishBoot{Target: "Pxe", Enabled: "Once", Mode: "Legacy"}},
		{"disk", false, true, RedfishBoot{Target: "Hdd", Enabled: "Once", Mode: "UEFI"}},
		{"disk", true, false, RedfishBoot{Target: "Hdd", Enabled: "Continuous", Mode: "Legacy"}},
		{"none", false, true, RedfishBoot{Target: "None", Enabled: "Once", Mode: "UEFI"}},
	}
	for _, tc := range cases {
		ok, err := c.SetBootDevice(ctx, tc.device, tc.persistent, tc.efi)
		if err != nil || !ok {
			t.Fatalf("SetBootDevice(%q, %v, %v) = %v, %v", tc.device, tc.persistent, tc.efi, ok, err)
		}
		if got := sim.Boot(); got != tc.want {
			t.Errorf("SetBootDevice(%q, %v, %v): Boot() = %+v, want %+v", tc.device, tc.persistent, tc.efi, got, tc.want)
		}
	}

	// The boot override PATCH must have carried the ETag of the system.
	var patches []string
	for _, r := range sim.Requests() {
		if strings.HasPrefix(r, "PATCH ") {
			patches = append(patches, r)
		}
	}
	if len(patches) != len(cases) {
		t.Fatalf("PATCH requests = %q, want %d", patches, len(cases))
	}
	for _, p := range patches {
		if !strings.Contains(p, "If-Match=") {
			t.Errorf("PATCH without If-Match: %s", p)
		}
	}

	// Power actions after a one-time override leave it in place (not
	// consumed by the simulator).
	if _, err := c.SetPowerState(ctx, "reset"); err != nil {
		t.Fatalf("reset: %v", err)
	}
	if got := sim.Boot(); got != cases[len(cases)-1].want {
		t.Errorf("Boot() after reset = %+v", got)
	}
}

func TestRedfishWrongPassword(t *testing.T) {
	sim := StartRedfish(t, RedfishConfig{User: testRedfishUser, Password: testRedfishPass})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := newRedfishClient(sim, "wrong")
	err := c.Open(ctx)
	if err == nil {
		_ = c.Close(ctx)
		t.Fatal("Open with a wrong password succeeded")
	}
	t.Logf("Open with wrong password: %v", err)
	if !strings.Contains(err.Error(), "401") {
		t.Errorf("error does not mention 401: %v", err)
	}
	if n := sim.Sessions(); n != 0 {
		t.Errorf("Sessions() = %d, want 0", n)
	}
}

func TestRedfishSessionsClosed(t *testing.T) {
	sim := StartRedfish(t, RedfishConfig{User: testRedfishUser, Password: testRedfishPass, InitialPower: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 3 {
		c := newRedfishClient(sim, testRedfishPass)
		if err := c.Open(ctx); err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		if n := sim.Sessions(); n != 1 {
			t.Errorf("Sessions() after Open = %d, want 1", n)
		}
		if _, err := c.GetPowerState(ctx); err != nil {
			t.Fatalf("GetPowerState: %v", err)
		}
		if err := c.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if n := sim.Sessions(); n != 0 {
			t.Errorf("Sessions() after Close = %d, want 0", n)
		}
	}
}

func TestRedfishRefuse(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusInternalServerError} {
		sim, c, ctx := openRedfish(t, true)
		sim.SetRefuse(status)

		if state, err := c.GetPowerState(ctx); err == nil {
			t.Errorf("refuse %d: GetPowerState = %q, want error", status, state)
		} else {
			t.Logf("refuse %d: GetPowerState: %v", status, err)
		}
		if ok, err := c.SetPowerState(ctx, "off"); err == nil || ok {
			t.Errorf("refuse %d: SetPowerState(off) = %v, %v; want error", status, ok, err)
		} else {
			t.Logf("refuse %d: SetPowerState(off): %v", status, err)
		}
		if ok, err := c.SetBootDevice(ctx, "pxe", false, true); err == nil || ok {
			t.Errorf("refuse %d: SetBootDevice = %v, %v; want error", status, ok, err)
		} else {
			t.Logf("refuse %d: SetBootDevice: %v", status, err)
		}
		if sim.Power() != "On" || len(sim.Resets()) != 0 || sim.Boot().Target != "None" {
			t.Errorf("refused requests changed state: power %s resets %q boot %+v", sim.Power(), sim.Resets(), sim.Boot())
		}

		// A refusing BMC also refuses the logout; once it recovers the
		// session is still there and can be closed.
		sim.SetRefuse(0)
		if state, err := c.GetPowerState(ctx); err != nil || state != "On" {
			t.Errorf("after recovery GetPowerState = %q, %v", state, err)
		}
		if err := c.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		if n := sim.Sessions(); n != 0 {
			t.Errorf("Sessions() after Close = %d, want 0", n)
		}
	}
}

func TestRedfishRefuseOpen(t *testing.T) {
	sim := StartRedfish(t, RedfishConfig{User: testRedfishUser, Password: testRedfishPass})
	sim.SetRefuse(http.StatusServiceUnavailable)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := newRedfishClient(sim, testRedfishPass)
	err := c.Open(ctx)
	if err == nil {
		_ = c.Close(ctx)
		t.Fatal("Open against a refusing BMC succeeded")
	}
	t.Logf("Open while refusing 503: %v", err)
}

// A closed BMC fails each call at once: its connections are refused,
// rather than waited on until a timeout.
func TestRedfishBMCDown(t *testing.T) {
	sim, c, ctx := openRedfish(t, true)
	sim.Close()
	refused := func(what string, err error) {
		t.Helper()
		t.Logf("%s with BMC down: %v", what, err)
		if err == nil || !strings.Contains(err.Error(), "connection refused") || ctx.Err() != nil {
			t.Errorf("%s against a closed BMC: %v (context: %v), want a refused connection", what, err, ctx.Err())
		}
	}
	state, err := c.GetPowerState(ctx)
	if err == nil {
		t.Errorf("GetPowerState after Close = %q, want error", state)
	}
	refused("GetPowerState", err)
	ok, err := c.SetPowerState(ctx, "off")
	if ok {
		t.Error("SetPowerState after Close succeeded")
	}
	refused("SetPowerState", err)
	refused("Open", newRedfishClient(sim, testRedfishPass).Open(ctx))
}

// TestRedfishObservedRequests logs what bmclib sends for each operation.
func TestRedfishObservedRequests(t *testing.T) {
	sim := StartRedfish(t, RedfishConfig{User: testRedfishUser, Password: testRedfishPass})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := newRedfishClient(sim, testRedfishPass)
	seen := 0
	step := func(name string, f func() error) {
		err := f()
		reqs := sim.Requests()
		t.Logf("%s (err=%v):\n\t%s", name, err, strings.Join(reqs[seen:], "\n\t"))
		seen = len(reqs)
	}
	step("Open", func() error { return c.Open(ctx) })
	step("GetPowerState", func() error { _, err := c.GetPowerState(ctx); return err })
	for _, s := range []string{"on", "reset", "cycle", "soft", "on", "off"} {
		step("SetPowerState "+s, func() error { _, err := c.SetPowerState(ctx, s); return err })
	}
	step("SetBootDevice pxe once uefi", func() error { _, err := c.SetBootDevice(ctx, "pxe", false, true); return err })
	step("Close", func() error { return c.Close(ctx) })
}

// rawRedfish performs one request against sim with the simulator's
// self-signed certificate accepted.
func rawRedfish(t *testing.T, sim *RedfishSim, method, path, body string, hdr map[string]string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, sim.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer cl.CloseIdleConnections()
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: body is not JSON: %q", method, path, b)
		}
	}
	return resp, m
}

func redfishErrorCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func TestRedfishProtocol(t *testing.T) {
	sim := StartRedfish(t, RedfishConfig{User: testRedfishUser, Password: testRedfishPass, InitialPower: true})
	basic := func(h map[string]string) map[string]string {
		if h == nil {
			h = map[string]string{}
		}
		h["Authorization"] = "Basic YWRtaW46czNjcmV0" // admin:s3cret
		return h
	}

	// Service root is public and links Systems and Sessions.
	resp, root := rawRedfish(t, sim, "GET", "/redfish/v1/", "", nil)
	if resp.StatusCode != 200 || resp.Header.Get("OData-Version") != "4.0" {
		t.Fatalf("service root: %d %v", resp.StatusCode, resp.Header)
	}
	links, _ := root["Links"].(map[string]any)
	if sess, _ := links["Sessions"].(map[string]any); sess["@odata.id"] != redfishSessions {
		t.Errorf("service root Links.Sessions = %v", links)
	}

	// Anything else needs credentials.
	for _, p := range []string{"/redfish/v1/Systems", "/redfish/v1/Systems/1", "/redfish/v1/SessionService/Sessions"} {
		resp, m := rawRedfish(t, sim, "GET", p, "", nil)
		if resp.StatusCode != 401 || !strings.HasSuffix(redfishErrorCode(m), ".NoValidSession") {
			t.Errorf("GET %s unauthenticated: %d %v", p, resp.StatusCode, m)
		}
	}
	resp, _ = rawRedfish(t, sim, "GET", "/redfish/v1/Systems/1", "", map[string]string{"X-Auth-Token": "bogus"})
	if resp.StatusCode != 401 {
		t.Errorf("bogus token: %d", resp.StatusCode)
	}
	resp, _ = rawRedfish(t, sim, "GET", "/redfish/v1/Systems/1", "", map[string]string{"Authorization": "Basic YWRtaW46d3Jvbmc="})
	if resp.StatusCode != 401 {
		t.Errorf("wrong basic credentials: %d", resp.StatusCode)
	}

	// Login: wrong password, missing property, then success.
	resp, m := rawRedfish(t, sim, "POST", redfishSessions, `{"UserName":"admin","Password":"x"}`, nil)
	if resp.StatusCode != 401 || redfishErrorCode(m) == "" {
		t.Errorf("login wrong password: %d %v", resp.StatusCode, m)
	}
	resp, _ = rawRedfish(t, sim, "POST", redfishSessions, `{"UserName":"admin"}`, nil)
	if resp.StatusCode != 400 {
		t.Errorf("login without password: %d", resp.StatusCode)
	}
	resp, _ = rawRedfish(t, sim, "POST", redfishSessions, `{"UserName":"admin","Password":"s3cret"}`, nil)
	tok, loc := resp.Header.Get("X-Auth-Token"), resp.Header.Get("Location")
	if resp.StatusCode != 201 || tok == "" || !strings.HasPrefix(loc, redfishSessions+"/") {
		t.Fatalf("login: %d token %q location %q", resp.StatusCode, tok, loc)
	}
	auth := map[string]string{"X-Auth-Token": tok}

	// System: power, ETag, allowable values.
	resp, sys := rawRedfish(t, sim, "GET", "/redfish/v1/Systems/1", "", auth)
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != 200 || sys["PowerState"] != "On" || etag == "" {
		t.Fatalf("GET system: %d etag %q %v", resp.StatusCode, etag, sys)
	}
	actions, _ := sys["Actions"].(map[string]any)
	reset, _ := actions["#ComputerSystem.Reset"].(map[string]any)
	if reset["target"] != redfishResetAction || len(reset["ResetType@Redfish.AllowableValues"].([]any)) != len(redfishResetTypes) {
		t.Errorf("reset action = %v", reset)
	}

	// Basic auth works too.
	resp, _ = rawRedfish(t, sim, "GET", "/redfish/v1/Systems/1", "", basic(nil))
	if resp.StatusCode != 200 {
		t.Errorf("basic auth: %d", resp.StatusCode)
	}

	// Reset: invalid values are rejected, valid ones change power.
	for _, body := range []string{`{"ResetType":"Explode"}`, `{"ResetType":1}`, `{}`, `{"ResetType":"On","Extra":1}`, `nope`} {
		resp, m := rawRedfish(t, sim, "POST", redfishResetAction, body, auth)
		if resp.StatusCode != 400 || redfishErrorCode(m) == "" {
			t.Errorf("reset %s: %d %v", body, resp.StatusCode, m)
		}
	}
	resp, _ = rawRedfish(t, sim, "GET", redfishResetAction, "", auth)
	if resp.StatusCode != 405 {
		t.Errorf("GET on action: %d", resp.StatusCode)
	}
	for _, tc := range []struct{ rt, want string }{
		{"GracefulShutdown", "Off"}, {"Nmi", "Off"}, {"On", "On"}, {"ForceRestart", "On"},
		{"PowerCycle", "On"}, {"GracefulRestart", "On"}, {"Nmi", "On"}, {"ForceOff", "Off"},
		{"PowerCycle", "On"},
	} {
		resp, _ := rawRedfish(t, sim, "POST", redfishResetAction, `{"ResetType":"`+tc.rt+`"}`, auth)
		if resp.StatusCode != 204 || sim.Power() != tc.want {
			t.Errorf("reset %s: %d power %s, want %s", tc.rt, resp.StatusCode, sim.Power(), tc.want)
		}
	}
	if got := len(sim.Resets()); got != 9 {
		t.Errorf("Resets() = %q", sim.Resets())
	}

	// ETag changed with the power changes; the stale one must be refused.
	resp, _ = rawRedfish(t, sim, "PATCH", "/redfish/v1/Systems/1", `{"Boot":{"BootSourceOverrideTarget":"Pxe"}}`,
		map[string]string{"X-Auth-Token": tok, "If-Match": etag})
	if resp.StatusCode != 412 {
		t.Errorf("PATCH with stale ETag: %d", resp.StatusCode)
	}
	resp, _ = rawRedfish(t, sim, "GET", "/redfish/v1/Systems/1", "", auth)
	etag = resp.Header.Get("ETag")
	for _, body := range []string{
		`{"Boot":{"BootSourceOverrideTarget":"Floppy2"}}`,
		`{"Boot":{"BootSourceOverrideEnabled":"Sometimes"}}`,
		`{"Boot":{"BootSourceOverrideMode":"BIOS"}}`,
		`{"Boot":{"BootSourceOverrideTarget":5}}`,
		`{"Boot":{"Bogus":"x"}}`,
		`{"PowerState":"Off"}`,
		`{"Boot":"Pxe"}`,
	} {
		resp, m := rawRedfish(t, sim, "PATCH", "/redfish/v1/Systems/1", body, map[string]string{"X-Auth-Token": tok, "If-Match": etag})
		if resp.StatusCode != 400 || redfishErrorCode(m) == "" {
			t.Errorf("PATCH %s: %d %v", body, resp.StatusCode, m)
		}
	}
	if got := sim.Boot(); got.Target != "None" {
		t.Errorf("rejected PATCH changed Boot: %+v", got)
	}
	resp, _ = rawRedfish(t, sim, "PATCH", "/redfish/v1/Systems/1",
		`{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}`,
		map[string]string{"X-Auth-Token": tok, "If-Match": etag})
	if resp.StatusCode != 204 || sim.Boot() != (RedfishBoot{Target: "Pxe", Enabled: "Once"}) {
		t.Errorf("PATCH boot: %d %+v", resp.StatusCode, sim.Boot())
	}
	resp, _ = rawRedfish(t, sim, "PATCH", "/redfish/v1/Systems/1",
		`{"Boot":{"BootSourceOverrideMode":"UEFI"}}`, map[string]string{"X-Auth-Token": tok, "If-Match": "*"})
	if resp.StatusCode != 204 || sim.Boot().Mode != "UEFI" {
		t.Errorf("PATCH boot with If-Match *: %d %+v", resp.StatusCode, sim.Boot())
	}

	// Unknown resources.
	resp, m = rawRedfish(t, sim, "GET", "/redfish/v1/Managers", "", auth)
	if resp.StatusCode != 404 || !strings.HasSuffix(redfishErrorCode(m), ".ResourceMissingAtURI") {
		t.Errorf("GET Managers: %d %v", resp.StatusCode, m)
	}

	// Refusal answers with a Redfish error body after authentication.
	sim.SetRefuse(503)
	resp, m = rawRedfish(t, sim, "GET", "/redfish/v1/Systems/1", "", auth)
	if resp.StatusCode != 503 || redfishErrorCode(m) == "" {
		t.Errorf("refusing: %d %v", resp.StatusCode, m)
	}
	resp, _ = rawRedfish(t, sim, "GET", "/redfish/v1/Systems/1", "", nil)
	if resp.StatusCode != 401 {
		t.Errorf("refusing, unauthenticated: %d", resp.StatusCode)
	}
	sim.SetRefuse(0)

	// Logout.
	if n := sim.Sessions(); n != 1 {
		t.Errorf("Sessions() = %d, want 1", n)
	}
	resp, _ = rawRedfish(t, sim, "DELETE", loc, "", auth)
	if resp.StatusCode != 204 || sim.Sessions() != 0 {
		t.Errorf("logout: %d, sessions %d", resp.StatusCode, sim.Sessions())
	}
	resp, _ = rawRedfish(t, sim, "GET", "/redfish/v1/Systems/1", "", auth)
	if resp.StatusCode != 401 {
		t.Errorf("token after logout: %d", resp.StatusCode)
	}
}
