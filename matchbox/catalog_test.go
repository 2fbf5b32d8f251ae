package matchbox

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// wantProblem matches a Problem by origin and severity and by substrings
// of its message, so that rewording a message does not break the test but
// dropping what it names does.
type wantProblem struct {
	origin   string
	severity Severity
	contains []string
}

func checkProblems(t *testing.T, got []Problem, want []wantProblem) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%s", len(got), len(want), problemList(got))
	}
	for i, w := range want {
		p := got[i]
		if p.Origin != w.origin || p.Severity != w.severity {
			t.Errorf("problem %d = %s; want origin %q, severity %s", i, p, w.origin, w.severity)
		}
		for _, s := range w.contains {
			if !strings.Contains(p.Message, s) {
				t.Errorf("problem %d message %q does not contain %q", i, p.Message, s)
			}
		}
	}
}

func problemList(ps []Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("  " + p.String() + "\n")
	}
	return b.String()
}

func TestNewSnapshotProblems(t *testing.T) {
	profile := func(id, origin string) *Profile { return &Profile{ID: id, Origin: origin} }
	group := func(id, profile, origin string, kv ...string) *Group {
		g := &Group{ID: id, Profile: profile, Origin: origin}
		if len(kv) > 0 {
			g.Selector = map[string]string{}
			for i := 0; i < len(kv); i += 2 {
				g.Selector[kv[i]] = kv[i+1]
			}
		}
		return g
	}
	tests := []struct {
		name    string
		sources []Objects
		want    []wantProblem
	}{
		{name: "clean",
			sources: []Objects{{
				Groups:   []*Group{group("node1", "p", "groups/node1.json", "mac", "52:54:00:a1:9c:ae"), group("default", "p", "groups/default.json")},
				Profiles: []*Profile{{ID: "p", IgnitionID: "p.yaml", CloudID: "p.cloud", GenericID: "p.gen", Origin: "profiles/p.json"}},
				Templates: []*Template{
					{Kind: KindIgnition, Name: "p.yaml", Origin: "ignition/p.yaml"},
					{Kind: KindCloud, Name: "p.cloud", Origin: "cloud/p.cloud"},
					{Kind: KindGeneric, Name: "p.gen", Origin: "generic/p.gen"},
				},
			}},
		},
		{name: "source problems are kept, in source order",
			sources: []Objects{
				{Problems: []Problem{{Origin: "groups/bad.json", Severity: SeverityError, Message: "invalid JSON"}}},
				{Problems: []Problem{{Origin: "db", Severity: SeverityWarning, Message: "unknown key"}}},
			},
			want: []wantProblem{
				{"groups/bad.json", SeverityError, []string{"invalid JSON"}},
				{"db", SeverityWarning, []string{"unknown key"}},
			}},
		{name: "duplicate group id across sources",
			sources: []Objects{
				{Groups: []*Group{group("node1", "p", "groups/node1.json")}, Profiles: []*Profile{profile("p", "profiles/p.json")}},
				{Groups: []*Group{group("node1", "p", "db")}},
			},
			want: []wantProblem{
				{"db", SeverityWarning, []string{`"node1"`, "groups/node1.json", "both groups are kept"}},
				{"db", SeverityWarning, []string{"second default group", "groups/node1.json wins because its path sorts first"}},
			}},
		{name: "duplicate group id in one source",
			sources: []Objects{{
				Groups:   []*Group{group("node1", "p", "groups/b.json", "os", "flatcar"), group("node1", "p", "groups/a.json", "mac", "52:54:00:a1:9c:ae")},
				Profiles: []*Profile{profile("p", "profiles/p.json")},
			}},
			want: []wantProblem{{"groups/a.json", SeverityWarning, []string{`"node1"`, "groups/b.json", "both groups are kept"}}}},
		{name: "group without a profile",
			sources: []Objects{{Groups: []*Group{group("node1", "", "groups/node1.json", "os", "flatcar")}}},
			want:    []wantProblem{{"groups/node1.json", SeverityError, []string{`"node1" has no profile`, "404"}}}},
		{name: "claims are reported with what they withhold",
			sources: []Objects{{Claims: []Claim{
				{Origin: "groups/a.json", Reason: "bad JSON"},
				{Origin: "groups/b.json", Reason: "bad JSON", Known: true, Selector: map[string]string{"os": "installed"}, Unknown: []string{"mac"}},
				{Origin: "groups/c.json", Reason: "bad JSON", Known: true},
			}}},
			want: []wantProblem{
				{"groups/a.json", SeverityError, []string{"every machine", "-ignore-broken-groups"}},
				{"groups/b.json", SeverityError, []string{"mac=(unreadable),os=installed"}},
				{"groups/c.json", SeverityError, []string{"default group"}},
			}},
		{name: "duplicate profile id across sources",
			sources: []Objects{
				{Profiles: []*Profile{profile("p", "profiles/p.json")}},
				{Profiles: []*Profile{profile("p", "db")}},
			},
			want: []wantProblem{{"db", SeverityError, []string{`"p"`, "profiles/p.json"}}}},
		{name: "duplicate template across sources",
			sources: []Objects{
				{Templates: []*Template{{Kind: KindIgnition, Name: "t.yaml", Origin: "ignition/t.yaml"}}},
				{Templates: []*Template{
					{Kind: KindIgnition, Name: "t.yaml", Origin: "db"},
					// Same name, other kind: not a duplicate.
					{Kind: KindCloud, Name: "t.yaml", Origin: "db"},
				}},
			},
			want: []wantProblem{{"db", SeverityError, []string{`"t.yaml"`, "ignition/t.yaml", "ignition"}}}},
		{name: "group names a missing profile",
			sources: []Objects{{Groups: []*Group{group("node1", "nope", "groups/node1.json", "os", "flatcar")}}},
			want:    []wantProblem{{"groups/node1.json", SeverityError, []string{`"node1"`, `"nope"`}}}},
		{name: "profile names missing templates",
			sources: []Objects{{
				Profiles: []*Profile{{ID: "p", IgnitionID: "i.yaml", CloudID: "c.tmpl", GenericID: "g.tmpl", Origin: "profiles/p.json"}},
				Templates: []*Template{
					// The right names under the wrong kinds.
					{Kind: KindCloud, Name: "i.yaml", Origin: "cloud/i.yaml"},
					{Kind: KindGeneric, Name: "c.tmpl", Origin: "generic/c.tmpl"},
					{Kind: KindIgnition, Name: "g.tmpl", Origin: "ignition/g.tmpl"},
				},
			}},
			want: []wantProblem{
				{"profiles/p.json", SeverityError, []string{`"p"`, "ignition", `"i.yaml"`}},
				{"profiles/p.json", SeverityError, []string{`"p"`, "cloud", `"c.tmpl"`}},
				{"profiles/p.json", SeverityError, []string{`"p"`, "generic", `"g.tmpl"`}},
			}},
		{name: "two default groups",
			sources: []Objects{{
				Groups:   []*Group{group("z-default", "p", "groups/z.json"), group("a-default", "p", "groups/a.json")},
				Profiles: []*Profile{profile("p", "profiles/p.json")},
			}},
			want: []wantProblem{{"groups/z.json", SeverityWarning, []string{`"z-default"`, `"a-default"`, "groups/a.json", "default", `"a-default" wins`}}}},
		{name: "identical selector sets",
			sources: []Objects{{
				Groups: []*Group{
					group("node-c", "p", "groups/c.json", "os", "flatcar", "region", "eu"),
					group("node-a", "p", "groups/a.json", "region", "eu", "os", "flatcar"),
					group("node-b", "p", "groups/b.json", "os", "flatcar", "region", "eu"),
					group("other", "p", "groups/other.json", "os", "flatcar"),
				},
				Profiles: []*Profile{profile("p", "profiles/p.json")},
			}},
			want: []wantProblem{
				{"groups/b.json", SeverityWarning, []string{`"node-b"`, `"node-a"`, "same selectors", `"node-a" wins`}},
				{"groups/c.json", SeverityWarning, []string{`"node-c"`, `"node-a"`, "same selectors", `"node-a" wins`}},
			}},
		{name: "duplicate id across sources with identical selectors",
			sources: []Objects{
				{Groups: []*Group{group("node1", "p", "groups/node1.json", "os", "flatcar")}, Profiles: []*Profile{profile("p", "profiles/p.json")}},
				{Groups: []*Group{group("node1", "p", "db", "os", "flatcar")}},
			},
			want: []wantProblem{
				{"db", SeverityWarning, []string{`"node1"`, "also defined", "both groups are kept"}},
				{"db", SeverityWarning, []string{"same selectors", "groups/node1.json wins"}},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap := NewSnapshot(tt.sources...)
			checkProblems(t, snap.Problems(), tt.want)
		})
	}
}

