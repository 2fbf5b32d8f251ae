package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/render"
)

// The writes of groups, profiles and templates, shared by the REST API
// and the gRPC API: the same checks, the same store, the same reload of
// what the boot endpoints serve. Only the REST API checks references (a
// group's profile and a profile's templates exist, nothing in use is
// deleted); the gRPC API writes as poseidon/matchbox does, without, since
// its clients write a profile before its template and replace a profile
// that groups still name (see grpc.go).

// writeMode is how one write is made.
type writeMode struct {
	cond matchbox.Condition
	// who made the write, for the log (a token name, or cert:CN).
	who string
	// refs checks references, holding Server.writes from the check to the
	// commit so that no other checked write falls between.
	refs bool
}

// objErr is a write refused before the store: the REST answer (status,
// code, details) and the kind (matchbox.ErrInvalid, ErrConflict) the
// gRPC API maps to its status code.
type objErr struct {
	status   int
	code     string
	msg      string
	details  map[string]any
	kind     error
	readOnly bool // the object comes from the data dir
}

func (e *objErr) Error() string { return e.msg }
func (e *objErr) Unwrap() error { return e.kind }

// readOnly is the error for objects that come from the data dir.
func readOnly(what, id, origin string) error {
	return &objErr{status: http.StatusConflict, code: "conflict", kind: matchbox.ErrConflict, readOnly: true,
		msg: fmt.Sprintf("%v: %s %q comes from the data dir (%s) and is read-only through the API: edit the file instead", matchbox.ErrConflict, what, id, origin)}
}

// isReadOnly reports whether err refuses a write to a data-dir object.
func isReadOnly(err error) bool {
	var oe *objErr
	return errors.As(err, &oe) && oe.readOnly
}

// lockFor takes Server.writes when the write checks references.
func (s *Server) lockFor(m writeMode) func() {
	if !m.refs {
		return func() {}
	}
	s.writes.Lock()
	return s.writes.Unlock
}

// commitWrite runs a store write, announced to the reloader (see
// reloader.begin) so that a reload due meanwhile can wait for it.
func (s *Server) commitWrite(write func() error) error {
	s.reloads.begin()
	if err := write(); err != nil {
		s.reloads.abandon()
		return err
	}
	return nil
}

// committed makes the boot endpoints see a write that the store took, and
// logs it.
func (s *Server) committed(ctx context.Context, what, id, verb, who string) error {
	if err := s.reloadCatalog(ctx); err != nil {
		return fmt.Errorf("%s %q %s, but the boot endpoints do not serve it yet: %w", what, id, verb, err)
	}
	s.log.Info(what+" "+verb, what, id, "token", who)
	return nil
}

// References are checked against what is committed, not against the
// catalog's snapshot, which lags a write until its reload: the data dir's
// objects from the snapshot (only the data dir's watcher changes them),
// the database's from the store. Checked writes hold Server.writes from
// their check to their commit, so a check sees every checked write before
// it; the reloads that follow run outside it, shared between writers.

// profileExists reports whether a profile of that id is committed.
func (s *Server) profileExists(ctx context.Context, snap *matchbox.Snapshot, id string) bool {
	if p, ok := snap.Profile(id); ok && !fromDB(p.Origin) {
		return true
	}
	_, _, err := s.cfg.Store.ProfileVersion(ctx, id)
	return err == nil
}

// templateExists reports whether a template of that kind and name is
// committed.
func (s *Server) templateExists(ctx context.Context, snap *matchbox.Snapshot, ref matchbox.TemplateRef) bool {
	if t, ok := snap.Template(ref.Kind, ref.Name); ok && !fromDB(t.Origin) {
		return true
	}
	_, _, err := s.cfg.Store.TemplateVersion(ctx, ref.Kind, ref.Name)
	return err == nil
}

// committedObjects are the data dir's objects (from snap) and the
// database's (from the store), for the checks of what is in use.
func (s *Server) committedObjects(ctx context.Context, snap *matchbox.Snapshot) ([]*matchbox.Group, []*matchbox.Profile, error) {
	db, err := s.cfg.Store.Objects(ctx)
	if err != nil {
		return nil, nil, err
	}
	groups, profiles := db.Groups, db.Profiles
	for _, g := range snap.Groups() {
		if !fromDB(g.Origin) {
			groups = append(groups, g)
		}
	}
	for _, p := range snap.Profiles() {
		if !fromDB(p.Origin) {
			profiles = append(profiles, p)
		}
	}
	return groups, profiles, nil
}

// apply runs check-and-commit, holding Server.writes when the write checks
// references, then makes the boot endpoints see the write.
func (s *Server) apply(ctx context.Context, m writeMode, what, id, verb string, commit func() error) error {
	if err := func() error {
		defer s.lockFor(m)()
		return commit()
	}(); err != nil {
		return err
	}
	return s.committed(ctx, what, id, verb, m.who)
}

