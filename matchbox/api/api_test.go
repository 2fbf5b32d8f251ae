package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/api"
	"matchbox.dev/matchbox/render"
	"matchbox.dev/matchbox/storage"
)

type fixture struct {
	dir     string
	url     string
	admin   string
	db      *storage.DB
	catalog *matchbox.Catalog
	handler http.Handler
}

// newFixture runs the API over real HTTP on loopback, on a store in
// memory, with a data dir source holding a read-only group and profile;
// opts change the API's configuration before it starts.
func newFixture(t *testing.T, opts ...func(*api.Config, *storage.DB)) *fixture {
	t.Helper()
	dir := t.TempDir()
	db := storage.NewMemory()
	cat := matchbox.NewCatalog("datadir", "db")
	ctx := context.Background()
	cat.Update(ctx, "datadir", matchbox.Objects{
		Groups:   []*matchbox.Group{{ID: "filegroup", Profile: "fileprofile", Origin: "/data/groups/filegroup.json"}},
		Profiles: []*matchbox.Profile{{ID: "fileprofile", Origin: "/data/profiles/fileprofile.json"}},
	})
	file, err := api.EnsureAdminToken(ctx, db, "", filepath.Join(dir, "admin.token"), nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file %s: %v, mode %v", file, err, st.Mode())
	}
	secret, _ := os.ReadFile(file)
	key, _, err := storage.LoadOrCreateSecretKey(filepath.Join(dir, "secret.key"))
	if err != nil {
		t.Fatal(err)
	}
	db.SetSecretKey(key)
	cfg := api.Config{Store: db, Machines: db, BMC: db, Engine: render.NewEngine(render.Options{}), BootHost: "boot.example:8080", Catalog: cat, Reload: func(ctx context.Context) error {
		_, err := cat.Reload(ctx, "db", db.Objects)
		return err
	}}
	for _, o := range opts {
		o(&cfg, db)
	}
	srv, err := api.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return &fixture{dir: dir, url: ts.URL, admin: strings.TrimSpace(string(secret)), db: db, catalog: cat, handler: srv.Handler()}
}

type reply struct {
	code int
	body map[string]any
	raw  string
	etag string
}

func (f *fixture) do(t *testing.T, method, path, token string, body any, hdr ...string) reply {
	t.Helper()
	r, _ := f.doHeader(t, method, path, token, body, hdr...)
	return r
}

// doHeader is do that also returns the answer's header.
func (f *fixture) doHeader(t *testing.T, method, path, token string, body any, hdr ...string) (reply, http.Header) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{code: resp.StatusCode, raw: string(raw), etag: resp.Header.Get("ETag")}
	_ = json.Unmarshal(raw, &r.body)
	return r, resp.Header
}

