package tftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"matchbox.dev/matchbox/recorder"
)

type fixture struct {
	addr    string
	root    string
	srv     *Server
	content []byte
	rec     *recorder.Recorder
	stop    func() // stops the server and waits for Serve to return
}

func newFixture(t *testing.T, tweak ...func(*Config)) *fixture {
	t.Helper()
	root := t.TempDir()
	content := make([]byte, 300_000)
	rand.Read(content)
	if err := os.WriteFile(filepath.Join(root, "ipxe.efi"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "sub", "small"), []byte("small"), 0o644); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("ipxe.efi", filepath.Join(root, "snponly.efi")); err != nil {
		t.Fatal(err)
	}
	rec := recorder.New(nil, nil)
	rec.Learn(netip.MustParseAddr("127.0.0.1"), "52:54:00:00:00:01")
	cfg := Config{
		Root: root,
		Generated: map[string]Generator{"boot.ipxe": func(local netip.Addr) []byte {
			return []byte("#!ipxe\nchain http://" + local.String() + ":8080/boot.ipxe\n")
		}},
		Recorder: rec,
		Registry: prometheus.NewRegistry(),
		Timeout:  time.Second,
	}
	for _, f := range tweak {
		f(&cfg)
	}
	srv := New(cfg)
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, conn) }()
	f := &fixture{addr: conn.LocalAddr().String(), root: root, srv: srv, content: content, rec: rec}
	var once sync.Once
	f.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Serve did not return")
			}
		})
	}
	t.Cleanup(f.stop)
	return f
}

func fetch(t *testing.T, addr, name string, blksize int) ([]byte, error) {
	t.Helper()
	c, err := tftp.NewClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(time.Second)
	c.SetRetries(2)
	if blksize > 0 {
		c.SetBlockSize(blksize)
	}
	c.RequestTSize(true)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return nil, err
	}
	if it, ok := wt.(tftp.IncomingTransfer); ok {
		if n, ok := it.Size(); ok && n != int64(buf.Len()) {
			t.Errorf("%s: tsize %d, received %d", name, n, buf.Len())
		}
	}
	return buf.Bytes(), nil
}

func TestTransfers(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name    string
		blksize int
		want    []byte
	}{
		{"ipxe.efi", 0, f.content},
		{"ipxe.efi", 1468, f.content},
		{"ipxe.efi", 8192, f.content},
		{"/ipxe.efi", 512, f.content},
		{"snponly.efi", 1468, f.content},
		{"sub/small", 0, []byte("small")},
		{"boot.ipxe", 0, []byte("#!ipxe\nchain http://127.0.0.1:8080/boot.ipxe\n")},
	} {
		got, err := fetch(t, f.addr, tc.name, tc.blksize)
		if err != nil {
			t.Errorf("%s (blksize %d): %v", tc.name, tc.blksize, err)
			continue
		}
		if !bytes.Equal(got, tc.want) {
			t.Errorf("%s (blksize %d): %d bytes differ from the %d expected", tc.name, tc.blksize, len(got), len(tc.want))
		}
	}
	// The server counts a transfer when the last ACK arrives, which may be
	// just after the client has its data.
	waitCount(t, f, "sent", 7)
	if n := testutil.ToFloat64(f.srv.bytes); n < float64(4*len(f.content)) {
		t.Errorf("bytes counted: %v", n)
	}
}

func TestRefusals(t *testing.T) {
	f := newFixture(t)
	for _, name := range []string{
		"../etc/passwd", "sub/../../etc/passwd", "..", "/../ipxe.efi", "escape", "sub", "/", "nope.efi",
		"sub\\..\\..\\etc\\passwd", "/etc/passwd",
		// (A NUL cannot reach the handler: it ends the file name in the
		// packet; CleanPath refuses it anyway, see TestCleanPath.)
	} {
		got, err := fetch(t, f.addr, name, 0)
		if err == nil {
			t.Errorf("%q served %d bytes", name, len(got))
			continue
		}
		if bytes.Contains(got, []byte("secret")) {
			t.Errorf("%q leaked the file outside the root", name)
		}
	}
	if n := testutil.ToFloat64(f.srv.transfers.WithLabelValues("refused")); n < 6 {
		t.Errorf("refusals counted: %v", n)
	}
}