// storeGroup stores g (create or replace): it returns the new ETag and
// whether the group is new.
func (s *Server) storeGroup(ctx context.Context, g *matchbox.Group, m writeMode) (tag string, created bool, err error) {
	err = s.apply(ctx, m, "group", g.ID, "written", func() error {
		snap := s.cfg.Catalog.Snapshot()
		if dg, ok := snap.Group(g.ID); ok && !fromDB(dg.Origin) {
			return readOnly("group", g.ID, dg.Origin)
		}
		if m.refs && g.Profile != "" && !s.profileExists(ctx, snap, g.Profile) {
			return &objErr{status: http.StatusBadRequest, code: "invalid_reference", kind: matchbox.ErrInvalid,
				msg:     fmt.Sprintf("group %q names profile %q, which does not exist", g.ID, g.Profile),
				details: map[string]any{"field": "profile", "profile": g.Profile}}
		}
		_, existed, _ := s.cfg.Store.GroupVersion(ctx, g.ID)
		created = existed == ""
		return s.commitWrite(func() (err error) { tag, err = s.cfg.Store.PutGroupIf(ctx, g, m.cond); return err })
	})
	return tag, created, err
}

func (s *Server) removeGroup(ctx context.Context, id string, m writeMode) error {
	return s.apply(ctx, m, "group", id, "deleted", func() error {
		if dg, ok := s.cfg.Catalog.Snapshot().Group(id); ok && !fromDB(dg.Origin) {
			return readOnly("group", id, dg.Origin)
		}
		return s.commitWrite(func() error { return s.cfg.Store.DeleteGroupIf(ctx, id, m.cond) })
	})
}

func (s *Server) storeProfile(ctx context.Context, p *matchbox.Profile, m writeMode) (tag string, created bool, err error) {
	if err := render.CheckProfile(p); err != nil {
		return "", false, &objErr{status: http.StatusBadRequest, code: "invalid_template", kind: matchbox.ErrInvalid,
			msg: fmt.Sprintf("profile %q: %v", p.ID, err)}
	}
	err = s.apply(ctx, m, "profile", p.ID, "written", func() error {
		snap := s.cfg.Catalog.Snapshot()
		if dp, ok := snap.Profile(p.ID); ok && !fromDB(dp.Origin) {
			return readOnly("profile", p.ID, dp.Origin)
		}
		for _, ref := range p.TemplateRefs() {
			if m.refs && !s.templateExists(ctx, snap, ref) {
				return &objErr{status: http.StatusBadRequest, code: "invalid_reference", kind: matchbox.ErrInvalid,
					msg:     fmt.Sprintf("profile %q names %s template %q, which does not exist", p.ID, ref.Kind, ref.Name),
					details: map[string]any{"field": ref.Kind.ProfileField(), "template": ref.Name}}
			}
		}
		_, existed, _ := s.cfg.Store.ProfileVersion(ctx, p.ID)
		created = existed == ""
		return s.commitWrite(func() (err error) { tag, err = s.cfg.Store.PutProfileIf(ctx, p, m.cond); return err })
	})
	return tag, created, err
}

// inUse refuses to delete an object that others name.
func inUse(what, id, userKind string, users []string) error {
	sort.Strings(users)
	return &objErr{status: http.StatusConflict, code: "in_use", kind: matchbox.ErrConflict,
		msg:     fmt.Sprintf("%s %q is used by %d %s(s); change them first", what, id, len(users), userKind),
		details: map[string]any{userKind + "s": users}}
}

func (s *Server) removeProfile(ctx context.Context, id string, m writeMode) error {
	return s.apply(ctx, m, "profile", id, "deleted", func() error {
		snap := s.cfg.Catalog.Snapshot()
		if dp, ok := snap.Profile(id); ok && !fromDB(dp.Origin) {
			return readOnly("profile", id, dp.Origin)
		}
		if m.refs {
			groups, _, err := s.committedObjects(ctx, snap)
			if err != nil {
				return err
			}
			var users []string
			for _, g := range groups {
				if g.Profile == id {
					users = append(users, g.ID)
				}
			}
			if len(users) > 0 {
				return inUse("profile", id, "group", users)
			}
		}
		return s.commitWrite(func() error { return s.cfg.Store.DeleteProfileIf(ctx, id, m.cond) })
	})
}

