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

// A group whose metadata holds a value JSON never produces is not frozen
// (and keeps working).
func TestFreezeKeepsUnsupported(t *testing.T) {
	g := &Group{ID: "g", Profile: "p", Selector: map[string]string{"os": "x"}, Metadata: map[string]any{"n": 3}}
	g.Freeze()
	if g.Frozen() || g.Metadata["n"] != 3 || g.Selector["os"] != "x" {
		t.Errorf("group with an int in its metadata: frozen %v, metadata %v, selector %v", g.Frozen(), g.Metadata, g.Selector)
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
