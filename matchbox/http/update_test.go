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
