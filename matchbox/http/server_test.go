package http

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/render"
	"matchbox.dev/matchbox/sign"
)

const butaneOK = `variant: flatcar
version: 1.1.0
passwd:
  users:
    - name: core
      ssh_authorized_keys:
        - {{.ssh_key}}
storage:
  files:
    - path: /etc/hostname
      contents:
        inline: {{.request.query.mac}}
`

func testObjects() matchbox.Objects {
	return matchbox.Objects{
		Profiles: []*matchbox.Profile{
			{ID: "live", Boot: matchbox.Boot{
				Kernel: "/assets/vmlinuz",
				Initrd: []string{"--name main /assets/initrd.cpio.gz"},
				Args:   []string{"initrd=main", "ignition.config.url=http://{{.request.host}}/ignition?mac=${mac:hexhyp}"},
			}, IgnitionID: "live.yaml", CloudID: "c.tmpl", GenericID: "g.tmpl"},
			{ID: "raw", Boot: matchbox.Boot{Kernel: "/k"}, IgnitionID: "raw.ign"},
			{ID: "broken", Boot: matchbox.Boot{Kernel: "/k"}, IgnitionID: "broken.yaml"},
			{ID: "nokernel", IgnitionID: "raw.ign"},
		},
		Groups: []*matchbox.Group{
			{ID: "node1", Profile: "live", Selector: map[string]string{"mac": "52:54:00:00:00:01"},
				Metadata: map[string]any{"ssh_key": "ssh-ed25519 AAAA test", "count": 1000000.0}},
			{ID: "raw", Profile: "raw", Selector: map[string]string{"mac": "52:54:00:00:00:02"}},
			{ID: "broken", Profile: "broken", Selector: map[string]string{"mac": "52:54:00:00:00:03"}},
			{ID: "nokernel", Profile: "nokernel", Selector: map[string]string{"mac": "52:54:00:00:00:04"}},
			{ID: "dangling", Profile: "missing", Selector: map[string]string{"mac": "52:54:00:00:00:05"}},
		},
		Templates: []*matchbox.Template{
			{Kind: matchbox.KindIgnition, Name: "live.yaml", Content: []byte(butaneOK)},
			{Kind: matchbox.KindIgnition, Name: "raw.ign", Content: []byte(`{"ignition":{"version":"3.4.0"}}`)},
			{Kind: matchbox.KindIgnition, Name: "broken.yaml", Content: []byte("variant: flatcar\nversion: 1.1.0\nstorage:\n  files:\n    - mode: 0644\n")},
			{Kind: matchbox.KindCloud, Name: "c.tmpl", Content: []byte("#cloud-config\nhostname: {{.request.query.mac}}\n")},
			{Kind: matchbox.KindGeneric, Name: "g.tmpl", Content: []byte("KEY={{.ssh_key}}\n")},
		},
	}
}

type fixture struct {
	url    string
	assets string
	signer *sign.Signer
	ready  error
}

func newFixture(t *testing.T, withSigner bool) *fixture {
	t.Helper()
	f := &fixture{assets: t.TempDir()}
	cat := matchbox.NewCatalog("test")
	cat.Update(context.Background(), "test", testObjects())
	if withSigner {
		e, err := openpgp.NewEntity("matchbox test", "", "test@example.invalid", nil)
		if err != nil {
			t.Fatal(err)
		}
		if f.signer, err = sign.NewSigner(e); err != nil {
			t.Fatal(err)
		}
	}
	srv := New(Config{
		Catalog:    cat,
		Engine:     render.NewEngine(render.Options{}),
		AssetsPath: f.assets,
		Signer:     f.signer,
		Ready:      func() error { return f.ready },
	})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	f.url = ts.URL
	return f
}

