package main

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"matchbox.dev/matchbox/release/payloadtest"
)

var payloadKey = sync.OnceValue(payloadtest.NewKey)

// publishPayloads puts a release's update payloads, signed by key, on the
// release server under /update/amd64-usr/<version>/ (Flatcar's update
// release server's layout) and returns them by file name.
func (rs *releaseServer) publishPayloads(t *testing.T, key *rsa.PrivateKey, version string, names ...string) map[string][]byte {
	t.Helper()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := map[string][]byte{}
	for _, name := range names {
		blob := bytes.Repeat([]byte(version+" "+name+"\n"), 3000)
		data, err := payloadtest.Payload{Blobs: [][]byte{blob[:len(blob)/3], blob[len(blob)/3:]}, Signers: []payloadtest.Signer{{Key: key}}}.Build()
		if err != nil {
			t.Fatal(err)
		}
		rs.files["/update/amd64-usr/"+version+"/"+name] = data
		out[name] = data
	}
	return out
}

func (rs *releaseServer) updateURL() string { return rs.srv.URL + "/update" }

// payloadKeyFile writes the test payload key's public half as a PEM file.
func payloadKeyFile(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "payload-key.pub.pem")
	writeFile(t, path, string(payloadtest.PublicPEM(payloadKey())))
	return path
}

// release pull mirrors the update payloads with the release, verified with
// the payload key, and the server serves them with Range.
func TestReleasePullPayloads(t *testing.T) {
	rs := newReleaseServer(t)
	rs.publish(t, "stable", "4081.2.0")
	payloads := rs.publishPayloads(t, payloadKey(), "4081.2.0", "flatcar_production_update.gz", "oem-qemu.gz", "flatcar-docker.gz")
	keyFile := payloadKeyFile(t)
	assets := t.TempDir()
	code, out := runCLI(t, nil, "release", "pull", "--channel", "stable", "--base-url", rs.baseURL("stable"), "--key", rs.keyFile,
		"--update-base-url", rs.updateURL(), "--payload-key", keyFile, "--extensions", "oem-qemu,flatcar-docker", "-assets-path", assets)
	if code != 0 {
		t.Fatalf("release pull: %d %s", code, out)
	}
	for name := range payloads {
		if !strings.Contains(out, "update payload "+name+" verified") {
			t.Errorf("pull does not report %s:\n%s", name, out)
		}
	}
	dir := filepath.Join(assets, "flatcar", "stable", "amd64-usr", "4081.2.0")
	raw, err := os.ReadFile(filepath.Join(dir, "payloads.json"))
	if err != nil {
		t.Fatal(err)
	}
	// What the update service reads: Omaha's encodings.
	var list struct {
		Payloads []struct {
			Name         string
			Size         int64
			SHA1, SHA256 []byte
		}
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatalf("payloads.json: %v\n%s", err, raw)
	}
	if len(list.Payloads) != 3 || list.Payloads[0].Name != "flatcar_production_update.gz" {
		t.Fatalf("payloads.json lists %+v; want the OS payload first, then the extensions", list.Payloads)
	}
	for _, p := range list.Payloads {
		data := payloads[p.Name]
		s1, s256 := sha1.Sum(data), sha256.Sum256(data)
		if p.Size != int64(len(data)) || !bytes.Equal(p.SHA1, s1[:]) || !bytes.Equal(p.SHA256, s256[:]) {
			t.Errorf("payloads.json entry %s: size %d sha1 %x sha256 %x; want %d %x %x", p.Name, p.Size, p.SHA1, p.SHA256, len(data), s1, s256)
		}
	}
	if code, out := runCLI(t, nil, "release", "list", "-assets-path", assets); code != 0 || !strings.Contains(out, "PAYLOADS") {
		t.Errorf("release list: %d %s", code, out)
	}

	// Served from the assets tree as update_engine downloads them: whole,
	// and resumed with Range.
	s := startServer(t, nil, "-data-path", repoRoot(t), "-assets-path", assets, "-db-path", filepath.Join(t.TempDir(), "m.db"), "-api-address=")
	data := payloads["flatcar_production_update.gz"]
	for _, path := range []string{"4081.2.0", "current"} {
		u := s.url + "/assets/flatcar/stable/amd64-usr/" + path + "/flatcar_production_update.gz"
		resp, body := get(t, u, "")
		if resp.StatusCode != 200 || resp.ContentLength != int64(len(data)) || !bytes.Equal(body, data) || resp.Header.Get("Accept-Ranges") != "bytes" {
			t.Errorf("GET %s: %s, Content-Length %d, Accept-Ranges %q, body equal %v", u, resp.Status, resp.ContentLength, resp.Header.Get("Accept-Ranges"), bytes.Equal(body, data))
		}
	}
	u := s.url + "/assets/flatcar/stable/amd64-usr/4081.2.0/flatcar_production_update.gz"
	for _, tc := range []struct {
		rng        string
		start, end int // of the bytes wanted, end exclusive
	}{
		{"bytes=100-199", 100, 200},
		{fmt.Sprintf("bytes=%d-", len(data)/2), len(data) / 2, len(data)},
		{"bytes=-20", len(data) - 20, len(data)},
	} {
		resp, body := get(t, u, tc.rng)
		want := fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end-1, len(data))
		if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != want ||
			resp.ContentLength != int64(tc.end-tc.start) || !bytes.Equal(body, data[tc.start:tc.end]) {
			t.Errorf("GET %s, Range %s: %s, Content-Range %q (want %q), Content-Length %d (want %d)",
				u, tc.rng, resp.Status, resp.Header.Get("Content-Range"), want, resp.ContentLength, tc.end-tc.start)
		}
	}
}