func TestGroupLifecycle(t *testing.T) {
	f := newFixture(t)
	// A profile, then a group using it; the boot side sees it at once.
	if r := f.do(t, "PUT", "/api/v1/profiles/live", f.admin, map[string]any{"boot": map[string]any{"kernel": "/assets/k"}}); r.code != 201 || r.etag == "" {
		t.Fatalf("create profile: %d %s", r.code, r.raw)
	}
	r := f.do(t, "PUT", "/api/v1/groups/node1", f.admin, map[string]any{"profile": "live", "selector": map[string]string{"mac": "52-54-00-00-00-01"}})
	if r.code != 201 || r.etag == "" {
		t.Fatalf("create group: %d %s", r.code, r.raw)
	}
	sel, err := f.catalog.Snapshot().Select(map[string]string{"mac": "52:54:00:00:00:01"})
	if err != nil || sel.Group == nil || sel.Group.ID != "node1" || sel.Profile.ID != "live" {
		t.Fatalf("boot selection after the write: %+v, %v", sel, err)
	}
	// Read back, with the same ETag and the MAC normalised.
	g := f.do(t, "GET", "/api/v1/groups/node1", f.admin, nil)
	if g.code != 200 || g.etag != r.etag || g.body["selector"].(map[string]any)["mac"] != "52:54:00:00:00:01" || g.body["source"] != "api" {
		t.Fatalf("get group: %d %s etag %s (want %s)", g.code, g.raw, g.etag, r.etag)
	}
	// A conditional update with the current ETag works; with the old one
	// it is refused and changes nothing.
	u := f.do(t, "PUT", "/api/v1/groups/node1", f.admin, map[string]any{"profile": "live", "name": "renamed"}, "If-Match", r.etag)
	if u.code != 200 || u.etag == r.etag {
		t.Fatalf("conditional update: %d %s", u.code, u.raw)
	}
	stale := f.do(t, "PUT", "/api/v1/groups/node1", f.admin, map[string]any{"profile": "live", "name": "lost"}, "If-Match", r.etag)
	if stale.code != 412 || stale.body["code"] != "precondition_failed" {
		t.Fatalf("stale update: %d %s", stale.code, stale.raw)
	}
	if got, _, _ := f.db.GroupVersion(context.Background(), "node1"); got.Name != "renamed" {
		t.Errorf("after a refused stale write the group is %+v", got)
	}
	if c := f.do(t, "PUT", "/api/v1/groups/node1", f.admin, map[string]any{"profile": "live"}, "If-None-Match", "*"); c.code != 412 {
		t.Errorf("create-only over an existing group: %d %s", c.code, c.raw)
	}
	// The profile is in use.
	if d := f.do(t, "DELETE", "/api/v1/profiles/live", f.admin, nil); d.code != 409 || d.body["code"] != "in_use" {
		t.Errorf("delete a used profile: %d %s", d.code, d.raw)
	}
	if d := f.do(t, "DELETE", "/api/v1/groups/node1", f.admin, nil); d.code != 204 {
		t.Fatalf("delete group: %d %s", d.code, d.raw)
	}
	// The data dir's group has no selector: it is the default group.
	if sel, _ := f.catalog.Snapshot().Select(map[string]string{"mac": "52:54:00:00:00:01"}); sel.Group == nil || sel.Group.ID != "filegroup" {
		t.Errorf("after the delete the machine gets %+v, want the default group", sel.Group)
	}
	if d := f.do(t, "GET", "/api/v1/groups/node1", f.admin, nil); d.code != 404 || d.body["code"] != "not_found" {
		t.Errorf("get a deleted group: %d %s", d.code, d.raw)
	}
}

func TestRefusals(t *testing.T) {
	f := newFixture(t)
	big := strings.Repeat("x", 2<<20)
	for _, tt := range []struct {
		name, method, path string
		body               any
		code               int
		errCode            string
	}{
		{"bad json", "PUT", "/api/v1/groups/g", `{"profile": `, 400, "invalid_json"},
		{"unknown field", "PUT", "/api/v1/groups/g", `{"profile": "fileprofile", "selectors": {}}`, 400, "invalid_json"},
		{"trailing data", "PUT", "/api/v1/groups/g", `{"profile": "fileprofile"} {}`, 400, "invalid_json"},
		{"too large", "PUT", "/api/v1/groups/g", `{"profile": "fileprofile", "name": "` + big + `"}`, 413, "too_large"},
		{"invalid mac", "PUT", "/api/v1/groups/g", map[string]any{"profile": "fileprofile", "selector": map[string]string{"mac": "zz"}}, 400, "invalid"},
		{"missing profile", "PUT", "/api/v1/groups/g", map[string]any{"profile": "nope"}, 400, "invalid_reference"},
		{"id mismatch", "PUT", "/api/v1/groups/g", map[string]any{"id": "other", "profile": "fileprofile"}, 400, "invalid"},
		{"data dir group", "PUT", "/api/v1/groups/filegroup", map[string]any{"profile": "fileprofile"}, 409, "conflict"},
		{"delete data dir group", "DELETE", "/api/v1/groups/filegroup", nil, 409, "conflict"},
		{"missing template", "PUT", "/api/v1/profiles/p", map[string]any{"ignition_id": "nope.yaml"}, 400, "invalid_reference"},
		{"data dir profile", "PUT", "/api/v1/profiles/fileprofile", map[string]any{}, 409, "conflict"},
		{"bad role", "POST", "/api/v1/tokens", map[string]any{"name": "x", "role": "root"}, 400, "invalid"},
		{"no such path", "GET", "/api/v1/nothing", nil, 404, "not_found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := f.do(t, tt.method, tt.path, f.admin, tt.body)
			if r.code != tt.code || r.body["code"] != tt.errCode || r.body["message"] == "" {
				t.Errorf("%s %s: %d %.300s, want %d with code %q", tt.method, tt.path, r.code, r.raw, tt.code, tt.errCode)
			}
		})
	}
	objs, err := f.db.Objects(context.Background())
	if err != nil || len(objs.Groups)+len(objs.Profiles)+len(objs.Templates) != 0 {
		t.Errorf("refused writes changed the store: %+v, %v", objs, err)
	}
	// The data dir's objects are readable and marked read-only.
	if r := f.do(t, "GET", "/api/v1/groups/filegroup", f.admin, nil); r.code != 200 || r.body["read_only"] != true {
		t.Errorf("get data dir group: %d %s", r.code, r.raw)
	}
}