func get(t *testing.T, method, url string, hdr map[string]string) (*nethttp.Response, []byte) {
	t.Helper()
	req, err := nethttp.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestBootEndpoints(t *testing.T) {
	f := newFixture(t, false)
	host := strings.TrimPrefix(f.url, "http://")
	tests := []struct {
		name, path  string
		code        int
		contentType string
		body        string // exact, when set
		contains    []string
	}{
		{name: "boot.ipxe", path: "/boot.ipxe", code: 200, contentType: textType,
			body: "#!ipxe\nchain ipxe?uuid=${uuid}&mac=${mac:hexhyp}&domain=${domain}&hostname=${hostname}&serial=${serial}&arch=${buildarch:uristring}\n"},
		{name: "boot.ipxe.0", path: "/boot.ipxe.0", code: 200, contentType: textType, contains: []string{"chain ipxe?"}},
		{name: "ipxe by hyphen mac", path: "/ipxe?mac=52-54-00-00-00-01&uuid=u1", code: 200, contentType: textType,
			body: "#!ipxe\nkernel /assets/vmlinuz initrd=main ignition.config.url=http://" + host + "/ignition?mac=${mac:hexhyp}\ninitrd --name main /assets/initrd.cpio.gz\nboot\n"},
		{name: "ipxe upper-case MAC key", path: "/ipxe?MAC=52:54:00:00:00:01", code: 404, contentType: textType},
		{name: "grub", path: "/grub?mac=52:54:00:00:00:01", code: 200, contentType: textType,
			contains: []string{`linuxefi "/assets/vmlinuz" initrd=main`, `initrdefi  "/assets/initrd.cpio.gz"`, `menuentry "CoreOS (BIOS)"`}},
		{name: "ignition butane", path: "/ignition?mac=52:54:00:00:00:01", code: 200, contentType: jsonType,
			contains: []string{`"version":"3.4.0"`, `ssh-ed25519 AAAA test`}},
		{name: "ignition raw", path: "/ignition?mac=52:54:00:00:00:02", code: 200, contentType: jsonType,
			body: `{"ignition":{"version":"3.4.0"}}`},
		{name: "cloud", path: "/cloud?mac=52:54:00:00:00:01", code: 200, contentType: textType,
			body: "#cloud-config\nhostname: 52:54:00:00:00:01\n"},
		{name: "generic", path: "/generic?mac=52:54:00:00:00:01", code: 200, contentType: textType, body: "KEY=ssh-ed25519 AAAA test\n"},
		{name: "metadata", path: "/metadata?mac=52:54:00:00:00:01&foo=bar", code: 200, contentType: textType,
			body: "COUNT=1000000\nMAC=52:54:00:00:00:01\nREQUEST_QUERY_FOO=bar\nREQUEST_QUERY_MAC=52:54:00:00:00:01\nREQUEST_RAW_QUERY=mac=52:54:00:00:00:01&foo=bar\nSSH_KEY=ssh-ed25519 AAAA test\n"},
		{name: "no match", path: "/ipxe?mac=52:54:00:00:00:99", code: 404, contentType: textType, contains: []string{"no group matches"}},
		{name: "missing profile", path: "/ipxe?mac=52:54:00:00:00:05", code: 404, contains: []string{`profile "missing"`}},
		{name: "metadata needs only the group", path: "/metadata?mac=52:54:00:00:00:05", code: 200, contentType: textType,
			body: "MAC=52:54:00:00:00:05\nREQUEST_QUERY_MAC=52:54:00:00:00:05\nREQUEST_RAW_QUERY=mac=52:54:00:00:00:05\n"},
		{name: "profile without cloud template", path: "/cloud?mac=52:54:00:00:00:02", code: 404, contains: []string{"no cloud template"}},
		{name: "bad mac", path: "/ipxe?mac=not-a-mac", code: 400, contentType: textType, contains: []string{"not a MAC"}},
		{name: "malformed query", path: "/ignition?mac=52:54:00:00:00:01&x=%zz", code: 400, contains: []string{"malformed query"}},
		{name: "broken butane", path: "/ignition?mac=52:54:00:00:00:03", code: 500, contentType: textType, contains: []string{`profile "broken"`, "butane"}},
		{name: "no kernel", path: "/ipxe?mac=52:54:00:00:00:04", code: 500, contains: []string{"no boot.kernel"}},
		{name: "home", path: "/", code: 200, body: "matchbox\n"},
		{name: "unknown path", path: "/nope", code: 404},
		{name: "signature without signer", path: "/ipxe.sig?mac=52:54:00:00:00:01", code: 404},
		{name: "healthz", path: "/healthz", code: 200, body: "ok\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := get(t, "GET", f.url+tt.path, nil)
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d; body %q", resp.StatusCode, tt.code, body)
			}
			if tt.contentType != "" && resp.Header.Get("Content-Type") != tt.contentType {
				t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), tt.contentType)
			}
			if tt.body != "" {
				if diff := cmp.Diff(tt.body, string(body)); diff != "" {
					t.Errorf("body (-want +got):\n%s", diff)
				}
			}
			for _, s := range tt.contains {
				if !strings.Contains(string(body), s) {
					t.Errorf("body %q does not contain %q", body, s)
				}
			}
			if tt.code == 200 && len(body) == 0 {
				t.Error("200 with an empty body")
			}
			if tt.contentType == jsonType && !json.Valid(body) {
				t.Errorf("invalid JSON: %s", body)
			}
		})
	}
}

