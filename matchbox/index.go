package matchbox

import (
	"cmp"
	"hash/maphash"
	"slices"
)

// entry is a group in the index. For a frozen group, what precedence
// compares is read from the group itself (a field and a slice of its
// data); only an unfrozen group has its selector string cached here, so a
// large frozen fleet costs the collector one pointer per entry.
type entry struct {
	g   *Group
	sel string // SelectorString, for unfrozen groups only
}

func newEntry(g *Group, sel string) entry {
	if g.frozen {
		return entry{g: g}
	}
	return entry{g, sel}
}

func (e *entry) selector() string {
	if e.g.frozen {
		return e.g.data[e.g.selEnd:e.g.strEnd]
	}
	return e.sel
}

// span is a bucket's range in Index.entries.
type span struct{ start, n uint32 }

// precedes reports whether e wins over o when both match a machine.
func (e *entry) precedes(o *entry) bool {
	return compareEntries(e, o) < 0
}

func compareEntries(a, b *entry) int {
	if an, bn := a.g.SelectorCount(), b.g.SelectorCount(); an != bn {
		return cmp.Compare(bn, an)
	}
	if as, bs := a.selector(), b.selector(); as != bs {
		return -cmp.Compare(as, bs)
	}
	return cmp.Compare(a.g.ID, b.g.ID)
}

// pairHash is the bucket key of a selector or label pair. Buckets are
// keyed by hash rather than by the strings so the bucket map holds no
// pointers: the collector does not walk it. Two pairs with the same hash
// share a bucket, which costs a lookup a few more comparisons and never
// changes its answer, since every candidate is checked with Matches.
func pairHash(seed maphash.Seed, k, v string) uint64 {
	hk := maphash.String(seed, k)
	hv := maphash.String(seed, v)
	return hk ^ (hv*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019 + hk<<6 + hk>>2)
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
	buckets map[uint64]span
	seed    maphash.Seed
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
	ea := entry{a, a.SelectorString()}
	eb := entry{b, b.SelectorString()}
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
	type pair struct{ k, v string }
	freq := make(map[pair]int, len(groups))
	for _, g := range groups {
		for k, v := range g.Selectors() {
			freq[pair{k, v}]++
		}
	}
	idx := &Index{size: len(groups), seed: maphash.MakeSeed()}
	type filed struct {
		h uint64
		e entry
	}
	var all []filed
	var bestDefault *entry
	for i, g := range groups {
		e := newEntry(g, sels[i])
		if g.SelectorCount() == 0 {
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
		all = append(all, filed{pairHash(idx.seed, best.k, best.v), e})
	}
	if bestDefault != nil {
		idx.bestDefault = bestDefault.g
	}
	byPrecedence := func(a, b entry) int { return compareEntries(&a, &b) }
	slices.SortFunc(idx.always, byPrecedence)
	// Order by bucket, then by precedence within each bucket.
	slices.SortFunc(all, func(a, b filed) int {
		if c := cmp.Compare(a.h, b.h); c != 0 {
			return c
		}
		return compareEntries(&a.e, &b.e)
	})
	idx.entries = make([]entry, len(all))
	idx.buckets = make(map[uint64]span, len(freq))
	for i, f := range all {
		idx.entries[i] = f.e
		if i > 0 && all[i-1].h == f.h {
			sp := idx.buckets[f.h]
			sp.n++
			idx.buckets[f.h] = sp
		} else {
			idx.buckets[f.h] = span{uint32(i), 1}
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
		sp, ok := idx.buckets[pairHash(idx.seed, k, v)]
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
