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

// String is the problem on one line, as validate and the logs print it;
// a file name or message holding control or format characters shows them
// escaped.
func (p Problem) String() string {
	return Printable(p.Origin) + ": " + string(p.Severity) + ": " + EscapeLine(p.Message)
}

// Objects is what one source (the data dir, the database) contributes to the
// catalog, plus the problems it found while reading.
type Objects struct {
	Groups    []*Group
	Profiles  []*Profile
	Templates []*Template
	Problems  []Problem
	// Claims are group files that do not load and have no last good
	// version: the machines they may select get no group (see Claim).
	Claims []Claim
	// Unloaded are templates the source has (files that exist) but could
	// not load: a profile naming one is told so, not that it is missing.
	Unloaded []TemplateRef
}

type templateKey struct {
	kind TemplateKind
	name string
}

// Snapshot is an immutable, indexed view of every group, profile and
// template. Front-ends take the current snapshot once per request.
type Snapshot struct {
	// groups are packed groups (frozen.go) sorted by id: a slice of
	// pointer-free strings, so a large fleet costs the collector one
	// pointer per group here and nothing to read behind it.
	groups    []string
	profiles  map[string]*Profile
	templates map[templateKey]*Template
	index     *Index
	problems  []Problem
	claims    []Claim
	unloaded  map[templateKey]bool
	// Generation increases with every rebuilt snapshot; caches key on it.
	Generation uint64
}

// Selection is the answer to "what does this machine get".
type Selection struct {
	Group   *Group
	Profile *Profile
}

// NewSnapshot merges the objects of several sources, in order, into one
// snapshot. A profile or template id defined by an earlier source wins over
// a later one (the data dir is passed first), and the clash is reported.
// Groups sharing an id are all kept, as poseidon/matchbox keeps them, and
// selected by the usual rules; the clash is reported.
func NewSnapshot(sources ...Objects) *Snapshot {
	srcs := make([]source, len(sources))
	for i, objs := range sources {
		srcs[i] = compileSource(objs)
	}
	return newSnapshot(srcs)
}

// source is one source's objects as the catalog keeps them: the groups
// packed (frozen.go) and in id order, the rest as given.
type source struct {
	objs     Objects // without Groups
	groups   []string
	problems []Problem
	// distinct is whether no two groups share an id.
	distinct bool
}

// compileSource packs the groups of objs and sorts them by id (stably, so
// the first of two groups with one id still comes first).
func compileSource(objs Objects) source {
	packed, failed := packGroups(objs.Groups)
	sorted, distinct := idOrder(packed)
	if !sorted {
		sortPackedByID(packed)
		_, distinct = idOrder(packed)
	}
	var probs []Problem
	for _, g := range failed {
		probs = append(probs, Problem{g.Origin, SeverityError,
			fmt.Sprintf("group %q: metadata cannot be held (not representable in JSON, or nested deeper than %d levels); the group is ignored", g.ID, MaxMetadataDepth)})
	}
	objs.Groups = nil
	return source{objs, packed, probs, distinct}
}

func newSnapshot(sources []source) *Snapshot {
	s := &Snapshot{
		profiles:  make(map[string]*Profile),
		templates: make(map[templateKey]*Template),
	}
	// When one source has every group, in strictly increasing id order (the
	// catalog keeps its sources so), no two share an id: the snapshot holds
	// that source's slice, and needs neither the id map nor a sort.
	shared := soleSortedGroups(sources)
	var (
		byID   map[string]string // only while building: id → packed group
		groups []string
	)
	if shared == nil {
		n := 0
		for _, src := range sources {
			n += len(src.groups)
		}
		byID = make(map[string]string, n)
		groups = make([]string, 0, n)
	}
	for _, src := range sources {
		s.problems = append(s.problems, src.objs.Problems...)
		s.problems = append(s.problems, src.problems...)
		for _, r := range src.objs.Unloaded {
			if s.unloaded == nil {
				s.unloaded = make(map[templateKey]bool)
			}
			s.unloaded[templateKey{r.Kind, r.Name}] = true
		}
		for _, c := range src.objs.Claims {
			s.claims = append(s.claims, c)
			s.problems = append(s.problems, c.problem())
		}
		if shared == nil {
			for _, p := range src.groups {
				id := packedID(p)
				if prev, ok := byID[id]; ok {
					s.problems = append(s.problems, Problem{UnpackGroup(p).Origin, SeverityWarning,
						fmt.Sprintf("group id %q is also defined by %s; both groups are kept and selected by the usual rules", id, UnpackGroup(prev).Origin)})
				} else {
					byID[id] = p
				}
				groups = append(groups, p)
			}
		}
		for _, p := range src.objs.Profiles {
			if prev, ok := s.profiles[p.ID]; ok {
				s.problems = append(s.problems, Problem{p.Origin, SeverityError,
					fmt.Sprintf("profile id %q is already defined by %s; this one is ignored", p.ID, prev.Origin)})
				continue
			}
			s.profiles[p.ID] = p
		}
		for _, t := range src.objs.Templates {
			k := templateKey{t.Kind, t.Name}
			if prev, ok := s.templates[k]; ok {
				s.problems = append(s.problems, Problem{t.Origin, SeverityError,
					fmt.Sprintf("%s template %q is already defined by %s; this one is ignored", t.Kind, t.Name, prev.Origin)})
				continue
			}
			s.templates[k] = t
		}
	}
	if shared != nil {
		groups = shared
	} else {
		clear(byID)
		sortPackedByID(groups)
	}
	s.groups = slices.Clip(groups)
	s.index = newIndex(s.groups)
	s.problems = append(s.problems, s.checkReferences()...)
	return s
}

