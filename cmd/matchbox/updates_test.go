package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"matchbox.dev/matchbox/omaha/omahatest"
	"matchbox.dev/matchbox/storage"
	"matchbox.dev/matchbox/update"
)

// The built binary answers an update check as update_engine sends it with
// the release the mirror pulled (the OS payload first, its exact size and
// SHA-256), and the payload downloads from the codebase it names; a
// machine of a paused group gets no update.
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
	s := startServer(t, nil, "-data-path", repoRoot(t), "-assets-path", assets, "-db-path", dbPath, "-api-address=")

	check := func(track string) omahatest.Answer {
		t.Helper()
		m := omahatest.Machine{Version: "3815.2.0", Track: track, MachineID: "00112233445566778899aabbccddeeff"}
		resp, err := http.Post(s.url+"/v1/update/", "text/xml", strings.NewReader(omahatest.Request(m, omahatest.Check(""))))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		a, err := omahatest.ReadAnswer(raw)
		if resp.StatusCode != 200 || err != nil {
			t.Fatalf("update check (%s): %s %v\n%s", track, resp.Status, err, raw)
		}
		return a
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
	if a := check("beta"); a.Version != "" || a.Status != "noupdate" {
		t.Errorf("a machine of the paused beta group: %+v", a)
	}
}
