package matchbox

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The reference below is poseidon/matchbox's selection, written out as it
// does it (storagepb.Group.Matches, selectorString, ByReqs and
// server.SelectGroup), to pin our Index against.

// refMatches is poseidon/matchbox's Group.Matches.
func refMatches(g *Group, labels map[string]string) bool {
	for key, val := range g.Selector {
		if labels == nil || labels[key] != val {
			return false
		}
	}
	return true
}

// refSelectorString is poseidon/matchbox's Group.selectorString.
func refSelectorString(g *Group) string {
	reqs := make([]string, 0, len(g.Selector))
	for key, value := range g.Selector {
		reqs = append(reqs, key+"="+value)
	}
	sort.StringSlice(reqs).Sort()
	return strings.Join(reqs, ",")
}

// refByReqs is poseidon/matchbox's ByReqs.
type refByReqs []*Group

func (g refByReqs) Len() int      { return len(g) }
func (g refByReqs) Swap(i, j int) { g[i], g[j] = g[j], g[i] }
func (g refByReqs) Less(i, j int) bool {
	if len(g[i].Selector) == len(g[j].Selector) {
		return refSelectorString(g[i]) < refSelectorString(g[j])
	}
	return len(g[i].Selector) < len(g[j].Selector)
}

// refSelect is poseidon/matchbox's server.SelectGroup: nil when no group
// matches.
func refSelect(groups []*Group, labels map[string]string) *Group {
	sorted := slices.Clone(groups)
	sort.Sort(sort.Reverse(refByReqs(sorted)))
	for _, g := range sorted {
		if refMatches(g, labels) {
			return g
		}
	}
	return nil
}

// wantSelect is what our selection must answer: the reference's group when
// the reference is deterministic; when several matching groups tie with
// the reference's winner (same selector count and string, which matchbox
// leaves to sort.Sort's whim), the lowest id among them.
func wantSelect(groups []*Group, labels map[string]string) (want *Group, ties int) {
	ref := refSelect(groups, labels)
	if ref == nil {
		return nil, 0
	}
	refStr := refSelectorString(ref)
	want = ref
	for _, g := range groups {
		if len(g.Selector) != len(ref.Selector) || refSelectorString(g) != refStr || !refMatches(g, labels) {
			continue
		}
		ties++
		if g.ID < want.ID {
			want = g
		}
	}
	return want, ties
}

func groupID(g *Group) string {
	if g == nil {
		return "<none>"
	}
	return g.ID
}

