package http

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"io"
	nethttp "net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/omaha"
	"matchbox.dev/matchbox/omaha/omahatest"
	"matchbox.dev/matchbox/storage"
	"matchbox.dev/matchbox/update"
)

// releases is one mirrored stable release with its payloads.
type releases struct{}

var (
	osPayload = []byte("CrAU os payload bytes")
	oemQemu   = []byte("CrAU oem-qemu payload bytes")
)

func pkg(name string, data []byte) omaha.Package {
	return omaha.Package{Name: name, Size: int64(len(data)), SHA1: sha1.Sum(data), SHA256: sha256.Sum256(data)}
}

func (releases) Versions(channel, board string) []string {
	if channel == "stable" && board == "amd64-usr" {
		return []string{"4081.2.0"}
	}
	return nil
}

func (releases) Channel(board, version string) (string, bool) {
	return "stable", board == "amd64-usr" && version == "4081.2.0"
}

func (releases) Payloads(channel, board, version string) (string, omaha.Package, []omaha.Package, error) {
	return "stable/amd64-usr/4081.2.0", pkg("flatcar_production_update.gz", osPayload), []omaha.Package{pkg("oem-qemu.gz", oemQemu)}, nil
}

// Update checks answered as update_engine needs them, through a rollout
// the update service controls: held while the default group is paused,
// offered once resumed (the OS payload first, codebase ending in '/',
// base64 SHA-256), followed through the events to completion.
func TestUpdateEndpoint(t *testing.T) {
	ctx := context.Background()
	svc := update.New(storage.NewMemory(), releases{})
	if err := svc.EnsureDefaultGroups(ctx); err != nil {
		t.Fatal(err)
	}
	srv := New(Config{Catalog: matchbox.NewCatalog(), Updates: svc, UpdatePayloads: releases{}, Registry: prometheus.NewRegistry()})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	post := func(path, body string) (int, omahatest.Answer, string) {
		t.Helper()
		resp, err := nethttp.Post(ts.URL+path, "text/xml", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		var a omahatest.Answer
		if resp.StatusCode == 200 {
			if a, err = omahatest.ReadAnswer(data); err != nil {
				t.Fatalf("answer is not XML: %v\n%s", err, data)
			}
		}
		return resp.StatusCode, a, string(data)
	}
	const id = "0123456789abcdef0123456789abcdef"
	machine := func(version string) omahatest.Machine {
		return omahatest.Machine{Version: version, Track: "stable", MachineID: id, Alias: "52:54:00:00:00:01"}
	}
	code, a, raw := post("/v1/update/", omahatest.Request(machine("3815.2.0"), omahatest.Check("")))
	if code != 200 || a.Status != "noupdate" {
		t.Fatalf("check in the paused default group: %d %s", code, raw)
	}
	if err := svc.SetPaused(ctx, "stable", false, ""); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/update/", "/v1/update"} {
		code, a, raw = post(path, omahatest.Request(machine("3815.2.0"), omahatest.Check("")))
		if code != 200 || a.Status != "ok" || a.Version != "4081.2.0" || len(a.Codebases) != 1 ||
			a.Codebases[0] != ts.URL+"/assets/stable/amd64-usr/4081.2.0/" ||
			len(a.Packages) != 2 || a.Packages[0].Name != "flatcar_production_update.gz" || a.Packages[0].Size != int64(len(osPayload)) {
			t.Fatalf("%s after resume: %d %s", path, code, raw)
		}
		sum := sha256.Sum256(osPayload)
		if a.SHA256 != base64.StdEncoding.EncodeToString(sum[:]) {
			t.Errorf("%s: postinstall sha256 %q", path, a.SHA256)
		}
	}
	// Download, install, reboot into the new version.
	for _, ev := range []string{omahatest.Event("13", "1"), omahatest.Event("14", "1"), omahatest.Event("3", "1")} {
		if code, _, raw := post("/v1/update/", omahatest.Request(machine("3815.2.0"), ev)); code != 200 {
			t.Fatalf("event %s: %d %s", ev, code, raw)
		}
	}
	if m, err := svc.Machine(ctx, id); err != nil || m.State != update.StateInstalled {
		t.Fatalf("after the events: %+v, %v; want installed", m, err)
	}
	if code, a, raw := post("/v1/update/", omahatest.Request(machine("4081.2.0"), omahatest.Check("3815.2.0"))); code != 200 || a.Status != "noupdate" {
		t.Fatalf("first check after the update: %d %s", code, raw)
	}
	if m, err := svc.Machine(ctx, id); err != nil || m.State != update.StateComplete || m.Version != "4081.2.0" {
		t.Errorf("after the reboot: %+v, %v; want complete on 4081.2.0", m, err)
	}
	// What happened shows in the metrics.
	for _, want := range []string{`matchbox_update_checks_total{answer="held",reason="paused"} 1`, `matchbox_update_checks_total{answer="update",reason=""} 2`,
		`matchbox_update_events_total{code="",event="downloading"} 1`, `matchbox_update_events_total{code="",event="completed"} 1`} {
		if body := metricsText(t, srv); !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// A machine that is not Omaha, or too much of it.
	for name, body := range map[string]string{"not XML": "hello", "too large": strings.Repeat("x", omaha.MaxRequestSize+1)} {
		if code, _, raw := post("/v1/update/", body); code != 400 {
			t.Errorf("%s: %d %s", name, code, raw)
		}
	}
	if resp, err := nethttp.Get(ts.URL + "/v1/update/"); err != nil || resp.StatusCode != 405 {
		t.Errorf("GET: %v %v", resp.StatusCode, err)
	}
}

// metricsText is what the server's registry exports, as /metrics shows it.
func metricsText(t *testing.T, srv *Server) string {
	t.Helper()
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// A failure (with the 1<<28 flag update_engine adds for every server but
// Flatcar's) and a rollback, as update_engine reports them: the machine's
// record names the code without flags, it is not offered the same version
// again at once (after a rollback: not until an operator releases it),
// the group pauses itself after two failures, and the metrics count the
// codes.
func TestUpdateFailureAndRollback(t *testing.T) {
	ctx := context.Background()
	svc := update.New(storage.NewMemory(), releases{})
	if err := svc.PutGroup(ctx, update.Group{Name: "stable", Channel: "stable", Version: update.Newest, Match: update.Match{Kind: update.MatchTrack},
		Policy: update.Policy{PauseAfterFailures: 2}}); err != nil {
		t.Fatal(err)
	}
	srv := New(Config{Catalog: matchbox.NewCatalog(), Updates: svc, UpdatePayloads: releases{}, Registry: prometheus.NewRegistry()})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	post := func(m omahatest.Machine, body string) omahatest.Answer {
		t.Helper()
		resp, err := nethttp.Post(ts.URL+"/v1/update/", "text/xml", strings.NewReader(omahatest.Request(m, body)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		a, err := omahatest.ReadAnswer(data)
		if resp.StatusCode != 200 || err != nil {
			t.Fatalf("%s: %v\n%s", resp.Status, err, data)
		}
		return a
	}
	machine := func(id string) omahatest.Machine {
		return omahatest.Machine{Version: "3815.2.0", Track: "stable", MachineID: id}
	}
	// A download that fails: code 9 with the self-hosted flag.
	a := machine("0000000000000000000000000000000a")
	if ans := post(a, omahatest.Check("")); ans.Version != "4081.2.0" {
		t.Fatalf("first machine's check: %+v", ans)
	}
	post(a, omahatest.Event("13", "1"))
	post(a, `<event eventtype="3" eventresult="0" errorcode="268435465"></event>`)
	if m, err := svc.Machine(ctx, a.MachineID); err != nil || m.State != update.StateFailed || m.ErrorCode != 9 || m.FailedTarget != "4081.2.0" {
		t.Fatalf("after a failed download: %+v, %v", m, err)
	}
	if ans := post(a, omahatest.Check("")); ans.Version != "" || ans.Status != "noupdate" {
		t.Errorf("check right after the failure: %+v", ans)
	}
	if m, _ := svc.Machine(ctx, a.MachineID); m.Hold != update.HoldRetry {
		t.Errorf("hold after a failure: %+v", m)
	}
	// Installed, rebooted, rolled back: the next check carries the
	// rollback event (no flags) and is not offered the version again.
	b := machine("0000000000000000000000000000000b")
	if ans := post(b, omahatest.Check("")); ans.Version != "4081.2.0" {
		t.Fatalf("second machine's check: %+v", ans)
	}
	for _, ev := range []string{omahatest.Event("13", "1"), omahatest.Event("14", "1"), omahatest.Event("3", "1")} {
		post(b, ev)
	}
	rollback := `<ping active="1"></ping>
        <updatecheck></updatecheck>
        <event eventtype="3" eventresult="0" errorcode="44"></event>`
	if ans := post(b, rollback); ans.Version != "" || ans.Status != "noupdate" {
		t.Errorf("check after a rollback: %+v", ans)
	}
	m, err := svc.Machine(ctx, b.MachineID)
	if err != nil || m.State != update.StateOnHold || m.Hold != update.HoldRolledBack || m.ErrorCode != 44 || m.Version != "3815.2.0" {
		t.Errorf("after the rollback: %+v, %v", m, err)
	}
	// Two failures: the group paused itself.
	if g, _ := svc.Group(ctx, "stable"); !g.Policy.Paused || !strings.Contains(g.Policy.Reason, "2 machines failed") {
		t.Errorf("group after two failures: %+v", g.Policy)
	}
	for _, want := range []string{`matchbox_update_events_total{code="9",event="failed"} 1`, `matchbox_update_events_total{code="44",event="failed"} 1`} {
		if body := metricsText(t, srv); !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Resumed, and the machine released by the operator: it may try
	// again.
	if err := svc.SetPaused(ctx, "stable", false, ""); err != nil {
		t.Fatal(err)
	}
	if ans := post(b, omahatest.Check("")); ans.Version != "" {
		t.Errorf("rolled-back machine before its release: %+v", ans)
	}
	if _, err := svc.SetHeld(ctx, b.MachineID, false); err != nil {
		t.Fatal(err)
	}
	if ans := post(b, omahatest.Check("")); ans.Version != "4081.2.0" {
		t.Errorf("rolled-back machine after its release: %+v", ans)
	}
}