func TestNewSnapshotFirstSourceWins(t *testing.T) {
	dir := Objects{
		Groups:    []*Group{{ID: "node1", Profile: "p", Selector: map[string]string{"os": "flatcar"}, Origin: "groups/node1.json"}},
		Profiles:  []*Profile{{ID: "p", Origin: "profiles/p.json"}},
		Templates: []*Template{{Kind: KindIgnition, Name: "t.yaml", Origin: "ignition/t.yaml"}},
	}
	db := Objects{
		Groups: []*Group{
			{ID: "node1", Profile: "p", Selector: map[string]string{"os": "fedora"}, Origin: "db"},
			{ID: "node2", Profile: "p", Selector: map[string]string{"os": "fedora"}, Origin: "db"},
		},
		Profiles:  []*Profile{{ID: "p", Origin: "db"}, {ID: "q", Origin: "db"}},
		Templates: []*Template{{Kind: KindIgnition, Name: "t.yaml", Origin: "db"}},
	}
	snap := NewSnapshot(dir, db)
	if g, ok := snap.Group("node1"); !ok || g.Origin != "groups/node1.json" {
		t.Errorf("Group(node1) = %+v, want the data dir's", g)
	}
	if p, ok := snap.Profile("p"); !ok || p.Origin != "profiles/p.json" {
		t.Errorf("Profile(p) = %+v, want the data dir's", p)
	}
	if tm, ok := snap.Template(KindIgnition, "t.yaml"); !ok || tm.Origin != "ignition/t.yaml" {
		t.Errorf("Template(t.yaml) = %+v, want the data dir's", tm)
	}
	// A group id defined twice keeps both groups, selected by the usual
	// rules (as poseidon/matchbox keeps both): the database's node1 is
	// the one machines with os=fedora get (same selectors as node2, lower
	// id), not node2 as if it did not exist.
	sel, err := snap.Select(map[string]string{"os": "fedora"})
	if err != nil || sel.Group.ID != "node1" || sel.Group.Origin != "db" {
		t.Errorf("Select(os=fedora) = %s, %v; want the database's node1", groupID(sel.Group), err)
	}
	if sel, err := snap.Select(map[string]string{"os": "flatcar"}); err != nil || sel.Group.Origin != "groups/node1.json" {
		t.Errorf("Select(os=flatcar) = %+v, %v; want the data dir's node1", sel.Group, err)
	}
	g, p, tm := snap.Counts()
	if diff := cmp.Diff([3]int{3, 2, 1}, [3]int{g, p, tm}); diff != "" {
		t.Errorf("Counts (-want +got):\n%s", diff)
	}
	var ids []string
	for _, g := range snap.Groups() {
		ids = append(ids, g.ID)
	}
	for _, p := range snap.Profiles() {
		ids = append(ids, p.ID)
	}
	if diff := cmp.Diff([]string{"node1", "node1", "node2", "p", "q"}, ids); diff != "" {
		t.Errorf("Groups and Profiles not sorted by id (-want +got):\n%s", diff)
	}
	if _, ok := snap.Group("nope"); ok {
		t.Error("Group(nope) found")
	}
	if _, ok := snap.Template(KindCloud, "t.yaml"); ok {
		t.Error("Template(cloud, t.yaml) found: kinds must not mix")
	}
}

