package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// releaseServer is a Flatcar release server on loopback with the real
// layout, small files and signatures by a key made for the test.
type releaseServer struct {
	srv     *httptest.Server
	keyFile string
	signer  *openpgp.Entity

	mu      sync.Mutex
	files   map[string][]byte // URL path → body
	current map[string]string // channel → version
}

var releaseFiles = []string{"version.txt", "flatcar_production_pxe.vmlinuz", "flatcar_production_pxe_image.cpio.gz", "flatcar_production_image.bin.bz2"}

func newReleaseServer(t *testing.T) *releaseServer {
	t.Helper()
	e, err := openpgp.NewEntity("Test Release Builder", "", "release@example.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	var pub bytes.Buffer
	w, err := armor.Encode(&pub, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	rs := &releaseServer{signer: e, keyFile: filepath.Join(t.TempDir(), "key.asc"), files: map[string][]byte{}, current: map[string]string{}}
	writeFile(t, rs.keyFile, pub.String())
	// The channel is the first path element: <base>/<channel>/<board>/…
	// stands for https://<channel>.release.flatcar-linux.net/<board>/….
	rs.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs.mu.Lock()
		body, ok := rs.files[r.URL.Path]
		rs.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	t.Cleanup(rs.srv.Close)
	return rs
}

// publish adds a signed release and makes it the channel's current one.
func (rs *releaseServer) publish(t *testing.T, channel, version string) {
	t.Helper()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, dir := range []string{version, "current"} {
		for _, name := range releaseFiles {
			body := []byte(fmt.Sprintf("%s of flatcar %s %s\n", name, channel, version))
			if name == "version.txt" {
				body = []byte(fmt.Sprintf("FLATCAR_BUILD=%s\nFLATCAR_VERSION=%s\nFLATCAR_VERSION_ID=%s\n", version, version, version))
			}
			var sig bytes.Buffer
			if err := openpgp.DetachSign(&sig, rs.signer, bytes.NewReader(body), nil); err != nil {
				t.Fatal(err)
			}
			base := "/" + channel + "/amd64-usr/" + dir + "/" + name
			rs.files[base], rs.files[base+".sig"] = body, sig.Bytes()
		}
	}
	rs.current[channel] = version
}

// baseURL is what -base-url takes for a channel.
func (rs *releaseServer) baseURL(channel string) string { return rs.srv.URL + "/" + channel }

// A release pulled with the CLI is served to machines whose profile names
// its channel; a newer one moves them; the API lists, pulls and removes.
func TestReleaseMirror(t *testing.T) {
	rs := newReleaseServer(t)
	rs.publish(t, "stable", "4081.2.0")
	assets := t.TempDir()
	pull := func(version string) (int, string) {
		return runCLI(t, nil, "release", "pull", "--channel", "stable", "--version", version, "--base-url", rs.baseURL("stable"),
			"--key", rs.keyFile, "-assets-path", assets)
	}
	code, out := pull("current")
	if code != 0 || !strings.Contains(out, "flatcar stable/amd64-usr 4081.2.0 verified") {
		t.Fatalf("release pull: %d %s", code, out)
	}
	// Progress lines when not on a terminal.
	if !strings.Contains(out, "flatcar_production_image.bin.bz2: 100%") {
		t.Errorf("no progress lines: %s", out)
	}
	dir := filepath.Join(assets, "flatcar", "stable", "amd64-usr")
	for _, name := range releaseFiles {
		for _, f := range []string{name, name + ".sig"} {
			if _, err := os.Stat(filepath.Join(dir, "4081.2.0", f)); err != nil {
				t.Errorf("%s not in the mirror: %v", f, err)
			}
		}
	}
	if target, err := os.Readlink(filepath.Join(dir, "current")); err != nil || target != "4081.2.0" {
		t.Errorf("current -> %q (%v)", target, err)
	}
	if code, out := runCLI(t, nil, "release", "list", "-assets-path", assets); code != 0 || !strings.Contains(out, "4081.2.0") || !strings.Contains(out, "*") {
		t.Errorf("release list: %d %s", code, out)
	}

	// The shipped profiles name stable/current: the mirror serves it, and
	// flatcar-install reads from it.
	s := startServer(t, nil, "-data-path", repoRoot(t), "-assets-path", assets, "-db-path", filepath.Join(t.TempDir(), "m.db"),
		"-api-token-file", writeToken(t), "-release-base-url", rs.srv.URL+"/stable", "-release-key", rs.keyFile)
	ipxe := func() string {
		t.Helper()
		code, body := fetch(t, s.url+"/ipxe?mac=52:54:00:a1:9c:ae")
		if code != 200 {
			t.Fatalf("/ipxe: %d %s", code, body)
		}
		return body
	}
	if body := ipxe(); !strings.Contains(body, "kernel /assets/flatcar/stable/amd64-usr/4081.2.0/flatcar_production_pxe.vmlinuz ") ||
		!strings.Contains(body, "initrd --name main /assets/flatcar/stable/amd64-usr/4081.2.0/flatcar_production_pxe_image.cpio.gz") {
		t.Errorf("/ipxe with stable 4081.2.0 mirrored:\n%s", body)
	}
	if code, body := fetch(t, s.url+"/assets/flatcar/stable/amd64-usr/4081.2.0/flatcar_production_pxe.vmlinuz"); code != 200 || !strings.Contains(body, "4081.2.0") {
		t.Errorf("kernel from the mirror: %d %q", code, body)
	}
	if code, body := fetch(t, s.url+"/assets/flatcar/stable/amd64-usr/current/version.txt"); code != 200 || !strings.Contains(body, "FLATCAR_VERSION=4081.2.0") {
		t.Errorf("current/version.txt (what flatcar-install -V current reads): %d %q", code, body)
	}
	_, ign := fetch(t, s.url+"/ignition?mac=52:54:00:a1:9c:ae")
	installer := ignitionFile(t, ign, "/opt/installer")
	if want := `-V "4081.2.0"`; !strings.Contains(installer, want) || !strings.Contains(installer, `-b "`+s.url+`/assets/flatcar/stable/amd64-usr"`) {
		t.Errorf("the installer does not install from the mirror:\n%s", installer)
	}

	// A newer release, pulled through the API: machines get it.
	rs.publish(t, "stable", "4152.0.0")
	token := "mbx_test_token_0123456789"
	code, body := apiCall(t, "POST", s.apiURL+"/api/v1/releases", token, map[string]string{"channel": "stable"})
	if code != 202 || !strings.Contains(body, `"state": "running"`) {
		t.Fatalf("POST /releases: %d %s", code, body)
	}
	waitUntil(t, "the API's pull to finish", func() bool {
		_, body := apiCall(t, "GET", s.apiURL+"/api/v1/releases", token, nil)
		return strings.Contains(body, `"state": "done"`) || strings.Contains(body, `"state": "failed"`)
	})
	code, body = apiCall(t, "GET", s.apiURL+"/api/v1/releases", token, nil)
	var list struct {
		Items []struct {
			Version string `json:"version"`
			Current bool   `json:"current"`
		} `json:"items"`
		Pulls []struct {
			State, Resolved, Error string
		} `json:"pulls"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil || code != 200 {
		t.Fatalf("GET /releases: %d %s", code, body)
	}
	if len(list.Pulls) != 1 || list.Pulls[0].State != "done" || list.Pulls[0].Resolved != "4152.0.0" {
		t.Fatalf("pulls: %+v", list.Pulls)
	}
	if len(list.Items) != 2 || list.Items[0].Version != "4152.0.0" || !list.Items[0].Current || list.Items[1].Current {
		t.Errorf("releases: %+v", list.Items)
	}
	if body := ipxe(); !strings.Contains(body, "/assets/flatcar/stable/amd64-usr/4152.0.0/flatcar_production_pxe.vmlinuz") {
		t.Errorf("/ipxe after pulling 4152.0.0:\n%s", body)
	}
	// An older pinned version does not move current.
	if code, out := pull("4081.2.0"); code != 0 {
		t.Fatalf("pull a pinned older version: %d %s", code, out)
	}
	if body := ipxe(); !strings.Contains(body, "/4152.0.0/") {
		t.Errorf("/ipxe after pulling an older version:\n%s", body)
	}
	// Removing the current version moves machines back.
	if code, body := apiCall(t, "DELETE", s.apiURL+"/api/v1/releases/stable/amd64-usr/4152.0.0", token, nil); code != 204 {
		t.Fatalf("DELETE release: %d %s", code, body)
	}
	if body := ipxe(); !strings.Contains(body, "/4081.2.0/") {
		t.Errorf("/ipxe after removing 4152.0.0:\n%s", body)
	}
	if code, out := runCLI(t, nil, "release", "rm", "--channel", "stable", "--version", "4081.2.0", "-assets-path", assets); code != 0 {
		t.Fatalf("release rm: %d %s", code, out)
	}
	if body := ipxe(); !strings.Contains(body, "kernel "+rs.srv.URL+"/stable/amd64-usr/current/flatcar_production_pxe.vmlinuz") {
		t.Errorf("/ipxe with nothing mirrored (the release server given): \n%s", body)
	}
	if code, out := runCLI(t, nil, "release", "rm", "--channel", "stable", "--version", "4081.2.0", "-assets-path", assets); code != 1 || !strings.Contains(out, "not found") {
		t.Errorf("rm of a version not there: %d %s", code, out)
	}
}

// A release whose signature does not verify is refused with the file named,
// and nothing of it is served.
func TestReleasePullRefusesBadSignatures(t *testing.T) {
	rs := newReleaseServer(t)
	rs.publish(t, "beta", "4186.1.0")
	rs.mu.Lock()
	rs.files["/beta/amd64-usr/4186.1.0/flatcar_production_image.bin.bz2"] = []byte("tampered image\n")
	rs.mu.Unlock()
	assets := t.TempDir()
	code, out := runCLI(t, nil, "release", "pull", "--channel", "beta", "--version", "4186.1.0", "--base-url", rs.baseURL("beta"), "--key", rs.keyFile, "-assets-path", assets)
	if code != 1 || !strings.Contains(out, "flatcar_production_image.bin.bz2") || !strings.Contains(out, "signature") {
		t.Fatalf("pull of a tampered release: %d %s", code, out)
	}
	// The default key (Flatcar's) does not verify the test release either.
	code, out = runCLI(t, nil, "release", "pull", "--channel", "beta", "--version", "current", "--base-url", rs.baseURL("beta"), "-assets-path", assets)
	if code != 1 || !strings.Contains(out, "signature") {
		t.Fatalf("pull verified with the wrong key: %d %s", code, out)
	}
	err := filepath.WalkDir(assets, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.Contains(path, "/.") {
			t.Errorf("unverified file outside staging: %s", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if code, out := runCLI(t, nil, "release", "list", "-assets-path", assets, "-o", "json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("release list after refused pulls: %d %s", code, out)
	}
}

// -release-sync pulls each channel's newest release in the background and
// keeps -release-keep versions.
func TestReleaseSync(t *testing.T) {
	rs := newReleaseServer(t)
	rs.publish(t, "stable", "4081.2.0")
	rs.publish(t, "beta", "4186.1.0")
	assets := t.TempDir()
	s := startServer(t, nil, "-data-path", repoRoot(t), "-assets-path", assets, "-db-path", filepath.Join(t.TempDir(), "m.db"),
		"-release-sync", "stable,beta", "-every", "1m", "-release-base-url", rs.srv.URL+"/{channel}", "-release-key", rs.keyFile)
	for _, want := range []string{"beta/amd64-usr/current", "stable/amd64-usr/current"} {
		waitUntil(t, want, func() bool {
			_, err := os.Readlink(filepath.Join(assets, "flatcar", want))
			return err == nil
		})
	}
	if code, body := fetch(t, s.url+"/ipxe?mac=52:54:00:a1:9c:ae"); code != 200 || !strings.Contains(body, "/assets/flatcar/stable/amd64-usr/4081.2.0/") {
		t.Errorf("/ipxe after the sync: %d %s", code, body)
	}
	if !strings.Contains(s.log.String(), "release verified") {
		t.Errorf("the sync is not logged:\n%s", s.log.String())
	}
}
