package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/xml"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

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

	check := func(track string) (codebase, version string, pkgs []string, sizes []int64, sha string) {
		t.Helper()
		body := `<?xml version="1.0" encoding="UTF-8"?>
<request protocol="3.0" version="update_engine-0.4.10" updaterversion="update_engine-0.4.10" installsource="scheduler" ismachine="1">
    <os version="Chateau" platform="CoreOS" sp="3815.2.0_x86_64"></os>
    <app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" version="3815.2.0" track="` + track + `" bootid="{b0}" oem="qemu" oemversion="0.1" alephversion="3815.2.0" machineid="00112233445566778899aabbccddeeff" machinealias="" lang="en-US" board="amd64-usr" hardware_class="" delta_okay="false" >
        <ping active="1"></ping>
        <updatecheck></updatecheck>
        <event eventtype="3" eventresult="2" previousversion=""></event>
    </app>
</request>
`
		resp, err := http.Post(s.url+"/v1/update/", "text/xml", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var a struct {
			App struct {
				UpdateCheck struct {
					Status string `xml:"status,attr"`
					URL    struct {
						Codebase string `xml:"codebase,attr"`
					} `xml:"urls>url"`
					Manifest struct {
						Version  string `xml:"version,attr"`
						Packages []struct {
							Name string `xml:"name,attr"`
							Size int64  `xml:"size,attr"`
						} `xml:"packages>package"`
						Action struct {
							SHA256 string `xml:"sha256,attr"`
						} `xml:"actions>action"`
					} `xml:"manifest"`
				} `xml:"updatecheck"`
			} `xml:"app"`
		}
		if resp.StatusCode != 200 || xml.Unmarshal(raw, &a) != nil {
			t.Fatalf("update check (%s): %s\n%s", track, resp.Status, raw)
		}
		uc := a.App.UpdateCheck
		for _, p := range uc.Manifest.Packages {
			pkgs, sizes = append(pkgs, p.Name), append(sizes, p.Size)
		}
		return uc.URL.Codebase, uc.Manifest.Version, pkgs, sizes, uc.Manifest.Action.SHA256
	}
	codebase, version, pkgs, sizes, sha := check("stable")
	osData := payloads["flatcar_production_update.gz"]
	sum := sha256.Sum256(osData)
	if version != "4081.2.0" || codebase != s.url+"/assets/flatcar/stable/amd64-usr/4081.2.0/" || len(pkgs) != 2 ||
		pkgs[0] != "flatcar_production_update.gz" || pkgs[1] != "oem-qemu.gz" || sizes[0] != int64(len(osData)) || sha != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("offer: version %s codebase %s packages %v sizes %v sha256 %s", version, codebase, pkgs, sizes, sha)
	}
	code, got := fetch(t, codebase+pkgs[0])
	if gotSum := sha256.Sum256([]byte(got)); code != 200 || base64.StdEncoding.EncodeToString(gotSum[:]) != sha {
		t.Errorf("the payload from the codebase: %d, sha256 does not match the offer", code)
	}
	if _, version, _, _, _ := check("beta"); version != "" {
		t.Errorf("a machine of the paused beta group was offered %s", version)
	}
}
