package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/mux"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/api"
	"matchbox.dev/matchbox/storage"
)

// The OpenAPI document describes exactly the routes the router serves, and
// holds together: every path parameter declared, every $ref resolving,
// every operation with responses and a unique operationId.
func TestOpenAPIMatchesRouter(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	documented := map[string]bool{}
	opIDs := map[string]bool{}
	for path, item := range doc.Paths {
		var shared []struct{ Name, In string }
		if raw, ok := item["parameters"]; ok {
			_ = json.Unmarshal(raw, &shared)
		}
		for method, raw := range item {
			if method == "parameters" {
				continue
			}
			documented[strings.ToUpper(method)+" "+path] = true
			var op struct {
				OperationID string `json:"operationId"`
				Parameters  []struct{ Name, In string }
				Responses   map[string]json.RawMessage
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			if op.OperationID == "" || opIDs[op.OperationID] || len(op.Responses) == 0 {
				t.Errorf("%s %s: operationId %q (duplicate: %v), %d responses", method, path, op.OperationID, opIDs[op.OperationID], len(op.Responses))
			}
			opIDs[op.OperationID] = true
			for _, m := range regexp.MustCompile(`\{(\w+)\}`).FindAllStringSubmatch(path, -1) {
				declared := slices.ContainsFunc(append(shared, op.Parameters...), func(p struct{ Name, In string }) bool { return p.Name == m[1] && p.In == "path" })
				if !declared {
					t.Errorf("%s %s: path parameter %s not declared", method, path, m[1])
				}
			}
		}
	}
	// Every $ref resolves.
	var whole map[string]any
	_ = json.Unmarshal(api.OpenAPI, &whole)
	for _, ref := range regexp.MustCompile(`"\$ref":\s*"#/([^"]+)"`).FindAllStringSubmatch(string(api.OpenAPI), -1) {
		var node any = whole
		for _, part := range strings.Split(ref[1], "/") {
			m, _ := node.(map[string]any)
			node = m[part]
		}
		if node == nil {
			t.Errorf("$ref #/%s does not resolve", ref[1])
		}
	}
	// The router's routes, as OpenAPI paths.
	srv, err := api.New(context.Background(), api.Config{Store: storage.NewMemory(), Catalog: matchbox.NewCatalog()})
	if err != nil {
		t.Fatal(err)
	}
	router, ok := srv.Handler().(*mux.Router)
	if !ok {
		t.Fatalf("Handler is a %T, not a router to walk", srv.Handler())
	}
	served := map[string]bool{}
	_ = router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tmpl, err := route.GetPathTemplate()
		if err != nil {
			return nil
		}
		methods, err := route.GetMethods()
		if err != nil {
			return nil
		}
		tmpl = regexp.MustCompile(`\{(\w+):[^}]*\}`).ReplaceAllString(tmpl, "{$1}")
		for _, m := range methods {
			served[m+" "+tmpl] = true
		}
		return nil
	})
	for k := range served {
		if !documented[k] {
			t.Errorf("served but not documented: %s", k)
		}
	}
	for k := range documented {
		if !served[k] {
			t.Errorf("documented but not served: %s", k)
		}
	}
	if len(served) < 20 {
		t.Errorf("only %d routes found walking the router", len(served))
	}
}

func TestOpenAPIServed(t *testing.T) {
	f := newFixture(t)
	resp, err := http.Get(f.url + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&doc) != nil || doc["openapi"] == nil {
		t.Errorf("GET /api/v1/openapi.json without a token: %d", resp.StatusCode)
	}
}
