package matchbox

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Claim stands for a group file that does not load and never did in this
// server's life (at start-up, or a new file), so there is no last good
// version to serve instead. Nobody knows for sure which machines the group
// was meant to select; serving those machines the next matching group
// (often the default group, which may install to disk) could wipe them.
// So the machines the group may select get no group at all until the file
// loads: what could be read of its selectors narrows that down.
type Claim struct {
	// Origin is the file; Reason why it does not load.
	Origin string
	Reason string
	// Known tells whether the group's selectors could be read. When they
	// could not, the claim covers every machine.
	Known bool
	// Selector holds the selectors that could be read (a "mac" value
	// normalised), Unknown the keys of those whose values could not (an
	// invalid MAC address, a number): such a selector may match any value.
	Selector map[string]string
	Unknown  []string
}

// count is the number of selectors the group has.
func (c *Claim) count() int { return len(c.Selector) + len(c.Unknown) }

// selectorString is the claim's selector string (as Group.SelectorString),
// meaningful only when no value is unknown.
func (c *Claim) selectorString() string {
	pairs := make([]string, 0, len(c.Selector))
	for k, v := range c.Selector {
		pairs = append(pairs, k+"="+v)
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

// mayWin reports whether the claimed group may be the one a machine with
// these labels gets, given that won (nil: none) wins among the groups
// that load. Whatever is unknown is taken to work for the claim.
func (c *Claim) mayWin(labels map[string]string, won *Group) bool {
	if !c.Known {
		return true
	}
	for k, v := range c.Selector {
		if labels[k] != v {
			return false
		}
	}
	if won == nil {
		return true
	}
	switch n, wn := c.count(), won.SelectorCount(); {
	case n != wn:
		return n > wn
	case len(c.Unknown) > 0:
		return true
	default:
		// Identical selector sets are broken by ids, and the id the
		// file meant is not known: the claim may win.
		return c.selectorString() >= won.SelectorString()
	}
}

// Covers says which machines the claim withholds groups from, for logs,
// /readyz and validate.
func (c *Claim) Covers() string {
	if !c.Known {
		return "every machine (its selectors cannot be read)"
	}
	if c.count() == 0 {
		return "every machine without a more specific group (it is a default group)"
	}
	pairs := make([]string, 0, c.count())
	for k, v := range c.Selector {
		pairs = append(pairs, k+"="+v)
	}
	for _, k := range c.Unknown {
		pairs = append(pairs, Printable(k)+"=(unreadable)")
	}
	slices.Sort(pairs)
	return "machines matching " + strings.Join(pairs, ",") + " without a more specific group"
}

// problem is the claim as validate and the logs report it.
func (c *Claim) problem() Problem {
	return Problem{c.Origin, SeverityError, fmt.Sprintf("no group is served to %s until this file loads (start the server with -ignore-broken-groups to serve them the next matching group instead)", c.Covers())}
}

// withheld returns the error a machine with these labels gets when any
// claim may win over won (nil: none), naming every such claim; otherwise
// nil.
func withheld(claims []Claim, labels map[string]string, won *Group) error {
	var b strings.Builder
	n := 0
	for i := range claims {
		c := &claims[i]
		if !c.mayWin(labels, won) {
			continue
		}
		if n++; n > 1 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s (%s)", Printable(c.Origin), EscapeLine(c.Reason))
	}
	if n == 0 {
		return nil
	}
	what := "a group file that does not load may select this machine: "
	if n > 1 {
		what = "group files that do not load may select this machine: "
	}
	return fmt.Errorf("%s%s; no group is served to it until they load: %w", what, b.String(), ErrUnavailable)
}
