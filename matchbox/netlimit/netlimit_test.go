package netlimit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"matchbox.dev/matchbox/internal/loopback"
)

// hang bounds every wait of these tests: reaching it means the server
// held on to something it should have let go.
const hang = 20 * time.Second

// serve serves h with the limits of cfg on a loopback listener.
func serve(t *testing.T, cfg Config, h http.Handler) (string, *Limits) {
	t.Helper()
	cfg.Listener = "test"
	cfg.Registry = prometheus.NewRegistry()
	l := New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := l.Server(h)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l.Listener(ln))
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String(), l
}

// refused reports whether a connection from src to addr is refused: reset
// before or after connecting, with no answer to a request.
func refused(src, addr string) bool {
	d := loopback.Dialer(src, hang)
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return true
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(hang))
	_, err = (&client{c, bufio.NewReader(c)}).get("/")
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// client is one keep-alive connection.
type client struct {
	c net.Conn
	r *bufio.Reader
}

func connect(t *testing.T, src, addr string) *client {
	c := loopback.Dial(t, src, addr, hang)
	return &client{c, bufio.NewReader(c)}
}

// get sends a GET and returns the response's body, or the error of a
// connection that does not answer.
func (cl *client) get(path string) (string, error) {
	if _, err := fmt.Fprintf(cl.c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(cl.r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })

// Many connections from one address: those over its limit are closed at
// once, while another address is still served; a place given back is
// taken again.
func TestConnsPerSource(t *testing.T) {
	addr, l := serve(t, Config{MaxConns: 100, MaxConnsPerSource: 3}, ok)
	var held []*client
	for i := range 3 {
		cl := connect(t, "127.0.0.2", addr)
		if body, err := cl.get("/"); err != nil || body != "ok" {
			t.Fatalf("connection %d: %q, %v", i, body, err)
		}
		held = append(held, cl)
	}
	for i := range 5 {
		if !refused("127.0.0.2", addr) {
			t.Fatalf("connection %d over the limit of its address not refused", i)
		}
	}
	if body, err := connect(t, "127.0.0.3", addr).get("/"); err != nil || body != "ok" {
		t.Fatalf("another address: %q, %v", body, err)
	}
	if n := testutil.ToFloat64(l.refused.WithLabelValues(reasonSource)); n != 5 {
		t.Errorf("refused for the source: %v, want 5", n)
	}
	// The address's connections still work.
	if body, err := held[0].get("/"); err != nil || body != "ok" {
		t.Fatalf("held connection: %q, %v", body, err)
	}
	held[1].c.Close()
	deadline := time.Now().Add(hang)
	for {
		if !refused("127.0.0.2", addr) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the place of a closed connection was not given back")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConnsTotal(t *testing.T) {
	addr, l := serve(t, Config{MaxConns: 2, MaxConnsPerSource: 10}, ok)
	for _, src := range []string{"127.0.0.2", "127.0.0.3"} {
		if body, err := connect(t, src, addr).get("/"); err != nil || body != "ok" {
			t.Fatalf("%s: %q, %v", src, body, err)
		}
	}
	if !refused("127.0.0.4", addr) {
		t.Fatal("connection over the total not refused")
	}
	if n := testutil.ToFloat64(l.refused.WithLabelValues(reasonTotal)); n != 1 {
		t.Errorf("refused over the total: %v, want 1", n)
	}
	if l.Open() != 2 {
		t.Errorf("open: %d, want 2", l.Open())
	}
}

// A body that stops coming is dropped at the read timeout: the handler's
// read fails and the connection ends.
func TestSlowBody(t *testing.T) {
	readErr := make(chan error, 1)
	addr, _ := serve(t, Config{ReadTimeout: 300 * time.Millisecond}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
	}))
	c := loopback.Dial(t, "127.0.0.2", addr, hang)
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n0123456789", 1<<20)
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("the handler read a body that never came")
		}
	case <-time.After(hang):
		t.Fatal("a slow body is still being read")
	}
	// The connection ends (with an answer or without).
	if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Fatalf("connection not closed: %v", err)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// Beyond MaxBodies, a request with a body gets 503 unread; requests
