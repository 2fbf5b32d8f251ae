package api_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox/api"
	"matchbox.dev/matchbox/storage"
	"matchbox.dev/matchbox/update"
)

// withUpdates runs the fixture's API with an update service over its
// store, holding the default groups.
func withUpdates(t *testing.T) func(*api.Config, *storage.DB) {
	return func(cfg *api.Config, db *storage.DB) {
		svc := update.New(db, nil)
		if err := svc.EnsureDefaultGroups(context.Background()); err != nil {
			t.Fatal(err)
		}
		cfg.Updates = svc
	}
}

// groupOf decodes an answer's body as an update group.
func groupOf(t *testing.T, r reply) update.Group {
	t.Helper()
	var g update.Group
	if err := json.Unmarshal([]byte(r.raw), &g); err != nil {
		t.Fatalf("answer %d %s: %v", r.code, r.raw, err)
	}
	return g
}

// Update groups through the API: create, get, list, replace; invalid
// groups refused with the reason and nothing changed; pause and resume;
// delete; a read token refused writes.
func TestUpdateGroups(t *testing.T) {
	f := newFixture(t, withUpdates(t))
	const path = "/api/v1/update-groups/canary"
	body := map[string]any{
		"channel": "stable", "version": "newest", "match": map[string]any{"kind": "label", "key": "rack", "value": "r1"},
		"policy": map[string]any{"max_in_flight": 2, "max_per_period": 10, "period": int64(time.Hour), "canary": 1,
			"pause_after_failures": 3, "windows": []string{"Mon-Fri 09:00-17:00 Europe/Berlin", "Sat,Sun 00:00-24:00"}},
	}
	c := f.do(t, "PUT", path, f.admin, body)
	if c.code != 201 {
		t.Fatalf("create: %d %s", c.code, c.raw)
	}
	created := groupOf(t, c)
	if created.Name != "canary" || created.Policy.Period != time.Hour || len(created.Policy.Windows) != 2 || created.Match.String() != "label:rack=r1" {
		t.Errorf("created group: %+v", created)
	}
	g := f.do(t, "GET", path, f.admin, nil)
	if g.code != 200 {
		t.Fatalf("get: %d %s", g.code, g.raw)
	}
	if diff := cmp.Diff(c.raw, g.raw); diff != "" {
		t.Errorf("get differs from the created group (-put +get):\n%s", diff)
	}
	l := f.do(t, "GET", "/api/v1/update-groups", f.admin, nil)
	var list struct{ Items []update.Group }
	if err := json.Unmarshal([]byte(l.raw), &list); l.code != 200 || err != nil {
		t.Fatalf("list: %d %s", l.code, l.raw)
	}
	var names []string
	for _, g := range list.Items {
		names = append(names, g.Name)
	}
	if diff := cmp.Diff([]string{"alpha", "beta", "canary", "lts", "stable"}, names); diff != "" {
		t.Errorf("listed groups (-want +got):\n%s", diff)
	}

	// Replace: the name may be in the body too.
	body["name"], body["version"] = "canary", "4081.2.0"
	if r := f.do(t, "PUT", path, f.admin, body); r.code != 200 || groupOf(t, r).Version != "4081.2.0" {
		t.Fatalf("replace: %d %s", r.code, r.raw)
	}
	replaced := f.do(t, "GET", path, f.admin, nil).raw

	// Invalid: refused with the reason, nothing written.
	for _, tc := range []struct {
		name, field string
		value       any
		want        string
	}{
		{"bad window", "policy", map[string]any{"windows": []string{"Mon-Fri 9-17"}}, "window"},
		{"bad zone", "policy", map[string]any{"windows": []string{"daily 22:00-06:00 Mars/Olympus"}}, "time zone"},
		{"bad match", "match", map[string]any{"kind": "rack"}, "match kind"},
		{"bad channel", "channel", "nightly", "channel"},
		{"bad version", "version", "latest", "version"},
		{"period without max", "policy", map[string]any{"period": int64(time.Hour)}, "-period needs -max-per-period"},
		{"other name", "name", "other", "differs"},
		{"unknown field", "colour", "blue", "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := map[string]any{}
			for k, v := range body {
				bad[k] = v
			}
			bad[tc.field] = tc.value
			r := f.do(t, "PUT", path, f.admin, bad)
			if msg, _ := r.body["message"].(string); r.code != 400 || !strings.Contains(msg, tc.want) {
				t.Errorf("%d %s, want 400 saying %q", r.code, r.raw, tc.want)
			}
			if now := f.do(t, "GET", path, f.admin, nil).raw; now != replaced {
				t.Errorf("group changed by a refused write:\n%s", cmp.Diff(replaced, now))
			}
		})
	}
	if r := f.do(t, "GET", "/api/v1/update-groups/other", f.admin, nil); r.code != 404 {
		t.Errorf("group of a refused write: %d %s", r.code, r.raw)
	}

	// Pause with a reason, and without one; resume.
	p := f.do(t, "POST", path+"/pause", f.admin, map[string]any{"reason": "bad kernel"})
	if pg := groupOf(t, p); p.code != 200 || !pg.Policy.Paused || pg.Policy.Reason != "bad kernel" {
		t.Fatalf("pause: %d %s", p.code, p.raw)
	}
	p = f.do(t, "POST", "/api/v1/update-groups/beta/pause", f.admin, nil)
	if pg := groupOf(t, p); p.code != 200 || !pg.Policy.Paused || !strings.Contains(pg.Policy.Reason, "admin") {
		t.Fatalf("pause without a reason: %d %s", p.code, p.raw)
	}
	p = f.do(t, "POST", path+"/resume", f.admin, nil)
	if pg := groupOf(t, p); p.code != 200 || pg.Policy.Paused || pg.Policy.Reason != "" {
		t.Fatalf("resume: %d %s", p.code, p.raw)
	}
	if r := f.do(t, "POST", "/api/v1/update-groups/nope/pause", f.admin, nil); r.code != 404 {
		t.Errorf("pause of a missing group: %d %s", r.code, r.raw)
	}

	// A read token reads, and is refused every write.
	tok := f.do(t, "POST", "/api/v1/tokens", f.admin, map[string]any{"name": "viewer", "role": "read"})
	reader, _ := tok.body["token"].(string)
	if r := f.do(t, "GET", path, reader, nil); r.code != 200 {
		t.Errorf("read token reading: %d %s", r.code, r.raw)
	}
	for _, w := range [][2]string{{"PUT", path}, {"DELETE", path}, {"POST", path + "/pause"}, {"POST", path + "/resume"}} {
		if r := f.do(t, w[0], w[1], reader, body); r.code != 403 {
			t.Errorf("read token %s %s: %d %s", w[0], w[1], r.code, r.raw)
		}
	}

	// Delete.
	if r := f.do(t, "DELETE", path, f.admin, nil); r.code != 204 {
		t.Fatalf("delete: %d %s", r.code, r.raw)
	}
	if r := f.do(t, "GET", path, f.admin, nil); r.code != 404 {
		t.Errorf("get after delete: %d %s", r.code, r.raw)
	}
	if r := f.do(t, "DELETE", path, f.admin, nil); r.code != 404 {
		t.Errorf("second delete: %d %s", r.code, r.raw)
	}
}