func TestIndexSelect(t *testing.T) {
	const mac = "52:54:00:a1:9c:ae"
	g := func(id string, kv ...string) *Group {
		sel := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			sel[kv[i]] = kv[i+1]
		}
		return &Group{ID: id, Profile: "p", Selector: sel}
	}
	tests := []struct {
		name   string
		groups []*Group
		labels map[string]string
		want   string // group id, "" for no match
		// undefined marks cases where poseidon/matchbox has no single
		// answer (identical selector sets); ours is the lowest id.
		undefined bool
	}{
		{name: "single selector",
			groups: []*Group{g("node1", "mac", mac)},
			labels: map[string]string{"mac": mac}, want: "node1"},
		{name: "more selectors wins",
			groups: []*Group{g("a-os", "os", "flatcar"), g("b-os-region", "os", "flatcar", "region", "eu")},
			labels: map[string]string{"os": "flatcar", "region": "eu"}, want: "b-os-region"},
		{name: "more selectors wins over a greater selector string",
			groups: []*Group{g("zzz", "zzz", "z"), g("aaa", "a", "a", "b", "b")},
			labels: map[string]string{"a": "a", "b": "b", "zzz": "z"}, want: "aaa"},
		{name: "more selectors wins whatever the order",
			groups: []*Group{g("b-os-region", "os", "flatcar", "region", "eu"), g("a-os", "os", "flatcar")},
			labels: map[string]string{"os": "flatcar", "region": "eu"}, want: "b-os-region"},
		{name: "tie broken by greatest selector string",
			groups: []*Group{g("b", "os", "flatcar", "region", "eu"), g("a", "os", "flatcar", "zone", "a")},
			labels: map[string]string{"os": "flatcar", "region": "eu", "zone": "a"}, want: "a"},
		{name: "tie: uuid beats mac because uuid=… sorts after mac=…",
			groups: []*Group{g("by-mac", "mac", mac), g("by-uuid", "uuid", "u1")},
			labels: map[string]string{"mac": mac, "uuid": "u1"}, want: "by-uuid"},
		{name: "tie on value",
			groups: []*Group{g("x", "os", "alpha"), g("y", "region", "beta"), g("z", "os", "alphb")},
			labels: map[string]string{"os": "alpha", "region": "beta"}, want: "y"},
		{name: "tie: the whole sorted string counts, not the first pair",
			groups: []*Group{g("one", "a", "1", "z", "1"), g("two", "a", "1", "y", "9")},
			labels: map[string]string{"a": "1", "y": "9", "z": "1"}, want: "one"},
		{name: "default group when nothing else matches",
			groups: []*Group{g("default"), g("flatcar", "os", "flatcar")},
			labels: map[string]string{"os": "fedora"}, want: "default"},
		{name: "specific group beats default",
			groups: []*Group{g("default"), g("flatcar", "os", "flatcar")},
			labels: map[string]string{"os": "flatcar"}, want: "flatcar"},
		{name: "default group with no labels",
			groups: []*Group{g("flatcar", "os", "flatcar"), g("default")},
			labels: map[string]string{}, want: "default"},
		{name: "default group with nil labels",
			groups: []*Group{g("flatcar", "os", "flatcar"), g("default")},
			labels: nil, want: "default"},
		{name: "values are case-sensitive",
			groups: []*Group{g("flatcar", "os", "Flatcar")},
			labels: map[string]string{"os": "flatcar"}, want: ""},
		{name: "keys are case-sensitive",
			groups: []*Group{g("flatcar", "OS", "flatcar")},
			labels: map[string]string{"os": "flatcar"}, want: ""},
		{name: "extra labels ignored",
			groups: []*Group{g("node1", "mac", mac)},
			labels: map[string]string{"mac": mac, "uuid": "u1", "domain": "", "arch": "x86_64"}, want: "node1"},
		{name: "every selector must match",
			groups: []*Group{g("both", "os", "flatcar", "region", "eu"), g("default")},
			labels: map[string]string{"os": "flatcar", "region": "us"}, want: "default"},
		{name: "a missing label does not match",
			groups: []*Group{g("both", "os", "flatcar", "region", "eu")},
			labels: map[string]string{"os": "flatcar"}, want: ""},
		{name: "empty label value matches empty selector value",
			groups: []*Group{g("nodomain", "domain", ""), g("default")},
			labels: map[string]string{"domain": ""}, want: "nodomain"},
		{name: "identical selectors: lowest id",
			groups: []*Group{g("node-b", "os", "flatcar"), g("node-a", "os", "flatcar"), g("node-c", "os", "flatcar")},
			labels: map[string]string{"os": "flatcar"}, want: "node-a", undefined: true},
		{name: "identical selectors, lower id does not match a more specific group",
			groups: []*Group{g("b", "os", "flatcar"), g("a", "os", "flatcar"), g("c", "os", "flatcar", "region", "eu")},
			labels: map[string]string{"os": "flatcar", "region": "eu"}, want: "c"},
		{name: "two default groups: lowest id",
			groups: []*Group{g("default-2"), g("default-1")},
			labels: map[string]string{"os": "flatcar"}, want: "default-1", undefined: true},
		{name: "no match",
			groups: []*Group{g("node1", "mac", mac), g("flatcar", "os", "flatcar")},
			labels: map[string]string{"mac": "52:54:00:00:00:00", "os": "fedora"}, want: ""},
		{name: "no groups", groups: nil, labels: map[string]string{"mac": mac}, want: ""},
		{name: "selector strings tie across different selectors",
			// {"a=b": "c"} and {"a": "b=c"} both read "a=b=c".
			groups: []*Group{g("k2", "a", "b=c"), g("k1", "a=b", "c")},
			labels: map[string]string{"a": "b=c", "a=b": "c"}, want: "k1", undefined: true},
		{name: "only the matching group of a shared pair",
			groups: []*Group{
				g("eu-1", "region", "eu", "rack", "1"), g("eu-2", "region", "eu", "rack", "2"),
				g("eu-3", "region", "eu", "rack", "3"), g("eu", "region", "eu"),
			},
			labels: map[string]string{"region": "eu", "rack": "2"}, want: "eu-2"},
		{name: "rarest pair of the winner not in the request",
			groups: []*Group{
				g("a", "region", "eu", "os", "flatcar"), g("b", "region", "eu", "os", "fedora"),
				g("c", "region", "eu", "os", "fedora", "rack", "7"), g("d", "os", "flatcar"),
			},
			labels: map[string]string{"region": "eu", "os": "flatcar", "rack": "7"}, want: "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := NewIndex(tt.groups).Select(tt.labels)
			if groupID(got) != groupID(find(tt.groups, tt.want)) {
				t.Errorf("Select(%v) = %s, want %s", tt.labels, groupID(got), groupID(find(tt.groups, tt.want)))
			}
			want, ties := wantSelect(tt.groups, tt.labels)
			if groupID(want) != groupID(got) {
				t.Errorf("Select(%v) = %s, reference says %s", tt.labels, groupID(got), groupID(want))
			}
			if undef := ties > 1; undef != tt.undefined {
				t.Errorf("reference ties = %d, case says undefined = %v", ties, tt.undefined)
			}
		})
	}
}

