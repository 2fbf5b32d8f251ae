package matchbox

import (
	"encoding/json"
	"maps"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// checkFrozen freezes a copy of g and checks that every accessor reads the
// same as on g, and that JSON output is unchanged.
func checkFrozen(t *testing.T, g *Group) {
	t.Helper()
	f := *g
	f.Selector = maps.Clone(g.Selector)
	if g.Metadata != nil {
		// Freeze never modifies the maps, but the test must not rely on it.
		data, _ := json.Marshal(g.Metadata)
		if err := json.Unmarshal(data, &f.Metadata); err != nil {
			t.Fatal(err)
		}
	}
	f.Freeze()
	if !f.Frozen() {
		t.Fatalf("group with JSON metadata %v was not frozen", g.Metadata)
	}
	if f.Selector != nil || f.Metadata != nil {
		t.Errorf("frozen group keeps its maps")
	}
	if f.ID != g.ID || f.Name != g.Name || f.Profile != g.Profile || f.Origin != g.Origin {
		t.Errorf("frozen strings %q %q %q %q, want %q %q %q %q", f.ID, f.Name, f.Profile, f.Origin, g.ID, g.Name, g.Profile, g.Origin)
	}
	if u := UnpackGroup(f.Packed()); u.ID != g.ID || u.SelectorString() != g.SelectorString() {
		t.Errorf("unpacked group: id %q selector %q, want %q %q", u.ID, u.SelectorString(), g.ID, g.SelectorString())
	}
	if got, want := f.SelectorCount(), len(g.Selector); got != want {
		t.Errorf("SelectorCount = %d, want %d", got, want)
	}
	if diff := cmp.Diff(g.Selector, f.SelectorMap(), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("SelectorMap (-want +got):\n%s", diff)
	}
	for k, v := range g.Selector {
		if got, ok := f.SelectorValue(k); !ok || got != v {
			t.Errorf("SelectorValue(%q) = %q, %v; want %q", k, got, ok, v)
		}
	}
	if _, ok := f.SelectorValue("\x00absent"); ok {
		t.Error("SelectorValue of an absent key found something")
	}
	if got, want := f.SelectorString(), g.SelectorString(); got != want {
		t.Errorf("SelectorString = %q, want %q", got, want)
	}
	if got, want := f.Matches(g.Selector), g.Matches(g.Selector); got != want {
		t.Errorf("Matches(own selector) = %v, want %v", got, want)
	}
	if diff := cmp.Diff(g.Metadata, f.MetadataMap()); diff != "" {
		t.Errorf("MetadataMap (-want +got):\n%s", diff)
	}
	if got, want := f.MetadataCount(), len(g.Metadata); got != want {
		t.Errorf("MetadataCount = %d, want %d", got, want)
	}
	copied := map[string]any{}
	f.CopyMetadata(copied)
	if diff := cmp.Diff(g.Metadata, copied, cmpEquateNilEmpty); diff != "" {
		t.Errorf("CopyMetadata (-want +got):\n%s", diff)
	}
	for k, v := range g.Metadata {
		got, ok := f.MetadataValue(k)
		if !ok || !cmp.Equal(got, v) {
			t.Errorf("MetadataValue(%q) = %v, %v; want %v", k, got, ok, v)
		}
	}
	if _, ok := f.MetadataValue("\x00absent"); ok {
		t.Error("MetadataValue of an absent key found something")
	}
	want, err := json.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(&f)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("JSON of the frozen group = %s, want %s", got, want)
	}
	// A mutated result must not change the frozen group.
	if m := f.MetadataMap(); m != nil {
		for k := range m {
			m[k] = "changed"
		}
		if diff := cmp.Diff(g.Metadata, f.MetadataMap()); diff != "" {
			t.Errorf("MetadataMap result shares memory with the group (-want +got):\n%s", diff)
		}
	}
}

// cmpEquateNilEmpty treats a nil map like an empty one.
var cmpEquateNilEmpty = cmp.FilterValues(func(a, b map[string]any) bool { return len(a) == 0 && len(b) == 0 }, cmp.Comparer(func(a, b map[string]any) bool { return true }))

