package matchbox

import (
	"cmp"
	"hash/maphash"
	"slices"
)

// span is a bucket's range in Index.entries.
type span struct{ start, n uint32 }

// compareGroups orders a before b when a wins over b for a machine both
// match: more selectors, then the greater selector string, then the lower
// id, then (two groups with one id) the lower origin. sa and sb are their
// selector strings.
func compareGroups(a, b *Group, sa, sb string) int {
	if an, bn := a.SelectorCount(), b.SelectorCount(); an != bn {
		return cmp.Compare(bn, an)
	}
	if sa != sb {
		return -cmp.Compare(sa, sb)
	}
	if c := cmp.Compare(a.ID, b.ID); c != 0 {
		return c
	}
	return cmp.Compare(a.Origin, b.Origin)
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
//
// A large fleet's index lives as long as its snapshot and the collector
// looks at it on every cycle, so it holds no pointers but the packed
// groups (frozen.go), once: numbers into that slice everywhere else.
type Index struct {
	// groups are packed groups (the slice given to newIndex, shared with
	// the snapshot).
	groups []string
	// buckets locates each pair's entries in entries, which holds every
	// bucket's group numbers one after another.
	buckets map[uint64]span
	seed    maphash.Seed
	entries []int32
	// always holds, in precedence order, groups whose selector values are
	// all empty: they match machines that send none of those labels, so no
	// label lookup finds them.
	always      []int32
	bestDefault int32 // -1: none
}

// Precedes reports whether group a wins over group b when both match a
// machine: more selectors wins; equal counts are broken by the greater
// sorted "k=v" selector string (poseidon/matchbox's rule); identical
// selector sets, which poseidon/matchbox leaves undefined, by the lower id.
func Precedes(a, b *Group) bool {
	return compareGroups(a, b, a.SelectorString(), b.SelectorString()) < 0
}

// NewIndex builds the selection index for groups. Select returns frozen
// copies of them; a group that cannot be frozen (see Freeze) is left out.
func NewIndex(groups []*Group) *Index {
	packed, _ := packGroups(groups)
	return newIndex(packed)
}

// packGroups returns the packed form of each group (freezing a copy of
// those not frozen) and the groups that cannot be frozen.
func packGroups(groups []*Group) (packed []string, failed []*Group) {
	packed = make([]string, 0, len(groups))
	for _, g := range groups {
		if !g.frozen {
			c := *g
			c.Freeze()
			g = &c
		}
		if p := g.Packed(); p != "" {
			packed = append(packed, p)
		} else {
			failed = append(failed, g)
		}
	}
	return packed, failed
}

// compare orders group numbers by precedence.
func (idx *Index) compare(a, b int32) int {
	var ga, gb Group
	ga.unpack(idx.groups[a])
	gb.unpack(idx.groups[b])
	return compareGroups(&ga, &gb, ga.SelectorString(), gb.SelectorString())
}

// newIndex builds the index of packed groups. The index keeps groups; the
// caller must not change it afterwards.
func newIndex(groups []string) *Index {
	type pair struct{ k, v string }
	freq := make(map[pair]int, len(groups))
	var g Group
	for _, p := range groups {
		g.unpack(p)
		for k, v := range g.Selectors() {
			freq[pair{k, v}]++
		}
	}
	idx := &Index{groups: groups, seed: maphash.MakeSeed(), bestDefault: -1}
	type filed struct {
		h uint64
		i int32
	}
	var all []filed
	for i, p := range groups {
		i := int32(i)
		g.unpack(p)
		if g.SelectorCount() == 0 {
			if idx.bestDefault < 0 || idx.compare(i, idx.bestDefault) < 0 {
				idx.bestDefault = i
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
			idx.always = append(idx.always, i)
			continue
		}
		all = append(all, filed{pairHash(idx.seed, best.k, best.v), i})
	}
	slices.SortFunc(idx.always, idx.compare)
	// Order by bucket, then by precedence within each bucket.
	slices.SortFunc(all, func(a, b filed) int {
		if c := cmp.Compare(a.h, b.h); c != 0 {
			return c
		}
		return idx.compare(a.i, b.i)
	})
	idx.entries = make([]int32, len(all))
	idx.buckets = make(map[uint64]span, len(freq))
	for i, f := range all {
		idx.entries[i] = f.i
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
func (idx *Index) Len() int { return len(idx.groups) }

// Select returns the group a machine with these labels gets, or nil when
// no group matches.
func (idx *Index) Select(labels map[string]string) *Group {
	i := idx.find(labels)
	if i < 0 {
		return nil
	}
	return UnpackGroup(idx.groups[i])
}

// find returns the number of the group a machine with these labels gets,
// or -1.
func (idx *Index) find(labels map[string]string) int32 {
	// Each candidate is unpacked once, into g; bg is the best match so
	// far, kept unpacked for the comparisons that follow.
	best := int32(-1)
	var g, bg Group
	for _, i := range idx.always {
		if g.unpack(idx.groups[i]); g.Matches(labels) {
			best, bg = i, g
			break
		}
	}
	for k, v := range labels {
		sp, ok := idx.buckets[pairHash(idx.seed, k, v)]
		if !ok {
			continue
		}
		for _, i := range idx.entries[sp.start : sp.start+sp.n] {
			g.unpack(idx.groups[i])
			if best >= 0 && compareGroups(&g, &bg, g.SelectorString(), bg.SelectorString()) >= 0 {
				// Buckets are in precedence order: nothing later can win.
				break
			}
			if g.Matches(labels) {
				best, bg = i, g
				break
			}
		}
	}
	if best < 0 {
		return idx.bestDefault
	}
	return best
}