func find(groups []*Group, id string) *Group {
	for _, g := range groups {
		if g.ID == id {
			return g
		}
	}
	return nil
}

// TestSelectEmptySelectorValue pins poseidon/matchbox's behaviour for a
// selector with an empty value: its Matches compares labels[key] != val, so
// {"domain": ""} matches a machine that sends no domain label at all. That
// is deterministic in matchbox, so we must answer the same.
func TestSelectEmptySelectorValue(t *testing.T) {
	groups := []*Group{
		{ID: "default", Profile: "p"},
		{ID: "nodomain", Profile: "p", Selector: map[string]string{"domain": ""}},
		{ID: "nodomain-flatcar", Profile: "p", Selector: map[string]string{"domain": "", "os": "flatcar"}},
	}
	tests := []struct {
		labels map[string]string
		want   string
	}{
		{map[string]string{"mac": "52:54:00:a1:9c:ae"}, "nodomain"},
		{map[string]string{"os": "flatcar"}, "nodomain-flatcar"},
		{map[string]string{"domain": "", "os": "flatcar"}, "nodomain-flatcar"},
		{map[string]string{"domain": "example.com", "os": "flatcar"}, "default"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.labels), func(t *testing.T) {
			if ref := refSelect(groups, tt.labels); groupID(ref) != tt.want {
				t.Fatalf("reference = %s, test expects %s", groupID(ref), tt.want)
			}
			if got := NewIndex(groups).Select(tt.labels); groupID(got) != tt.want {
				t.Errorf("Index.Select(%v) = %s, poseidon/matchbox selects %s", tt.labels, groupID(got), tt.want)
			}
		})
	}
}

