package matchbox

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Severity tells whether a problem makes an object unusable.
type Severity string

// Problem severities.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Problem is one thing wrong with the configuration: which file (or
// object) and why.
type Problem struct {
	Origin   string   `json:"origin"`
	Severity Severity `json:"severity"`
	Message  string   `json:"message"`
}

func (p Problem) String() string {
	return fmt.Sprintf("%s: %s: %s", p.Origin, p.Severity, p.Message)
}

// Objects is what one source (the data dir, the database) contributes to the
// catalog, plus the problems it found while reading.
type Objects struct {
	Groups    []*Group
	Profiles  []*Profile
	Templates []*Template
	Problems  []Problem
}

type templateKey struct {
	kind TemplateKind
	name string
}

// Snapshot is an immutable, indexed view of every group, profile and
// template. Front-ends take the current snapshot once per request.
type Snapshot struct {
	// groups is sorted by id: a slice rather than a map, so a large fleet
	// costs the collector one pointer per group here.
	groups    []*Group
	profiles  map[string]*Profile
	templates map[templateKey]*Template
	index     *Index
	problems  []Problem
	// Generation increases with every rebuilt snapshot; caches key on it.
	Generation uint64
}

// Selection is the answer to "what does this machine get".
type Selection struct {
	Group   *Group
	Profile *Profile
}

// NewSnapshot merges the objects of several sources, in order, into one
// snapshot. An id defined by an earlier source wins over a later one (the
// data dir is passed first), and the clash is reported.
func NewSnapshot(sources ...Objects) *Snapshot {
	s := &Snapshot{
		profiles:  make(map[string]*Profile),
		templates: make(map[templateKey]*Template),
	}
	n := 0
	for _, src := range sources {
		n += len(src.Groups)
	}
	byID := make(map[string]*Group, n) // only while building
	groups := make([]*Group, 0, n)
	for _, src := range sources {
		s.problems = append(s.problems, src.Problems...)
		for _, g := range src.Groups {
			if prev, ok := byID[g.ID]; ok {
				s.problems = append(s.problems, Problem{g.Origin, SeverityError,
					fmt.Sprintf("group id %q is already defined by %s; this one is ignored", g.ID, prev.Origin)})
				continue
			}
			byID[g.ID] = g
			groups = append(groups, g)
		}
		for _, p := range src.Profiles {
			if prev, ok := s.profiles[p.ID]; ok {
				s.problems = append(s.problems, Problem{p.Origin, SeverityError,
					fmt.Sprintf("profile id %q is already defined by %s; this one is ignored", p.ID, prev.Origin)})
				continue
			}
			s.profiles[p.ID] = p
		}
		for _, t := range src.Templates {
			k := templateKey{t.Kind, t.Name}
			if prev, ok := s.templates[k]; ok {
				s.problems = append(s.problems, Problem{t.Origin, SeverityError,
					fmt.Sprintf("%s template %q is already defined by %s; this one is ignored", t.Kind, t.Name, prev.Origin)})
				continue
			}
			s.templates[k] = t
		}
	}
	clear(byID)
	if shared := soleSortedGroups(sources); shared != nil && len(shared) == len(groups) {
		// The only source of groups is already in id order (the catalog
		// keeps its sources so): hold its slice rather than a copy, one
		// pointer per group fewer for the collector.
		groups = shared
	} else {
		slices.SortFunc(groups, byGroupID)
	}
	s.groups = slices.Clip(groups)
	sels := make([]string, len(groups))
	for i, g := range groups {
		sels[i] = g.SelectorString()
	}
	s.index = newIndex(groups, sels)
	s.problems = append(s.problems, s.checkReferences(groups, sels)...)
	return s
}

func byGroupID(a, b *Group) int { return strings.Compare(a.ID, b.ID) }

// soleSortedGroups returns the groups of the only source that has any,
// when they are in strictly increasing id order; otherwise nil.
func soleSortedGroups(sources []Objects) []*Group {
	var only []*Group
	for _, src := range sources {
		if len(src.Groups) == 0 {
			continue
		}
		if only != nil {
			return nil
		}
		only = src.Groups
	}
	for i := 1; i < len(only); i++ {
		if only[i-1].ID >= only[i].ID {
			return nil
		}
	}
	return only
}

// checkReferences reports groups naming missing profiles, profiles naming
// missing templates, several default groups and identical selector sets.
// groups are sorted by id; sels are their selector strings.
func (s *Snapshot) checkReferences(groups []*Group, sels []string) []Problem {
	var probs []Problem
	bySel := make(map[string]*Group)
	for i, g := range groups {
		if _, ok := s.profiles[g.Profile]; !ok {
			probs = append(probs, Problem{g.Origin, SeverityError,
				fmt.Sprintf("group %q names profile %q, which does not exist", g.ID, g.Profile)})
		}
		sel := sels[i]
		if prev, ok := bySel[sel]; ok {
			what := "has the same selectors as"
			if sel == "" {
				what = "is a second default group (no selectors) besides"
			}
			probs = append(probs, Problem{g.Origin, SeverityWarning,
				fmt.Sprintf("group %q %s group %q (%s); %q wins because its id sorts first", g.ID, what, prev.ID, prev.Origin, prev.ID)})
			continue
		}
		bySel[sel] = g
	}
	ids := make([]string, 0, len(s.profiles))
	for id := range s.profiles {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		p := s.profiles[id]
		for _, ref := range []struct {
			kind TemplateKind
			name string
		}{{KindIgnition, p.IgnitionID}, {KindCloud, p.CloudID}, {KindGeneric, p.GenericID}} {
			if ref.name == "" {
				continue
			}
			if _, ok := s.templates[templateKey{ref.kind, ref.name}]; !ok {
				probs = append(probs, Problem{p.Origin, SeverityError,
					fmt.Sprintf("profile %q names %s template %q, which does not exist", p.ID, ref.kind, ref.name)})
			}
		}
	}
	return probs
}

