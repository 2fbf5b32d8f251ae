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
	idx := &Index{groups: groups, seed: maphash.MakeSeed(), bestDefault: -1}
	// The pairs with a value, by their bucket key, each group's in key
	// order (frozen selectors are sorted): hashes[ends[i-1]:ends[i]] are
	// group i's. Counting pairs by key rather than by the strings merges
	// the counts of two pairs sharing a key, as their buckets are merged:
	// it may file a group under another of its pairs, which never changes
	// an answer (see pairHash).
	var hashes []uint64
	ends := make([]int, len(groups))
	freq := make(map[uint64]int32, len(groups))
	var g Group
	for i, p := range groups {
		g.unpack(p)
		for k, v := range g.Selectors() {
			if v == "" {
				continue
			}
			h := pairHash(idx.seed, k, v)
			hashes = append(hashes, h)
			freq[h]++
		}
		ends[i] = len(hashes)
	}
	type filed struct {
		h uint64
		i int32
	}
	// A group filed under a pair no other group has is alone in its
	// bucket (a bucket holds only groups with its pair): those need no
	// sort, and a fleet selected by MAC is mostly them.
	alone := make([]filed, 0, len(groups))
	var shared []filed
	start := 0
	for i, p := range groups {
		i := int32(i)
		own := hashes[start:ends[i]]
		start = ends[i]
		if len(own) == 0 {
			g.unpack(p)
			if g.SelectorCount() == 0 {
				if idx.bestDefault < 0 || idx.compare(i, idx.bestDefault) < 0 {
					idx.bestDefault = i
				}
			} else {
				idx.always = append(idx.always, i)
			}
			continue
		}
		// The least common pair; of equally common ones the first by key.
		best, bestN := own[0], freq[own[0]]
		for _, h := range own[1:] {
			if n := freq[h]; n < bestN {
				best, bestN = h, n
			}
		}
		if bestN == 1 {
			alone = append(alone, filed{best, i})
		} else {
			shared = append(shared, filed{best, i})
		}
	}
	slices.SortFunc(idx.always, idx.compare)
	// Order by bucket, then by precedence within each bucket.
	slices.SortFunc(shared, func(a, b filed) int {
		if c := cmp.Compare(a.h, b.h); c != 0 {
			return c
		}
		return idx.compare(a.i, b.i)
	})
	idx.entries = make([]int32, 0, len(alone)+len(shared))
	idx.buckets = make(map[uint64]span, len(alone)+len(shared))
	for _, f := range alone {
		idx.buckets[f.h] = span{uint32(len(idx.entries)), 1}
		idx.entries = append(idx.entries, f.i)
	}
	for i, f := range shared {
		if i > 0 && shared[i-1].h == f.h {
			sp := idx.buckets[f.h]
			sp.n++
			idx.buckets[f.h] = sp
		} else {
			idx.buckets[f.h] = span{uint32(len(idx.entries)), 1}
		}
		idx.entries = append(idx.entries, f.i)
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
