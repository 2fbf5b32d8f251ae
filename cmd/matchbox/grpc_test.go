package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"matchbox.dev/matchbox/api/rpcpb"
	pb "matchbox.dev/matchbox/api/serverpb"
	"matchbox.dev/matchbox/api/storagepb"
)

// rpcClient is a gRPC client of poseidon/matchbox's API, dialled as
// terraform-provider-matchbox dials: TLS 1.2 or newer, the CA as its
// roots, a client certificate, no ServerName (the address's host is
// checked against the server certificate).
type rpcClient struct {
	conn     *grpc.ClientConn
	groups   rpcpb.GroupsClient
	profiles rpcpb.ProfilesClient
	ign      rpcpb.IgnitionClient
	generic  rpcpb.GenericClient
	sel      rpcpb.SelectClient
}

func dialRPC(t testing.TB, addr, caFile, certFile, keyFile string) *rpcClient {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no CA certificate")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if certFile != "" {
		kp, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rpcClient{conn, rpcpb.NewGroupsClient(conn), rpcpb.NewProfilesClient(conn), rpcpb.NewIgnitionClient(conn),
		rpcpb.NewGenericClient(conn), rpcpb.NewSelectClient(conn)}
}

// rpcCtx bounds one call.
func rpcCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantCode fails unless err has the gRPC status code want (and, when
// given, a message containing msg).
func wantCode(t *testing.T, what string, err error, want codes.Code, msg string) {
	t.Helper()
	if st, _ := status.FromError(err); st.Code() != want || !strings.Contains(st.Message(), msg) {
		t.Errorf("%s: %v; want %s %q", what, err, want, msg)
	}
}

// rpcLab is a server with the gRPC API on, its CA and client certificates.
type rpcLab struct {
	s                  *server
	data, db           string
	ca                 *testCA
	caFile             string
	srvCert, srvKey    string
	admin, adminKey    string // no OU, as poseidon/matchbox's certificates
	reader, readerKey  string // OU=read
	adminOU, adminOUKy string // OU=admin
}

func newRPCLab(t *testing.T, data string, args ...string) *rpcLab {
	t.Helper()
	return newRPCLabWith(t, data, func(*rpcLab) []string { return args })
}

// newRPCLabWith is newRPCLab with flags made from the lab's CA and
// certificates.
func newRPCLabWith(t *testing.T, data string, flags func(l *rpcLab) []string) *rpcLab {
	t.Helper()
	l := &rpcLab{data: data, db: filepath.Join(t.TempDir(), "m.db"), ca: newTestCA(t)}
	l.caFile = filepath.Join(l.ca.dir, "ca.pem")
	l.srvCert, l.srvKey = l.ca.issue(t, "server", true)
	l.admin, l.adminKey = l.ca.issue(t, "terraform", false)
	l.reader, l.readerKey = l.ca.issue(t, "viewer", false, "read")
	l.adminOU, l.adminOUKy = l.ca.issue(t, "ops", false, "admin")
	l.start(t, flags(l)...)
	return l
}

func (l *rpcLab) start(t *testing.T, args ...string) {
	t.Helper()
	l.s = startServer(t, nil, append([]string{"-data-path", l.data, "-assets-path", "", "-db-path", l.db,
		"-rpc-address", "127.0.0.1:0", "-cert-file", l.srvCert, "-key-file", l.srvKey, "-ca-file", l.caFile}, args...)...)
	if l.s.rpcAddr == "" {
		t.Fatalf("gRPC API not listening:\n%s", l.s.log.String())
	}
}

// stop ends the server (SIGTERM) and waits for it.
func (l *rpcLab) stop(t *testing.T) {
	t.Helper()
	_ = l.s.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- l.s.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("server did not stop")
	}
}

