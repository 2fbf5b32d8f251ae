package http

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	nethttp "net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/internal/logbuf"
	"matchbox.dev/matchbox/internal/loopback"
	"matchbox.dev/matchbox/netlimit"
	"matchbox.dev/matchbox/render"
)

// hang bounds the waits of these tests: reaching it means the server
// held on to a connection it should have let go.
const hang = 20 * time.Second

// served is a Server running Serve on a loopback listener.
type served struct {
	addr   string
	assets string
	logs   *logbuf.Buffer
}

// startServe runs Serve with cfg (catalog, engine, assets and logger
// filled in) until the test ends.
func startServe(t *testing.T, cfg Config) *served {
	t.Helper()
	s := &served{assets: t.TempDir(), logs: &logbuf.Buffer{}}
	cat := matchbox.NewCatalog("test")
	cat.Update(context.Background(), "test", testObjects())
	cfg.Catalog, cfg.Engine, cfg.AssetsPath = cat, render.NewEngine(render.Options{}), s.assets
	cfg.Logger = slog.New(slog.NewTextHandler(s.logs, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(cfg).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// roundTrip sends a raw GET with the given Host on c and reads the
// answer.
func roundTrip(c net.Conn, br *bufio.Reader, path, host string) (*nethttp.Response, string, error) {
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host); err != nil {
		return nil, "", err
	}
	resp, err := nethttp.ReadResponse(br, nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func (s *served) get(t *testing.T, src, path, host string) (*nethttp.Response, string, error) {
	c := loopback.Dial(t, src, s.addr, hang)
	return roundTrip(c, bufio.NewReader(c), path, host)
}

// A Host header that is not a host name or IP literal gets 400 and is
// neither reflected nor logged whole; valid ones are still rendered as
// given (no signer).
func TestInvalidHost(t *testing.T) {
	var logs logbuf.Buffer
	cat := matchbox.NewCatalog("test")
	cat.Update(context.Background(), "test", testObjects())
	srv := New(Config{Catalog: cat, Engine: render.NewEngine(render.Options{}), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	// net/http's own header bound is 1 MB: the handler sees this one.
	ts := newServer(t, srv.Handler())
	huge := strings.Repeat("h", 900<<10)
	for _, host := range []string{huge, "a b", "x${y}", "evil\nkernel", "[::1", "[fe80::1%25eth0]:80", "a:b:c", "h:99999", "h:8o",
		"évil.example", "a..b", strings.Repeat("a", 64) + ".example", "$(reboot)", "[::1]x"} {
		c := loopback.Dial(t, "127.0.0.2", ts, hang)
		resp, body, err := roundTrip(c, bufio.NewReader(c), "/ipxe?mac=52:54:00:00:00:01", host)
		if err != nil {
			t.Fatalf("Host %s: %v", matchbox.Quote(host), err)
		}
		if resp.StatusCode != 400 || strings.Contains(body, host) || strings.Contains(body, "kernel ") {
			t.Errorf("Host %s: %d %q", matchbox.Quote(host), resp.StatusCode, body)
		}
	}
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if len(line) > 1024 {
			t.Errorf("log line of %d bytes: %.200s…", len(line), line)
		}
	}
	if !strings.Contains(logs.String(), "invalid Host header") {
		t.Errorf("no log line of an invalid Host:\n%.2000s", logs.String())
	}
	for _, host := range []string{"matchbox.example:8080", "MatchBox.Example", "10.0.0.1", "10.0.0.1:80", "[fd00::1]:8080", "boot_1.lab.", "h:"} {
		c := loopback.Dial(t, "127.0.0.2", ts, hang)
		resp, body, err := roundTrip(c, bufio.NewReader(c), "/ipxe?mac=52:54:00:00:00:01", host)
		if err != nil || resp.StatusCode != 200 || !strings.Contains(body, "ignition.config.url=http://"+host+"/ignition") {
			t.Errorf("Host %q: %v %v %q", host, err, resp, body)
		}
	}
}

// Through Serve, a 900 KB Host is beyond the header bound: 431, never
// reflected.
func TestServeHugeHost(t *testing.T) {
	s := startServe(t, Config{})
	huge := strings.Repeat("h", 900<<10)
	resp, body, err := s.get(t, "127.0.0.2", "/ipxe?mac=52:54:00:00:00:01", huge)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != nethttp.StatusRequestHeaderFieldsTooLarge || strings.Contains(body, "hhhh") {
		t.Errorf("%d %q", resp.StatusCode, body)
	}
}

// newServer serves h on a loopback http.Server (as httptest does), and
// returns its address.
func newServer(t *testing.T, h nethttp.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &nethttp.Server{Handler: h}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// With a signer, a body and its signature are over the listening address
// unless the Host names it or one of HostNames: a forged Host gets no
// signed URL of its choosing.
func TestSignedHost(t *testing.T) {
	f := newFixture(t, true)
	cat := matchbox.NewCatalog("test")
	cat.Update(context.Background(), "test", testObjects())
	srv := New(Config{Catalog: cat, Engine: render.NewEngine(render.Options{}), Signer: f.signer,
		HostNames: []string{"boot.example", "proxy.example:8443"}})
	addr := newServer(t, srv.Handler())
	_, lport, _ := net.SplitHostPort(addr)
	tests := []struct{ host, rendered string }{
		{"evil.example", addr},
		{"evil.example:" + lport, addr},
		{"localhost:" + lport, addr},
		{"127.0.0.1:1", addr},
		{"127.0.0.1", addr},
		{"boot.example:9999", addr},
		{"proxy.example", addr},
		{"proxy.example:1", addr},
		{addr, addr},
		{"boot.example", "boot.example"},
		{"BOOT.example:" + lport, "BOOT.example:" + lport},
		{"proxy.example:8443", "proxy.example:8443"},
	}
	for _, tt := range tests {
		for _, path := range []string{"/ipxe", "/ignition", "/cloud"} {
			q := "?mac=52:54:00:00:00:01"
			c := loopback.Dial(t, "127.0.0.2", addr, hang)
			br := bufio.NewReader(c)
			resp, body, err := roundTrip(c, br, path+q, tt.host)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("Host %q %s: %v %v", tt.host, path, err, resp)
			}
			// Fetched apart, on the same connection, as a client does.
			resp, sig, err := roundTrip(c, br, path+".sig"+q, tt.host)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("Host %q %s.sig: %v %v", tt.host, path, err, resp)
			}
			if err := f.signer.Verify([]byte(body), []byte(sig)); err != nil {
				t.Errorf("Host %q %s: the signature does not verify the body: %v", tt.host, path, err)
			}
			if path == "/ipxe" && !strings.Contains(body, "ignition.config.url=http://"+tt.rendered+"/ignition") {
				t.Errorf("Host %q: rendered %q, want host %s", tt.host, body, tt.rendered)
			}
		}
	}
}

func TestCheckHostName(t *testing.T) {
	for _, name := range []string{"boot.example", "boot.example:8080", "10.0.0.1", "[fd00::1]:80", "fd00::1"} {
		err := CheckHostName(name)
		if name == "fd00::1" {
			if err == nil {
				t.Errorf("%q accepted (an IPv6 literal takes brackets)", name)
			}
		} else if err != nil {
			t.Errorf("%q: %v", name, err)
		}
	}
	if err := CheckHostName("a b"); err == nil || !strings.Contains(err.Error(), `"a b"`) {
		t.Errorf("a b: %v", err)
	}
}

// Many connections from one address: those over its limit are closed at
// once, while the boot endpoints still answer another address.
func TestServeConnsPerSource(t *testing.T) {
	s := startServe(t, Config{Transport: netlimit.Config{MaxConnsPerSource: 4}})
	for range 4 {
		c := loopback.Dial(t, "127.0.0.2", s.addr, hang)
		if resp, _, err := roundTrip(c, bufio.NewReader(c), "/healthz", "test"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("held connection: %v %v", err, resp)
		}
	}
	for range 10 {
		// Reset before or after connecting, never answered.
		d := loopback.Dialer("127.0.0.2", hang)
		c, err := d.Dial("tcp", s.addr)
		if err != nil {
			continue
		}
		_ = c.SetDeadline(time.Now().Add(hang))
		resp, _, err := roundTrip(c, bufio.NewReader(c), "/boot.ipxe", "test")
		c.Close()
		if err == nil {
			t.Fatalf("a connection over the limit answered %d", resp.StatusCode)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("a connection over the limit is held")
		}
	}
	resp, body, err := s.get(t, "127.0.0.3", "/ipxe?mac=52:54:00:00:00:01", "test")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("another address: %v %v", err, resp)
	}
	if !strings.Contains(body, "kernel /assets/vmlinuz") {
		t.Errorf("another address: %q", body)
	}
	_, metrics, err := s.get(t, "127.0.0.3", "/metrics", "test")
	if err != nil || !strings.Contains(metrics, `matchbox_http_connections_refused_total{listener="boot",reason="source"} 10`) {
		t.Errorf("metrics: %v\n%s", err, grep(metrics, "connections"))
	}
	if !strings.Contains(s.logs.String(), "connection refused: too many from one address") {
		t.Errorf("no log line of a refused connection")
	}
}

func grep(text, word string) string {
	var out []string
	for line := range strings.SplitSeq(text, "\n") {
		if strings.Contains(line, word) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// A body that stops coming is dropped at the read timeout: the connection
// ends, whatever the endpoint.
func TestServeSlowBody(t *testing.T) {
	s := startServe(t, Config{Transport: netlimit.Config{ReadTimeout: 300 * time.Millisecond}})
	for _, path := range []string{"/lifecycle/report?mac=52:54:00:00:00:01&status=failed", "/ipxe"} {
		c := loopback.Dial(t, "127.0.0.2", s.addr, hang)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\nlog...", path)
		// The read deadline of loopback.Dial is the hang bound: a timeout
		// here means the server still holds the connection.
		if _, err := io.Copy(io.Discard, c); err != nil && !strings.Contains(err.Error(), "connection reset") {
			t.Fatalf("%s: connection not closed: %v", path, err)
		}
	}
}

// bigAsset writes an asset larger than the kernel buffers of a loopback
// connection.
func bigAsset(t *testing.T, dir string) []byte {
	t.Helper()
	content := bytes.Repeat([]byte("0123456789abcdef"), 24<<20/16)
	if err := os.WriteFile(filepath.Join(dir, "initrd"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	return content
}

// A reader that stops is dropped after the stall timeout, while another
// client downloads the same file in full.
func TestServeStalledReader(t *testing.T) {
	s := startServe(t, Config{Transport: netlimit.Config{StallTimeout: 300 * time.Millisecond}})
	content := bigAsset(t, s.assets)
	c := loopback.Dial(t, "127.0.0.2", s.addr, hang)
	if err := c.(*net.TCPConn).SetReadBuffer(32 << 10); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /assets/initrd HTTP/1.1\r\nHost: test\r\n\r\n")
	deadline := time.Now().Add(hang)
	for {
		_, metrics, err := s.get(t, "127.0.0.3", "/metrics", "test")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(metrics, `matchbox_http_responses_stalled_total{listener="boot"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a reader that stopped is still connected")
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, body, err := s.get(t, "127.0.0.3", "/assets/initrd", "test")
	if err != nil || resp.StatusCode != 200 || body != string(content) {
		t.Fatalf("another client: %v %v, %d bytes", err, resp, len(body))
	}
	got, _ := io.Copy(io.Discard, c)
	if got >= int64(len(content)) {
		t.Errorf("the stalled reader got all %d bytes", got)
	}
}

// A FIFO (or any file that is not regular) under /assets/ or /boot/ is
// refused at once; regular files are still served.
func TestFIFORefused(t *testing.T) {
	bootDir := t.TempDir()
	s := startServe(t, Config{BootFilesPath: bootDir})
	for _, dir := range []string{s.assets, bootDir} {
		if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "ok"), []byte("regular"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, prefix := range []string{"/assets/", "/boot/"} {
		// Twice on one connection: the first refusal held nothing.
		c := loopback.Dial(t, "127.0.0.2", s.addr, hang)
		br := bufio.NewReader(c)
		for range 2 {
			resp, _, err := roundTrip(c, br, prefix+"fifo", "test")
			if err != nil || resp.StatusCode != 404 {
				t.Fatalf("%sfifo: %v %v", prefix, err, resp)
			}
		}
		resp, body, err := roundTrip(c, br, prefix+"ok", "test")
		if err != nil || resp.StatusCode != 200 || body != "regular" {
			t.Fatalf("%sok: %v %v %q", prefix, err, resp, body)
		}
	}
	if !strings.Contains(s.logs.String(), "not a regular file") {
		t.Errorf("no log line of the refused FIFO:\n%s", s.logs.String())
	}
}

// A refused path is logged quoted and cut, whatever its length.
func TestRefusedPathLogged(t *testing.T) {
	var logs logbuf.Buffer
	cat := matchbox.NewCatalog("test")
	cat.Update(context.Background(), "test", testObjects())
	srv := New(Config{Catalog: cat, Engine: render.NewEngine(render.Options{}), AssetsPath: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	addr := newServer(t, srv.Handler())
	name := strings.Repeat("n", 500<<10)
	c := loopback.Dial(t, "127.0.0.2", addr, hang)
	resp, _, err := roundTrip(c, bufio.NewReader(c), "/assets/"+name, "test")
	if err != nil || resp.StatusCode != 404 {
		t.Fatalf("%v %v", err, resp)
	}
	if !strings.Contains(logs.String(), "asset refused") {
		t.Fatalf("no log line:\n%.500s", logs.String())
	}
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if len(line) > 1024 {
			t.Errorf("log line of %d bytes: %.200s…", len(line), line)
		}
	}
}