func TestTokens(t *testing.T) {
	f := newFixture(t)
	write := map[string]any{"profile": "fileprofile"}
	// No token, a wrong token: 401.
	if r := f.do(t, "GET", "/api/v1/groups", "", nil); r.code != 401 || r.body["code"] != "unauthenticated" {
		t.Errorf("no token: %d %s", r.code, r.raw)
	}
	if r := f.do(t, "PUT", "/api/v1/groups/g", "mbx_wrong", write); r.code != 401 {
		t.Errorf("wrong token: %d %s", r.code, r.raw)
	}
	// A read token reads but cannot write.
	c := f.do(t, "POST", "/api/v1/tokens", f.admin, map[string]any{"name": "ci", "role": "read"})
	readTok, _ := c.body["token"].(string)
	if c.code != 201 || readTok == "" {
		t.Fatalf("create token: %d %s", c.code, c.raw)
	}
	if r := f.do(t, "GET", "/api/v1/groups", readTok, nil); r.code != 200 {
		t.Errorf("read token reading: %d %s", r.code, r.raw)
	}
	if r := f.do(t, "PUT", "/api/v1/groups/g", readTok, write); r.code != 403 || r.body["code"] != "forbidden" {
		t.Errorf("read token writing: %d %s", r.code, r.raw)
	}
	if r := f.do(t, "POST", "/api/v1/tokens", readTok, map[string]any{"name": "escalate", "role": "admin"}); r.code != 403 {
		t.Errorf("read token creating a token: %d %s", r.code, r.raw)
	}
	// Token secrets are never listed; a second token with the same name
	// is refused.
	l := f.do(t, "GET", "/api/v1/tokens", f.admin, nil)
	if l.code != 200 || strings.Contains(l.raw, readTok) || strings.Contains(l.raw, f.admin) || strings.Contains(l.raw, "hash") || !strings.Contains(l.raw, `"ci"`) {
		t.Errorf("token list: %d %s", l.code, l.raw)
	}
	if r := f.do(t, "POST", "/api/v1/tokens", f.admin, map[string]any{"name": "ci", "role": "admin"}); r.code != 409 {
		t.Errorf("duplicate token name: %d %s", r.code, r.raw)
	}
	// A revoked token stops working at once.
	if r := f.do(t, "DELETE", "/api/v1/tokens/ci", f.admin, nil); r.code != 204 {
		t.Fatalf("revoke: %d %s", r.code, r.raw)
	}
	if r := f.do(t, "GET", "/api/v1/groups", readTok, nil); r.code != 401 {
		t.Errorf("revoked token: %d %s", r.code, r.raw)
	}
	objs, _ := f.db.Objects(context.Background())
	if len(objs.Groups) != 0 {
		t.Errorf("refused writes stored groups: %+v", objs.Groups)
	}
}