func TestSnapshotSelect(t *testing.T) {
	const mac = "52:54:00:a1:9c:ae"
	snap := NewSnapshot(Objects{
		Groups: []*Group{
			{ID: "node1", Profile: "flatcar", Selector: map[string]string{"mac": mac}},
			{ID: "dangling", Profile: "missing", Selector: map[string]string{"os": "fedora"}},
		},
		Profiles: []*Profile{{ID: "flatcar", Boot: Boot{Kernel: "/assets/vmlinuz"}}},
	})
	t.Run("match", func(t *testing.T) {
		sel, err := snap.Select(map[string]string{"mac": mac})
		if err != nil {
			t.Fatal(err)
		}
		if sel.Group.ID != "node1" || sel.Profile == nil || sel.Profile.ID != "flatcar" {
			t.Errorf("Select = group %s, profile %v; want node1, flatcar", groupID(sel.Group), sel.Profile)
		}
	})
	t.Run("no match", func(t *testing.T) {
		sel, err := snap.Select(map[string]string{"mac": "52:54:00:00:00:00"})
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Select error = %v, want ErrNotFound", err)
		}
		if sel.Group != nil || sel.Profile != nil {
			t.Errorf("Select = %+v, want an empty selection", sel)
		}
	})
	t.Run("missing profile", func(t *testing.T) {
		sel, err := snap.Select(map[string]string{"os": "fedora"})
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Select error = %v, want ErrNotFound", err)
		}
		if sel.Group == nil || sel.Group.ID != "dangling" {
			t.Errorf("Selection.Group = %s, want dangling", groupID(sel.Group))
		}
		if sel.Profile != nil {
			t.Errorf("Selection.Profile = %+v, want nil", sel.Profile)
		}
		for _, s := range []string{`"dangling"`, `"missing"`} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not name %s", err, s)
			}
		}
	})
	t.Run("empty snapshot", func(t *testing.T) {
		if _, err := NewSnapshot().Select(map[string]string{"mac": mac}); !errors.Is(err, ErrNotFound) {
			t.Errorf("Select on an empty snapshot: %v, want ErrNotFound", err)
		}
	})
}

// Small alphabets so that shared pairs, ties and identical selector sets
// are common.
var (
	propKeys   = []string{"os", "region", "zone", "mac", "arch"}
	propValues = []string{"a", "b", "c"}
)

func randomGroups(r *rand.Rand) []*Group {
	n := r.IntN(30)
	ids := r.Perm(n)
	groups := make([]*Group, n)
	for i := range groups {
		sel := map[string]string{}
		for range r.IntN(4) {
			sel[propKeys[r.IntN(len(propKeys))]] = propValues[r.IntN(len(propValues))]
		}
		groups[i] = &Group{ID: fmt.Sprintf("g%02d", ids[i]), Profile: "p", Selector: sel}
	}
	return groups
}

func randomLabels(r *rand.Rand) map[string]string {
	labels := map[string]string{}
	for _, k := range propKeys {
		if r.IntN(10) < 7 {
			labels[k] = propValues[r.IntN(len(propValues))]
		}
	}
	if r.IntN(4) == 0 {
		labels["uuid"] = "u"
	}
	return labels
}

func TestSelectMatchesReference(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4} {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 0x6d61746368626f78))
			ties := 0
			for iter := range 500 {
				groups := randomGroups(r)
				idx := NewIndex(groups)
				if idx.Len() != len(groups) {
					t.Fatalf("Len = %d, want %d", idx.Len(), len(groups))
				}
				frozen := NewIndex(frozenCopies(groups))
				for range 4 {
					labels := randomLabels(r)
					want, n := wantSelect(groups, labels)
					if n > 1 {
						ties++
					}
					if got := idx.Select(labels); groupID(got) != groupID(want) {
						t.Fatalf("iteration %d: Select(%v) = %s, want %s (%d tied)\ngroups:\n%s",
							iter, labels, groupID(got), groupID(want), n, dumpGroups(groups))
					}
					if got := frozen.Select(labels); groupID(got) != groupID(want) {
						t.Fatalf("iteration %d: frozen groups: Select(%v) = %s, want %s (%d tied)\ngroups:\n%s",
							iter, labels, groupID(got), groupID(want), n, dumpGroups(groups))
					}
				}
			}
			if ties == 0 {
				t.Error("no identical selector sets were generated; the alphabet is too large")
			}
		})
	}
}

