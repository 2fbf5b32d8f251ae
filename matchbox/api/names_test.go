package api_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"matchbox.dev/matchbox"
)

// Ids, names and labels holding control or format characters, or invalid
// UTF-8, are refused with 400 and nothing is written: a newline in a group
// id would forge rows of `matchbox group list`, a right-to-left override
// makes an id display as another.
func TestAPIRefusesUnprintableNames(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if r := f.do(t, "PUT", "/api/v1/profiles/live", f.admin, map[string]any{}); r.code != 201 {
		t.Fatalf("create profile: %d %s", r.code, r.raw)
	}
	if err := f.db.PutMachine(ctx, &matchbox.Machine{MAC: "52:54:00:00:00:01"}); err != nil {
		t.Fatal(err)
	}
	bad := []string{"node1\nforged  live  (default)  api", "\x1b[2J", "\u202etluafed", "a\xffb", "de\u200bfault", "\ufeffdefault", "a\u0085b"}
	before := f.do(t, "GET", "/api/v1/groups", f.admin, nil).raw
	for _, id := range bad {
		path := url.PathEscape(id)
		for _, tt := range []struct {
			what, method, path string
			body               any
		}{
			{"group id in the path", "PUT", "/api/v1/groups/" + path, map[string]any{"profile": "live"}},
			{"group id in the body", "PUT", "/api/v1/groups/g", map[string]any{"id": id, "profile": "live"}},
			{"group name", "PUT", "/api/v1/groups/g", map[string]any{"profile": "live", "name": id}},
			{"selector key", "PUT", "/api/v1/groups/g", map[string]any{"profile": "live", "selector": map[string]string{id: "1"}}},
			{"selector value", "PUT", "/api/v1/groups/g", map[string]any{"profile": "live", "selector": map[string]string{"rack": id}}},
			{"profile id", "PUT", "/api/v1/profiles/" + path, map[string]any{}},
			{"template name", "PUT", "/api/v1/templates/generic/" + path, "content"},
			{"token name", "POST", "/api/v1/tokens", map[string]any{"name": id, "role": "read"}},
			{"machine label key", "PUT", "/api/v1/machines/52:54:00:00:00:01/labels", map[string]any{"labels": map[string]string{id: "1"}}},
			{"machine label value", "PUT", "/api/v1/machines/52:54:00:00:00:01/labels", map[string]any{"labels": map[string]string{"rack": id}}},
			{"label filter", "GET", "/api/v1/machines?label=" + url.QueryEscape("rack="+id), nil},
			{"preview label", "GET", "/api/v1/machines/52:54:00:00:00:01/preview?rack=" + url.QueryEscape(id), nil},
		} {
			r := f.do(t, tt.method, tt.path, f.admin, tt.body)
			if r.code != 400 {
				t.Errorf("%s %q: %d %s, want 400", tt.what, id, r.code, r.raw)
				continue
			}
			if msg, _ := r.body["message"].(string); strings.ContainsAny(msg, "\n\x1b\u202e\u200b\ufeff\u0085") {
				t.Errorf("%s %q: the error carries the character itself: %q", tt.what, id, msg)
			}
		}
	}
	if after := f.do(t, "GET", "/api/v1/groups", f.admin, nil).raw; after != before {
		t.Errorf("refused writes changed the groups:\n%s\nwas\n%s", after, before)
	}
	objs, err := f.db.Objects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Groups) != 0 || len(objs.Profiles) != 1 || len(objs.Templates) != 0 {
		t.Errorf("the database holds %d groups, %d profiles, %d templates after refused writes", len(objs.Groups), len(objs.Profiles), len(objs.Templates))
	}
	if ts, _ := f.db.Tokens(ctx); len(ts) != 1 {
		t.Errorf("tokens after refused creates: %v", ts)
	}
	if m, _ := f.db.GetMachine(ctx, "52:54:00:00:00:01"); len(m.Labels) != 0 {
		t.Errorf("machine labels after refused writes: %v", m.Labels)
	}
	// Names of every script, and free-text metadata, stay accepted.
	if r := f.do(t, "PUT", "/api/v1/groups/"+url.PathEscape("rack-1 workers"), f.admin, map[string]any{"profile": "live", "name": "Workers (rack 1, café)",
		"metadata": map[string]any{"pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}}); r.code != 201 {
		t.Errorf("a group with a space in its id and multi-line metadata: %d %s", r.code, r.raw)
	}
}