func TestFreeze(t *testing.T) {
	for _, g := range []*Group{
		{ID: "empty", Profile: "p"},
		{ID: "empty-maps", Profile: "p", Selector: map[string]string{}, Metadata: map[string]any{}},
		{ID: "mac", Profile: "p", Selector: map[string]string{"mac": "52:54:00:00:00:01"},
			Metadata: map[string]any{"hostname": "node1", "port": float64(10250), "ssh": "ssh-ed25519 AAAA"}},
		{ID: "every-type", Profile: "p", Selector: map[string]string{"os": "", "region": "eu", "zone": "a=b,c"},
			Metadata: map[string]any{
				"null": nil, "t": true, "f": false, "n": -1.5e300, "s": "✓ \x00 \"q\"", "empty": "",
				"a": []any{float64(1), "x", nil, []any{}, map[string]any{}},
				"o": map[string]any{"nested": map[string]any{"deep": []any{map[string]any{"k": "v"}}}},
				"":  "empty key",
			}},
	} {
		t.Run(g.ID, func(t *testing.T) { checkFrozen(t, g) })
	}
}

// Metadata built in Go with values JSON decoding never yields is frozen as
// JSON would decode it; metadata JSON cannot represent at all leaves the
// group unfrozen (and working).
func TestFreezeNonJSONMetadata(t *testing.T) {
	g := &Group{ID: "g", Profile: "p", Selector: map[string]string{"os": "x"},
		Metadata: map[string]any{"n": 3, "m": map[string]string{"k": "v"}}}
	g.Freeze()
	if !g.Frozen() {
		t.Fatal("group with an int and a typed map in its metadata was not frozen")
	}
	if diff := cmp.Diff(map[string]any{"n": float64(3), "m": map[string]any{"k": "v"}}, g.MetadataMap()); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	bad := &Group{ID: "g", Profile: "p", Selector: map[string]string{"os": "x"}, Metadata: map[string]any{"f": func() {}}}
	bad.Freeze()
	if bad.Frozen() || bad.Metadata["f"] == nil || bad.Selector["os"] != "x" {
		t.Errorf("group with a func in its metadata: frozen %v, metadata %v, selector %v", bad.Frozen(), bad.Metadata, bad.Selector)
	}
}

// A packed group unpacks to the same group.
func TestPackedRoundTrip(t *testing.T) {
	g := &Group{ID: "node1", Name: "Node 1", Profile: "worker", Origin: "groups/node1.json",
		Selector: map[string]string{"mac": "52:54:00:00:00:01", "os": "installed"},
		Metadata: map[string]any{"hostname": "node1", "a": []any{float64(1), "x"}}}
	want := *g
	g.Freeze()
	if g.Packed() == "" {
		t.Fatal("frozen group has no packed form")
	}
	u := UnpackGroup(g.Packed())
	if u.ID != want.ID || u.Name != want.Name || u.Profile != want.Profile || u.Origin != want.Origin {
		t.Errorf("unpacked strings %q %q %q %q, want %q %q %q %q", u.ID, u.Name, u.Profile, u.Origin, want.ID, want.Name, want.Profile, want.Origin)
	}
	if diff := cmp.Diff(want.Selector, u.SelectorMap()); diff != "" {
		t.Errorf("selector (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want.Metadata, u.MetadataMap()); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	if got := packedID(g.Packed()); got != "node1" {
		t.Errorf("packedID = %q", got)
	}
	if (&Group{ID: "x"}).Packed() != "" {
		t.Error("an unfrozen group has a packed form")
	}
}

func FuzzFreeze(f *testing.F) {
	f.Add(`{"id":"a","profile":"p","selector":{"mac":"52:54:00:00:00:01"},"metadata":{"k":[1,"x",{"y":null}]}}`)
	f.Add(`{"id":"b","profile":"p","metadata":{"":true,"z":{"":[[],{}]}}}`)
	f.Fuzz(func(t *testing.T, doc string) {
		var g Group
		if json.Unmarshal([]byte(doc), &g) != nil {
			return
		}
		checkFrozen(t, &g)
	})
}