// TestPrecedesMatchesReference checks the exported ordering against
// poseidon/matchbox's ByReqs: whenever ByReqs orders two groups strictly,
// Precedes agrees, and identical selector sets are ordered by id.
func TestPrecedesMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for range 2000 {
		gs := randomGroups(r)
		if len(gs) < 2 {
			continue
		}
		a, b := gs[0], gs[1]
		pair := refByReqs{a, b}
		switch {
		case pair.Less(1, 0): // b < a in ByReqs, so a comes first reversed
			if !Precedes(a, b) || Precedes(b, a) {
				t.Fatalf("Precedes(%v, %v) disagrees with ByReqs", a.Selector, b.Selector)
			}
		case pair.Less(0, 1):
			if Precedes(a, b) || !Precedes(b, a) {
				t.Fatalf("Precedes(%v, %v) disagrees with ByReqs", a.Selector, b.Selector)
			}
		default:
			if Precedes(a, b) != (a.ID < b.ID) {
				t.Fatalf("identical selectors %v: Precedes(%s, %s) = %v, want lower id first",
					a.Selector, a.ID, b.ID, Precedes(a, b))
			}
		}
	}
}

func dumpGroups(groups []*Group) string {
	var b strings.Builder
	for _, g := range groups {
		fmt.Fprintf(&b, "  %s %s\n", g.ID, refSelectorString(g))
	}
	return b.String()
}

// Fuzz alphabets include "=" and "," so that different selector sets can
// share a selector string.
var (
	fuzzKeys   = []string{"os", "mac", "region", "a", "a=b", "b"}
	fuzzValues = []string{"x", "y", "b=x", "x,b=y", "52:54:00:a1:9c:ae"}
)

// groupsFromBytes decodes fuzz input into groups and labels: the first byte
// is the group count; each group is an id byte, a selector count and that
// many (key, value) index bytes; what remains picks the labels.
func groupsFromBytes(data []byte) ([]*Group, map[string]string) {
	next := func() (byte, bool) {
		if len(data) == 0 {
			return 0, false
		}
		b := data[0]
		data = data[1:]
		return b, true
	}
	n, _ := next()
	var groups []*Group
	for i := range int(n % 24) {
		idb, ok := next()
		if !ok {
			break
		}
		cnt, _ := next()
		sel := map[string]string{}
		for range int(cnt % 4) {
			k, _ := next()
			v, _ := next()
			sel[fuzzKeys[int(k)%len(fuzzKeys)]] = fuzzValues[int(v)%len(fuzzValues)]
		}
		// The id byte sets the order of ids; the index keeps them unique.
		groups = append(groups, &Group{ID: fmt.Sprintf("%02x-%02d", idb, i), Profile: "p", Selector: sel})
	}
	labels := map[string]string{}
	for i, k := range fuzzKeys {
		b, ok := next()
		if !ok {
			break
		}
		if b&1 == 1 {
			labels[k] = fuzzValues[(int(b>>1)+i)%len(fuzzValues)]
		}
	}
	return groups, labels
}

func FuzzSelect(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3, 0x10, 1, 0, 0, 0x01, 0, 0x20, 2, 0, 0, 2, 1, 1, 1, 1, 3})
	f.Add([]byte{4, 9, 1, 3, 1, 8, 1, 4, 2, 7, 0, 6, 0, 1, 1, 1, 1, 1, 1, 1})
	f.Add([]byte{5, 1, 1, 0, 0, 2, 1, 0, 0, 3, 2, 0, 0, 2, 1, 4, 0, 0, 5, 1, 1, 1, 1, 1, 1})
	f.Add([]byte("identical selectors and a default group, all matching"))
	f.Fuzz(func(t *testing.T, data []byte) {
		groups, labels := groupsFromBytes(data)
		want, n := wantSelect(groups, labels)
		if got := NewIndex(groups).Select(labels); groupID(got) != groupID(want) {
			t.Fatalf("Select(%v) = %s, want %s (%d tied)\ngroups:\n%s",
				labels, groupID(got), groupID(want), n, dumpGroups(groups))
		}
		if got := NewIndex(frozenCopies(groups)).Select(labels); groupID(got) != groupID(want) {
			t.Fatalf("frozen groups: Select(%v) = %s, want %s (%d tied)\ngroups:\n%s",
				labels, groupID(got), groupID(want), n, dumpGroups(groups))
		}
	})
}