func TestSnapshotTemplatesSorted(t *testing.T) {
	snap := NewSnapshot(Objects{Templates: []*Template{
		{Kind: KindIgnition, Name: "b"}, {Kind: KindCloud, Name: "z"},
		{Kind: KindIgnition, Name: "a"}, {Kind: KindGeneric, Name: "a"},
	}})
	var got []string
	for _, tm := range snap.Templates() {
		got = append(got, string(tm.Kind)+"/"+tm.Name)
	}
	want := []string{"cloud/z", "generic/a", "ignition/a", "ignition/b"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Templates (-want +got):\n%s", diff)
	}
}

func TestSnapshotSelectsLowestIDOfIdenticalGroups(t *testing.T) {
	// The group named in the warning is the one selected.
	for _, order := range [][]string{{"b", "a", "c"}, {"c", "b", "a"}, {"a", "c", "b"}} {
		var groups []*Group
		for _, id := range order {
			groups = append(groups, &Group{ID: id, Profile: "p", Selector: map[string]string{"os": "flatcar"}, Origin: id + ".json"})
		}
		snap := NewSnapshot(Objects{Groups: groups, Profiles: []*Profile{{ID: "p"}}})
		sel, err := snap.Select(map[string]string{"os": "flatcar"})
		if err != nil || sel.Group.ID != "a" {
			t.Errorf("order %v: Select = %s, %v; want a", order, groupID(sel.Group), err)
		}
		for _, p := range snap.Problems() {
			if !strings.Contains(p.Message, `"a" wins`) {
				t.Errorf("order %v: warning %q does not name a as the winner", order, p.Message)
			}
		}
	}
}

