package main

import (
	"encoding/json"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// Ids and names stored before they were checked (written into the
// database directly, past the checks the store and the API now make):
// every CLI table and list prints them escaped, one row each, so that no
// id forges a row, clears the screen or displays as another.
func TestCLIEscapesStoredNames(t *testing.T) {
	forged := "node1\nforged  live  (default)  api"
	stored := []string{forged, "\x1b[2J\x1b[Hdefault", "\u202etluafed", "a\tb", "ok"}
	dbPath := filepath.Join(t.TempDir(), "m.db")
	db, err := storage.OpenBolt(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := db.PutProfileIf(ctx, &matchbox.Profile{ID: "live"}, matchbox.Condition{}); err != nil {
		t.Fatal(err)
	}
	mac := "52:54:00:00:00:01"
	if err := db.PutMachine(ctx, &matchbox.Machine{MAC: mac, Group: "\u202etluafed", Profile: "live",
		Hostname: "h\x1b]0;owned\x07", Labels: map[string]string{"rack": "r1\nforged=1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.RecordEvents(ctx, []matchbox.Event{{Time: time.Now(), MAC: mac, Kind: matchbox.EventTFTPSent,
		File: "pxelinux.0\n2026-01-01T00:00:00Z http.served file=/forged"}}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	raw, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	put := func(bucket, key string, v any) {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := raw.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Put([]byte(key), data) }); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range stored {
		put("groups", id, map[string]any{"id": id, "profile": "live", "selector": map[string]string{"rack": string(rune('a'+i)) + "\nx"}})
		put("templates", "generic/"+id, map[string]any{"kind": "generic", "name": id, "content": []byte("x")})
	}
	put("tokens", "ci\nforged  admin", map[string]any{"name": "ci\nforged  admin", "role": "read", "hash": "00", "created": time.Now()})
	raw.Close()

	s := startServer(t, nil, "-data-path", t.TempDir(), "-assets-path", "", "-db-path", dbPath, "-api-token-file", writeToken(t))
	env := []string{"MATCHBOX_ENDPOINT=" + s.apiURL, "MATCHBOX_TOKEN=mbx_test_token_0123456789"}

	// rows runs a CLI command and returns its lines, checking that none
	// holds a character a name may not.
	rows := func(args ...string) []string {
		t.Helper()
		code, out := runCLI(t, env, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s", strings.Join(args, " "), code, out)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		for _, l := range lines {
			if err := matchbox.CheckValue("line", l, false); err != nil {
				t.Errorf("%s prints a line a terminal would not show as it is: %v", strings.Join(args, " "), err)
			}
		}
		return lines
	}
	lines := rows("group", "list")
	if len(lines) != 1+len(stored) {
		t.Errorf("group list: %d lines for %d groups:\n%s", len(lines), len(stored), strings.Join(lines, "\n"))
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "forged") {
			t.Errorf("group list has a forged row %q", l)
		}
	}
	out := strings.Join(lines, "\n")
	for _, want := range []string{`"node1\nforged  live  (default)  api"`, `"\x1b[2J\x1b[Hdefault"`, `"\u202etluafed"`, `"a\tb"`, `rack="a\nx"`} {
		if !strings.Contains(out, want) {
			t.Errorf("group list does not show %s:\n%s", want, out)
		}
	}
	if len(lines) > 1 && !slices.ContainsFunc(lines[1:], func(l string) bool { return strings.HasPrefix(l, "ok ") }) {
		t.Errorf("group list: the valid id is not shown plain:\n%s", out)
	}
	// JSON: the same ids, escaped, decoding to what is stored.
	code, js := runCLI(t, env, "group", "list", "-o", "json")
	if code != 0 || strings.ContainsAny(js, "\x1b\u202e\t") {
		t.Errorf("group list -o json: exit %d, raw characters in %q", code, js)
	}
	var items []map[string]any
	if err := json.Unmarshal([]byte(js), &items); err != nil {
		t.Fatalf("group list -o json: %v", err)
	}
	var ids []string
	for _, it := range items {
		ids = append(ids, it["id"].(string))
	}
	slices.Sort(ids)
	if want := slices.Sorted(slices.Values(stored)); !slices.Equal(ids, want) {
		t.Errorf("group list -o json ids = %q, want %q", ids, want)
	}

	if lines := rows("template", "list"); len(lines) != 1+len(stored) {
		t.Errorf("template list: %d lines for %d templates:\n%s", len(lines), len(stored), strings.Join(lines, "\n"))
	}
	if lines := rows("token", "list"); len(lines) != 3 || !strings.Contains(strings.Join(lines, "\n"), `"ci\nforged  admin"`) {
		t.Errorf("token list:\n%s", strings.Join(lines, "\n"))
	}
	if lines := rows("machine", "list"); len(lines) != 2 || !strings.Contains(lines[1], `"\u202etluafed"`) {
		t.Errorf("machine list:\n%s", strings.Join(lines, "\n"))
	}
	if lines := rows("machine", "get", mac, "-o", "table"); !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, `rack="r1\nforged=1"`) }) {
		t.Errorf("machine get -o table:\n%s", strings.Join(lines, "\n"))
	}
	if lines := rows("machine", "events", mac); len(lines) != 1 || !strings.Contains(lines[0], `file="pxelinux.0\n2026`) {
		t.Errorf("machine events:\n%s", strings.Join(lines, "\n"))
	}
	// Such a group can still be read and deleted by its id, as the list
	// shows it quoted (a shell's $'…' types it).
	if code, out := runCLI(t, env, "group", "delete", forged); code != 0 || strings.Contains(out, "\n"+"forged") {
		t.Errorf("group delete of a stored id: %d %q", code, out)
	}
	if code, body := apiCall(t, "GET", s.apiURL+"/api/v1/groups/"+url.PathEscape(forged), "mbx_test_token_0123456789", nil); code != 404 {
		t.Errorf("after the delete: %d %s", code, body)
	}
	if !strings.Contains(s.log.String(), "still served") {
		t.Errorf("the server does not warn about stored ids it would now refuse:\n%s", s.log.String())
	}
}

// The CLI refuses names it would send that the server refuses, before
// sending them.
func TestCLIRefusesUnprintableNames(t *testing.T) {
	env := []string{"MATCHBOX_ENDPOINT=http://127.0.0.1:1", "MATCHBOX_TOKEN=x"}
	for _, args := range [][]string{
		{"token", "create", "-name", "ci\nforged", "-role", "read"},
		{"template", "apply", "generic", "-f", "-", "-name", "\u202ex.tmpl"},
		{"machine", "list", "-group", "\x1b[2J"},
		{"machine", "list", "-label", "rack=r1\nx"},
		{"machine", "label", "52:54:00:00:00:01", "rack=\u200br1"},
		{"machine", "preview", "52:54:00:00:00:01", "os=\xff"},
	} {
		code, out := runCLI(t, env, args...)
		if code != 1 || !strings.Contains(out, "invalid") || strings.Contains(out, "cannot reach") {
			t.Errorf("%q: exit %d, %q; want a refusal before any request", args, code, out)
		}
		if strings.ContainsAny(out, "\x1b\u202e\u200b") || strings.Count(out, "\n") != 1 {
			t.Errorf("%q: the error %q is not one escaped line", args, out)
		}
	}
}
