package render

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox"
)

func TestTranslationCache(t *testing.T) {
	snap, sel := ignitionFixture(map[string]string{
		"node.yaml":   butaneNode,
		"broken.yaml": "variant: flatcar\nversion: 1.1.0\nstorage:\n  files:\n    - mode: 0644\n",
	})
	e := NewEngine(Options{})
	ctx := context.Background()
	data := func(hostname string) map[string]any {
		g := &matchbox.Group{Metadata: map[string]any{"ssh_key": "ssh-ed25519 AAAA", "hostname": hostname}}
		return Data(g, Request{Labels: map[string]string{"mac": "52:54:00:a1:9c:ae"}})
	}
	steps := []struct {
		name     string
		template string
		hostname string
		want     Stats
		wantErr  bool
	}{
		{name: "first render misses", template: "node.yaml", hostname: "node1", want: Stats{TranslateMisses: 1}},
		{name: "identical render hits", template: "node.yaml", hostname: "node1", want: Stats{TranslateHits: 1, TranslateMisses: 1}},
		{name: "different data misses", template: "node.yaml", hostname: "node2", want: Stats{TranslateHits: 1, TranslateMisses: 2}},
		{name: "first data still cached", template: "node.yaml", hostname: "node1", want: Stats{TranslateHits: 2, TranslateMisses: 2}},
		{name: "failed translation misses", template: "broken.yaml", want: Stats{TranslateHits: 2, TranslateMisses: 3}, wantErr: true},
		{name: "failure is cached too", template: "broken.yaml", want: Stats{TranslateHits: 3, TranslateMisses: 3}, wantErr: true},
	}
	outputs := map[string]string{}
	for _, s := range steps {
		out, err := e.Ignition(ctx, snap, sel(s.template), data(s.hostname))
		if (err != nil) != s.wantErr {
			t.Fatalf("%s: error %v, want error %v", s.name, err, s.wantErr)
		}
		if s.wantErr {
			var rerr *Error
			if !errors.As(err, &rerr) || !strings.Contains(err.Error(), "ignition/broken.yaml") {
				t.Errorf("%s: cached failure %v lost its context", s.name, err)
			}
		}
		key := s.template + "/" + s.hostname
		if prev, ok := outputs[key]; ok && prev != string(out) {
			t.Errorf("%s: cached output differs:\n%s\nvs\n%s", s.name, prev, out)
		}
		outputs[key] = string(out)
		if diff := cmp.Diff(s.want, e.Stats()); diff != "" {
			t.Errorf("%s: Stats (-want +got):\n%s", s.name, diff)
		}
	}
	if outputs["node.yaml/node1"] == outputs["node.yaml/node2"] {
		t.Error("different data rendered the same Ignition")
	}
	// Raw Ignition does not go through the translation cache.
	snap2, sel2 := ignitionFixture(map[string]string{"raw.ign": `{"ignition":{"version":"3.4.0"}}`})
	before := e.Stats()
	if _, err := e.Ignition(ctx, snap2, sel2("raw.ign"), nil); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, e.Stats()); diff != "" {
		t.Errorf("raw Ignition touched the cache (-before +after):\n%s", diff)
	}
}