// idOrder reports whether packed groups are in id order, and whether
// their ids are distinct when they are. The database hands them out in
// id order.
func idOrder(packed []string) (sorted, distinct bool) {
	distinct = true
	for i := 1; i < len(packed); i++ {
		switch strings.Compare(packedID(packed[i-1]), packedID(packed[i])) {
		case 1:
			return false, false
		case 0:
			distinct = false
		}
	}
	return true, distinct
}

// sortPackedByID sorts packed groups by id, stably.
func sortPackedByID(packed []string) {
	type keyed struct{ id, p string }
	ks := make([]keyed, len(packed))
	for i, p := range packed {
		ks[i] = keyed{packedID(p), p}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int { return strings.Compare(a.id, b.id) })
	for i := range ks {
		packed[i] = ks[i].p
	}
}

// soleSortedGroups returns the groups of the only source that has any,
// when their ids are distinct (and so strictly increasing); otherwise nil.
func soleSortedGroups(sources []source) []string {
	var only *source
	for i := range sources {
		if len(sources[i].groups) == 0 {
			continue
		}
		if only != nil {
			return nil
		}
		only = &sources[i]
	}
	if only == nil || !only.distinct {
		return nil
	}
	return only.groups
}

// checkReferences reports groups naming missing profiles, profiles naming
// missing templates, several default groups and identical selector sets.
func (s *Snapshot) checkReferences() []Problem {
	var probs []Problem
	// Groups are read in place (g, prev) rather than unpacked onto the
	// heap: at 10,000 groups, a reload would otherwise allocate them all.
	bySel := make(map[string]int32, len(s.groups)) // selector string → group number
	var g, prev Group
	var known string // a profile found to exist: most groups share a few
	for i, p := range s.groups {
		g.unpack(p)
		if g.Profile == "" {
			probs = append(probs, Problem{g.Origin, SeverityError,
				fmt.Sprintf("group %q has no profile: the machines it selects get none (404)", g.ID)})
		} else if g.Profile != known {
			if _, ok := s.profiles[g.Profile]; ok {
				known = g.Profile
			} else {
				probs = append(probs, Problem{g.Origin, SeverityError,
					fmt.Sprintf("group %q names profile %q, which does not exist: the machines it selects get none (404)", g.ID, g.Profile)})
			}
		}
		sel := g.SelectorString()
		if j, ok := bySel[sel]; ok {
			prev.unpack(s.groups[j])
			what := "has the same selectors as"
			if sel == "" {
				what = "is a second default group (no selectors) besides"
			}
			why := fmt.Sprintf("%q wins because its id sorts first", prev.ID)
			if prev.ID == g.ID {
				why = fmt.Sprintf("%s wins because its path sorts first", prev.Origin)
			}
			probs = append(probs, Problem{g.Origin, SeverityWarning,
				fmt.Sprintf("group %q %s group %q (%s); %s", g.ID, what, prev.ID, prev.Origin, why)})
			continue
		}
		bySel[sel] = int32(i)
	}
	ids := make([]string, 0, len(s.profiles))
	for id := range s.profiles {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		p := s.profiles[id]
		for _, ref := range p.TemplateRefs() {
			if _, ok := s.templates[templateKey{ref.Kind, ref.Name}]; !ok {
				probs = append(probs, Problem{p.Origin, SeverityError, s.MissingTemplate(p.ID, ref)})
			}
		}
	}
	return probs
}