// frozenCopies returns frozen copies of groups.
func frozenCopies(groups []*Group) []*Group {
	out := make([]*Group, len(groups))
	for i, g := range groups {
		c := *g
		c.Selector = maps.Clone(g.Selector)
		c.Freeze()
		out[i] = &c
	}
	return out
}

func TestIndexDoesNotKeepCallerOrder(t *testing.T) {
	// The same groups in any order build an index with the same answers.
	r := rand.New(rand.NewPCG(11, 11))
	for range 200 {
		groups := randomGroups(r)
		shuffled := slices.Clone(groups)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		a, b := NewIndex(groups), NewIndex(shuffled)
		for range 4 {
			labels := randomLabels(r)
			if ga, gb := a.Select(labels), b.Select(labels); groupID(ga) != groupID(gb) {
				t.Fatalf("Select(%v) depends on group order: %s vs %s", labels, groupID(ga), groupID(gb))
			}
		}
	}
}

// benchGroups builds n groups as a large site has them: most selected by
// mac, every tenth by os and region instead, and one default group.
func benchGroups(n int) ([]*Group, []map[string]string) {
	groups := make([]*Group, 0, n)
	var requests []map[string]string
	groups = append(groups, &Group{ID: "default", Profile: "install"})
	for i := 1; i < n; i++ {
		mac := fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
		var sel map[string]string
		if i%10 == 0 {
			sel = map[string]string{"os": "flatcar", "region": fmt.Sprintf("r%d", i%7)}
		} else {
			sel = map[string]string{"mac": mac}
		}
		groups = append(groups, &Group{ID: fmt.Sprintf("node%06d", i), Profile: "flatcar", Selector: sel})
		if i%(n/5+1) == 1 {
			requests = append(requests, map[string]string{
				"uuid": fmt.Sprintf("8a2b3c4d-0000-1111-2222-%012d", i), "mac": mac,
				"domain": "lab.example.com", "hostname": fmt.Sprintf("node%d", i),
				"serial": fmt.Sprintf("SN%08d", i), "arch": "x86_64",
			})
		}
	}
	// A machine nobody knows gets the default group.
	requests = append(requests, map[string]string{
		"uuid": "ffffffff-0000-1111-2222-333344445555", "mac": "02:00:00:00:00:01",
		"domain": "", "hostname": "", "serial": "", "arch": "x86_64",
	})
	return groups, requests
}

func BenchmarkSelect(b *testing.B) {
	for _, n := range []int{10, 1000, 100000} {
		b.Run(fmt.Sprintf("groups=%d", n), func(b *testing.B) {
			groups, requests := benchGroups(n)
			idx := NewIndex(groups)
			for _, labels := range requests {
				if got, want := idx.Select(labels), refSelect(groups, labels); groupID(got) != groupID(want) {
					b.Fatalf("Select(%v) = %s, want %s", labels, groupID(got), groupID(want))
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				if idx.Select(requests[i%len(requests)]) == nil {
					b.Fatal("no group selected")
				}
				i++
			}
		})
	}
}

func TestWantSelectSanity(t *testing.T) {
	// The helper itself: ties resolve to the lowest id, and a unique
	// answer is returned as is.
	a := &Group{ID: "b", Selector: map[string]string{"os": "x"}}
	b := &Group{ID: "a", Selector: map[string]string{"os": "x"}}
	c := &Group{ID: "c", Selector: map[string]string{"os": "x", "zone": "1"}}
	got, n := wantSelect([]*Group{a, b}, map[string]string{"os": "x"})
	if got != b || n != 2 {
		t.Errorf("wantSelect ties = %s, %d; want a, 2", groupID(got), n)
	}
	got, n = wantSelect([]*Group{a, b, c}, map[string]string{"os": "x", "zone": "1"})
	if got != c || n != 1 {
		t.Errorf("wantSelect = %s, %d; want c, 1", groupID(got), n)
	}
	if diff := cmp.Diff("a=1,b=2", refSelectorString(&Group{Selector: map[string]string{"b": "2", "a": "1"}})); diff != "" {
		t.Error(diff)
	}
}
