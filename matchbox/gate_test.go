package matchbox_test

import (
	"strings"
	"testing"

	"matchbox.dev/matchbox"
)

// A held machine boots the install profile while it installs, keeps its
// own once installed, and always has a group to render with.
func TestGateSelect(t *testing.T) {
	own := &matchbox.Group{ID: "g", Profile: "live"}
	snap := matchbox.NewSnapshot(matchbox.Objects{
		Groups:   []*matchbox.Group{own},
		Profiles: []*matchbox.Profile{{ID: "live"}, {ID: "install"}},
	})
	live, _ := snap.Profile("live")
	booting := matchbox.Gate{State: matchbox.StateBooting, Profile: "install", Token: "t"}
	sel, err := booting.Select(snap, matchbox.Selection{Group: own, Profile: live})
	if err != nil || sel.Group != own || sel.Profile.ID != "install" {
		t.Errorf("booting with a group: %+v, %v", sel, err)
	}
	sel, err = booting.Select(snap, matchbox.Selection{})
	if err != nil || sel.Group == nil || sel.Profile.ID != "install" {
		t.Errorf("booting without a group: %+v, %v", sel, err)
	}
	installed := matchbox.Gate{State: matchbox.StateInstalled, Profile: "install"}
	if sel, err := installed.Select(snap, matchbox.Selection{Group: own, Profile: live}); err != nil || sel.Profile != live {
		t.Errorf("installed: %+v, %v", sel, err)
	}
	missing := matchbox.Gate{State: matchbox.StateInstalling, Profile: "gone"}
	if _, err := missing.Select(snap, matchbox.Selection{Group: own, Profile: live}); err == nil || !strings.Contains(err.Error(), `"gone"`) {
		t.Errorf("a missing install profile: %v", err)
	}
}