// A machine's update state, as the service records it from a check.
func TestUpdateMachine(t *testing.T) {
	ctx := context.Background()
	var svc *update.Service
	f := newFixture(t, func(cfg *api.Config, db *storage.DB) {
		svc = update.New(db, mirror{"4081.2.0"})
		if err := svc.EnsureDefaultGroups(ctx); err != nil {
			t.Fatal(err)
		}
		cfg.Updates = svc
	})
	if r := f.do(t, "GET", "/api/v1/update-machines/m1", f.admin, nil); r.code != 404 {
		t.Errorf("unknown machine: %d %s", r.code, r.raw)
	}
	if _, err := svc.Decide(ctx, update.Check{Client: update.Client{MachineID: "m1"}, Track: "stable", Version: "3815.2.0", Board: "amd64-usr"}); err != nil {
		t.Fatal(err)
	}
	// A hold alone makes no record: the machine is still unknown.
	if r := f.do(t, "GET", "/api/v1/update-machines/m1", f.admin, nil); r.code != 404 {
		t.Errorf("machine held by the paused default group: %d %s", r.code, r.raw)
	}
	if err := svc.SetPaused(ctx, "stable", false, ""); err != nil {
		t.Fatal(err)
	}
	if ans, err := svc.Decide(ctx, update.Check{Client: update.Client{MachineID: "m1"}, Track: "stable", Version: "3815.2.0", Board: "amd64-usr"}); err != nil || ans.Version != "4081.2.0" {
		t.Fatalf("check after resume: %+v, %v", ans, err)
	}
	r := f.do(t, "GET", "/api/v1/update-machines/m1", f.admin, nil)
	if r.code != 200 || r.body["state"] != string(update.StateGranted) || r.body["target"] != "4081.2.0" || r.body["group"] != "stable" {
		t.Errorf("machine granted an update: %d %s", r.code, r.raw)
	}
}

// mirror is a fixed list of mirrored versions.
type mirror []string

func (m mirror) Versions(string, string) []string { return m }

// Without an update service the endpoints answer 503 and say why.
func TestUpdatesNotConfigured(t *testing.T) {
	f := newFixture(t)
	for _, c := range [][2]string{{"GET", "/api/v1/update-groups"}, {"PUT", "/api/v1/update-groups/x"}, {"POST", "/api/v1/update-groups/x/pause"}, {"GET", "/api/v1/update-machines/m"}} {
		r := f.do(t, c[0], c[1], f.admin, nil)
		if msg, _ := r.body["message"].(string); r.code != 503 || !strings.Contains(msg, "update service is not configured") {
			t.Errorf("%s %s: %d %s", c[0], c[1], r.code, r.raw)
		}
	}
}
