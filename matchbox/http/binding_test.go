package http

import (
	"context"
	"io"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/internal/loopback"
	"matchbox.dev/matchbox/reinstall"
	"matchbox.dev/matchbox/render"
	"matchbox.dev/matchbox/storage"
)

// leaseFunc adapts a function to LeaseHolder.
type leaseFunc func(mac string, ip netip.Addr) bool

func (f leaseFunc) HoldsLease(mac string, ip netip.Addr) bool { return f(mac, ip) }

// bindingFixture serves testObjects with an install profile, a machine
// (52:54:00:00:00:01) being reinstalled with token "tok", and lease
// binding where 127.0.0.10 holds that machine's lease.
type bindingFixture struct {
	url string
	db  *storage.DB
	lc  *reinstall.Engine
}

const (
	boundMAC   = "52:54:00:00:00:01"
	leaseAddr  = "127.0.0.10"
	otherAddr  = "127.0.0.66"
	boundToken = "tok"
)

func newBindingFixture(t *testing.T) *bindingFixture {
	t.Helper()
	ctx := context.Background()
	objs := testObjects()
	objs.Profiles = append(objs.Profiles, &matchbox.Profile{ID: "inst", Boot: matchbox.Boot{
		Kernel: "/k", Args: []string{"token={{.reinstall.token}}"}}})
	cat := matchbox.NewCatalog("test")
	cat.Update(ctx, "test", objs)
	db := storage.NewMemory()
	now := time.Now()
	if err := db.SwapWorkflow(ctx, 0, matchbox.Workflow{MAC: boundMAC, State: matchbox.StateBooting, Profile: "inst", Token: boundToken,
		Generation: 1, Requested: now, Entered: now}); err != nil {
		t.Fatal(err)
	}
	lc := reinstall.New(reinstall.Config{Store: db, ProfileExists: func(string) bool { return true }})
	if err := lc.Load(ctx); err != nil {
		t.Fatal(err)
	}
	srv := New(Config{Catalog: cat, Engine: render.NewEngine(render.Options{}), Lifecycle: lc,
		Leases: leaseFunc(func(mac string, ip netip.Addr) bool { return mac == boundMAC && ip == netip.MustParseAddr(leaseAddr) })})
	ts := httptest.NewUnstartedServer(srv.Handler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.Listener = ln
	ts.Start()
	t.Cleanup(ts.Close)
	return &bindingFixture{url: ts.URL, db: db, lc: lc}
}

func do(t *testing.T, c *nethttp.Client, method, url string, body io.Reader) (int, string) {
	t.Helper()
	req, err := nethttp.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Under lease binding, configs and reinstall tokens go only to the holder
// of the machine's lease; the iPXE script of a machine not being
// reinstalled goes to anyone, as it carries no secret.
func TestLeaseBinding(t *testing.T) {
	f := newBindingFixture(t)
	holder, other := loopback.Client(leaseAddr, 10*time.Second), loopback.Client(otherAddr, 10*time.Second)
	for _, tc := range []struct {
		client *nethttp.Client
		path   string
		code   int
		want   string
	}{
		{holder, "/ipxe?mac=" + boundMAC, 200, "token=" + boundToken},
		{other, "/ipxe?mac=" + boundMAC, 403, "not to " + otherAddr},
		{other, "/grub?mac=" + boundMAC, 403, "served only to the address holding its DHCP lease"},
		{holder, "/metadata?mac=" + boundMAC, 200, "REINSTALL_TOKEN=" + boundToken},
		{other, "/metadata?mac=" + boundMAC, 403, "config binding"},
		{holder, "/ignition?mac=" + boundMAC + "&os=installed", 200, `"ignition"`},
		{other, "/ignition?mac=" + boundMAC + "&os=installed", 403, "config binding"},
		{other, "/ignition?mac=52:54:00:00:00:02", 403, "config binding"},
		{other, "/ignition", 403, "names no MAC"},
		{other, "/cloud?mac=" + boundMAC, 403, "config binding"},
		{other, "/generic?mac=" + boundMAC, 403, "config binding"},
		// Not being reinstalled: the script has no secret.
		{other, "/ipxe?mac=52:54:00:00:00:02", 200, "#!ipxe"},
	} {
		code, body := do(t, tc.client, "GET", f.url+tc.path, nil)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s: %d %q, want %d with %q", tc.path, code, body, tc.code, tc.want)
		}
	}
}

// stallingBody sends a little of a body, then nothing until released: a
// server that reads the body before it refuses never answers.
type stallingBody struct {
	sent    bool
	release chan struct{}
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return copy(p, strings.Repeat("x", 1024)), nil
	}
	<-b.release
	return 0, io.EOF
}

// Installers' reports: the sender's address and the token are checked
// before the body is read, and the body is bounded.
func TestReportChecks(t *testing.T) {
	f := newBindingFixture(t)
	holder, other := loopback.Client(leaseAddr, 10*time.Second), loopback.Client(otherAddr, 10*time.Second)
	q := "/lifecycle/report?mac=" + boundMAC + "&status=failed&exit=1&token="
	for _, tc := range []struct {
		client *nethttp.Client
		token  string
		code   int
	}{
		{other, boundToken, 403}, // the right token from the wrong address
		{holder, "guess", 403},   // the right address with a wrong token
	} {
		body := &stallingBody{release: make(chan struct{})}
		req, _ := nethttp.NewRequest("POST", f.url+q+tc.token, io.NopCloser(body))
		req.ContentLength = -1 // chunked: the server cannot tell the size up front
		resp, err := tc.client.Do(req)
		close(body.release)
		if err != nil {
			t.Fatalf("token %q: %v (was the body read before the refusal?)", tc.token, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("token %q: %d, want %d", tc.token, resp.StatusCode, tc.code)
		}
	}
	if w, _ := f.db.Workflow(context.Background(), boundMAC); w.State != matchbox.StateBooting {
		t.Fatalf("refused reports moved the workflow to %s", w.State)
	}
	// Too large a body is refused, and changes nothing.
	code, body := do(t, holder, "POST", f.url+q+boundToken, strings.NewReader(strings.Repeat("x", MaxReportBody+1)))
	if code != 400 || !strings.Contains(body, "over") {
		t.Errorf("large report: %d %q", code, body)
	}
	if w, _ := f.db.Workflow(context.Background(), boundMAC); w.State != matchbox.StateBooting {
		t.Fatalf("a refused report moved the workflow to %s", w.State)
	}
	code, body = do(t, holder, "POST", f.url+q+boundToken, strings.NewReader("the disk is gone\n"))
	if code != 200 || !strings.Contains(body, "failed") {
		t.Errorf("report from the lease holder: %d %q", code, body)
	}
}