func TestMethodNotAllowed(t *testing.T) {
	f := newFixture(t, false)
	for _, path := range []string{"/ipxe?mac=52:54:00:00:00:01", "/boot.ipxe", "/metadata", "/assets/x", "/healthz"} {
		for _, m := range []string{"POST", "PUT", "DELETE", "PATCH"} {
			resp, _ := get(t, m, f.url+path, nil)
			if resp.StatusCode != 405 {
				t.Errorf("%s %s: status %d, want 405", m, path, resp.StatusCode)
			}
			if resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: Allow %q", m, path, resp.Header.Get("Allow"))
			}
		}
	}
	resp, body := get(t, "HEAD", f.url+"/ipxe?mac=52:54:00:00:00:01", nil)
	if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength <= 0 {
		t.Errorf("HEAD: status %d, body %d bytes, Content-Length %d", resp.StatusCode, len(body), resp.ContentLength)
	}
}

func TestSignatures(t *testing.T) {
	f := newFixture(t, true)
	for _, path := range []string{"/ipxe", "/grub", "/ignition", "/metadata", "/generic", "/cloud", "/boot.ipxe"} {
		q := "?mac=52:54:00:00:00:01"
		_, body := get(t, "GET", f.url+path+q, nil)
		for _, ext := range []string{".sig", ".asc"} {
			resp, sig := get(t, "GET", f.url+path+ext+q, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("%s%s: status %d: %s", path, ext, resp.StatusCode, sig)
			}
			if resp.Header.Get("Content-Type") != sigType {
				t.Errorf("%s%s: Content-Type %q", path, ext, resp.Header.Get("Content-Type"))
			}
			if ext == ".asc" && !bytes.HasPrefix(sig, []byte("-----BEGIN PGP SIGNATURE-----")) {
				t.Errorf("%s.asc is not armored: %q", path, sig[:min(40, len(sig))])
			}
			if err := f.signer.Verify(body, sig); err != nil {
				t.Errorf("%s%s: signature does not verify the body: %v", path, ext, err)
			}
			if err := f.signer.Verify(append(body, 'x'), sig); err == nil {
				t.Errorf("%s%s: signature verifies a different body", path, ext)
			}
		}
	}
	// A request that fails is not signed.
	resp, _ := get(t, "GET", f.url+"/ipxe.sig?mac=52:54:00:00:00:99", nil)
	if resp.StatusCode != 404 {
		t.Errorf("signature of unmatched request: status %d", resp.StatusCode)
	}
}

