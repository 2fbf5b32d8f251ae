package matchbox

import (
	"cmp"
	"slices"
)

// pair is one selector or label key/value, used as an index key without
// allocating a joined string per lookup.
type pair struct{ k, v string }

// rankedGroup is a group with its precedence: lower rank wins.
type rankedGroup struct {
	g    *Group
	rank int
}

// Index answers "which group does a machine with these labels get" without
// scanning every group. Each group with selectors is filed under its least
// common selector pair; a request looks up only the buckets of its own
// labels, so the cost depends on the number of labels and on how many
// groups share a pair, not on the total number of groups.
type Index struct {
	buckets map[pair][]rankedGroup
	// always holds, in rank order, groups whose selector values are all
	// empty: they match machines that send none of those labels, so no
	// label lookup finds them.
	always      []rankedGroup
	bestDefault *Group
	size        int
}

// Precedes reports whether group a wins over group b when both match a
// machine: more selectors wins; equal counts are broken by the greater
// sorted "k=v" selector string (poseidon/matchbox's rule); identical
// selector sets, which poseidon/matchbox leaves undefined, by the lower id.
func Precedes(a, b *Group) bool {
	return compareGroups(a, b) < 0
}

func compareGroups(a, b *Group) int {
	if la, lb := len(a.Selector), len(b.Selector); la != lb {
		return cmp.Compare(lb, la)
	}
	if sa, sb := a.SelectorString(), b.SelectorString(); sa != sb {
		return -cmp.Compare(sa, sb)
	}
	return cmp.Compare(a.ID, b.ID)
}

// NewIndex builds the selection index for groups.
func NewIndex(groups []*Group) *Index {
	type keyed struct {
		g   *Group
		sel string
	}
	sorted := make([]keyed, len(groups))
	for i, g := range groups {
		sorted[i] = keyed{g, g.SelectorString()}
	}
	// Sort once by precedence; the position is the rank.
	slices.SortFunc(sorted, func(a, b keyed) int {
		if la, lb := len(a.g.Selector), len(b.g.Selector); la != lb {
			return cmp.Compare(lb, la)
		}
		if a.sel != b.sel {
			return -cmp.Compare(a.sel, b.sel)
		}
		return cmp.Compare(a.g.ID, b.g.ID)
	})

	freq := make(map[pair]int)
	for _, g := range groups {
		for k, v := range g.Selector {
			freq[pair{k, v}]++
		}
	}
	idx := &Index{buckets: make(map[pair][]rankedGroup, len(freq)), size: len(groups)}
	for rank, kg := range sorted {
		g := kg.g
		if len(g.Selector) == 0 {
			if idx.bestDefault == nil {
				idx.bestDefault = g
			}
			continue
		}
		var best pair
		bestN := -1
		for k, v := range g.Selector {
			if v == "" {
				continue
			}
			p := pair{k, v}
			n := freq[p]
			if bestN < 0 || n < bestN || (n == bestN && (p.k < best.k || (p.k == best.k && p.v < best.v))) {
				best, bestN = p, n
			}
		}
		if bestN < 0 {
			idx.always = append(idx.always, rankedGroup{g, rank})
			continue
		}
		idx.buckets[best] = append(idx.buckets[best], rankedGroup{g, rank})
	}
	return idx
}

// Len is the number of groups in the index.
func (idx *Index) Len() int { return idx.size }

// Select returns the group a machine with these labels gets, or nil when
// no group matches.
func (idx *Index) Select(labels map[string]string) *Group {
	var best *Group
	bestRank := -1
	for _, rg := range idx.always {
		if rg.g.Matches(labels) {
			best, bestRank = rg.g, rg.rank
			break
		}
	}
	for k, v := range labels {
		for _, rg := range idx.buckets[pair{k, v}] {
			if bestRank >= 0 && rg.rank >= bestRank {
				// Buckets are in rank order: nothing later can win.
				break
			}
			if rg.g.Matches(labels) {
				best, bestRank = rg.g, rg.rank
				break
			}
		}
	}
	if best == nil {
		return idx.bestDefault
	}
	return best
}
