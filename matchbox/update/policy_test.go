package update

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"matchbox.dev/matchbox"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Windows are days, times and a zone, as operators write them; one past
// midnight belongs to the day it starts.
func TestWindows(t *testing.T) {
	for _, tc := range []struct {
		spec string
		in   []string // RFC 3339 instants inside
		out  []string // and outside
	}{
		{"Mon-Fri 09:00-17:00 Europe/Berlin",
			[]string{"2026-12-07T08:00:00Z" /* Mon 09:00 CET */, "2026-12-11T15:59:00Z" /* Fri 16:59 */, "2026-07-06T07:00:00Z" /* Mon 09:00 CEST */},
			[]string{"2026-12-07T07:59:00Z", "2026-12-11T16:00:00Z", "2026-12-12T10:00:00Z" /* Sat */, "2026-07-06T06:59:00Z"}},
		{"Sat,Sun 00:00-24:00",
			[]string{"2026-12-05T00:00:00Z", "2026-12-06T23:59:00Z"},
			[]string{"2026-12-04T23:59:00Z", "2026-12-07T00:00:00Z"}},
		{"Fri 22:00-06:00 UTC",
			[]string{"2026-12-04T22:00:00Z", "2026-12-05T05:59:00Z"},
			[]string{"2026-12-04T21:59:00Z", "2026-12-05T06:00:00Z", "2026-12-05T22:30:00Z" /* Sat night */, "2026-12-04T03:00:00Z" /* Fri morning: Thu's night */}},
		{"Fri-Mon 10:00-11:00",
			[]string{"2026-12-04T10:30:00Z", "2026-12-07T10:30:00Z"},
			[]string{"2026-12-08T10:30:00Z", "2026-12-03T10:30:00Z"}},
		{"daily 00:00-01:00 America/New_York",
			[]string{"2026-12-02T05:30:00Z"},
			[]string{"2026-12-02T06:00:00Z"}},
	} {
		w, err := ParseWindow(tc.spec)
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		for _, s := range tc.in {
			if !w.Contains(mustTime(t, s)) {
				t.Errorf("%s: %s is outside, want inside", tc.spec, s)
			}
		}
		for _, s := range tc.out {
			if w.Contains(mustTime(t, s)) {
				t.Errorf("%s: %s is inside, want outside", tc.spec, s)
			}
		}
	}
	for _, bad := range []string{"", "Mon-Fri", "Mon-Fri 9:00-17:00", "Mon-Fri 09:00-17:60", "Mon-Fri 24:00-01:00", "Mon-Fri 10:00-10:00",
		"Mon-Frx 09:00-17:00", "Mon-Fri 09:00-17:00 Mars/Olympus", "Mon-Fri 09:00-17:00 Local", "Mon 09:00-17:00 UTC extra", "Mon 0900-1700"} {
		if _, err := ParseWindow(bad); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("ParseWindow(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	// Stored as written, read back the same.
	w, _ := ParseWindow("Mon-Fri  09:00-17:00   Europe/Berlin")
	data, err := json.Marshal(struct{ W Window }{w})
	if err != nil || string(data) != `{"W":"Mon-Fri 09:00-17:00 Europe/Berlin"}` {
		t.Fatalf("marshal: %s, %v", data, err)
	}
	var back struct{ W Window }
	if err := json.Unmarshal(data, &back); err != nil || !back.W.Contains(mustTime(t, "2026-12-07T08:00:00Z")) {
		t.Errorf("unmarshal: %+v, %v", back, err)
	}
}

func TestMatch(t *testing.T) {
	for in, want := range map[string]Match{
		"track":         {Kind: MatchTrack},
		"group:worker":  {Kind: MatchGroup, Value: "worker"},
		"label:rack=r1": {Kind: MatchLabel, Key: "rack", Value: "r1"},
		"label:canary=": {Kind: MatchLabel, Key: "canary"},
		"label:a=b=c":   {Kind: MatchLabel, Key: "a", Value: "b=c"},
	} {
		got, err := ParseMatch(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("ParseMatch(%q) = %+v (%s), %v; want %+v", in, got, got.String(), err, want)
		}
	}
	for _, bad := range []string{"", "tracks", "group:", "label:", "label:=v", "label:k", "mac:52:54:00:00:00:01", "group:a\u202eb"} {
		if _, err := ParseMatch(bad); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("ParseMatch(%q): %v, want ErrInvalid", bad, err)
		}
	}
}

func TestGroupCheck(t *testing.T) {
	ok := Group{Name: "workers", Channel: "stable", Version: Newest, Match: Match{Kind: MatchTrack}}
	if err := ok.Check(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*Group){
		"no name":               func(g *Group) { g.Name = "" },
		"unknown channel":       func(g *Group) { g.Channel = "edge" },
		"bad version":           func(g *Group) { g.Version = "3815.2" },
		"bad match":             func(g *Group) { g.Match = Match{Kind: "mac"} },
		"bad floor":             func(g *Group) { g.Floors = []string{"x"} },
		"floors not rising":     func(g *Group) { g.Floors = []string{"3815.2.0", "3602.2.0"} },
		"negative limit":        func(g *Group) { g.Policy.MaxInFlight = -1 },
		"per period, no period": func(g *Group) { g.Policy.MaxPerPeriod = 5 },
		"period, no max":        func(g *Group) { g.Policy.Period = time.Hour },
	} {
		g := ok
		mutate(&g)
		if err := g.Check(); !errors.Is(err, matchbox.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	for _, g := range DefaultGroups() {
		if err := g.Check(); err != nil || !g.Policy.Paused || g.Match.Kind != MatchTrack || g.Name != g.Channel {
			t.Errorf("default group %+v: %v", g, err)
		}
	}
}

// The target is the newest mirrored release or the pinned one, through
// the floors below it, one at a time.
func TestTarget(t *testing.T) {
	mirrored := []string{"3602.2.0", "3760.2.0", "3815.2.0", "3815.2.1"}
	newest := Group{Version: Newest}
	pinned := Group{Version: "3760.2.0"}
	floored := Group{Version: Newest, Floors: []string{"3602.2.0", "3760.2.0"}}
	missingFloor := Group{Version: Newest, Floors: []string{"3700.0.0"}}
	for _, tc := range []struct {
		name    string
		g       Group
		current string
		want    string
	}{
		{"newest", newest, "3510.2.0", "3815.2.1"},
		{"newest, numeric not textual", Group{Version: Newest}, "3510.2.0", "3815.2.1"},
		{"up to date", newest, "3815.2.1", ""},
		{"newer than the newest (rolled forward by hand)", newest, "4000.0.0", ""},
		{"pinned", pinned, "3602.2.0", "3760.2.0"},
		{"pinned, at it", pinned, "3760.2.0", ""},
		{"pinned, above it: never downgraded", pinned, "3815.2.0", ""},
		{"pinned, not mirrored", Group{Version: "3900.0.0"}, "3602.2.0", ""},
		{"first floor", floored, "3510.2.0", "3602.2.0"},
		{"second floor", floored, "3602.2.0", "3760.2.0"},
		{"past the floors", floored, "3760.2.0", "3815.2.1"},
		{"floor not mirrored: wait", missingFloor, "3602.2.0", ""},
	} {
		got, ok := tc.g.Target(tc.current, mirrored)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: Target(%s) = %q, %v; want %q", tc.name, tc.current, got, ok, tc.want)
		}
	}
	if _, ok := newest.Target("3510.2.0", nil); ok {
		t.Error("a target with nothing mirrored")
	}
}

// Admit applies every rule of a policy, in order.
func TestAdmit(t *testing.T) {
	monday := mustTime(t, "2026-12-07T10:00:00Z")
	sunday := mustTime(t, "2026-12-06T10:00:00Z")
	weekdays, _ := ParseWindow("Mon-Fri 09:00-17:00 UTC")
	p := Policy{MaxInFlight: 2, MaxPerPeriod: 3, Period: time.Hour, Canary: 1, PauseAfterFailures: 2, Windows: []Window{weekdays}}
	for _, tc := range []struct {
		name string
		p    Policy
		now  time.Time
		r    Rollout
		want Hold
	}{
		{"first grant: the canary", p, monday, Rollout{}, ""},
		{"canary granted, not complete", p, monday, Rollout{InFlight: 1, InPeriod: 1, Granted: 1}, HoldCanary},
		{"canary complete", p, monday, Rollout{InPeriod: 1, Granted: 1, Completed: 1}, ""},
		{"in flight at the limit", p, monday, Rollout{InFlight: 2, InPeriod: 2, Granted: 3, Completed: 1}, HoldInFlight},
		{"per period at the limit", p, monday, Rollout{InFlight: 1, InPeriod: 3, Granted: 4, Completed: 3}, HoldPeriod},
		{"outside the window", p, sunday, Rollout{Completed: 1, Granted: 1}, HoldWindow},
		{"failures", p, monday, Rollout{Failed: 2, Completed: 1, Granted: 3}, HoldFailures},
		{"paused", Policy{Paused: true}, monday, Rollout{}, HoldPaused},
		{"no limits", Policy{}, sunday, Rollout{InFlight: 1000, InPeriod: 1000, Granted: 1000}, ""},
	} {
		if got := tc.p.Admit(tc.now, tc.r); got != tc.want {
			t.Errorf("%s: Admit = %q, want %q", tc.name, got, tc.want)
		}
	}
	if pause, why := p.PauseFor(Rollout{Failed: 2}); !pause || !strings.Contains(why, "2 machines failed") {
		t.Errorf("PauseFor after 2 failures: %v %q", pause, why)
	}
	if pause, _ := p.PauseFor(Rollout{Failed: 1}); pause {
		t.Error("paused after 1 failure of 2")
	}
	if d := (&Policy{}).GrantTimeout(); d != DefaultTimeout {
		t.Errorf("default timeout %v", d)
	}
}