// Select answers which group and profile a machine with these labels gets.
// It returns an error wrapping ErrNotFound when no group matches or the
// matching group's profile does not exist (the group is still returned).
func (s *Snapshot) Select(labels map[string]string) (Selection, error) {
	g := s.index.Select(labels)
	if g == nil {
		return Selection{}, fmt.Errorf("no group matches: %w", ErrNotFound)
	}
	p, ok := s.profiles[g.Profile]
	if !ok {
		return Selection{Group: g}, fmt.Errorf("group %q names profile %q, which does not exist: %w", g.ID, g.Profile, ErrNotFound)
	}
	return Selection{Group: g, Profile: p}, nil
}

// Group returns a group by id.
func (s *Snapshot) Group(id string) (*Group, bool) {
	i, ok := slices.BinarySearchFunc(s.groups, id, func(g *Group, id string) int { return strings.Compare(g.ID, id) })
	if !ok {
		return nil, false
	}
	return s.groups[i], true
}

// Profile returns a profile by id.
func (s *Snapshot) Profile(id string) (*Profile, bool) { p, ok := s.profiles[id]; return p, ok }

// Template returns a template by kind and name.
func (s *Snapshot) Template(kind TemplateKind, name string) (*Template, bool) {
	t, ok := s.templates[templateKey{kind, name}]
	return t, ok
}

// Groups returns every group, sorted by id.
func (s *Snapshot) Groups() []*Group { return slices.Clone(s.groups) }

// Profiles returns every profile, sorted by id.
func (s *Snapshot) Profiles() []*Profile {
	out := make([]*Profile, 0, len(s.profiles))
	for _, p := range s.profiles {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *Profile) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Templates returns every template, sorted by kind and name.
func (s *Snapshot) Templates() []*Template {
	out := make([]*Template, 0, len(s.templates))
	for _, t := range s.templates {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b *Template) int {
		if c := strings.Compare(string(a.Kind), string(b.Kind)); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// Counts returns the number of groups, profiles and templates.
func (s *Snapshot) Counts() (groups, profiles, templates int) {
	return len(s.groups), len(s.profiles), len(s.templates)
}

// Problems returns what was found wrong while building the snapshot.
func (s *Snapshot) Problems() []Problem { return s.problems }

// Catalog holds the current snapshot and rebuilds it when a source changes.
// Readers never block: they load the current snapshot atomically.
type Catalog struct {
	mu       sync.Mutex
	order    []string
	sources  map[string]Objects
	current  atomic.Pointer[Snapshot]
	gen      uint64
	onChange []func(*Snapshot)
}

// NewCatalog returns a catalog whose sources, named in precedence order,
// start empty.
func NewCatalog(sourceNames ...string) *Catalog {
	c := &Catalog{order: sourceNames, sources: make(map[string]Objects)}
	c.current.Store(NewSnapshot())
	return c
}

// OnChange registers fn to run after every rebuild, with the new snapshot.
// Register before the first Update.
func (c *Catalog) OnChange(fn func(*Snapshot)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onChange = append(c.onChange, fn)
}

// Update replaces the objects of one source and rebuilds the snapshot.
func (c *Catalog) Update(ctx context.Context, source string, objs Objects) *Snapshot {
	return c.UpdateSources(ctx, map[string]Objects{source: objs})
}

// UpdateSources replaces the objects of several sources and rebuilds the
// snapshot once.
func (c *Catalog) UpdateSources(_ context.Context, sources map[string]Objects) *Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	for source, objs := range sources {
		if !slices.Contains(c.order, source) {
			c.order = append(c.order, source)
		}
		// Kept in id order (a copy: the caller's slice stays as it was),
		// so that a snapshot with this as its only source of groups can
		// share the slice. Stable, so the first of two groups with the
		// same id still wins.
		objs.Groups = slices.Clone(objs.Groups)
		slices.SortStableFunc(objs.Groups, byGroupID)
		c.sources[source] = objs
	}
	all := make([]Objects, 0, len(c.order))
	for _, name := range c.order {
		all = append(all, c.sources[name])
	}
	snap := NewSnapshot(all...)
	c.gen++
	snap.Generation = c.gen
	c.current.Store(snap)
	for _, fn := range c.onChange {
		fn(snap)
	}
	return snap
}

// Snapshot returns the current snapshot.
func (c *Catalog) Snapshot() *Snapshot { return c.current.Load() }