// Concurrent writers that each read the group, change it and write it back
// with If-Match: every accepted write is based on the one before it, so no
// update is lost, and the final state is the count of accepted writes.
func TestConcurrentWritersLoseNothing(t *testing.T) {
	f := newFixture(t)
	if r := f.do(t, "PUT", "/api/v1/groups/counter", f.admin, map[string]any{"profile": "fileprofile", "metadata": map[string]any{"n": 0}}); r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.raw)
	}
	const writers, rounds = 8, 15
	var mu sync.Mutex
	accepted, refused := 0, 0
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				g := f.do(t, "GET", "/api/v1/groups/counter", f.admin, nil)
				n := g.body["metadata"].(map[string]any)["n"].(float64)
				r := f.do(t, "PUT", "/api/v1/groups/counter", f.admin,
					map[string]any{"profile": "fileprofile", "metadata": map[string]any{"n": n + 1}}, "If-Match", g.etag)
				mu.Lock()
				switch r.code {
				case 200:
					accepted++
				case 412:
					refused++
				default:
					t.Errorf("write: %d %s", r.code, r.raw)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	g, _, err := f.db.GroupVersion(context.Background(), "counter")
	if err != nil {
		t.Fatal(err)
	}
	if got := g.MetadataMap()["n"]; fmt.Sprint(got) != fmt.Sprint(accepted) {
		t.Errorf("final n = %v after %d accepted writes (%d refused): an update was lost", got, accepted, refused)
	}
	if accepted == 0 || accepted+refused != writers*rounds {
		t.Errorf("accepted %d, refused %d of %d", accepted, refused, writers*rounds)
	}
}

func TestAdminTokenFile(t *testing.T) {
	dir := t.TempDir()
	db := storage.NewMemory()
	ctx := context.Background()
	def := filepath.Join(dir, "admin.token")
	if _, err := api.EnsureAdminToken(ctx, db, "", def, nil); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(def)
	// A restart keeps the same token.
	if _, err := api.EnsureAdminToken(ctx, db, "", def, nil); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(def); !bytes.Equal(first, again) {
		t.Error("restart replaced the admin token")
	}
	// -api-token-file replaces it.
	given := filepath.Join(dir, "given")
	os.WriteFile(given, []byte("mbx_given_token_0123456789\n"), 0o600)
	if _, err := api.EnsureAdminToken(ctx, db, given, def, nil); err != nil {
		t.Fatal(err)
	}
	ts, _ := db.Tokens(ctx)
	if len(ts) != 1 || ts[0].Hash != api.HashSecret("mbx_given_token_0123456789") || ts[0].Role != matchbox.RoleAdmin {
		t.Errorf("tokens after -api-token-file: %+v", ts)
	}
	os.WriteFile(given, []byte("short"), 0o600)
	if _, err := api.EnsureAdminToken(ctx, db, given, def, nil); err == nil || !strings.Contains(err.Error(), "16") {
		t.Errorf("short token file: %v", err)
	}
}

func (f *fixture) raw(t *testing.T, method, path, body string, hdr ...string) reply {
	t.Helper()
	return f.do(t, method, path, f.admin, body, hdr...)
}

