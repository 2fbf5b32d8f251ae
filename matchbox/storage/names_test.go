package storage_test

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// badIDs are ids that display as something else or break the line they
// are printed on.
var badIDs = map[string]string{
	"newline, forging a row":  "node1\nforged  live  (default)  api",
	"clear screen":            "\x1b[2J",
	"right-to-left override":  "\u202etluafed",
	"zero-width space":        "default\u200b",
	"byte order mark":         "\ufeffdefault",
	"left-to-right isolate":   "\u2066default\u2069",
	"C1 control":              "a\u009bb",
	"DEL":                     "a\x7f",
	"invalid UTF-8 (decoded)": "a\ufffd",
}

func groupJSON(t *testing.T, g map[string]any) []byte {
	t.Helper()
	data, err := json.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseGroupRefusesUnprintableNames(t *testing.T) {
	for name, id := range badIDs {
		t.Run("id "+name, func(t *testing.T) {
			_, _, err := storage.ParseGroup(groupJSON(t, map[string]any{"id": id, "profile": "live"}))
			if !errors.Is(err, matchbox.ErrInvalid) || !strings.Contains(err.Error(), "group id "+matchbox.Quote(id)) {
				t.Errorf("ParseGroup with id %q: %v; want ErrInvalid naming the group id", id, err)
			}
		})
	}
	// Bytes that are not UTF-8 in the file decode to U+FFFD: refused too.
	if _, _, err := storage.ParseGroup([]byte("{\"id\": \"node\xff1\", \"profile\": \"live\"}")); !errors.Is(err, matchbox.ErrInvalid) {
		t.Errorf("ParseGroup with raw invalid UTF-8 in the id: %v", err)
	}
	for what, g := range map[string]map[string]any{
		"group " + matchbox.Quote("a") + " name":    {"id": "a", "profile": "live", "name": "A\x1b]0;owned\x07"},
		"group " + matchbox.Quote("a") + " profile": {"id": "a", "profile": "live\n"},
		"selector key":                     {"id": "a", "profile": "live", "selector": map[string]string{"os\n": "installed"}},
		"selector " + matchbox.Quote("os"): {"id": "a", "profile": "live", "selector": map[string]string{"os": "installed\u202e"}},
		"metadata.ssh[1]":                  {"id": "a", "profile": "live", "metadata": map[string]any{"ssh": []any{"ok", "evil\x1b[2J"}}},
		"key in metadata.nested":           {"id": "a", "profile": "live", "metadata": map[string]any{"nested": map[string]any{"a\nb": 1}}},
		"metadata.motd":                    {"id": "a", "profile": "live", "metadata": map[string]any{"motd": "hello \u2067world"}},
	} {
		_, _, err := storage.ParseGroup(groupJSON(t, g))
		if !errors.Is(err, matchbox.ErrInvalid) || !strings.Contains(err.Error(), what) {
			t.Errorf("ParseGroup(%v): %v; want ErrInvalid naming %s", g, err, what)
		}
	}
	// Metadata is free text: a certificate, a script with tabs and CRLF
	// line ends still load.
	if _, _, err := storage.ParseGroup(groupJSON(t, map[string]any{"id": "a", "profile": "live", "name": "Workers (rack 1)",
		"metadata": map[string]any{"pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "sh": "#!/bin/sh\r\n\techo hi\r\n", "": "empty key"}})); err != nil {
		t.Errorf("ParseGroup with multi-line metadata: %v", err)
	}
}

func TestParseProfileRefusesUnprintableNames(t *testing.T) {
	for name, id := range badIDs {
		if _, _, err := storage.ParseProfile(groupJSON(t, map[string]any{"id": id})); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("ParseProfile with id %s (%q): %v", name, id, err)
		}
	}
	for field, v := range map[string]string{"ignition_id": "worker\n.ign", "cloud_id": "\u202ec.yaml", "generic_id": "g\x1b", "name": "N\u200b"} {
		_, _, err := storage.ParseProfile(groupJSON(t, map[string]any{"id": "p", field: v}))
		if !errors.Is(err, matchbox.ErrInvalid) || !strings.Contains(err.Error(), "profile "+matchbox.Quote("p")+" "+field) {
			t.Errorf("ParseProfile with %s %q: %v", field, v, err)
		}
	}
}

// A group file whose id (or file name) is not a valid name does not load,
// and, having never loaded, claims the machines its selectors name: they
// get no group (503) rather than the next matching one.
func TestDataDirRefusesUnprintableNames(t *testing.T) {
	dir := t.TempDir()
	path := func(rel string) string { return filepath.Join(dir, rel) }
	writeFile(t, path("profiles/live.json"), []byte(`{"id": "live", "boot": {"kernel": "/k"}}`))
	writeFile(t, path("groups/default.json"), []byte(`{"id": "default", "profile": "live"}`))
	writeFile(t, path("groups/forged.json"), groupJSON(t, map[string]any{"id": "node1\nforged  live  (default)  data-dir",
		"profile": "live", "selector": map[string]string{"mac": "52:54:00:00:00:01"}}))
	writeFile(t, path("groups/rlo.json"), groupJSON(t, map[string]any{"id": "\u202etluafed", "profile": "live",
		"selector": map[string]string{"rack": "2"}}))
	writeFile(t, path("groups/esc\x1b[2J.json"), []byte(`{"profile": "live", "selector": {"rack": "3"}}`))
	writeFile(t, path("groups/latin\xe9.json"), []byte(`{"id": "latin", "profile": "live", "selector": {"rack": "4"}}`))
	writeFile(t, path("profiles/p\n.json"), []byte(`{"id": "p\n"}`))
	writeFile(t, path("ignition/w\u202e.ign"), []byte(`{"ignition": {"version": "3.4.0"}}`))
	writeFile(t, path("ignition/good.ign"), []byte(`{"ignition": {"version": "3.4.0"}}`))

	objs := mustLoad(t, storage.NewDataDir(dir, nil))
	if diff := groupIDs(objs); len(diff) != 1 || diff[0] != "default" {
		t.Errorf("groups loaded = %q, want only default", diff)
	}
	if ids := profileIDs(objs); len(ids) != 1 || ids[0] != "live" {
		t.Errorf("profiles loaded = %q, want only live", ids)
	}
	if names := templateNames(objs); len(names) != 1 || names[0] != "ignition/good.ign" {
		t.Errorf("templates loaded = %q, want only good.ign", names)
	}
	checkProblems(t, dir, objs.Problems, []problem{
		{"groups/forged.json", matchbox.SeverityError, []string{`group id "node1\nforged`, "control character"}},
		{"groups/rlo.json", matchbox.SeverityError, []string{`"\u202etluafed"`, "format character"}},
		{"groups/esc\x1b[2J.json", matchbox.SeverityError, []string{`file name "groups/esc\x1b[2J.json"`}},
		{"groups/latin\xe9.json", matchbox.SeverityError, []string{"not valid UTF-8"}},
		{"profiles/p\n.json", matchbox.SeverityError, []string{"file name"}},
		{"ignition/w\u202e.ign", matchbox.SeverityError, []string{"file name"}},
	})
	for _, p := range objs.Problems {
		if line := p.String(); strings.ContainsAny(line, "\n\x1b\u202e") || !strings.HasPrefix(line, `"`+dir) && !strings.HasPrefix(line, dir) {
			t.Errorf("problem line %q carries the characters themselves", line)
		}
	}

	snap := matchbox.NewSnapshot(objs)
	for _, tt := range []struct {
		labels   map[string]string
		withheld bool
	}{
		{map[string]string{"mac": "52:54:00:00:00:01"}, true}, // forged.json's selector
		{map[string]string{"mac": "52:54:00:00:00:99", "rack": "2"}, true},
		{map[string]string{"mac": "52:54:00:00:00:99", "rack": "3"}, true},
		{map[string]string{"mac": "52:54:00:00:00:99", "rack": "4"}, true},
		{map[string]string{"mac": "52:54:00:00:00:99"}, false},
	} {
		sel, err := snap.Select(tt.labels)
		switch {
		case tt.withheld && !errors.Is(err, matchbox.ErrUnavailable):
			t.Errorf("Select(%v) = %v, %v; want ErrUnavailable (a group that does not load may select it)", tt.labels, sel.Group, err)
		case !tt.withheld && (err != nil || sel.Group == nil || sel.Group.ID != "default"):
			t.Errorf("Select(%v) = %v, %v; want the default group", tt.labels, sel.Group, err)
		}
		if err != nil && strings.ContainsAny(err.Error(), "\n\x1b\u202e") {
			t.Errorf("Select(%v) error %q carries the characters themselves", tt.labels, err)
		}
	}
}

func TestSalvageClaimUnprintableSelectors(t *testing.T) {
	c := storage.SalvageClaim([]byte(`{"id": "a\n", "selector": {"os": "installed", "rack": "r1\n", "zone\u001b": "z"}}`), "groups/a.json", "bad")
	if !c.Known || c.Selector["os"] != "installed" || len(c.Selector) != 1 || strings.Join(c.Unknown, ",") != "rack,zone\x1b" {
		t.Errorf("SalvageClaim = %+v; want os known, rack and the escaped key unknown", c)
	}
	if covers := c.Covers(); strings.ContainsRune(covers, '\x1b') || !strings.Contains(covers, `"zone\x1b"=(unreadable)`) {
		t.Errorf("Covers() = %q", covers)
	}
}

// Writes through the store (the admin API's path) refuse such names and
// leave the database as it was.
func TestBoltRefusesUnprintableNames(t *testing.T) {
	ctx := t.Context()
	db := openBolt(t, filepath.Join(t.TempDir(), "m.db"))
	for name, id := range badIDs {
		if _, err := db.PutGroupIf(ctx, &matchbox.Group{ID: id, Profile: "live"}, matchbox.Condition{}); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("PutGroupIf id %s: %v", name, err)
		}
		if _, err := db.PutProfileIf(ctx, &matchbox.Profile{ID: id}, matchbox.Condition{}); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("PutProfileIf id %s: %v", name, err)
		}
		if _, err := db.PutTemplateIf(ctx, &matchbox.Template{Kind: matchbox.KindGeneric, Name: id, Content: []byte("x")}, matchbox.Condition{}); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("PutTemplateIf name %s: %v", name, err)
		}
		if err := db.CreateToken(ctx, matchbox.Token{Name: id, Role: matchbox.RoleRead, Hash: "h"}); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("CreateToken name %s: %v", name, err)
		}
	}
	if err := db.PutMachine(ctx, &matchbox.Machine{MAC: "52:54:00:00:00:01"}); err != nil {
		t.Fatal(err)
	}
	for _, labels := range []map[string]string{{"rack\n": "1"}, {"rack": "1\nos=installed"}, {"rack": "\u202e1"}, {"": "x"}, {"rack": "\xff"}} {
		if _, err := db.SetMachineLabels(ctx, "52:54:00:00:00:01", labels); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("SetMachineLabels(%q): %v", labels, err)
		}
	}
	objs, err := db.Objects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Groups)+len(objs.Profiles)+len(objs.Templates) != 0 {
		t.Errorf("refused writes stored objects: %v", objs)
	}
	if ts, _ := db.Tokens(ctx); len(ts) != 0 {
		t.Errorf("refused tokens stored: %v", ts)
	}
	if m, _ := db.GetMachine(ctx, "52:54:00:00:00:01"); len(m.Labels) != 0 {
		t.Errorf("refused labels stored: %v", m.Labels)
	}
}

// Objects stored before names were checked are still served (dropping
// one would change which machines get what), with a warning.
func TestBoltServesStoredUnprintableNames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	openBolt(t, path).Close()
	raw := rawBolt(t, path)
	id := "node1\nforged  live  (default)  api"
	if err := raw.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("groups")).Put([]byte(id), groupJSON(t, map[string]any{"id": id, "profile": "live",
			"selector": map[string]string{"mac": "52:54:00:00:00:01"}}))
	}); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	objs, err := openBolt(t, path).Objects(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Groups) != 1 || objs.Groups[0].ID != id {
		t.Fatalf("groups = %v, want the stored one", objs.Groups)
	}
	if len(objs.Problems) != 1 || objs.Problems[0].Severity != matchbox.SeverityWarning || !strings.Contains(objs.Problems[0].Message, "still served") ||
		strings.Contains(objs.Problems[0].String(), "\n") {
		t.Errorf("problems = %v, want one warning, on one line", objs.Problems)
	}
}