func TestCatalogUpdate(t *testing.T) {
	ctx := context.Background()
	c := NewCatalog("dir", "db")
	initial := c.Snapshot()
	if initial == nil {
		t.Fatal("new catalog has no snapshot")
	}
	if g, p, tm := initial.Counts(); g+p+tm != 0 || initial.Generation != 0 {
		t.Fatalf("new catalog snapshot: counts %d/%d/%d, generation %d; want empty, 0", g, p, tm, initial.Generation)
	}

	var seen []string
	c.OnChange(func(s *Snapshot) { seen = append(seen, fmt.Sprintf("first:%d", s.Generation)) })
	c.OnChange(func(s *Snapshot) {
		if s != c.Snapshot() {
			t.Error("hook called before the new snapshot is current")
		}
		seen = append(seen, fmt.Sprintf("second:%d", s.Generation))
	})

	prof := []*Profile{{ID: "p"}}
	s1 := c.Update(ctx, "db", Objects{
		Groups:   []*Group{{ID: "node1", Profile: "p", Selector: map[string]string{"os": "flatcar"}, Origin: "db"}},
		Profiles: prof,
	})
	if s1 != c.Snapshot() || s1.Generation != 1 {
		t.Fatalf("after first Update: returned %p (gen %d), current %p", s1, s1.Generation, c.Snapshot())
	}
	if g, _ := s1.Group("node1"); g.Origin != "db" {
		t.Errorf("node1 origin = %q, want db", g.Origin)
	}

	// The data dir is named first, so it wins although it is updated later.
	s2 := c.Update(ctx, "dir", Objects{
		Groups: []*Group{{ID: "node1", Profile: "p", Selector: map[string]string{"os": "fedora"}, Origin: "groups/node1.json"}},
	})
	if s2.Generation != 2 {
		t.Errorf("second generation = %d, want 2", s2.Generation)
	}
	if g, _ := s2.Group("node1"); g.Origin != "groups/node1.json" {
		t.Errorf("node1 origin = %q, want the data dir's", g.Origin)
	}
	if _, err := s2.Select(map[string]string{"os": "fedora"}); err != nil {
		t.Errorf("select from merged sources: %v", err)
	}
	checkProblems(t, s2.Problems(), []wantProblem{{"db", SeverityWarning, []string{`"node1"`, "groups/node1.json", "both groups are kept"}}})

	// Old snapshots are immutable.
	if g, _ := s1.Group("node1"); g.Origin != "db" || s1.Generation != 1 {
		t.Errorf("old snapshot changed: node1 from %q, generation %d", g.Origin, s1.Generation)
	}
	if g, p, tm := initial.Counts(); g+p+tm != 0 {
		t.Errorf("initial snapshot changed: %d/%d/%d", g, p, tm)
	}

	// An Update replaces the source's objects.
	s3 := c.Update(ctx, "dir", Objects{})
	if g, _ := s3.Group("node1"); g == nil || g.Origin != "db" {
		t.Errorf("after emptying dir, node1 = %+v; want db's", g)
	}
	if len(s3.Problems()) != 0 {
		t.Errorf("after emptying dir: problems\n%s", problemList(s3.Problems()))
	}

	// A source not named at construction comes last.
	s4 := c.Update(ctx, "api", Objects{Groups: []*Group{{ID: "node1", Profile: "p", Origin: "api"}}})
	if g, _ := s4.Group("node1"); g.Origin != "db" {
		t.Errorf("node1 from %q, want db over the later source api", g.Origin)
	}

	want := []string{"first:1", "second:1", "first:2", "second:2", "first:3", "second:3", "first:4", "second:4"}
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Errorf("OnChange calls (-want +got):\n%s", diff)
	}
}