// Select answers which group and profile a machine with these labels gets.
// It returns an error wrapping ErrNotFound when no group matches or the
// matching group has no profile or names one that does not exist (the
// group is still returned), and one wrapping ErrUnavailable when a group
// file that does not load may select the machine (see Claim): then no
// group is returned.
func (s *Snapshot) Select(labels map[string]string) (Selection, error) {
	i := s.index.find(labels)
	var g *Group
	if i >= 0 {
		g = UnpackGroup(s.groups[i])
	}
	if len(s.claims) > 0 {
		if err := withheld(s.claims, labels, g); err != nil {
			return Selection{}, err
		}
	}
	if g == nil {
		return Selection{}, fmt.Errorf("no group matches: %w", ErrNotFound)
	}
	if g.Profile == "" {
		return Selection{Group: g}, fmt.Errorf("group %q has no profile: %w", g.ID, ErrNotFound)
	}
	p, ok := s.profiles[g.Profile]
	if !ok {
		return Selection{Group: g}, fmt.Errorf("group %q names profile %q, which does not exist: %w", g.ID, g.Profile, ErrNotFound)
	}
	return Selection{Group: g, Profile: p}, nil
}

// MissingTemplate says why profile has no template ref: it does not
// exist, or its file exists but does not load.
func (s *Snapshot) MissingTemplate(profile string, ref TemplateRef) string {
	if s.unloaded[templateKey{ref.Kind, ref.Name}] {
		return fmt.Sprintf("profile %q names %s template %q, whose file does not load (its problem is reported with it)", profile, ref.Kind, ref.Name)
	}
	return fmt.Sprintf("profile %q names %s template %q, which does not exist", profile, ref.Kind, ref.Name)
}

// Claims returns the group files that do not load and withhold groups
// from the machines they may select.
func (s *Snapshot) Claims() []Claim { return s.claims }

// Group returns a group by id.
func (s *Snapshot) Group(id string) (*Group, bool) {
	i, ok := slices.BinarySearchFunc(s.groups, id, func(p, id string) int { return strings.Compare(packedID(p), id) })
	if !ok {
		return nil, false
	}
	return UnpackGroup(s.groups[i]), true
}

// Profile returns a profile by id.
func (s *Snapshot) Profile(id string) (*Profile, bool) { p, ok := s.profiles[id]; return p, ok }

// Template returns a template by kind and name.
func (s *Snapshot) Template(kind TemplateKind, name string) (*Template, bool) {
	t, ok := s.templates[templateKey{kind, name}]
	return t, ok
}

// Groups returns every group, sorted by id.
func (s *Snapshot) Groups() []*Group {
	out := make([]*Group, len(s.groups))
	for i, p := range s.groups {
		out[i] = UnpackGroup(p)
	}
	return out
}

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
	// reloadMu runs one Reload at a time (read and update together).
	reloadMu sync.Mutex
	mu       sync.Mutex
	order    []string
	sources  map[string]source
	current  atomic.Pointer[Snapshot]
	gen      uint64
	onChange []func(*Snapshot)
}

// NewCatalog returns a catalog whose sources, named in precedence order,
// start empty.
func NewCatalog(sourceNames ...string) *Catalog {
	c := &Catalog{order: sourceNames, sources: make(map[string]source)}
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
		// Kept packed and in id order, so that a snapshot with this as its
		// only source of groups shares the slice, and the catalog holds no
		// Group objects.
		c.sources[source] = compileSource(objs)
	}
	all := make([]source, 0, len(c.order))
	for _, name := range c.order {
		all = append(all, c.sources[name])
	}
	snap := newSnapshot(all)
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

// Reload reads a source's objects with load and makes them the source's.
// Reloads run one at a time, read and update together, so a reload that
// read before a write never replaces the objects of one that read after
// it.
func (c *Catalog) Reload(ctx context.Context, source string, load func(context.Context) (Objects, error)) (*Snapshot, error) {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	objs, err := load(ctx)
	if err != nil {
		return nil, err
	}
	return c.Update(ctx, source, objs), nil
}

// followBatch is the most changes Follow takes for one reload.
const followBatch = 4096

// Follow keeps a source in line with a store that other processes write
// too: after each change of a group, profile or template that another
// process wrote (this one reloads its own writes as it makes them, so a
// Local change is skipped), it reloads the source (see Reload); changes
// that arrive together make one reload. Subscribe (changes) before the
// first load, so that nothing written between is missed. A failed reload
// is handed to failed (nil: dropped) and tried again at the next change.
// Follow returns when ctx ends or changes is closed.
func (c *Catalog) Follow(ctx context.Context, source string, load func(context.Context) (Objects, error), changes <-chan Change, failed func(error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case ch, ok := <-changes:
			if !ok {
				return
			}
			remote := !ch.Local
			// Take what else has come (a bounded lot, so a steady stream
			// of writes still reloads): one reload for it all.
		drain:
			for range followBatch {
				select {
				case ch, ok := <-changes:
					if !ok {
						break drain
					}
					remote = remote || !ch.Local
				default:
					break drain
				}
			}
			if !remote {
				continue
			}
			if _, err := c.Reload(ctx, source, load); err != nil && ctx.Err() == nil && failed != nil {
				failed(err)
			}
		}
	}
}
