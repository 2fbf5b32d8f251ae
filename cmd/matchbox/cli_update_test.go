package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"matchbox.dev/matchbox/update"
)

// The update group commands against a running server with a release
// mirror: set with windows and limits, list, get -o json round-tripping,
// a bad window refused with the reason, pause and resume, rm.
func TestUpdateGroupCLI(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, nil, "-data-path", data, "-assets-path", t.TempDir(), "-db-path", filepath.Join(t.TempDir(), "m.db"))
	env := []string{"MATCHBOX_ENDPOINT=" + s.apiURL, "MATCHBOX_TOKEN_FILE=" + filepath.Join(data, "admin.token")}

	code, out := runCLI(t, env, "update", "group", "set", "canary", "-channel", "beta", "-match", "label:rack=r1",
		"-max-in-flight", "2", "-max-per-period", "10", "-period", "1h", "-timeout", "90m", "-canary", "1", "-pause-after-failures", "3",
		"-window", "Mon-Fri 09:00-17:00 Europe/Berlin", "-window", "Sat,Sun 00:00-24:00")
	if code != 0 || strings.TrimSpace(out) != "update group canary created" {
		t.Fatalf("set: %d %s", code, out)
	}
	code, out = runCLI(t, env, "update", "group", "list")
	if code != 0 || !strings.Contains(out, "NAME") {
		t.Fatalf("list: %d %s", code, out)
	}
	var line string
	for l := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(l, "canary ") {
			line = l
		}
	}
	for _, want := range []string{"beta", "newest", "label:rack=r1", "max-in-flight=2", "max-per-period=10/1h0m0s", "Mon-Fri 09:00-17:00 Europe/Berlin; Sat,Sun 00:00-24:00", " no"} {
		if !strings.Contains(line, want) {
			t.Errorf("list line %q lacks %q", line, want)
		}
	}
	if !strings.Contains(out, "stable") || !strings.Contains(out, "yes: created paused") {
		t.Errorf("list without the default groups, paused:\n%s", out)
	}

	// get -o json round-trips: it decodes into the group set.
	code, got := runCLI(t, env, "update", "group", "get", "canary", "-o", "json")
	var g update.Group
	if code != 0 || json.Unmarshal([]byte(got), &g) != nil {
		t.Fatalf("get -o json: %d %s", code, got)
	}
	var windows []update.Window
	for _, spec := range []string{"Mon-Fri 09:00-17:00 Europe/Berlin", "Sat,Sun 00:00-24:00"} {
		w, err := update.ParseWindow(spec)
		if err != nil {
			t.Fatal(err)
		}
		windows = append(windows, w)
	}
	want := update.Group{Name: "canary", Channel: "beta", Version: "newest", Match: update.Match{Kind: "label", Key: "rack", Value: "r1"},
		Policy: update.Policy{MaxInFlight: 2, MaxPerPeriod: 10, Period: time.Hour, Timeout: 90 * time.Minute, Canary: 1, PauseAfterFailures: 3, Windows: windows}}
	if gj, wj := mustJSON(t, g), mustJSON(t, want); gj != wj {
		t.Errorf("get -o json:\n got %s\nwant %s", gj, wj)
	}

	// A bad window: exit 1, the reason, nothing changed.
	code, out = runCLI(t, env, "update", "group", "set", "canary", "-channel", "beta", "-window", "Mon-Fri 9-17")
	if code != 1 || !strings.Contains(out, "-window") || !strings.Contains(out, "HH:MM") {
		t.Errorf("bad window: %d %s", code, out)
	}
	if _, now := runCLI(t, env, "update", "group", "get", "canary", "-o", "json"); now != got {
		t.Errorf("group changed by a refused set:\n%s", now)
	}

	// Pause with a reason; set keeps the pause; resume.
	code, out = runCLI(t, env, "update", "pause", "canary", "-reason", "bad kernel")
	if code != 0 || strings.TrimSpace(out) != "update group canary paused (paused: bad kernel)" {
		t.Errorf("pause: %d %s", code, out)
	}
	code, out = runCLI(t, env, "update", "group", "set", "canary", "-channel", "beta", "-version", "4081.2.0")
	if code != 0 || strings.TrimSpace(out) != "update group canary updated (paused: bad kernel)" {
		t.Errorf("set of a paused group: %d %s", code, out)
	}
	code, out = runCLI(t, env, "update", "resume", "canary")
	if code != 0 || strings.TrimSpace(out) != "update group canary resumed" {
		t.Errorf("resume: %d %s", code, out)
	}
	code, out = runCLI(t, env, "update", "group", "get", "canary", "-o", "table")
	if code != 0 || !strings.Contains(out, "4081.2.0") || strings.Contains(out, "yes:") || strings.Contains(out, "max-in-flight") {
		t.Errorf("get -o table after set and resume: %d %s", code, out)
	}
	code, out = runCLI(t, env, "update", "resume", "nope")
	if code != 1 || !strings.Contains(out, "not_found (404)") {
		t.Errorf("resume of a missing group: %d %s", code, out)
	}

	// rm.
	if code, out = runCLI(t, env, "update", "group", "rm", "canary"); code != 0 || strings.TrimSpace(out) != "update group canary removed" {
		t.Errorf("rm: %d %s", code, out)
	}
	if code, out = runCLI(t, env, "update", "group", "get", "canary"); code != 1 || !strings.Contains(out, "404") {
		t.Errorf("get after rm: %d %s", code, out)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