// get fetches u, with a Range header when rng is not empty.
func get(t *testing.T, u, rng string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	return do(t, req)
}

// A payload that does not verify, or is not on the server, fails the pull
// with a clear error, and nothing of the release is served.
func TestReleasePullRefusesPayloads(t *testing.T) {
	rs := newReleaseServer(t)
	rs.publish(t, "stable", "4081.2.0")
	payloads := rs.publishPayloads(t, payloadKey(), "4081.2.0", "flatcar_production_update.gz", "oem-qemu.gz")
	tampered := bytes.Clone(payloads["oem-qemu.gz"])
	tampered[len(tampered)/2] ^= 1
	rs.mu.Lock()
	rs.files["/update/amd64-usr/4081.2.0/oem-qemu.gz"] = tampered
	rs.mu.Unlock()
	keyFile := payloadKeyFile(t)
	pull := func(assets string, args ...string) (int, string) {
		return runCLI(t, nil, append([]string{"release", "pull", "--channel", "stable", "--base-url", rs.baseURL("stable"), "--key", rs.keyFile,
			"-assets-path", assets}, args...)...)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"tampered extension", []string{"--update-base-url", rs.updateURL(), "--payload-key", keyFile, "--extensions", "oem-qemu"},
			[]string{"extension payload oem-qemu.gz", "bad update payload", "/update/amd64-usr/4081.2.0/oem-qemu.gz"}},
		{"extension not on the server", []string{"--update-base-url", rs.updateURL(), "--payload-key", keyFile, "--extensions", "flatcar-nothere"},
			[]string{"extension payload flatcar-nothere.gz", "404 Not Found"}},
		{"the shipped payload key", []string{"--update-base-url", rs.updateURL()},
			[]string{"update payload flatcar_production_update.gz", "does not verify with the payload key", "error 18"}},
		{"extensions without an update server", []string{"--extensions", "oem-qemu"},
			[]string{"-extensions: no update release server", "-update-base-url"}},
		{"not an extension", []string{"--update-base-url", rs.updateURL(), "--extensions", "docker"},
			[]string{`extension "docker"`}},
		{"payload key not a key", []string{"--update-base-url", rs.updateURL(), "--payload-key", rs.keyFile},
			[]string{"-payload-key " + rs.keyFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assets := t.TempDir()
			code, out := pull(assets, tc.args...)
			if code != 1 {
				t.Fatalf("pull: exit %d; want 1\n%s", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("pull output does not say %q:\n%s", w, out)
				}
			}
			// Nothing served, and nothing of the refused payload even
			// in staging.
			filepath.WalkDir(assets, func(path string, d fs.DirEntry, err error) error {
				switch {
				case err != nil:
					return err
				case strings.Contains(d.Name(), "oem-qemu"):
					t.Errorf("the refused payload left %s", path)
				case !d.IsDir() && !strings.Contains(path, "/."):
					t.Errorf("served after a refused pull: %s", path)
				}
				return nil
			})
		})
	}
}

// serve's -release-update-base-url, -release-payload-key and
// -release-extensions apply to its background pulls.
func TestReleaseSyncPayloads(t *testing.T) {
	rs := newReleaseServer(t)
	rs.publish(t, "stable", "4081.2.0")
	rs.publishPayloads(t, payloadKey(), "4081.2.0", "flatcar_production_update.gz", "oem-qemu.gz")
	assets := t.TempDir()
	s := startServer(t, nil, "-data-path", repoRoot(t), "-assets-path", assets, "-db-path", filepath.Join(t.TempDir(), "m.db"), "-api-address=",
		"-release-sync", "stable", "-every", "1m", "-release-base-url", rs.srv.URL+"/{channel}", "-release-key", rs.keyFile,
		"-release-update-base-url", rs.updateURL(), "-release-payload-key", payloadKeyFile(t), "-release-extensions", "oem-qemu")
	listed := filepath.Join(assets, "flatcar", "stable", "amd64-usr", "current", "payloads.json")
	waitUntil(t, "the sync to place the release with its payloads", func() bool {
		_, err := os.Stat(listed)
		return err == nil
	})
	raw, err := os.ReadFile(listed)
	if err != nil || !strings.Contains(string(raw), `"name": "flatcar_production_update.gz"`) || !strings.Contains(string(raw), `"name": "oem-qemu.gz"`) {
		t.Errorf("payloads.json: %v\n%s", err, raw)
	}
	if !strings.Contains(s.log.String(), "update payload verified") {
		t.Errorf("the payloads are not logged:\n%s", s.log.String())
	}
	if code, body := fetch(t, s.url+"/assets/flatcar/stable/amd64-usr/current/oem-qemu.gz"); code != 200 || !strings.HasPrefix(body, "CrAU") {
		t.Errorf("oem-qemu.gz from the mirror: %d", code)
	}
}