func TestTemplates(t *testing.T) {
	f := newFixture(t)
	butane := "variant: flatcar\nversion: 1.0.0\nstorage:\n  files:\n    - path: /etc/hostname\n      contents:\n        inline: {{.hostname}}\n"
	if r := f.raw(t, "PUT", "/api/v1/templates/butane/node.yaml", butane); r.code != 201 || r.etag == "" {
		t.Fatalf("put butane: %d %s", r.code, r.raw)
	}
	req, _ := http.NewRequest("GET", f.url+"/api/v1/templates/butane/node.yaml", nil)
	req.Header.Set("Authorization", "Bearer "+f.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != butane || resp.Header.Get("ETag") == "" {
		t.Errorf("get butane: %d %q", resp.StatusCode, got)
	}
	if r := f.do(t, "PUT", "/api/v1/profiles/node", f.admin, map[string]any{"ignition_id": "node.yaml"}); r.code != 201 {
		t.Fatalf("profile naming the template: %d %s", r.code, r.raw)
	}
	if _, ok := f.catalog.Snapshot().Template(matchbox.KindIgnition, "node.yaml"); !ok {
		t.Error("the boot side does not see the template")
	}
	for _, tt := range []struct{ name, path, body, code, want string }{
		{"butane error", "/api/v1/templates/butane/bad.yaml", "variant: flatcar\nversion: 1.0.0\nstorage:\n  files:\n    - path: relative\n", "invalid_template", "line 5 col 13: path not absolute"},
		{"template syntax", "/api/v1/templates/generic/env", "A={{.a", "invalid_template", "unclosed action"},
		{"raw ignition invalid", "/api/v1/templates/ignition/x.ign", `{"ignition": {"version": "9.9.9"}}`, "invalid_template", "version"},
		{"raw name as butane", "/api/v1/templates/butane/x.ign", "{}", "invalid", "kind ignition"},
		{"unknown kind", "/api/v1/templates/shell/x", "echo", "invalid", "kind"},
		{"list of an unknown kind", "/api/v1/templates/shell", "", "invalid", "kind"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			method := "PUT"
			if tt.body == "" {
				method = "GET"
			}
			r := f.raw(t, method, tt.path, tt.body)
			if r.code != 400 || r.body["code"] != tt.code || !strings.Contains(fmt.Sprint(r.body["message"]), tt.want) {
				t.Errorf("%s: %d %s, want 400 %s mentioning %q", tt.path, r.code, r.raw, tt.code, tt.want)
			}
		})
	}
	if r := f.do(t, "PUT", "/api/v1/profiles/args", f.admin, map[string]any{"boot": map[string]any{"kernel": "/k", "args": []string{"x={{.y"}}}); r.code != 400 || r.body["code"] != "invalid_template" {
		t.Errorf("profile with a broken boot arg template: %d %s", r.code, r.raw)
	}
	if r := f.raw(t, "DELETE", "/api/v1/templates/butane/node.yaml", ""); r.code != 409 || r.body["code"] != "in_use" {
		t.Errorf("delete a template in use: %d %s", r.code, r.raw)
	}
	l := f.do(t, "GET", "/api/v1/templates/butane", f.admin, nil)
	if l.code != 200 || !strings.Contains(l.raw, `"node.yaml"`) || strings.Contains(l.raw, "hostname") {
		t.Errorf("list templates: %d %s", l.code, l.raw)
	}
	// A path with .. is cleaned (and redirected) by the router, never
	// stored under a name with .. in it.
	f.raw(t, "PUT", "/api/v1/templates/generic/a/../../b", "x")
	objs, _ := f.db.Objects(context.Background())
	if len(objs.Templates) != 1 {
		t.Errorf("refused template writes were stored: %d templates", len(objs.Templates))
	}
}

func TestMachines(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := time.Now().UTC()
	var events []matchbox.Event
	for i := range 30 {
		g := "rack-a"
		if i%3 == 0 {
			g = "rack-b"
		}
		events = append(events, matchbox.Event{Time: now.Add(-time.Duration(i) * time.Hour), MAC: fmt.Sprintf("52:54:00:00:00:%02x", i),
			Kind: matchbox.EventHTTPServed, File: "/ipxe", Group: g, Profile: "p", Arch: "x86_64", IP: "10.0.0.9"})
	}
	events = append(events, matchbox.Event{Time: now, MAC: "52:54:00:00:00:01", Kind: matchbox.EventTFTPSent, File: "ipxe.efi"})
	if _, err := f.db.RecordEvents(ctx, events); err != nil {
		t.Fatal(err)
	}
	list := func(q string) reply { return f.do(t, "GET", "/api/v1/machines"+q, f.admin, nil) }
	if r := list(""); r.code != 200 || len(r.body["items"].([]any)) != 30 || r.body["next"] != nil {
		t.Fatalf("list: %d %.300s", r.code, r.raw)
	}
	if r := list("?group=rack-b"); len(r.body["items"].([]any)) != 10 {
		t.Errorf("group filter: %d items", len(r.body["items"].([]any)))
	}
	if r := list("?seen_within=4h30m"); len(r.body["items"].([]any)) != 5 {
		t.Errorf("seen_within filter: %.300s", r.raw)
	}
	// Pages: 12 + 12 + 6, following next.
	seen, after := 0, ""
	for range 5 {
		r := list("?limit=12&after=" + after)
		seen += len(r.body["items"].([]any))
		next, _ := r.body["next"].(string)
		if next == "" {
			break
		}
		after = next
	}
	if seen != 30 {
		t.Errorf("paging saw %d machines, want 30", seen)
	}
	for _, bad := range []string{"?limit=0", "?limit=x", "?seen_within=yesterday", "?label=nokey", "?after=zz"} {
		if r := list(bad); r.code != 400 {
			t.Errorf("list%s: %d %s", bad, r.code, r.raw)
		}
	}
	// One machine with its history; labels; the label filter.
	g := f.do(t, "GET", "/api/v1/machines/52-54-00-00-00-01", f.admin, nil)
	if g.code != 200 || len(g.body["events"].([]any)) != 2 || g.body["machine"].(map[string]any)["mac"] != "52:54:00:00:00:01" {
		t.Fatalf("get machine: %d %s", g.code, g.raw)
	}
	if r := f.do(t, "PUT", "/api/v1/machines/52:54:00:00:00:01/labels", f.admin, map[string]any{"labels": map[string]string{"rack": "r7"}}); r.code != 200 {
		t.Fatalf("set labels: %d %s", r.code, r.raw)
	}
	if r := list("?label=rack=r7"); len(r.body["items"].([]any)) != 1 {
		t.Errorf("label filter: %s", r.raw)
	}
	if r := f.do(t, "GET", "/api/v1/machines/52:54:00:00:00:01/events?since="+now.Add(-time.Minute).Format(time.RFC3339Nano), f.admin, nil); len(r.body["items"].([]any)) != 1 {
		t.Errorf("events since a minute ago: %s", r.raw)
	}
	if r := f.do(t, "GET", "/api/v1/machines/52:54:00:ff:ff:ff", f.admin, nil); r.code != 404 {
		t.Errorf("unknown machine: %d", r.code)
	}
	if r := f.do(t, "DELETE", "/api/v1/machines/52:54:00:00:00:01", f.admin, nil); r.code != 204 {
		t.Fatalf("delete: %d %s", r.code, r.raw)
	}
	// Seen again, the machine starts a new history.
	if _, err := f.db.RecordEvents(ctx, []matchbox.Event{{Time: now, MAC: "52:54:00:00:00:01", Kind: matchbox.EventDHCPDiscover}}); err != nil {
		t.Fatal(err)
	}
	if evs, err := f.db.MachineEvents(ctx, "52:54:00:00:00:01"); err != nil || len(evs) != 1 {
		t.Errorf("history of a deleted machine seen again: %+v, %v", evs, err)
	}
}