func key(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func val(n int) cacheValue { return cacheValue{out: make([]byte, n)} }

func TestLRU(t *testing.T) {
	const entry = 100 + 128 // a 100-byte output plus the per-entry overhead
	c := newLRU(3 * entry)
	c.add(key("a"), val(100))
	c.add(key("b"), val(100))
	c.add(key("c"), val(100))
	if c.size != 3*entry || c.ll.Len() != 3 {
		t.Fatalf("size %d, %d entries; want %d, 3", c.size, c.ll.Len(), 3*entry)
	}
	// Using a makes b the least recently used.
	if _, ok := c.get(key("a")); !ok {
		t.Fatal("a missing")
	}
	c.add(key("d"), val(100))
	present := func() []string {
		var out []string
		for _, k := range []string{"a", "b", "c", "d", "e", "big"} {
			if _, ok := c.items[key(k)]; ok {
				out = append(out, k)
			}
		}
		return out
	}
	if diff := cmp.Diff([]string{"a", "c", "d"}, present()); diff != "" {
		t.Errorf("after evicting (-want +got):\n%s", diff)
	}
	if c.size != 3*entry {
		t.Errorf("size %d, want %d", c.size, 3*entry)
	}

	// Adding a key again neither grows the cache nor evicts.
	c.add(key("c"), val(100))
	if c.size != 3*entry || c.ll.Len() != 3 {
		t.Errorf("re-adding: size %d, %d entries", c.size, c.ll.Len())
	}

	// A large entry evicts as many as it needs, oldest first: a was used
	// before d and the re-added c, so a goes, then d.
	c.add(key("e"), val(2*100+128))
	if diff := cmp.Diff([]string{"c", "e"}, present()); diff != "" {
		t.Errorf("after a large entry (-want +got):\n%s", diff)
	}
	if c.size > c.max {
		t.Errorf("size %d over the bound %d", c.size, c.max)
	}

	// An entry larger than the whole cache is not stored and evicts nothing.
	c.add(key("big"), val(3*entry))
	if diff := cmp.Diff([]string{"c", "e"}, present()); diff != "" {
		t.Errorf("after an oversized entry (-want +got):\n%s", diff)
	}

	// Errors count toward the size.
	c2 := newLRU(1000)
	errVal := cacheValue{err: errors.New(strings.Repeat("x", 500))}
	c2.add(key("err"), errVal)
	if c2.size != 128+500 {
		t.Errorf("error entry size %d, want %d", c2.size, 128+500)
	}
	got, ok := c2.get(key("err"))
	if !ok || got.err != errVal.err {
		t.Errorf("get(err) = %+v, %v", got, ok)
	}

	// Hits and misses.
	c3 := newLRU(1 << 20)
	c3.get(key("x"))
	c3.add(key("x"), val(1))
	c3.get(key("x"))
	c3.get(key("x"))
	if h, m := c3.stats(); h != 2 || m != 1 {
		t.Errorf("stats = %d hits, %d misses; want 2, 1", h, m)
	}
}

func TestEngineCacheBound(t *testing.T) {
	// A small bound keeps the cache small however many machines render.
	e := NewEngine(Options{TranslateCacheBytes: 4096})
	snap, sel := ignitionFixture(map[string]string{"node.yaml": butaneNode})
	for i := range 50 {
		g := &matchbox.Group{Metadata: map[string]any{"ssh_key": "k", "hostname": strings.Repeat("h", i+1)}}
		if _, err := e.Ignition(context.Background(), snap, sel("node.yaml"), Data(g, Request{Labels: map[string]string{"mac": "52:54:00:a1:9c:ae"}})); err != nil {
			t.Fatal(err)
		}
	}
	if e.butane.size > 4096 {
		t.Errorf("cache holds %d bytes, bound is 4096", e.butane.size)
	}
	if n := e.butane.ll.Len(); n == 0 || n == 50 {
		t.Errorf("cache holds %d entries; want some evicted, some kept", n)
	}
	if n := len(e.butane.items); n != e.butane.ll.Len() {
		t.Errorf("map has %d entries, list %d", n, e.butane.ll.Len())
	}
}

func TestPruneKeepsRendering(t *testing.T) {
	tmpl := &matchbox.Template{Kind: matchbox.KindGeneric, Name: "g", Content: []byte("v1 {{.x}}")}
	prof := &matchbox.Profile{ID: "p", GenericID: "g", Boot: matchbox.Boot{Kernel: "/k", Args: []string{"{{.x}}"}}}
	snap1 := matchbox.NewSnapshot(matchbox.Objects{Profiles: []*matchbox.Profile{prof}, Templates: []*matchbox.Template{tmpl}})
	e := NewEngine(Options{})
	data := map[string]any{"x": "1"}
	sel := matchbox.Selection{Group: &matchbox.Group{ID: "grp"}, Profile: prof}
	render := func(snap *matchbox.Snapshot, p *matchbox.Profile) string {
		t.Helper()
		out, err := e.Template(t.Context(), snap, matchbox.Selection{Group: sel.Group, Profile: p}, matchbox.KindGeneric, data)
		if err != nil {
			t.Fatal(err)
		}
		boot, err := e.IPXE(t.Context(), matchbox.Selection{Group: sel.Group, Profile: p}, data)
		if err != nil {
			t.Fatal(err)
		}
		return string(out) + " | " + strings.Split(string(boot), "\n")[1]
	}
	if got := render(snap1, prof); got != "v1 1 | kernel /k 1" {
		t.Fatalf("render = %q", got)
	}
	// A reload brings new objects under the same names.
	tmpl2 := &matchbox.Template{Kind: matchbox.KindGeneric, Name: "g", Content: []byte("v2 {{.x}}")}
	prof2 := &matchbox.Profile{ID: "p", GenericID: "g", Boot: matchbox.Boot{Kernel: "/k", Args: []string{"new-{{.x}}"}}}
	snap2 := matchbox.NewSnapshot(matchbox.Objects{Profiles: []*matchbox.Profile{prof2}, Templates: []*matchbox.Template{tmpl2}})
	e.Prune(snap2)
	if got := render(snap2, prof2); got != "v2 1 | kernel /k new-1" {
		t.Errorf("after reload render = %q", got)
	}
	// A request still holding the old snapshot renders what it selected.
	if got := render(snap1, prof); got != "v1 1 | kernel /k 1" {
		t.Errorf("old snapshot after Prune renders %q", got)
	}
	e.Prune(matchbox.NewSnapshot())
	if got := render(snap2, prof2); got != "v2 1 | kernel /k new-1" {
		t.Errorf("after pruning everything render = %q", got)
	}
}

// TestEngineConcurrent renders from several goroutines while the catalog
// is pruned, for the race detector.
func TestEngineConcurrent(t *testing.T) {
	snap, sel := ignitionFixture(map[string]string{"node.yaml": butaneNode})
	prof := &matchbox.Profile{ID: "boot", Boot: matchbox.Boot{Kernel: "/k", Args: []string{"h={{.hostname}}"}}}
	e := NewEngine(Options{TranslateCacheBytes: 8 << 10})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 4 {
		wg.Go(func() {
			for i := range 25 {
				g := &matchbox.Group{ID: "g", Metadata: map[string]any{"ssh_key": "k", "hostname": fmt.Sprintf("n%d-%d", w, i%5)}}
				data := Data(g, Request{Labels: map[string]string{"mac": "52:54:00:a1:9c:ae"}})
				if _, err := e.Ignition(context.Background(), snap, sel("node.yaml"), data); err != nil {
					errs <- err
					return
				}
				out, err := e.IPXE(t.Context(), matchbox.Selection{Group: g, Profile: prof}, data)
				if err != nil {
					errs <- err
					return
				}
				if want := fmt.Sprintf("h=n%d-%d\n", w, i%5); !strings.Contains(string(out), want) {
					errs <- fmt.Errorf("iPXE %q does not contain %q", out, want)
					return
				}
				e.Prune(snap)
				_ = e.Stats()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := e.Stats(); s.TranslateHits+s.TranslateMisses != 100 {
		t.Errorf("Stats = %+v, want 100 lookups", s)
	}
}