// TestCatalogConcurrentReaders reads snapshots while they are replaced. Each
// update's objects carry its number, so a reader that saw a group from one
// update and a profile from another would have seen a torn snapshot. Run
// with -race.
func TestCatalogConcurrentReaders(t *testing.T) {
	const updates = 200
	ctx := context.Background()
	c := NewCatalog("dir")
	objects := func(n int) Objects {
		return Objects{
			Groups: []*Group{
				{ID: "node", Profile: fmt.Sprintf("p%d", n), Selector: map[string]string{"os": "flatcar"}, Metadata: map[string]any{"n": n}},
				{ID: "default", Profile: fmt.Sprintf("p%d", n), Metadata: map[string]any{"n": n}},
			},
			Profiles: []*Profile{{ID: fmt.Sprintf("p%d", n), Name: fmt.Sprint(n)}},
		}
	}
	c.Update(ctx, "dir", objects(0))

	var hookCalls int
	c.OnChange(func(*Snapshot) { hookCalls++ }) // Update serialises hooks.

	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for r := range 4 {
		wg.Go(func() {
			var last uint64
			labels := map[string]string{"os": "flatcar"}
			if r%2 == 1 {
				labels = map[string]string{"os": "fedora"}
			}
			for reads := 0; ; reads++ {
				snap := c.Snapshot()
				if snap.Generation < last {
					errs <- fmt.Errorf("generation went back from %d to %d", last, snap.Generation)
					return
				}
				last = snap.Generation
				sel, err := snap.Select(labels)
				if err != nil {
					errs <- fmt.Errorf("generation %d: %v", snap.Generation, err)
					return
				}
				if n, _ := sel.Group.MetadataValue("n"); fmt.Sprint(n) != sel.Profile.Name {
					errs <- fmt.Errorf("generation %d: group from update %v, profile from update %s", snap.Generation, n, sel.Profile.Name)
					return
				}
				select {
				case <-done:
					if reads > 0 {
						return
					}
				default:
				}
			}
		})
	}
	for n := 1; n <= updates; n++ {
		if s := c.Update(ctx, "dir", objects(n)); s.Generation != uint64(n+1) {
			t.Errorf("update %d: generation %d, want %d", n, s.Generation, n+1)
		}
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if hookCalls != updates {
		t.Errorf("OnChange called %d times, want %d", hookCalls, updates)
	}
	if s := c.Snapshot(); s.Generation != updates+1 {
		t.Errorf("final generation %d, want %d", s.Generation, updates+1)
	}
}