func TestPreview(t *testing.T) {
	f := newFixture(t)
	f.raw(t, "PUT", "/api/v1/templates/butane/node.yaml", "variant: flatcar\nversion: 1.0.0\nstorage:\n  files:\n    - path: /etc/hostname\n      contents:\n        inline: {{.hostname}}\n")
	f.do(t, "PUT", "/api/v1/profiles/node", f.admin, map[string]any{"ignition_id": "node.yaml",
		"boot": map[string]any{"kernel": "/assets/k", "args": []string{"ignition.config.url=http://{{.request.host}}/ignition?mac=${mac}"}}})
	f.do(t, "PUT", "/api/v1/groups/n1", f.admin, map[string]any{"profile": "node", "selector": map[string]string{"mac": "52:54:00:00:00:07"}, "metadata": map[string]any{"hostname": "n1"}})
	r := f.do(t, "GET", "/api/v1/machines/52-54-00-00-00-07/preview?arch=x86_64", f.admin, nil)
	if r.code != 200 || r.body["group"] != "n1" || r.body["profile"] != "node" || !strings.Contains(fmt.Sprint(r.body["ipxe"]), "http://boot.example:8080/ignition") || r.body["problems"] != nil {
		t.Fatalf("preview: %d %s", r.code, r.raw)
	}
	if ign, _ := json.Marshal(r.body["ignition"]); !strings.Contains(string(ign), "data:,n1") {
		t.Errorf("preview ignition: %s", ign)
	}
	// The default group of the data dir catches other machines; its profile
	// has nothing to render.
	if r := f.do(t, "GET", "/api/v1/machines/52:54:00:00:00:08/preview", f.admin, nil); r.code != 200 || r.body["group"] != "filegroup" {
		t.Errorf("preview of another machine: %d %s", r.code, r.raw)
	}
	// Nothing was recorded.
	if _, err := f.db.GetMachine(context.Background(), "52:54:00:00:00:07"); err == nil {
		t.Error("a preview created a machine record")
	}
}