// storeTemplate stores t; apiKind is the kind as the caller named it, for
// errors.
func (s *Server) storeTemplate(ctx context.Context, t *matchbox.Template, apiKind string, m writeMode) (tag string, created bool, err error) {
	if err := render.CheckTemplate(t); err != nil {
		return "", false, &objErr{status: http.StatusBadRequest, code: "invalid_template", kind: matchbox.ErrInvalid,
			msg: fmt.Sprintf("%s template %q: %v", apiKind, t.Name, err)}
	}
	err = s.apply(ctx, m, "template", t.Name, "written", func() error {
		if dt, ok := s.cfg.Catalog.Snapshot().Template(t.Kind, t.Name); ok && !fromDB(dt.Origin) {
			return readOnly("template", t.Name, dt.Origin)
		}
		_, existed, _ := s.cfg.Store.TemplateVersion(ctx, t.Kind, t.Name)
		created = existed == ""
		return s.commitWrite(func() (err error) { tag, err = s.cfg.Store.PutTemplateIf(ctx, t, m.cond); return err })
	})
	return tag, created, err
}

func (s *Server) removeTemplate(ctx context.Context, kind matchbox.TemplateKind, name string, m writeMode) error {
	return s.apply(ctx, m, "template", name, "deleted", func() error {
		snap := s.cfg.Catalog.Snapshot()
		if dt, ok := snap.Template(kind, name); ok && !fromDB(dt.Origin) {
			return readOnly("template", name, dt.Origin)
		}
		if m.refs {
			_, profiles, err := s.committedObjects(ctx, snap)
			if err != nil {
				return err
			}
			var users []string
			for _, p := range profiles {
				if slices.Contains(p.TemplateRefs(), matchbox.TemplateRef{Kind: kind, Name: name}) {
					users = append(users, p.ID)
				}
			}
			if len(users) > 0 {
				return inUse("template", name, "profile", users)
			}
		}
		return s.commitWrite(func() error { return s.cfg.Store.DeleteTemplateIf(ctx, kind, name, m.cond) })
	})
}

// reloader runs the catalog reloads writes ask for, one at a time, and
// lets one reload serve every write committed before it started: writers
// arriving together wait for one reload, not one each. A reload about to
// start first waits, briefly, for the writes being committed at that
// moment (begun, not yet asked for their reload), so that it covers them
// too instead of leaving them to the next one. Each writer gets the result
// of the reload that covered its write.
type reloader struct {
	mu         sync.Mutex
	cond       *sync.Cond
	pending    *reloadRound // the round writers asking now join (nil: none yet)
	running    bool         // a round is reading or gathering
	committing int          // writes begun and not yet asked for (or abandoned)
}

// reloadRound is one reload and the writes it covers.
type reloadRound struct {
	finished bool
	err      error
}

// gatherWait bounds how long a reload waits for the writes being
// committed when it is due (a commit takes a millisecond or two).
var gatherWait = 3 * time.Millisecond

func newReloader() *reloader {
	r := &reloader{}
	r.cond = sync.NewCond(&r.mu)
	return r
}

// begin says a write is about to be committed; call do (committed) or
// abandon (failed) after it.
func (r *reloader) begin() {
	r.mu.Lock()
	r.committing++
	r.mu.Unlock()
}

// abandon says a begun write failed: it asks for no reload.
func (r *reloader) abandon() {
	r.mu.Lock()
	r.committing--
	r.cond.Broadcast()
	r.mu.Unlock()
}

// do returns once a reload that started after this call has finished,
// with its error. Call it after the write committed (begin before it).
func (r *reloader) do(ctx context.Context, reload func(context.Context) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.committing--
	r.cond.Broadcast() // a round gathering writes may be waiting for this one
	if r.pending == nil {
		r.pending = &reloadRound{}
	}
	round := r.pending // not started reading: it covers this write
	for !round.finished {
		if r.running {
			r.cond.Wait()
			continue
		}
		// Nobody leads the pending round: this writer does.
		r.running = true
		r.gather()
		r.pending = nil // writers asking from now on need the next round
		r.mu.Unlock()
		err := safeReload(context.WithoutCancel(ctx), reload) // others wait on it: not cancelled with this caller
		r.mu.Lock()
		round.finished, round.err = true, err
		r.running = false
		r.cond.Broadcast()
	}
	return round.err
}

// gather waits, at most gatherWait, until no write is being committed.
// The caller holds mu.
func (r *reloader) gather() {
	if r.committing <= 0 {
		return
	}
	deadline := time.Now().Add(gatherWait)
	t := time.AfterFunc(gatherWait, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer t.Stop()
	for r.committing > 0 && time.Now().Before(deadline) {
		r.cond.Wait()
	}
}

// safeReload runs reload, a panic in it returned as an error: the writers
// waiting on it must hear back.
func safeReload(ctx context.Context, reload func(context.Context) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("catalog reload panicked: %v", p)
		}
	}()
	return reload(ctx)
}

// reloadCatalog makes the boot endpoints see the writes committed so far.
func (s *Server) reloadCatalog(ctx context.Context) error {
	if s.cfg.Reload == nil {
		s.reloads.abandon() // nothing to reload: done with the write
		return nil
	}
	return s.reloads.do(ctx, s.cfg.Reload)
}
