package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/api"
	"matchbox.dev/matchbox/internal/testrun"
	"matchbox.dev/matchbox/storage"
)

// Two API servers over one store (replicas): a token created on one is
// accepted by the other, and a token revoked on one refused by the other,
// as soon as the write is committed (no time passes on the bubble's
// clock).
func TestTokensFollowOtherServers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		backend := storage.NewMemoryBackend()
		file := filepath.Join(t.TempDir(), "admin.token")
		var handlers []http.Handler
		for i := range 2 {
			st := storage.OpenMemory(backend)
			t.Cleanup(func() { st.Close() })
			if i == 0 {
				if _, err := api.EnsureAdminToken(ctx, st, "", file, nil); err != nil {
					t.Fatal(err)
				}
			}
			srv, err := api.New(ctx, api.Config{Store: st, Changes: st, Catalog: matchbox.NewCatalog("db")})
			if err != nil {
				t.Fatal(err)
			}
			testrun.Background(t, srv.Follow)
			handlers = append(handlers, srv.Handler())
		}
		a, b := handlers[0], handlers[1]
		admin, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		call := func(h http.Handler, method, path, secret, body string) (int, string) {
			req := httptest.NewRequest(method, path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(secret))
			if body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			return rec.Code, rec.Body.String()
		}
		code, body := call(a, "POST", "/api/v1/tokens", string(admin), `{"name": "ops", "role": "read"}`)
		if code != http.StatusCreated {
			t.Fatalf("create on a: %d %s", code, body)
		}
		var created struct{ Token string }
		if err := json.Unmarshal([]byte(body), &created); err != nil || created.Token == "" {
			t.Fatalf("created %s: %v", body, err)
		}
		synctest.Wait()
		if code, body := call(b, "GET", "/api/v1/groups", created.Token, ""); code != http.StatusOK {
			t.Fatalf("b with a's new token: %d %s", code, body)
		}
		if code, body := call(a, "DELETE", "/api/v1/tokens/ops", string(admin), ""); code != http.StatusNoContent {
			t.Fatalf("revoke on a: %d %s", code, body)
		}
		synctest.Wait()
		if code, _ := call(b, "GET", "/api/v1/groups", created.Token, ""); code != http.StatusUnauthorized {
			t.Errorf("b with the token a revoked: %d, want 401", code)
		}
	})
}