func TestBMCSettings(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.db.RecordEvents(ctx, []matchbox.Event{{MAC: "52:54:00:00:00:09", Kind: matchbox.EventDHCPDiscover}}); err != nil {
		t.Fatal(err)
	}
	const pw = "hunter2-but-longer"
	path := "/api/v1/machines/52:54:00:00:00:09/bmc"
	r := f.do(t, "PUT", path, f.admin, map[string]any{"address": "10.0.0.9", "provider": "redfish", "username": "root", "password": pw})
	if r.code != 200 || r.body["password_set"] != true || strings.Contains(r.raw, pw) {
		t.Fatalf("set BMC: %d %s", r.code, r.raw)
	}
	for _, p := range []string{path, "/api/v1/machines/52:54:00:00:00:09", "/api/v1/machines"} {
		if r := f.do(t, "GET", p, f.admin, nil); r.code != 200 || strings.Contains(r.raw, pw) || !strings.Contains(r.raw, "10.0.0.9") && p != "/api/v1/machines" {
			t.Errorf("GET %s: %d %s", p, r.code, r.raw)
		}
	}
	if r := f.do(t, "PUT", path, f.admin, map[string]any{"address": "10.0.0.9", "provider": "telnet"}); r.code != 400 {
		t.Errorf("unknown provider: %d %s", r.code, r.raw)
	}
	c := f.do(t, "POST", "/api/v1/tokens", f.admin, map[string]any{"name": "viewer", "role": "read"})
	if r := f.do(t, "PUT", path, c.body["token"].(string), map[string]any{"address": "10.6.6.6", "password": "x"}); r.code != 403 {
		t.Errorf("read token setting a BMC: %d %s", r.code, r.raw)
	}
	if got, _ := f.db.MachineBMC(ctx, "52:54:00:00:00:09"); got.Address != "10.0.0.9" || got.Password != pw {
		t.Errorf("stored BMC after refused writes: %+v", got)
	}
	if r := f.do(t, "DELETE", path, f.admin, nil); r.code != 204 {
		t.Errorf("delete BMC: %d %s", r.code, r.raw)
	}
}

// routePaths walks the router and returns, for a request path built from
// each route's path template, the methods the routes of that template
// take, in registration order.
func routePaths(t *testing.T, h http.Handler) map[string][]string {
	t.Helper()
	router, ok := h.(*mux.Router)
	if !ok {
		t.Fatalf("Handler is a %T, not a router to walk", h)
	}
	// A value for each path variable, valid where the API checks it.
	values := map[string]string{"mac": "52:54:00:00:00:01", "kind": "ignition", "name": "a.ign", "ip": "10.0.0.5",
		"channel": "stable", "board": "amd64-usr", "version": "4081.2.0"}
	vars := regexp.MustCompile(`\{(\w+)(:[^}]*)?\}`)
	paths := map[string][]string{}
	routes := 0
	_ = router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tmpl, err1 := route.GetPathTemplate()
		methods, err2 := route.GetMethods()
		if err1 != nil || err2 != nil {
			return nil
		}
		routes++
		path := vars.ReplaceAllStringFunc(tmpl, func(v string) string {
			if val, ok := values[vars.FindStringSubmatch(v)[1]]; ok {
				return val
			}
			return "x"
		})
		for _, m := range methods {
			if !slices.Contains(paths[path], m) {
				paths[path] = append(paths[path], m)
			}
		}
		return nil
	})
	if routes < 30 {
		t.Fatalf("only %d routes found walking the router", routes)
	}
	return paths
}

