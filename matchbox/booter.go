package matchbox

import (
	"crypto/subtle"
	"errors"
	"fmt"
)

// Gates says which machines a reinstall holds (reinstall.Engine).
type Gates interface {
	Gate(mac string) (Gate, bool)
}

// SnapshotSource gives the current snapshot (a Catalog).
type SnapshotSource interface {
	Snapshot() *Snapshot
}

// Booter answers the one question every front-end asks: "this machine
// with these labels asks to boot: what does it get?" DHCP, TFTP, the
// HTTP boot endpoints and the admin API's preview all ask it, so they
// cannot disagree. Deciding changes nothing: a front-end that serves an
// install config tells the reinstall engine so itself.
type Booter struct {
	catalog SnapshotSource
	gates   Gates
}

// NewBooter returns a Booter over the catalog's snapshots and the
// reinstall gates (nil: no machine is ever held).
func NewBooter(catalog SnapshotSource, gates Gates) *Booter {
	return &Booter{catalog: catalog, gates: gates}
}

// Decision is what a machine gets.
type Decision struct {
	// Snapshot is the configuration the decision was taken on; render
	// with it, not with a later one.
	Snapshot *Snapshot
	// Selection is what the machine is served: its group and profile, or
	// while a reinstall installs it the install profile (and a group
	// always: an empty one when none matches).
	Selection
	// Err says why the selection gives no boot answer: no group matches,
	// the group has no usable profile (the group is set all the same), or
	// a group file that does not load may select the machine
	// (ErrUnavailable). Nil while a reinstall installs the machine.
	Err error
	// Refused says why the request must not be answered at all, whatever
	// it asks for: its reinstall token is not the current one
	// (ErrStaleToken), or the reinstall's install profile is missing.
	Refused error
	// Held is set while a reinstall holds the machine; Gate says how.
	Held bool
	Gate Gate
}

// Netboots reports whether the machine is sent a network boot program
// (DHCP): when a group and profile are selected for it, or while a
// reinstall holds it (an installed machine too: iPXE then sends it to its
// disk; a missing install profile fails at /ipxe, with its reason).
func (d *Decision) Netboots() bool { return d.Err == nil || d.Held }

// Grouped reports whether the configuration expects the machine: a group
// matches it, a group file that does not load may, or a reinstall holds
// it.
func (d *Decision) Grouped() bool {
	return d.Group != nil || d.Held || errors.Is(d.Err, ErrUnavailable)
}

// Installs reports whether the machine is being sent the install profile.
func (d *Decision) Installs() bool { return d.Held && d.Gate.Installs() }

// Token is the reinstall token the machine's answers carry while a
// reinstall holds it ("" otherwise).
func (d *Decision) Token() string {
	if !d.Held {
		return ""
	}
	return d.Gate.Token
}

// Decide takes the decision for a machine with these labels: "mac" (and
// "uuid", the request's other labels) select its group; while a reinstall
// holds the MAC, the install profile replaces the group's profile, except
// for requests about the installed system (label os=installed), which keep
// their group's. A "token" label must be the reinstall's current token.
func (b *Booter) Decide(labels map[string]string) Decision {
	d := Decision{Snapshot: b.catalog.Snapshot()}
	d.Selection, d.Err = d.Snapshot.Select(labels)
	mac := labels["mac"]
	if b.gates == nil || mac == "" {
		return d
	}
	d.Gate, d.Held = b.gates.Gate(mac)
	if tok := labels["token"]; tok != "" && !(d.Held && d.Gate.Admits(tok)) {
		d.Refused = fmt.Errorf("machine %s: %w", mac, ErrStaleToken)
		return d
	}
	if !d.Installs() {
		return d
	}
	d.Err = nil
	if labels["os"] != "installed" {
		d.Selection, d.Refused = d.Gate.Select(d.Snapshot, d.Selection)
	}
	return d
}

// Admits reports whether token is the reinstall's current token.
func (g Gate) Admits(token string) bool {
	return g.Token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(g.Token)) == 1
}
