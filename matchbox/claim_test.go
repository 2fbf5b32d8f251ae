package matchbox

import (
	"errors"
	"strings"
	"testing"
)

// The shipped data's shape: node1 installs to disk by MAC, installed
// machines (os=installed) boot their disk, everything else boots live.
func claimFleet() []*Group {
	return []*Group{
		{ID: "install-node1", Profile: "install", Selector: map[string]string{"mac": "52:54:00:a1:9c:ae"}, Origin: "groups/install-node1.json"},
		{ID: "installed", Profile: "installed", Selector: map[string]string{"os": "installed"}, Origin: "groups/installed.json"},
		{ID: "rack2", Profile: "live", Selector: map[string]string{"rack": "2", "os": "installed"}, Origin: "groups/rack2.json"},
		{ID: "default", Profile: "live", Origin: "groups/default.json"},
	}
}

func claimProfiles() []*Profile {
	return []*Profile{{ID: "install"}, {ID: "installed"}, {ID: "live"}}
}

// TestClaimWithholds checks that a group file which does not load never
// lets a machine it may select fall through to a less specific group, and
// that machines it cannot select get exactly what they get without it.
func TestClaimWithholds(t *testing.T) {
	const node1 = "52:54:00:a1:9c:ae"
	machines := []map[string]string{
		{"mac": node1},
		{"mac": node1, "os": "installed"},
		{"mac": node1, "os": "installed", "rack": "2"},
		{"mac": "52:54:00:00:00:02"},
		{"mac": "52:54:00:00:00:02", "os": "installed"},
		{"mac": "52:54:00:00:00:03", "uuid": "u3"},
	}
	tests := []struct {
		name string
		// without removes a group from the fleet: the claim stands for
		// it (its file broke before it ever loaded).
		without string
		claim   Claim
		// withheld lists the machines (indexes into machines) that must
		// get no group.
		withheld []int
	}{
		{name: "unreadable: every machine", without: "installed",
			claim: Claim{Known: false}, withheld: []int{0, 1, 2, 3, 4, 5}},
		{name: "installed.json with readable selectors",
			without: "installed", claim: Claim{Known: true, Selector: map[string]string{"os": "installed"}},
			// rack2 has more selectors: the broken group could never
			// win there.
			withheld: []int{1, 4}},
		{name: "a per-machine group with an unreadable MAC",
			without: "install-node1", claim: Claim{Known: true, Unknown: []string{"mac"}},
			// One unknown selector outranks nothing with two, and may
			// outrank everything with one or none.
			withheld: []int{0, 1, 3, 4, 5}},
		{name: "a broken default group",
			without: "default", claim: Claim{Known: true},
			// Only the machines that would get the default group.
			withheld: []int{3, 5}},
		{name: "a broken group more specific than any",
			claim:    Claim{Known: true, Selector: map[string]string{"mac": node1, "os": "installed", "rack": "2", "row": "a"}},
			withheld: nil},
		{name: "a broken group with a uuid",
			claim:    Claim{Known: true, Selector: map[string]string{"uuid": "u3"}},
			withheld: []int{5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var groups []*Group
			for _, g := range claimFleet() {
				if g.ID != tt.without {
					groups = append(groups, g)
				}
			}
			tt.claim.Origin, tt.claim.Reason = "groups/broken.json", "bad JSON at line 3, column 1"
			without := NewSnapshot(Objects{Groups: groups, Profiles: claimProfiles()})
			with := NewSnapshot(Objects{Groups: groups, Profiles: claimProfiles(), Claims: []Claim{tt.claim}})
			for i, labels := range machines {
				held := false
				for _, w := range tt.withheld {
					held = held || w == i
				}
				got, err := with.Select(labels)
				if held {
					if !errors.Is(err, ErrUnavailable) || got.Group != nil || !strings.Contains(err.Error(), "groups/broken.json") {
						t.Errorf("machine %v: Select = %s, %v; want no group, ErrUnavailable naming the file", labels, groupID(got.Group), err)
					}
					continue
				}
				want, werr := without.Select(labels)
				if groupID(got.Group) != groupID(want.Group) || (err == nil) != (werr == nil) || errors.Is(err, ErrUnavailable) {
					t.Errorf("machine %v: Select = %s, %v; want %s, %v as without the broken file", labels, groupID(got.Group), err, groupID(want.Group), werr)
				}
			}
		})
	}
}

// TestClaimAgainstTheFixedFile checks, over many claims, that a machine
// never gets a group it would not get once the broken file is fixed: it
// gets that group, or none.
func TestClaimAgainstTheFixedFile(t *testing.T) {
	selectors := []map[string]string{
		{}, {"os": "installed"}, {"mac": "52:54:00:a1:9c:ae"}, {"mac": "52:54:00:a1:9c:ae", "os": "installed"},
		{"rack": "2"}, {"os": "installed", "rack": "2"}, {"uuid": "u3"}, {"os": ""},
	}
	labelSets := []map[string]string{
		{"mac": "52:54:00:a1:9c:ae"}, {"mac": "52:54:00:a1:9c:ae", "os": "installed"}, {"mac": "52:54:00:00:00:02", "rack": "2"},
		{"mac": "52:54:00:00:00:02", "rack": "2", "os": "installed"}, {"uuid": "u3", "os": "installed"}, {},
	}
	for si, sel := range selectors {
		fixed := &Group{ID: "broken", Profile: "live", Selector: sel, Origin: "groups/broken.json"}
		// What can be read of the broken file: everything, the keys only
		// of some values, or nothing.
		claims := []Claim{{Known: false}, {Known: true, Selector: sel}}
		if len(sel) > 0 {
			c := Claim{Known: true, Selector: map[string]string{}}
			for k := range sel {
				c.Unknown = append(c.Unknown, k)
			}
			claims = append(claims, c)
		}
		for ci, c := range claims {
			c.Origin = "groups/broken.json"
			fleet := claimFleet()
			good := NewSnapshot(Objects{Groups: append(claimFleet(), fixed), Profiles: claimProfiles()})
			broken := NewSnapshot(Objects{Groups: fleet, Profiles: claimProfiles(), Claims: []Claim{c}})
			for _, labels := range labelSets {
				want, _ := good.Select(labels)
				got, err := broken.Select(labels)
				if got.Group != nil && (want.Group == nil || got.Group.ID != want.Group.ID) {
					t.Errorf("selector %d claim %d, machine %v: got %s, but the fixed file gives %s", si, ci, labels, groupID(got.Group), groupID(want.Group))
				}
				if got.Group == nil && err == nil {
					t.Errorf("selector %d claim %d, machine %v: no group and no error", si, ci, labels)
				}
			}
		}
	}
}

func TestSelectGroupWithoutProfile(t *testing.T) {
	snap := NewSnapshot(Objects{Groups: []*Group{
		{ID: "node1", Selector: map[string]string{"os": "installed"}, Origin: "groups/node1.json"},
		{ID: "default", Profile: "live", Origin: "groups/default.json"},
	}, Profiles: []*Profile{{ID: "live"}}})
	sel, err := snap.Select(map[string]string{"os": "installed"})
	if !errors.Is(err, ErrNotFound) || sel.Group == nil || sel.Group.ID != "node1" || sel.Profile != nil {
		t.Fatalf("Select = %+v, %v; want node1 without a profile and ErrNotFound", sel, err)
	}
	if !strings.Contains(err.Error(), "has no profile") {
		t.Errorf("error %q does not say the group has no profile", err)
	}
}
