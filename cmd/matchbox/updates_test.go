package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"matchbox.dev/matchbox/omaha/omahatest"
	"matchbox.dev/matchbox/storage"
	"matchbox.dev/matchbox/update"
)

// The built binary answers an update check as update_engine sends it with
// the release the mirror pulled (the OS payload first, its exact size and
// SHA-256), and the payload downloads from the codebase it names; a
// machine of a paused group gets no update. The machine, which booted
// from matchbox, is linked to the inventory by its alias: its update's
// steps are on its timeline, `machine get` shows its new version, and
// `update status` shows it complete.
func TestUpdateCheckThroughTheBinary(t *testing.T) {
	rs := newReleaseServer(t)
	rs.publish(t, "stable", "4081.2.0")
	payloads := rs.publishPayloads(t, payloadKey(), "4081.2.0", "flatcar_production_update.gz", "oem-qemu.gz")
	assets := t.TempDir()
	if code, out := runCLI(t, nil, "release", "pull", "--channel", "stable", "--base-url", rs.baseURL("stable"), "--key", rs.keyFile,
		"--update-base-url", rs.updateURL(), "--payload-key", payloadKeyFile(t), "--extensions", "oem-qemu", "-assets-path", assets); code != 0 {
		t.Fatalf("release pull: %d %s", code, out)
	}
	// The default stable group, resumed in the database before the
	// server starts (the CLI for it comes with the update commands).
	dbPath := filepath.Join(t.TempDir(), "m.db")
	db, err := storage.OpenBolt(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	svc := update.New(db, nil)
	if err := svc.EnsureDefaultGroups(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := svc.SetPaused(context.Background(), "stable", false, ""); err != nil {
		t.Fatal(err)
	}
	db.Close()
	token := writeToken(t)
	s := startServer(t, nil, "-data-path", repoRoot(t), "-assets-path", assets, "-db-path", dbPath, "-api-token-file", token)
	env := []string{"MATCHBOX_ENDPOINT=" + s.apiURL, "MATCHBOX_TOKEN_FILE=" + token}

	// The machines boot from matchbox (no DHCP server of ours runs, so
	// their requests identify them) and enter the inventory.
	const mac = "52:54:00:12:34:56"
	others := []string{"52:54:00:12:34:57", "52:54:00:12:34:58"}
	for _, m := range append([]string{mac}, others...) {
		if code, body := fetch(t, s.url+"/ipxe?mac="+m); code != 200 {
			t.Fatalf("boot: %d %s", code, body)
		}
		waitCLI(t, env, func(out string) bool { return strings.Contains(out, m) }, "machine", "get", m, "-o", "json")
	}

	post := func(m omahatest.Machine, body string) omahatest.Answer {
		t.Helper()
		resp, err := http.Post(s.url+"/v1/update/", "text/xml", strings.NewReader(omahatest.Request(m, body)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		a, err := omahatest.ReadAnswer(raw)
		if resp.StatusCode != 200 || err != nil {
			t.Fatalf("update request (%s): %s %v\n%s", m.Track, resp.Status, err, raw)
		}
		return a
	}
	machine := omahatest.Machine{Version: "3815.2.0", Track: "stable", MachineID: "00112233445566778899aabbccddeeff", Alias: mac}
	check := func(track string) omahatest.Answer {
		t.Helper()
		m := machine
		m.Track = track
		return post(m, omahatest.Check(""))
	}
	a := check("stable")
	osData := payloads["flatcar_production_update.gz"]
	sum := sha256.Sum256(osData)
	if a.Version != "4081.2.0" || len(a.Codebases) != 1 || a.Codebases[0] != s.url+"/assets/flatcar/stable/amd64-usr/4081.2.0/" || len(a.Packages) != 2 ||
		a.Packages[0].Name != "flatcar_production_update.gz" || a.Packages[1].Name != "oem-qemu.gz" || a.Packages[0].Size != int64(len(osData)) ||
		a.SHA256 != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("offer: %+v", a)
	}
	code, got := fetch(t, a.Codebases[0]+a.Packages[0].Name)
	if gotSum := sha256.Sum256([]byte(got)); code != 200 || base64.StdEncoding.EncodeToString(gotSum[:]) != a.SHA256 {
		t.Errorf("the payload from the codebase: %d, sha256 does not match the offer", code)
	}
	if a := post(omahatest.Machine{Version: "3815.2.0", Track: "beta", MachineID: "ffeeddccbbaa99887766554433221100"}, omahatest.Check("")); a.Version != "" || a.Status != "noupdate" {
		t.Errorf("a machine of the paused beta group: %+v", a)
	}

	// The updates go through, and the machines reboot into them: this
	// one and two others.
	updateOne := func(machine omahatest.Machine) {
		t.Helper()
		for _, typ := range []string{"13", "14", "3"} {
			post(machine, omahatest.Event(typ, "1"))
		}
		machine.Version = "4081.2.0"
		if a := post(machine, omahatest.Check("3815.2.0")); a.Version != "" || a.Status != "noupdate" {
			t.Errorf("the updated machine's check: %+v", a)
		}
	}
	updateOne(machine)
	for i, m := range others {
		other := omahatest.Machine{Version: "3815.2.0", Track: "stable", MachineID: fmt.Sprintf("%032x", i+1), Alias: m}
		if a := post(other, omahatest.Check("")); a.Version != "4081.2.0" {
			t.Fatalf("machine %s's check: %+v", m, a)
		}
		updateOne(other)
	}
	code, out := runCLI(t, env, "update", "status", "stable", "-o", "json")
	var st []update.GroupStatus
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st) != 1 || st[0].Total != 3 || len(st[0].Machines) != 1 ||
		st[0].Machines[0].Version != "4081.2.0" || st[0].Machines[0].States[update.StateComplete] != 3 || st[0].Rollout.Completed != 3 {
		t.Errorf("update status: %d %s", code, out)
	}
	if code, out := runCLI(t, env, "update", "status"); code != 0 || !strings.Contains(out, "rollout of 4081.2.0: 3 granted, 3 completed, 0 failed") {
		t.Errorf("update status table: %d %s", code, out)
	}
	code, out = runCLI(t, env, "machine", "get", mac, "-o", "table")
	if code != 0 || !regexp.MustCompile(`OS version:\s+4081\.2\.0`).MatchString(out) || !regexp.MustCompile(`Update:\s+complete, target 4081\.2\.0, update group stable`).MatchString(out) {
		t.Errorf("machine get: %d %s", code, out)
	}
	_, metrics := fetch(t, s.url+"/metrics")
	for _, want := range []string{`matchbox_update_machines{group="stable",state="complete",version="4081.2.0"} 3`, `matchbox_update_grants_total{group="stable"} 3`,
		`matchbox_update_group_paused{group="beta"} 1`, `matchbox_update_group_paused{group="stable"} 0`,
		`matchbox_update_rollout_machines{count="completed",group="stable",target="4081.2.0"} 3`, `matchbox_update_events_total{code="",event="completed"} 3`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// The timeline: booted, granted, the steps, complete (events are
	// written in the background: asked until they are there, bounded).
	events := waitCLI(t, env, func(out string) bool { return strings.Contains(out, "update.complete") }, "machine", "events", mac)
	last := -1
	for _, kind := range []string{"http.served", "update.granted", "update.downloading", "update.downloaded", "update.installed", "update.complete"} {
		i := strings.Index(events, kind)
		if i < last {
			t.Errorf("event %s missing or out of order:\n%s", kind, events)
		}
		last = i
	}
}

// waitCLI runs the CLI until done accepts its output (at most 100 times,
// 100 ms apart) and returns that output: for what the server writes in
// the background.
func waitCLI(t *testing.T, env []string, done func(string) bool, args ...string) string {
	t.Helper()
	var out string
	for range 100 {
		var code int
		if code, out = runCLI(t, env, args...); code == 0 && done(out) {
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("matchbox %s: never as expected:\n%s", strings.Join(args, " "), out)
	return ""
}