func TestAssets(t *testing.T) {
	f := newFixture(t, false)
	content := bytes.Repeat([]byte("0123456789"), 1000)
	if err := os.MkdirAll(filepath.Join(f.assets, "flatcar"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.assets, "flatcar", "vmlinuz"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Hidden: a release download being verified, a dotfile.
	if err := os.MkdirAll(filepath.Join(f.assets, "flatcar", ".partial-1.2.3"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"flatcar/.partial-1.2.3/vmlinuz", ".secret"} {
		if err := os.WriteFile(filepath.Join(f.assets, p), []byte("secret"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(f.assets, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("flatcar/vmlinuz", filepath.Join(f.assets, "inside")); err != nil {
		t.Fatal(err)
	}

	resp, body := get(t, "GET", f.url+"/assets/flatcar/vmlinuz", nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, content) {
		t.Fatalf("full GET: status %d, %d bytes", resp.StatusCode, len(body))
	}
	etag := resp.Header.Get("ETag")
	if etag == "" || resp.Header.Get("Last-Modified") == "" {
		t.Errorf("missing ETag/Last-Modified: %v", resp.Header)
	}
	resp, body = get(t, "GET", f.url+"/assets/flatcar/vmlinuz", map[string]string{"Range": "bytes=10-19"})
	if resp.StatusCode != 206 || string(body) != "0123456789" {
		t.Errorf("range: status %d body %q", resp.StatusCode, body)
	}
	resp, _ = get(t, "GET", f.url+"/assets/flatcar/vmlinuz", map[string]string{"If-None-Match": etag})
	if resp.StatusCode != 304 {
		t.Errorf("If-None-Match: status %d, want 304", resp.StatusCode)
	}
	resp, body = get(t, "GET", f.url+"/assets/inside", nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, content) {
		t.Errorf("symlink inside the root: status %d", resp.StatusCode)
	}
	for _, p := range []string{"/assets/", "/assets/flatcar", "/assets/flatcar/", "/assets/escape", "/assets/nope",
		"/assets/%2e%2e/%2e%2e/etc/passwd", "/assets/flatcar/%2e%2e/%2e%2e/secret",
		"/assets/flatcar/.partial-1.2.3/vmlinuz", "/assets/.secret", "/assets/flatcar/%2epartial-1.2.3/vmlinuz"} {
		resp, body := get(t, "GET", f.url+p, nil)
		if resp.StatusCode != 404 {
			t.Errorf("%s: status %d, want 404; body %q", p, resp.StatusCode, body)
		}
		if bytes.Contains(body, []byte("secret")) || bytes.Contains(body, []byte("vmlinuz")) {
			t.Errorf("%s: body leaks %q", p, body)
		}
	}
	// A raw request line with ".." (clients normally clean it).
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET /assets/../../../etc/passwd HTTP/1.0\r\n\r\n")
	raw, _ := io.ReadAll(conn)
	// The mux answers an unclean path with a redirect to the cleaned one
	// (outside /assets/), never with the file.
	if bytes.Contains(raw, []byte("root:")) || !bytes.Contains(raw, []byte(" 404 ")) && !bytes.Contains(raw, []byte(" 307 ")) {
		t.Errorf("raw traversal answered: %q", raw)
	}
}

func TestReadyzAndMetrics(t *testing.T) {
	f := newFixture(t, false)
	if resp, _ := get(t, "GET", f.url+"/readyz", nil); resp.StatusCode != 200 {
		t.Errorf("readyz: %d", resp.StatusCode)
	}
	f.ready = errors.New("loading")
	if resp, body := get(t, "GET", f.url+"/readyz", nil); resp.StatusCode != 503 || !strings.Contains(string(body), "loading") {
		t.Errorf("readyz not ready: %d %q", resp.StatusCode, body)
	}
	get(t, "GET", f.url+"/ipxe?mac=52:54:00:00:00:01", nil)
	get(t, "GET", f.url+"/ignition?mac=52:54:00:00:00:03", nil)
	_, body := get(t, "GET", f.url+"/metrics", nil)
	for _, want := range []string{
		`matchbox_http_requests_total{code="200",endpoint="ipxe"} 1`,
		`matchbox_http_requests_total{code="500",endpoint="ignition"} 1`,
		`matchbox_render_failures_total{endpoint="ignition"} 1`,
		`matchbox_http_request_duration_seconds_count{endpoint="ipxe"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestServeGracefulShutdown(t *testing.T) {
	cat := matchbox.NewCatalog("test")
	cat.Update(context.Background(), "test", testObjects())
	srv := New(Config{Catalog: cat, Engine: render.NewEngine(render.Options{}), ShutdownTimeout: 5 * time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	resp, _ := get(t, "GET", "http://"+ln.Addr().String()+"/ipxe?mac=52:54:00:00:00:01", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := nethttp.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		t.Error("server still answering after shutdown")
	}
}

// A client that goes away while its Ignition is rendered is not a render
// failure: no error log, no failure count, no translation started.
func TestAbandonedRequest(t *testing.T) {
	cat := matchbox.NewCatalog("test")
	cat.Update(context.Background(), "test", testObjects())
	var logs bytes.Buffer
	srv := New(Config{Catalog: cat, Engine: render.NewEngine(render.Options{}),
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	h := srv.Handler()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequest("GET", "/ignition?mac=52:54:00:00:00:01", nil).WithContext(ctx)
	h.ServeHTTP(httptest.NewRecorder(), req)
	if strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "abandoned") {
		t.Errorf("logs of an abandoned request:\n%s", logs.String())
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if strings.Contains(rec.Body.String(), `matchbox_render_failures_total{endpoint="ignition"} 1`) {
		t.Error("an abandoned request counted as a render failure")
	}
	// The same request from a client that waits still renders.
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/ignition?mac=52:54:00:00:00:01", nil))
	if rec.Code != 200 {
		t.Errorf("after an abandoned request: %d %s", rec.Code, rec.Body)
	}
}
