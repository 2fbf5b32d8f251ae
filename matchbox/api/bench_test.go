package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/api"
	"matchbox.dev/matchbox/storage"
)

// benchAPI is the API over an inventory of n machines (every tenth in
// group "rare"), with an admin token.
func benchAPI(b *testing.B, n int) (http.Handler, string) {
	b.Helper()
	db, err := storage.OpenBolt(filepath.Join(b.TempDir(), "m.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	ctx := context.Background()
	batch := make([]matchbox.Event, 0, 10_000)
	for i := range n {
		g := "common"
		if i%10 == 0 {
			g = "rare"
		}
		batch = append(batch, matchbox.Event{Time: time.Unix(int64(i), 0), MAC: fmt.Sprintf("52:54:00:%02x:%02x:%02x", byte(i>>16), byte(i>>8), byte(i)),
			Kind: matchbox.EventHTTPServed, File: "/ipxe", Group: g, Profile: "p", Arch: "x86_64", IP: "10.0.0.1"})
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := db.RecordEvents(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	secret, _ := api.NewSecret()
	if err := db.CreateToken(ctx, matchbox.Token{Name: "bench", Role: matchbox.RoleAdmin, Hash: api.HashSecret(secret)}); err != nil {
		b.Fatal(err)
	}
	srv, err := api.New(ctx, api.Config{Store: db, Machines: db, Catalog: matchbox.NewCatalog()})
	if err != nil {
		b.Fatal(err)
	}
	return srv.Handler(), secret
}

func serveBench(b *testing.B, h http.Handler, token, path string) {
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
	}
}

// BenchmarkMachineAPI reads one machine (with its history) and lists
// machines with a filter, at 100,000 machines.
func BenchmarkMachineAPI(b *testing.B) {
	h, token := benchAPI(b, 100_000)
	b.Run("get", func(b *testing.B) { serveBench(b, h, token, "/api/v1/machines/52:54:00:01:23:45") })
	// A filter matching a tenth of the fleet: one page of 500.
	b.Run("list-group-filter-page", func(b *testing.B) { serveBench(b, h, token, "/api/v1/machines?group=rare&limit=500") })
	// A filter scanning the whole inventory for one machine.
	b.Run("list-label-filter-all", func(b *testing.B) { serveBench(b, h, token, "/api/v1/machines?label=rack=none&limit=10000") })
}

// BenchmarkGroupWrite is one group written through the API with 10,000
// groups already created through it: the write, the catalog reload and
// the answer.
func BenchmarkGroupWrite(b *testing.B) {
	srv, secret := groupsAPI(b, 10_000)
	h := srv.Handler()
	n := 0
	for b.Loop() {
		n++
		body := fmt.Sprintf(`{"profile": "p", "metadata": {"n": %d}}`, n)
		req := httptest.NewRequest("PUT", "/api/v1/groups/g1", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secret)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

// groupsAPI is the API over a database holding n groups (g0, g1, …, each
// selecting a MAC, with metadata) of profile p, with the catalog loaded
// and reloaded after every write as the server does, and the secret of an
// admin token.
func groupsAPI(b testing.TB, n int) (*api.Server, string) {
	b.Helper()
	db, err := storage.OpenBolt(filepath.Join(b.TempDir(), "m.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	ctx := context.Background()
	if _, err := db.PutProfileIf(ctx, &matchbox.Profile{ID: "p"}, matchbox.Condition{}); err != nil {
		b.Fatal(err)
	}
	for i := range n {
		g := &matchbox.Group{ID: fmt.Sprintf("g%d", i), Profile: "p", Selector: map[string]string{"mac": fmt.Sprintf("52:54:00:00:%02x:%02x", byte(i>>8), byte(i))},
			Metadata: map[string]any{"hostname": fmt.Sprintf("node%d", i)}}
		if _, err := db.PutGroupIf(ctx, g, matchbox.Condition{}); err != nil {
			b.Fatal(err)
		}
	}
	cat := matchbox.NewCatalog("datadir", "db")
	reload := func(ctx context.Context) error {
		_, err := cat.Reload(ctx, "db", db.Objects)
		return err
	}
	if err := reload(ctx); err != nil {
		b.Fatal(err)
	}
	secret, _ := api.NewSecret()
	if err := db.CreateToken(ctx, matchbox.Token{Name: "bench", Role: matchbox.RoleAdmin, Hash: api.HashSecret(secret)}); err != nil {
		b.Fatal(err)
	}
	srv, err := api.New(ctx, api.Config{Store: db, Catalog: cat, Reload: reload})
	if err != nil {
		b.Fatal(err)
	}
	return srv, secret
}