// restGet reads an admin REST API path with the admin token.
func (l *rpcLab) restGet(t *testing.T, path string) (int, string) {
	t.Helper()
	token, err := os.ReadFile(filepath.Join(l.data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", l.s.apiURL+path, nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	return doRequest(t, req)
}

func doRequest(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

const rawIgnition = `{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/raw","contents":{"source":"data:,raw"}}]}}`

// Every method of every service, with an admin certificate that has no
// OU (as poseidon/matchbox's lab certificates): objects written over gRPC
// are the REST API's objects and the boot endpoints serve them at once,
// data-dir objects are read-only (FailedPrecondition), bad objects
// InvalidArgument with nothing written, missing ones NotFound; the
// objects are still there after a restart.
func TestGRPCAPI(t *testing.T) {
	data := labDataDir(t) // data-dir groups node, other; profiles a, b; ignition base.yaml
	writeFile(t, filepath.Join(data, "generic", "dd.txt"), "from the data dir")
	l := newRPCLab(t, data)
	c := dialRPC(t, l.s.rpcAddr, l.caFile, l.admin, l.adminKey)
	ctx := rpcCtx(t)

	// Ignition: raw Ignition and Butane by name; a bad one is refused.
	if _, err := c.ign.IgnitionPut(ctx, &pb.IgnitionPutRequest{Name: "web.ign", Config: []byte(rawIgnition)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ign.IgnitionPut(ctx, &pb.IgnitionPutRequest{Name: "web.yaml.tmpl", Config: []byte(baseButane)}); err != nil {
		t.Fatal(err)
	}
	if r, err := c.ign.IgnitionGet(ctx, &pb.IgnitionGetRequest{Name: "web.ign"}); err != nil || string(r.GetConfig()) != rawIgnition {
		t.Errorf("IgnitionGet web.ign: %v %q", err, r.GetConfig())
	}
	_, err := c.ign.IgnitionPut(ctx, &pb.IgnitionPutRequest{Name: "bad.ign", Config: []byte(`{"ignition": {"version": "9.9.9"}}`)})
	wantCode(t, "IgnitionPut of bad raw Ignition", err, codes.InvalidArgument, "bad.ign")
	_, err = c.ign.IgnitionPut(ctx, &pb.IgnitionPutRequest{Name: "bad.yaml", Config: []byte("variant: flatcar\nversion: 1.1.0\nstorage: [")})
	wantCode(t, "IgnitionPut of bad Butane", err, codes.InvalidArgument, "bad.yaml")
	for _, n := range []string{"bad.ign", "bad.yaml", "nothing.ign"} {
		_, err = c.ign.IgnitionGet(ctx, &pb.IgnitionGetRequest{Name: n})
		wantCode(t, "IgnitionGet "+n, err, codes.NotFound, n)
	}
	if r, err := c.ign.IgnitionGet(ctx, &pb.IgnitionGetRequest{Name: "base.yaml"}); err != nil || string(r.GetConfig()) != baseButane {
		t.Errorf("IgnitionGet of a data-dir template: %v %q", err, r.GetConfig())
	}
	_, err = c.ign.IgnitionPut(ctx, &pb.IgnitionPutRequest{Name: "base.yaml", Config: []byte(baseButane)})
	wantCode(t, "IgnitionPut of a data-dir template", err, codes.FailedPrecondition, "data dir")

	// Generic templates.
	if _, err := c.generic.GenericPut(ctx, &pb.GenericPutRequest{Name: "web", Config: []byte("motd={{.motd}}")}); err != nil {
		t.Fatal(err)
	}
	if r, err := c.generic.GenericGet(ctx, &pb.GenericGetRequest{Name: "web"}); err != nil || string(r.GetConfig()) != "motd={{.motd}}" {
		t.Errorf("GenericGet: %v %q", err, r.GetConfig())
	}
	if r, err := c.generic.GenericGet(ctx, &pb.GenericGetRequest{Name: "dd.txt"}); err != nil || string(r.GetConfig()) != "from the data dir" {
		t.Errorf("GenericGet of a data-dir template: %v %q", err, r.GetConfig())
	}
	_, err = c.generic.GenericPut(ctx, &pb.GenericPutRequest{Name: "broken", Config: []byte("{{.motd")})
	wantCode(t, "GenericPut of a broken template", err, codes.InvalidArgument, "broken")
	_, err = c.generic.GenericDelete(ctx, &pb.GenericDeleteRequest{Name: "dd.txt"})
	wantCode(t, "GenericDelete of a data-dir template", err, codes.FailedPrecondition, "data dir")

	// Profiles.
	web := &storagepb.Profile{Id: "web", Name: "Web", IgnitionId: "web.yaml.tmpl", GenericId: "web",
		Boot: &storagepb.NetBoot{Kernel: "/assets/vmlinuz", Initrd: []string{"/assets/initrd.cpio.gz"}, Args: []string{"console=ttyS0", "flatcar.first_boot=yes"}}}
	if _, err := c.profiles.ProfilePut(ctx, &pb.ProfilePutRequest{Profile: web}); err != nil {
		t.Fatal(err)
	}
	if r, err := c.profiles.ProfileGet(ctx, &pb.ProfileGetRequest{Id: "web"}); err != nil || r.GetProfile().GetBoot().GetKernel() != "/assets/vmlinuz" ||
		!slices.Equal(r.GetProfile().GetBoot().GetArgs(), web.Boot.Args) || r.GetProfile().GetIgnitionId() != "web.yaml.tmpl" || r.GetProfile().GetGenericId() != "web" || r.GetProfile().GetName() != "Web" {
		t.Errorf("ProfileGet: %v %v", err, r)
	}
	if r, err := c.profiles.ProfileGet(ctx, &pb.ProfileGetRequest{Id: "a"}); err != nil || r.GetProfile().GetBoot() == nil {
		t.Errorf("ProfileGet of a data-dir profile: %v %v", err, r)
	}
	_, err = c.profiles.ProfilePut(ctx, &pb.ProfilePutRequest{Profile: &storagepb.Profile{Id: "a"}})
	wantCode(t, "ProfilePut of a data-dir profile", err, codes.FailedPrecondition, "data dir")
	_, err = c.profiles.ProfilePut(ctx, &pb.ProfilePutRequest{Profile: &storagepb.Profile{Id: "args", Boot: &storagepb.NetBoot{Args: []string{"x={{.motd"}}}})
	wantCode(t, "ProfilePut with a broken argument template", err, codes.InvalidArgument, "boot.args[0]")
	_, err = c.profiles.ProfilePut(ctx, &pb.ProfilePutRequest{})
	wantCode(t, "ProfilePut without a profile", err, codes.InvalidArgument, "no profile")
	if r, err := c.profiles.ProfileList(ctx, &pb.ProfileListRequest{}); err != nil || len(r.GetProfiles()) != 3 {
		t.Errorf("ProfileList: %v %v", err, r)
	}
	_, err = c.profiles.ProfileGet(ctx, &pb.ProfileGetRequest{Id: "args"})
	wantCode(t, "ProfileGet of a refused profile", err, codes.NotFound, "args")

	// Groups.
	grp := &storagepb.Group{Id: "web1", Name: "web one", Profile: "web", Selector: map[string]string{"mac": "52:54:00:aa:00:01"}, Metadata: []byte(`{"motd": "from grpc", "rack": "r1"}`)}
	if _, err := c.groups.GroupPut(ctx, &pb.GroupPutRequest{Group: grp}); err != nil {
		t.Fatal(err)
	}
	// Served at once, by the boot endpoints and the REST API.
	if code, body := fetch(t, l.s.url+"/ipxe?mac=52:54:00:aa:00:01"); code != 200 || !strings.Contains(body, "/assets/vmlinuz") || !strings.Contains(body, "flatcar.first_boot=yes") {
		t.Errorf("/ipxe right after GroupPut: %d %s", code, body)
	}
	if code, body := fetch(t, l.s.url+"/ignition?mac=52:54:00:aa:00:01"); code != 200 || !strings.Contains(body, "from%20grpc") && !strings.Contains(body, "from grpc") {
		t.Errorf("/ignition right after GroupPut: %d %s", code, body)
	}
	if code, body := fetch(t, l.s.url+"/generic?mac=52:54:00:aa:00:01"); code != 200 || body != "motd=from grpc" {
		t.Errorf("/generic: %d %q", code, body)
	}
	if code, body := l.restGet(t, "/api/v1/groups/web1"); code != 200 || !strings.Contains(body, `"source": "api"`) || !strings.Contains(body, "from grpc") {
		t.Errorf("REST GET of a group written over gRPC: %d %s", code, body)
	}
	if code, body := l.restGet(t, "/api/v1/templates/butane/web.yaml.tmpl"); code != 200 || body != baseButane {
		t.Errorf("REST GET of a template written over gRPC: %d %s", code, body)
	}
	r, err := c.groups.GroupGet(ctx, &pb.GroupGetRequest{Id: "web1"})
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]string // as terraform-provider-matchbox reads it
	if err := json.Unmarshal(r.GetGroup().GetMetadata(), &meta); err != nil || meta["motd"] != "from grpc" || meta["rack"] != "r1" ||
		r.GetGroup().GetSelector()["mac"] != "52:54:00:aa:00:01" || r.GetGroup().GetProfile() != "web" || r.GetGroup().GetName() != "web one" {
		t.Errorf("GroupGet: %v %v", err, r)
	}
	if r, err := c.groups.GroupGet(ctx, &pb.GroupGetRequest{Id: "node"}); err != nil || r.GetGroup().GetProfile() != "a" {
		t.Errorf("GroupGet of a data-dir group: %v %v", err, r)
	}
	if r, err := c.groups.GroupList(ctx, &pb.GroupListRequest{}); err != nil || len(r.GetGroups()) != 3 {
		t.Errorf("GroupList: %v %v", err, r)
	}
	for _, bad := range []struct {
		what string
		g    *storagepb.Group
		msg  string
	}{
		{"no profile", &storagepb.Group{Id: "bad"}, "no profile"},
		{"metadata not JSON", &storagepb.Group{Id: "bad", Profile: "web", Metadata: []byte("motd: x")}, "not a JSON object"},
		{"metadata a JSON list", &storagepb.Group{Id: "bad", Profile: "web", Metadata: []byte(`["x"]`)}, "not a JSON object"},
		{"metadata with trailing data", &storagepb.Group{Id: "bad", Profile: "web", Metadata: []byte(`{"a": "b"}}`)}, "trailing data"},
		{"bad MAC selector", &storagepb.Group{Id: "bad", Profile: "web", Selector: map[string]string{"mac": "52:54:00"}}, "52:54:00"},
		{"no id", &storagepb.Group{Profile: "web"}, "no id"},
	} {
		_, err := c.groups.GroupPut(ctx, &pb.GroupPutRequest{Group: bad.g})
		wantCode(t, "GroupPut with "+bad.what, err, codes.InvalidArgument, bad.msg)
	}
	_, err = c.groups.GroupGet(ctx, &pb.GroupGetRequest{Id: "bad"})
	wantCode(t, "GroupGet of a refused group", err, codes.NotFound, "bad")
	_, err = c.groups.GroupPut(ctx, &pb.GroupPutRequest{Group: &storagepb.Group{Id: "node", Profile: "web"}})
	wantCode(t, "GroupPut of a data-dir group", err, codes.FailedPrecondition, "data dir")
	_, err = c.groups.GroupDelete(ctx, &pb.GroupDeleteRequest{Id: "other"})
	wantCode(t, "GroupDelete of a data-dir group", err, codes.FailedPrecondition, "data dir")

	// Select, as the boot endpoints select.
	if r, err := c.sel.SelectGroup(ctx, &pb.SelectGroupRequest{Labels: map[string]string{"mac": "52:54:00:AA:00:01"}}); err != nil || r.GetGroup().GetId() != "web1" {
		t.Errorf("SelectGroup: %v %v", err, r)
	}
	if r, err := c.sel.SelectProfile(ctx, &pb.SelectProfileRequest{Labels: map[string]string{"mac": "52:54:00:aa:00:01"}}); err != nil || r.GetProfile().GetId() != "web" {
		t.Errorf("SelectProfile: %v %v", err, r)
	}
	_, err = c.sel.SelectGroup(ctx, &pb.SelectGroupRequest{Labels: map[string]string{"mac": "52:54:00:ff:ff:ff"}})
	wantCode(t, "SelectGroup without a match", err, codes.NotFound, "no matching group")
	_, err = c.sel.SelectProfile(ctx, &pb.SelectProfileRequest{Labels: map[string]string{"mac": "52:54:00:ff:ff:ff"}})
	wantCode(t, "SelectProfile without a match", err, codes.NotFound, "no matching group")

	// Kept across a restart.
	l.stop(t)
	l.start(t)
	c = dialRPC(t, l.s.rpcAddr, l.caFile, l.adminOU, l.adminOUKy)
	if r, err := c.groups.GroupGet(ctx, &pb.GroupGetRequest{Id: "web1"}); err != nil || r.GetGroup().GetProfile() != "web" {
		t.Errorf("GroupGet after a restart: %v %v", err, r)
	}
	if code, body := fetch(t, l.s.url+"/ipxe?mac=52:54:00:aa:00:01"); code != 200 || !strings.Contains(body, "/assets/vmlinuz") {
		t.Errorf("/ipxe after a restart: %d %s", code, body)
	}

	// Deletes; a second delete, or one of an object never written, is
	// NotFound.
	if _, err := c.groups.GroupDelete(ctx, &pb.GroupDeleteRequest{Id: "web1"}); err != nil {
		t.Fatal(err)
	}
	if code, _ := fetch(t, l.s.url+"/ipxe?mac=52:54:00:aa:00:01"); code != 404 {
		t.Errorf("/ipxe right after GroupDelete: %d", code)
	}
	_, err = c.groups.GroupDelete(ctx, &pb.GroupDeleteRequest{Id: "web1"})
	wantCode(t, "GroupDelete of a missing group", err, codes.NotFound, "web1")
	_, err = c.groups.GroupGet(ctx, &pb.GroupGetRequest{Id: "web1"})
	wantCode(t, "GroupGet of a deleted group", err, codes.NotFound, "web1")
	if _, err := c.profiles.ProfileDelete(ctx, &pb.ProfileDeleteRequest{Id: "web"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.profiles.ProfileDelete(ctx, &pb.ProfileDeleteRequest{Id: "web"})
	wantCode(t, "ProfileDelete of a missing profile", err, codes.NotFound, "web")
	_, err = c.profiles.ProfileDelete(ctx, &pb.ProfileDeleteRequest{Id: "a"})
	wantCode(t, "ProfileDelete of a data-dir profile", err, codes.FailedPrecondition, "data dir")
	for _, n := range []string{"web.ign", "web.yaml.tmpl"} {
		if _, err := c.ign.IgnitionDelete(ctx, &pb.IgnitionDeleteRequest{Name: n}); err != nil {
			t.Fatal(err)
		}
		_, err = c.ign.IgnitionDelete(ctx, &pb.IgnitionDeleteRequest{Name: n})
		wantCode(t, "IgnitionDelete of a missing template", err, codes.NotFound, n)
	}
	if _, err := c.generic.GenericDelete(ctx, &pb.GenericDeleteRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.generic.GenericGet(ctx, &pb.GenericGetRequest{Name: "web"})
	wantCode(t, "GenericGet of a deleted template", err, codes.NotFound, "web")
	if code, body := l.restGet(t, "/api/v1/templates"); code != 200 || strings.Contains(body, "web") {
		t.Errorf("REST templates after the deletes: %d %s", code, body)
	}
}

// Who may call: a certificate of the -ca-file CA (OU=read only reads), no
// one else; and the flags without TLS files refuse to start.
func TestGRPCClientCertificates(t *testing.T) {
	l := newRPCLab(t, t.TempDir())
	ctx := rpcCtx(t)
	put := func(c *rpcClient) error {
		_, err := c.generic.GenericPut(ctx, &pb.GenericPutRequest{Name: "x", Config: []byte("x")})
		return err
	}

	reader := dialRPC(t, l.s.rpcAddr, l.caFile, l.reader, l.readerKey)
	if _, err := reader.groups.GroupList(ctx, &pb.GroupListRequest{}); err != nil {
		t.Errorf("read certificate listing: %v", err)
	}
	wantCode(t, "read certificate writing", put(reader), codes.PermissionDenied, "role read")
	_, err := reader.groups.GroupDelete(ctx, &pb.GroupDeleteRequest{Id: "x"})
	wantCode(t, "read certificate deleting", err, codes.PermissionDenied, "role read")

	other := newTestCA(t)
	strangerCert, strangerKey := other.issue(t, "stranger", false)
	wantCode(t, "certificate of another CA", put(dialRPC(t, l.s.rpcAddr, l.caFile, strangerCert, strangerKey)), codes.Unavailable, "")
	wantCode(t, "no client certificate", put(dialRPC(t, l.s.rpcAddr, l.caFile, "", "")), codes.Unavailable, "")
	// A client that does not trust the server's CA does not talk to it.
	wantCode(t, "server certificate of an unknown CA", put(dialRPC(t, l.s.rpcAddr, filepath.Join(other.dir, "ca.pem"), l.admin, l.adminKey)), codes.Unavailable, "certificate")
	odd, oddKey := l.ca.issue(t, "odd", false, "ops")
	wantCode(t, "certificate whose OU names no role", put(dialRPC(t, l.s.rpcAddr, l.caFile, odd, oddKey)), codes.PermissionDenied, "names no role")
	if code, body := l.restGet(t, "/api/v1/templates/generic"); code != 200 || strings.Contains(body, `"x"`) {
		t.Errorf("a refused write was stored: %d %s", code, body)
	}
	if err := put(dialRPC(t, l.s.rpcAddr, l.caFile, l.admin, l.adminKey)); err != nil {
		t.Errorf("admin certificate: %v", err)
	}
	// Refusals are logged and counted.
	waitFor(t, 10*time.Second, "the failed handshakes logged", func() bool {
		return strings.Contains(l.s.log.String(), "gRPC API TLS handshake failed")
	})
	_, metrics := fetch(t, l.s.url+"/metrics")
	for _, m := range []string{
		`matchbox_grpc_requests_total{code="PermissionDenied",method="/rpcpb.Generic/GenericPut"} 2`,
		`matchbox_grpc_requests_total{code="OK",method="/rpcpb.Generic/GenericPut"} 1`,
		`matchbox_grpc_requests_total{code="OK",method="/rpcpb.Groups/GroupList"} 1`,
		"matchbox_grpc_handshake_failures_total",
	} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	if strings.Contains(metrics, "matchbox_grpc_handshake_failures_total 0") {
		t.Error("no failed handshake counted")
	}

	// -rpc-address without the TLS files (the defaults, missing here, or
	// empty) refuses to start, saying why.
	for _, args := range [][]string{
		{},
		{"-cert-file", "", "-key-file", l.srvKey, "-ca-file", l.caFile},
		{"-cert-file", l.srvCert, "-key-file", l.srvKey, "-ca-file", filepath.Join(t.TempDir(), "none.pem")},
	} {
		code, out := serveRefused(t, append([]string{"-data-path", t.TempDir(), "-db-path", filepath.Join(t.TempDir(), "m.db"), "-address", "127.0.0.1:0",
			"-api-address", "", "-rpc-address", "127.0.0.1:0"}, args...)...)
		if code == 0 || !strings.Contains(out, "served only over TLS with client certificates") {
			t.Errorf("-rpc-address with %q: exit %d\n%s", args, code, out)
		}
	}
	// poseidon/matchbox's gRPC port is the REST API's default one: said.
	code, out := serveRefused(t, "-data-path", t.TempDir(), "-db-path", filepath.Join(t.TempDir(), "m.db"), "-address", "127.0.0.1:0",
		"-rpc-address", "0.0.0.0:8081", "-cert-file", l.srvCert, "-key-file", l.srvKey, "-ca-file", l.caFile)
	if code == 0 || !strings.Contains(out, "-rpc-address 0.0.0.0:8081 and -api-address 127.0.0.1:8081 share a port") {
		t.Errorf("-rpc-address on the REST API's port: exit %d\n%s", code, out)
	}
	// The variables of poseidon/matchbox's unit files work as the flags.
	code, out = serveRefusedEnv(t, []string{"MATCHBOX_RPC_ADDRESS=127.0.0.1:0", "MATCHBOX_CERT_FILE=/nonexistent/server.crt"},
		"-data-path", t.TempDir(), "-db-path", filepath.Join(t.TempDir(), "m.db"), "-address", "127.0.0.1:0", "-api-address", "")
	if code == 0 || !strings.Contains(out, "-cert-file: stat /nonexistent/server.crt") {
		t.Errorf("MATCHBOX_RPC_ADDRESS and MATCHBOX_CERT_FILE: exit %d\n%s", code, out)
	}
}

// tfProvider makes the calls terraform-provider-matchbox makes for its
// matchbox_profile and matchbox_group resources (create, read, delete;
// every attribute forces a replacement, so an update is a delete and a
// create).
type tfProvider struct {
	t   *testing.T
	c   *rpcClient
	ctx context.Context
}

type tfProfile struct {
	name, kernel         string
	initrd, args         []string
	clc, raw, genericCfg string
}

// configName is the Ignition template's name the provider derives.
func (p tfProfile) configName() (string, string) {
	switch {
	case p.clc != "":
		return p.name + ".yaml.tmpl", p.clc
	case p.raw != "":
		return p.name + ".ign", p.raw
	}
	return "", ""
}

func (tf tfProvider) createProfile(p tfProfile) error {
	ignName, ignContent := p.configName()
	genName := ""
	if p.genericCfg != "" {
		genName = p.name
	}
	_, err := tf.c.profiles.ProfilePut(tf.ctx, &pb.ProfilePutRequest{Profile: &storagepb.Profile{Id: p.name,
		Boot: &storagepb.NetBoot{Kernel: p.kernel, Initrd: p.initrd, Args: p.args}, IgnitionId: ignName, GenericId: genName}})
	if err != nil {
		return err
	}
	if ignContent != "" {
		if _, err := tf.c.ign.IgnitionPut(tf.ctx, &pb.IgnitionPutRequest{Name: ignName, Config: []byte(ignContent)}); err != nil {
			return err
		}
	}
	if p.genericCfg != "" {
		if _, err := tf.c.generic.GenericPut(tf.ctx, &pb.GenericPutRequest{Name: genName, Config: []byte(p.genericCfg)}); err != nil {
			return err
		}
	}
	return nil
}

// readProfile is the provider's refresh: false when the resource is gone
// (any error counts as gone).
func (tf tfProvider) readProfile(p tfProfile) bool {
	if _, err := tf.c.profiles.ProfileGet(tf.ctx, &pb.ProfileGetRequest{Id: p.name}); err != nil {
		return false
	}
	if n, content := p.configName(); content != "" {
		if _, err := tf.c.ign.IgnitionGet(tf.ctx, &pb.IgnitionGetRequest{Name: n}); err != nil {
			return false
		}
	}
	if p.genericCfg != "" {
		if _, err := tf.c.generic.GenericGet(tf.ctx, &pb.GenericGetRequest{Name: p.name}); err != nil {
			return false
		}
	}
	return true
}

func (tf tfProvider) deleteProfile(p tfProfile) error {
	if _, err := tf.c.profiles.ProfileDelete(tf.ctx, &pb.ProfileDeleteRequest{Id: p.name}); err != nil {
		return err
	}
	if n, content := p.configName(); content != "" {
		if _, err := tf.c.ign.IgnitionDelete(tf.ctx, &pb.IgnitionDeleteRequest{Name: n}); err != nil {
			return err
		}
	}
	if p.genericCfg != "" {
		if _, err := tf.c.generic.GenericDelete(tf.ctx, &pb.GenericDeleteRequest{Name: p.name}); err != nil {
			return err
		}
	}
	return nil
}

type tfGroup struct {
	name, profile      string
	selector, metadata map[string]string
}

func (tf tfProvider) createGroup(g tfGroup) error {
	meta := map[string]any{}
	for k, v := range g.metadata {
		meta[k] = v
	}
	b, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	_, err = tf.c.groups.GroupPut(tf.ctx, &pb.GroupPutRequest{Group: &storagepb.Group{Id: g.name, Profile: g.profile, Selector: g.selector, Metadata: b}})
	return err
}

// readGroup is the provider's refresh: the group as it reads it back, nil
// when it is gone; an error when it cannot read the answer.
func (tf tfProvider) readGroup(name string) (*tfGroup, error) {
	r, err := tf.c.groups.GroupGet(tf.ctx, &pb.GroupGetRequest{Id: name})
	if err != nil {
		return nil, nil
	}
	var meta map[string]string
	if err := json.Unmarshal(r.GetGroup().GetMetadata(), &meta); err != nil {
		return nil, err
	}
	return &tfGroup{name: name, profile: r.GetGroup().GetProfile(), selector: r.GetGroup().GetSelector(), metadata: meta}, nil
}

func (tf tfProvider) deleteGroup(name string) error {
	_, err := tf.c.groups.GroupDelete(tf.ctx, &pb.GroupDeleteRequest{Id: name})
	return err
}

// With -crl-file, a revoked certificate is refused at the handshake, and
// at its next call on a connection opened before the revocation.
func TestGRPCRevokedCertificate(t *testing.T) {
	crlFile := filepath.Join(t.TempDir(), "ca.crl")
	l := newRPCLabWith(t, t.TempDir(), func(l *rpcLab) []string {
		l.ca.crl(t, crlFile, time.Now().Add(time.Hour), false)
		return []string{"-crl-file", crlFile}
	})
	ctx := rpcCtx(t)
	open := dialRPC(t, l.s.rpcAddr, l.caFile, l.admin, l.adminKey)
	if _, err := open.groups.GroupList(ctx, &pb.GroupListRequest{}); err != nil {
		t.Fatalf("before the revocation: %v", err)
	}
	l.ca.crl(t, crlFile, time.Now().Add(time.Hour), false, l.admin)
	_, err := open.generic.GenericPut(ctx, &pb.GenericPutRequest{Name: "x", Config: []byte("x")})
	wantCode(t, "a call on a connection opened before the revocation", err, codes.PermissionDenied, "is revoked by the CRL")
	_, err = dialRPC(t, l.s.rpcAddr, l.caFile, l.admin, l.adminKey).groups.GroupList(ctx, &pb.GroupListRequest{})
	wantCode(t, "a new connection with the revoked certificate", err, codes.Unavailable, "")
	if _, err := dialRPC(t, l.s.rpcAddr, l.caFile, l.reader, l.readerKey).groups.GroupList(ctx, &pb.GroupListRequest{}); err != nil {
		t.Errorf("a certificate not revoked: %v", err)
	}
	waitFor(t, 10*time.Second, "the refused handshake logged", func() bool {
		return strings.Contains(l.s.log.String(), "gRPC API TLS handshake refused: client certificate revoked")
	})
}

// A renewed server certificate is served from the next handshake on,
// without a restart; one that does not load leaves the old one served.
func TestGRPCServerCertificateRenewed(t *testing.T) {
	l := newRPCLab(t, t.TempDir())
	served := func() string {
		t.Helper()
		pemCA, _ := os.ReadFile(l.caFile)
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pemCA)
		kp, err := tls.LoadX509KeyPair(l.admin, l.adminKey)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.Dial("tcp", l.s.rpcAddr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{kp}, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "server" {
		t.Fatalf("served %q", cn)
	}
	// Renewed in place, as a certificate manager does: both files
	// rewritten.
	newCert, newKey := l.ca.issue(t, "server-renewed", true)
	later := time.Now().Add(time.Minute)
	for _, f := range [][2]string{{newCert, l.srvCert}, {newKey, l.srvKey}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, f[1], string(b))
		os.Chtimes(f[1], later, later)
	}
	if cn := served(); cn != "server-renewed" {
		t.Errorf("after the renewal: served %q", cn)
	}
	// A broken certificate file: the one before stays.
	writeFile(t, l.srvCert, "not a certificate")
	os.Chtimes(l.srvCert, later.Add(time.Minute), later.Add(time.Minute))
	if cn := served(); cn != "server-renewed" {
		t.Errorf("after a broken renewal: served %q", cn)
	}
	waitFor(t, 10*time.Second, "the broken renewal logged", func() bool {
		return strings.Contains(l.s.log.String(), "gRPC API certificate files changed but do not load")
	})
}

// A terraform apply, refresh, two replacing updates and a destroy, as
// terraform-provider-matchbox makes them over gRPC, with a Butane
// (container_linux_config) and then a raw Ignition profile; the machine
// boots through /ipxe and /ignition after each step. While a profile is
// replaced, its group names a profile that does not exist: the machine
// gets 404, never the default group.
func TestGRPCTerraformSequence(t *testing.T) {
	data := t.TempDir()
	writeFile(t, filepath.Join(data, "profiles", "install.json"), profileJSON("install", "/assets/installer"))
	writeFile(t, filepath.Join(data, "ignition", "base.yaml"), baseButane)
	writeFile(t, filepath.Join(data, "groups", "default.json"), `{"id": "default", "profile": "install", "metadata": {"motd": "installer"}}`)
	l := newRPCLab(t, data)
	tf := tfProvider{t, dialRPC(t, l.s.rpcAddr, l.caFile, l.admin, l.adminKey), rpcCtx(t)}
	mac, mac2 := "52:54:00:b0:00:01", "52:54:00:b0:00:02"
	boot := func(step, m, kernel, ignition string) {
		t.Helper()
		if code, body := fetch(t, l.s.url+"/ipxe?mac="+m); code != 200 || !strings.Contains(body, kernel) {
			t.Errorf("%s: /ipxe?mac=%s: %d %s", step, m, code, body)
		}
		if code, body := fetch(t, l.s.url+"/ignition?mac="+m); code != 200 || !strings.Contains(body, ignition) {
			t.Errorf("%s: /ignition?mac=%s: %d %s", step, m, code, body)
		}
	}

	// terraform apply: the profile (Butane with a template action), then
	// the group that names it.
	butane := "variant: flatcar\nversion: 1.1.0\nstorage:\n  files:\n    - path: /etc/hostname\n      contents:\n        inline: {{.hostname}}\n"
	worker := tfProfile{name: "worker", kernel: "/assets/flatcar/vmlinuz", initrd: []string{"/assets/flatcar/initrd.cpio.gz"},
		args: []string{"initrd=flatcar_production_pxe_image.cpio.gz", "flatcar.first_boot=yes", "ignition.config.url=http://matchbox/ignition?mac=${mac:hexhyp}"},
		clc:  butane, genericCfg: "role={{.role}}"}
	if err := tf.createProfile(worker); err != nil {
		t.Fatal(err)
	}
	node := tfGroup{name: "node1", profile: "worker", selector: map[string]string{"mac": mac}, metadata: map[string]string{"hostname": "node1.example", "role": "worker"}}
	if err := tf.createGroup(node); err != nil {
		t.Fatal(err)
	}
	boot("apply", mac, "/assets/flatcar/vmlinuz", "node1.example")
	if code, body := fetch(t, l.s.url+"/generic?mac="+mac); code != 200 || body != "role=worker" {
		t.Errorf("/generic: %d %q", code, body)
	}

	// terraform plan: a refresh finds both as written.
	if !tf.readProfile(worker) {
		t.Error("refresh: profile gone")
	}
	if g, err := tf.readGroup("node1"); err != nil || g == nil || g.profile != "worker" || g.selector["mac"] != mac || g.metadata["hostname"] != "node1.example" {
		t.Errorf("refresh: group %+v, %v", g, err)
	}

	// The profile changes to raw Ignition: replaced (destroyed, then
	// created), the group untouched.
	if err := tf.deleteProfile(worker); err != nil {
		t.Fatalf("replacing the profile: delete: %v", err)
	}
	if code, body := fetch(t, l.s.url+"/ipxe?mac="+mac); code != 404 || strings.Contains(body, "installer") {
		t.Errorf("while the profile is replaced: /ipxe %d %s (want 404, not the default group)", code, body)
	}
	worker2 := worker
	worker2.clc, worker2.raw = "", rawIgnition
	if err := tf.createProfile(worker2); err != nil {
		t.Fatalf("replacing the profile: create: %v", err)
	}
	boot("profile replaced", mac, "/assets/flatcar/vmlinuz", "/etc/raw")
	if _, err := tf.c.ign.IgnitionGet(tf.ctx, &pb.IgnitionGetRequest{Name: "worker.yaml.tmpl"}); status.Code(err) != codes.NotFound {
		t.Errorf("the replaced profile's Butane template: %v", err)
	}

	// The group's selector and metadata change: replaced.
	if err := tf.deleteGroup("node1"); err != nil {
		t.Fatal(err)
	}
	node.selector = map[string]string{"mac": mac2}
	node.metadata["hostname"] = "node1b.example"
	if err := tf.createGroup(node); err != nil {
		t.Fatal(err)
	}
	boot("group replaced", mac2, "/assets/flatcar/vmlinuz", "/etc/raw")
	boot("group replaced: the old MAC", mac, "/assets/installer", "")
	if g, err := tf.readGroup("node1"); err != nil || g == nil || g.selector["mac"] != mac2 || g.metadata["hostname"] != "node1b.example" {
		t.Errorf("refresh after the replace: group %+v, %v", g, err)
	}

	// terraform destroy: the group, then the profile.
	if err := tf.deleteGroup("node1"); err != nil {
		t.Fatal(err)
	}
	if err := tf.deleteProfile(worker2); err != nil {
		t.Fatal(err)
	}
	if tf.readProfile(worker2) {
		t.Error("refresh after destroy: the profile is still there")
	}
	if g, err := tf.readGroup("node1"); err != nil || g != nil {
		t.Errorf("refresh after destroy: group %+v, %v", g, err)
	}
	boot("destroyed", mac2, "/assets/installer", "")
	if code, body := l.restGet(t, "/api/v1/templates"); code != 200 || strings.Contains(body, "worker") {
		t.Errorf("templates left after destroy: %d %s", code, body)
	}
}
