package matchbox

import (
	"cmp"
	"slices"
)

// pair is one selector or label key/value, used as an index key without
// allocating a joined string per lookup.
type pair struct{ k, v string }

// entry is a group with what precedence compares, computed once.
type entry struct {
	g   *Group
	sel string // SelectorString
	n   int    // number of selectors
}

// span is a bucket's range in Index.entries.
type span struct{ start, n uint32 }

// precedes reports whether e wins over o when both match a machine.
func (e *entry) precedes(o *entry) bool {
	return compareEntries(e, o) < 0
}

func compareEntries(a, b *entry) int {
	if a.n != b.n {
		return cmp.Compare(b.n, a.n)
	}
	if a.sel != b.sel {
		return -cmp.Compare(a.sel, b.sel)
	}
	return cmp.Compare(a.g.ID, b.g.ID)
}

// Index answers "which group does a machine with these labels get" without
// scanning every group. Each group with selectors is filed under its least
// common selector pair; a request looks up only the buckets of its own
// labels, so the cost depends on the number of labels and on how many
// groups share a pair, not on the total number of groups. Buckets are kept
// in precedence order, so a lookup stops at the first match.
type Index struct {
	// buckets locates each pair's entries in entries, which holds every
	// bucket's entries one after another: one array for all groups
	// rather than a slice per pair.
	buckets map[pair]span
	entries []entry
	// always holds, in precedence order, groups whose selector values are
	// all empty: they match machines that send none of those labels, so no
	// label lookup finds them.
	always      []entry
	bestDefault *Group
	size        int
}

// Precedes reports whether group a wins over group b when both match a
// machine: more selectors wins; equal counts are broken by the greater
// sorted "k=v" selector string (poseidon/matchbox's rule); identical
// selector sets, which poseidon/matchbox leaves undefined, by the lower id.
func Precedes(a, b *Group) bool {
	ea := entry{a, a.SelectorString(), a.SelectorCount()}
	eb := entry{b, b.SelectorString(), b.SelectorCount()}
	return ea.precedes(&eb)
}

// NewIndex builds the selection index for groups.
func NewIndex(groups []*Group) *Index {
	sels := make([]string, len(groups))
	for i, g := range groups {
		sels[i] = g.SelectorString()
	}
	return newIndex(groups, sels)
}

// newIndex builds the index from groups and their selector strings.
func newIndex(groups []*Group, sels []string) *Index {
	freq := make(map[pair]int, len(groups))
	for _, g := range groups {
		for k, v := range g.Selectors() {
			freq[pair{k, v}]++
		}
	}
	idx := &Index{size: len(groups)}
	type filed struct {
		p pair
		e entry
	}
	var all []filed
	var bestDefault *entry
	for i, g := range groups {
		e := entry{g, sels[i], g.SelectorCount()}
		if e.n == 0 {
			if bestDefault == nil || e.precedes(bestDefault) {
				bestDefault = &e
			}
			continue
		}
		var best pair
		bestN := -1
		for k, v := range g.Selectors() {
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
			idx.always = append(idx.always, e)
			continue
		}
		all = append(all, filed{best, e})
	}
	if bestDefault != nil {
		idx.bestDefault = bestDefault.g
	}
	byPrecedence := func(a, b entry) int { return compareEntries(&a, &b) }
	slices.SortFunc(idx.always, byPrecedence)
	// Order by bucket, then by precedence within each bucket.
	slices.SortFunc(all, func(a, b filed) int {
		if c := cmp.Compare(a.p.k, b.p.k); c != 0 {
			return c
		}
		if c := cmp.Compare(a.p.v, b.p.v); c != 0 {
			return c
		}
		return compareEntries(&a.e, &b.e)
	})
	idx.entries = make([]entry, len(all))
	idx.buckets = make(map[pair]span, len(freq))
	for i, f := range all {
		idx.entries[i] = f.e
		if i > 0 && all[i-1].p == f.p {
			sp := idx.buckets[f.p]
			sp.n++
			idx.buckets[f.p] = sp
		} else {
			idx.buckets[f.p] = span{uint32(i), 1}
		}
	}
	return idx
}

// Len is the number of groups in the index.
func (idx *Index) Len() int { return idx.size }

// Select returns the group a machine with these labels gets, or nil when
// no group matches.
func (idx *Index) Select(labels map[string]string) *Group {
	var best *entry
	for i := range idx.always {
		if idx.always[i].g.Matches(labels) {
			best = &idx.always[i]
			break
		}
	}
	for k, v := range labels {
		sp, ok := idx.buckets[pair{k, v}]
		if !ok {
			continue
		}
		bucket := idx.entries[sp.start : sp.start+sp.n]
		for i := range bucket {
			e := &bucket[i]
			if best != nil && !e.precedes(best) {
				// Buckets are in precedence order: nothing later can win.
				break
			}
			if e.g.Matches(labels) {
				best = e
				break
			}
		}
	}
	if best == nil {
		return idx.bestDefault
	}
	return best.g
}
