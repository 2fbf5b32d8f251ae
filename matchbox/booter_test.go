package matchbox_test

import (
	"errors"
	"testing"

	"matchbox.dev/matchbox"
)

// gateMap is a fixed set of reinstall gates.
type gateMap map[string]matchbox.Gate

func (m gateMap) Gate(mac string) (matchbox.Gate, bool) { g, ok := m[mac]; return g, ok }

// One decision for every front-end: the selection, the reinstall gate in
// each state, and the token check.
func TestBooterDecide(t *testing.T) {
	const (
		grouped   = "52:54:00:00:00:01"
		installs  = "52:54:00:00:00:02"
		installed = "52:54:00:00:00:03"
		lost      = "52:54:00:00:00:04" // held, no group matches
		broken    = "52:54:00:00:00:05" // held, install profile missing
	)
	catalog := matchbox.NewCatalog("db")
	catalog.Update(t.Context(), "db", matchbox.Objects{
		Groups: []*matchbox.Group{
			{ID: "node1", Profile: "live", Selector: map[string]string{"mac": grouped}},
			{ID: "node2", Profile: "live", Selector: map[string]string{"mac": installs}},
			{ID: "node3", Profile: "live", Selector: map[string]string{"mac": installed}},
			{ID: "node5", Profile: "live", Selector: map[string]string{"mac": broken}},
		},
		Profiles: []*matchbox.Profile{{ID: "live"}, {ID: "install"}},
	})
	b := matchbox.NewBooter(catalog, gateMap{
		installs:  {State: matchbox.StateBooting, Profile: "install", Token: "t2"},
		installed: {State: matchbox.StateInstalled, Profile: "install", Token: "t3"},
		lost:      {State: matchbox.StateInstalling, Profile: "install", Token: "t4"},
		broken:    {State: matchbox.StateBooting, Profile: "gone", Token: "t5"},
	})
	profile := func(d matchbox.Decision) string {
		if d.Profile == nil {
			return ""
		}
		return d.Profile.ID
	}
	for _, tc := range []struct {
		name              string
		labels            map[string]string
		profile, token    string
		netboots, refused bool
		err               error
	}{
		{"its group", map[string]string{"mac": grouped}, "live", "", true, false, nil},
		{"unknown", map[string]string{"mac": "52:54:00:00:00:99"}, "", "", false, false, matchbox.ErrNotFound},
		{"a token without a reinstall", map[string]string{"mac": grouped, "token": "t2"}, "live", "", true, true, nil},
		{"installing", map[string]string{"mac": installs}, "install", "t2", true, false, nil},
		{"installing, its token", map[string]string{"mac": installs, "token": "t2"}, "install", "t2", true, false, nil},
		{"installing, a stale token", map[string]string{"mac": installs, "token": "t3"}, "live", "t2", true, true, nil},
		{"installing, the installed system's config", map[string]string{"mac": installs, "os": "installed"}, "live", "t2", true, false, nil},
		{"installed: its own profile, booting from disk", map[string]string{"mac": installed}, "live", "t3", true, false, nil},
		{"installing without a group", map[string]string{"mac": lost}, "install", "t4", true, false, nil},
		{"install profile missing", map[string]string{"mac": broken}, "live", "t5", true, true, nil},
	} {
		d := b.Decide(tc.labels)
		if profile(d) != tc.profile || d.Token() != tc.token || d.Netboots() != tc.netboots || (d.Refused != nil) != tc.refused ||
			(tc.err == nil) != (d.Err == nil) || (tc.err != nil && !errors.Is(d.Err, tc.err)) {
			t.Errorf("%s: profile %q token %q netboots %v refused %v err %v; want %q %q %v %v %v",
				tc.name, profile(d), d.Token(), d.Netboots(), d.Refused, d.Err, tc.profile, tc.token, tc.netboots, tc.refused, tc.err)
		}
		if d.Held && d.Group == nil && d.Installs() && d.Refused == nil {
			t.Errorf("%s: a machine installing has no group to render with", tc.name)
		}
	}
	if d := b.Decide(map[string]string{"mac": lost}); !d.Grouped() || d.Group == nil || d.Group.Profile != "install" {
		t.Errorf("a held machine without a group: grouped %v, group %+v", d.Grouped(), d.Group)
	}
	if d := b.Decide(map[string]string{"mac": installs, "token": "t3"}); !errors.Is(d.Refused, matchbox.ErrStaleToken) {
		t.Errorf("stale token refused with %v", d.Refused)
	}
	// Without gates, nothing is held and no token is checked.
	if d := matchbox.NewBooter(catalog, nil).Decide(map[string]string{"mac": installs, "token": "x"}); d.Held || d.Refused != nil || profile(d) != "live" {
		t.Errorf("no gates: %+v", d)
	}
}