// without a body are still served.
func TestBodies(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	addr, l := serve(t, Config{MaxBodies: 1}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			entered <- struct{}{}
			<-release
			_, _ = io.Copy(io.Discard, r.Body)
		}
		io.WriteString(w, "ok")
	}))
	first := make(chan error, 1)
	go func() {
		resp, err := http.Post("http://"+addr+"/", "text/plain", strings.NewReader("first"))
		if err == nil {
			resp.Body.Close()
		}
		first <- err
	}()
	<-entered
	resp, err := http.Post("http://"+addr+"/", "text/plain", strings.NewReader("second"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second body: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if body, err := connect(t, "127.0.0.2", addr).get("/"); err != nil || body != "ok" {
		t.Errorf("request without a body: %q, %v", body, err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(l.bodiesRefused); n != 1 {
		t.Errorf("bodies refused: %v, want 1", n)
	}
}

// A handler that is done with its body (BodyDone) gives its place to the
// next request while it goes on: a second body is read, not refused.
func TestBodyDone(t *testing.T) {
	entered, release := make(chan string, 2), make(chan struct{})
	addr, l := serve(t, Config{MaxBodies: 1}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		BodyDone(r)
		BodyDone(r) // twice: the place is given back once
		entered <- string(data)
		<-release
		io.WriteString(w, "ok")
	}))
	errs := make(chan error, 2)
	post := func(body string) {
		resp, err := http.Post("http://"+addr+"/", "text/plain", strings.NewReader(body))
		if err == nil {
			if resp.StatusCode != 200 {
				err = fmt.Errorf("%s: %s", body, resp.Status)
			}
			resp.Body.Close()
		}
		errs <- err
	}
	go post("first")
	if got := <-entered; got != "first" {
		t.Fatalf("first handler read %q", got)
	}
	go post("second")
	if got := <-entered; got != "second" {
		t.Fatalf("second handler read %q", got)
	}
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := testutil.ToFloat64(l.bodiesRefused); n != 0 {
		t.Errorf("bodies refused: %v, want 0", n)
	}
	// The places are all free again: MaxBodies more bodies fit.
	go post("third")
	if got := <-entered; got != "third" {
		t.Fatalf("third handler read %q", got)
	}
	if err := <-errs; err != nil {
		t.Error(err)
	}
}

// bigFile writes a file larger than what the kernel buffers of a
// loopback connection hold.
func bigFile(t *testing.T) (string, []byte) {
	t.Helper()
	content := bytes.Repeat([]byte("0123456789abcdef"), 24<<20/16)
	p := filepath.Join(t.TempDir(), "initrd")
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, content
}

func serveFile(p string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, p) })
}

// smallWindow connects with a small receive buffer, so that a reader that
// stops soon stops the server's writes.
func smallWindow(t *testing.T, addr string) net.Conn {
	c := loopback.Dial(t, "127.0.0.2", addr, hang)
	if err := c.(*net.TCPConn).SetReadBuffer(32 << 10); err != nil {
		t.Fatal(err)
	}
	return c
}

// A reader that stops is dropped after the stall timeout; another client
// is served meanwhile.
func TestStalledReader(t *testing.T) {
	p, content := bigFile(t)
	a, l := serve(t, Config{StallTimeout: 300 * time.Millisecond}, serveFile(p))
	c := smallWindow(t, a)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	deadline := time.Now().Add(hang)
	for testutil.ToFloat64(l.stalled) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a reader that stopped is still connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, _ := io.Copy(io.Discard, c)
	if got >= int64(len(content)) {
		t.Errorf("the stalled reader got all %d bytes", got)
	}
	deadline = time.Now().Add(hang)
	for l.Open() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if l.Open() != 0 {
		t.Errorf("%d connections still open", l.Open())
	}
}

// A reader that keeps moving gets the whole file, though the transfer
// lasts longer than the stall timeout.
func TestMovingReader(t *testing.T) {
	p, content := bigFile(t)
	stall := 1500 * time.Millisecond
	a, l := serve(t, Config{StallTimeout: stall}, serveFile(p))
	c := smallWindow(t, a)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var got bytes.Buffer
	buf := make([]byte, 256<<10)
	for {
		n, err := io.ReadFull(resp.Body, buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
		// Pause, as a slow link would; the whole transfer takes longer
		// than the stall timeout.
		if time.Since(start) < 2*stall {
			time.Sleep(30 * time.Millisecond)
		}
	}
	if !bytes.Equal(got.Bytes(), content) {
		t.Fatalf("got %d bytes of %d", got.Len(), len(content))
	}
	if n := testutil.ToFloat64(l.stalled); n != 0 {
		t.Errorf("stalls counted: %v", n)
	}
}

// recordingConn records what its ReadFrom is given.
type recordingConn struct {
	*net.TCPConn
	got chan io.Reader
}

func (c recordingConn) ReadFrom(r io.Reader) (int64, error) {
	c.got <- r
	return c.TCPConn.ReadFrom(r)
}

// Files reach the TCP connection's ReadFrom as a limited reader of the
// file, which is what sendfile needs.
func TestReadFromKeepsFile(t *testing.T) {
	p, content := bigFile(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	recv := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			recv <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		recv <- n
	}()
	tc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	l := New(Config{})
	rc := recordingConn{tc.(*net.TCPConn), make(chan io.Reader, 100)}
	c := &conn{Conn: rc, l: l}
	l.admit(c.src)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := c.ReadFrom(io.LimitReader(f, int64(len(content))))
	if err != nil || n != int64(len(content)) {
		t.Fatalf("ReadFrom: %d, %v", n, err)
	}
	c.Close()
	if got := <-recv; got != int64(len(content)) {
		t.Errorf("received %d bytes", got)
	}
	r := <-rc.got
	if lr, ok := r.(*io.LimitedReader); !ok || lr.R != f {
		t.Errorf("the TCP connection got %T, not the file", r)
	}
}