func TestBusy(t *testing.T) {
	f := newFixture(t)
	for range cap(f.srv.slots) {
		f.srv.slots <- struct{}{}
	}
	_, err := fetch(t, f.addr, "ipxe.efi", 0)
	if err == nil || !strings.Contains(err.Error(), "busy") {
		t.Errorf("full server: err %v, want busy", err)
	}
	for range cap(f.srv.slots) {
		<-f.srv.slots
	}
	if _, err := fetch(t, f.addr, "ipxe.efi", 0); err != nil {
		t.Errorf("after slots freed: %v", err)
	}
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"ipxe.efi": "ipxe.efi", "/ipxe.efi": "ipxe.efi", "//a//b/": "a/b", "a/./b": "a/b",
		"..": "", "../x": "", "a/../../x": "", "a/..": "", "\\x": "", "a\x00b": "", "": "", "/": "", "a\nb": "",
	} {
		got, err := CleanPath(in)
		if want == "" {
			if err == nil {
				t.Errorf("CleanPath(%q) = %q, want refusal", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("CleanPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"ipxe.efi", "../x", "/a/b", "a/../b", "a\x00", "\\\\x", "....//x", "./..."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		clean, err := CleanPath(name)
		if err != nil {
			return
		}
		if clean == "" || strings.HasPrefix(clean, "/") || strings.ContainsAny(clean, "\x00\\") {
			t.Fatalf("CleanPath(%q) = %q", name, clean)
		}
		for _, part := range strings.Split(clean, "/") {
			if part == ".." || part == "" || part == "." {
				t.Fatalf("CleanPath(%q) = %q has a %q element", name, clean, part)
			}
		}
		if j := path.Join("/root", clean); !strings.HasPrefix(j, "/root/") {
			t.Fatalf("CleanPath(%q) = %q escapes: %s", name, clean, j)
		}
	})
}

// A file served again comes from memory, and a file replaced on disk (new
// content, same size, or a new size) is served as it is now.
func TestCachedFileFollowsDisk(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.root, "ipxe.efi")
	check := func(when string, want []byte) {
		t.Helper()
		got, err := fetch(t, f.addr, "ipxe.efi", 1468)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: got %d bytes that differ from the %d on disk", when, len(got), len(want))
		}
	}
	check("first", f.content)
	check("cached", f.content)
	if !f.srv.cache.holds("ipxe.efi") {
		t.Fatal("a served file was not kept")
	}

	// Same size, new content, written in place. File times advance in
	// clock ticks of a few milliseconds: let one pass since the file was
	// written, as it does between real edits.
	waitFileClockPast(t, p)
	changed := bytes.Clone(f.content)
	for i := range changed[:1000] {
		changed[i] ^= 0xff
	}
	if err := os.WriteFile(p, changed, 0o644); err != nil {
		t.Fatal(err)
	}
	check("rewritten in place", changed)

	// Replaced by a rename, with another size.
	bigger := append(bytes.Clone(changed), "more"...)
	tmp := p + ".new"
	if err := os.WriteFile(tmp, bigger, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	check("replaced", bigger)
}

// waitFileClockPast waits until a file written now gets a later mtime
// than p has.
func waitFileClockPast(t *testing.T, p string) {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	probe := filepath.Join(t.TempDir(), "clock")
	for range 1000 {
		if err := os.WriteFile(probe, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		now, err := os.Stat(probe)
		if err != nil {
			t.Fatal(err)
		}
		if now.ModTime().After(st.ModTime()) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("file times did not pass the mtime of %s (%v) within 1000 tries", p, st.ModTime())
}

// The cache stays within its bound, dropping the least recently used file.
func TestFileCacheBound(t *testing.T) {
	dir := t.TempDir()
	c := newFileCache(4000) // files up to 1000 bytes are held
	read := func(name string, size int) bool {
		t.Helper()
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			if err := os.WriteFile(p, bytes.Repeat([]byte(name[:1]), size), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		fh, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		fi, err := fh.Stat()
		if err != nil {
			t.Fatal(err)
		}
		data, ok := c.content(name, fh, fi)
		if ok && !bytes.Equal(data, bytes.Repeat([]byte(name[:1]), size)) {
			t.Fatalf("%s: wrong content", name)
		}
		return ok
	}
	if read("huge", 1001) {
		t.Error("a file over a quarter of the bound was kept")
	}
	for _, n := range []string{"a", "b", "c", "d"} {
		if !read(n, 1000) {
			t.Fatalf("%s not kept", n)
		}
	}
	read("a", 1000) // a is now the most recently used
	if !read("e", 1000) {
		t.Fatal("e not kept")
	}
	if c.total > c.max {
		t.Errorf("cache holds %d bytes, bound %d", c.total, c.max)
	}
	if c.files["b"] != nil || c.files["a"] == nil || c.files["e"] == nil {
		t.Errorf("after the bound was reached, kept %v; want b dropped, a and e kept", keys(c.files))
	}
}

// holds reports whether the content of key is kept.
func (c *fileCache) holds(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.files[key] != nil
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