// Every path of the API answers a method it does not take with 405, an
// Allow header listing exactly the methods it takes, and the API's error
// body; it routes the methods it takes (to authentication, or to the
// document); unknown paths are 404.
func TestMethodNotAllowed(t *testing.T) {
	f := newFixture(t)
	paths := routePaths(t, f.handler)
	candidates := []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "BREW"}
	for path, methods := range paths {
		allow := strings.Join(methods, ", ")
		for _, m := range candidates {
			for _, token := range []string{f.admin, ""} {
				r, hdr := f.doHeader(t, m, path, token, nil)
				if slices.Contains(methods, m) {
					// Taken: without a token it stops at authentication
					// (the document needs none).
					if token == "" && r.code != 401 && !(path == "/api/v1/openapi.json" && r.code == 200) {
						t.Errorf("%s %s without a token: %d %s, want 401", m, path, r.code, r.raw)
					}
					if r.code == 405 || r.body["message"] == "no such API path" {
						t.Errorf("%s %s: %d %s, want it routed", m, path, r.code, r.raw)
					}
					continue
				}
				if r.code != 405 || hdr.Get("Allow") != allow {
					t.Errorf("%s %s: %d, Allow %q; want 405, Allow %q", m, path, r.code, hdr.Get("Allow"), allow)
				}
				if m == "HEAD" {
					continue // no body
				}
				want := fmt.Sprintf("method %s not allowed on %s; allowed: %s", m, path, allow)
				if r.body["code"] != "method_not_allowed" || r.body["message"] != want || hdr.Get("Content-Type") != "application/json" {
					t.Errorf("%s %s: body %s (%s), want code method_not_allowed, message %q", m, path, r.raw, hdr.Get("Content-Type"), want)
				}
			}
		}
	}
	// What the issue reported.
	if r, hdr := f.doHeader(t, "POST", "/api/v1/groups", f.admin, nil); r.code != 405 || hdr.Get("Allow") != "GET" {
		t.Errorf("POST /api/v1/groups: %d, Allow %q", r.code, hdr.Get("Allow"))
	}
	if _, ok := paths["/api/v1/groups/x"]; !ok || strings.Join(paths["/api/v1/groups/x"], ", ") != "GET, PUT, DELETE" {
		t.Errorf("routes of /api/v1/groups/{id}: %v", paths["/api/v1/groups/x"])
	}
	for _, path := range []string{"/", "/api/v1", "/api/v1/", "/api/v1/nope", "/api/v1/groups/", "/api/v1/groups/x/y", "/api/v2/groups", "/api/v1/machines/52:54:00:00:00:01/nope"} {
		for _, m := range []string{"GET", "POST", "HEAD"} {
			r, hdr := f.doHeader(t, m, path, f.admin, nil)
			if r.code != 404 || hdr.Get("Allow") != "" || (m != "HEAD" && r.body["code"] != "not_found") {
				t.Errorf("%s %s: %d, Allow %q, %s; want 404 not_found without Allow", m, path, r.code, hdr.Get("Allow"), r.raw)
			}
		}
	}
}

// Concurrent REST writes overlap their reloads, but a reference check
// still sees every write committed before it: groups written while their
// profile is deleted either make the delete fail (in use) or are refused
// (the profile is gone); no group is left naming a missing profile, and
// every write that succeeded is served when its answer comes.
func TestConcurrentWritesKeepReferences(t *testing.T) {
	f := newFixture(t)
	for round := range 20 {
		prof := fmt.Sprintf("p%d", round)
		if r := f.do(t, "PUT", "/api/v1/profiles/"+prof, f.admin, map[string]any{"boot": map[string]any{"kernel": "/k"}}); r.code != 201 {
			t.Fatalf("profile: %d %s", r.code, r.raw)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		written := map[string]bool{}
		for w := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("g%d-%d", round, w)
				mac := fmt.Sprintf("52:54:00:%02x:00:%02x", round, w)
				r := f.do(t, "PUT", "/api/v1/groups/"+id, f.admin, map[string]any{"profile": prof, "selector": map[string]string{"mac": mac}})
				switch r.code {
				case 201:
					if sel, err := f.catalog.Snapshot().Select(map[string]string{"mac": mac}); err != nil || sel.Group.ID != id {
						t.Errorf("%s answered 201 but not served: %v", id, err)
					}
					mu.Lock()
					written[id] = true
					mu.Unlock()
				case 400:
				default:
					t.Errorf("group %s: %d %s", id, r.code, r.raw)
				}
			}()
		}
		wg.Add(1)
		var deleted bool
		go func() {
			defer wg.Done()
			r := f.do(t, "DELETE", "/api/v1/profiles/"+prof, f.admin, nil)
			deleted = r.code == 204
			if r.code != 204 && r.code != 409 {
				t.Errorf("delete: %d %s", r.code, r.raw)
			}
		}()
		wg.Wait()
		objs, err := f.db.Objects(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range objs.Groups {
			if g.Profile == prof && deleted {
				t.Errorf("round %d: group %s names profile %s, which was deleted", round, g.ID, prof)
			}
		}
		if !deleted && len(written) == 0 {
			t.Errorf("round %d: the delete was refused, yet no group was written", round)
		}
	}
}
