package storage

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"matchbox.dev/matchbox"
)

// maxFileSize bounds a single data-dir file; larger files are reported and
// skipped rather than read into memory.
const maxFileSize = 16 << 20

// fileStamp identifies a version of a file without reading it.
// Plain integers (no time.Time, whose location is a pointer): the
// collector has nothing to look at in it.
type fileStamp struct {
	mod   int64 // modification time, ns since the epoch
	size  int64
	ino   uint64
	ctime int64
}

type fileEntry struct {
	// rel is the path relative to the root; "" for a free slot. For a
	// group file it is a slice of the group's own copy of its path.
	rel   string
	stamp fileStamp
	// The object the file defines (the last good one when the file is now
	// broken but once parsed), or nil. A group is held packed
	// (matchbox.Group.Packed): one pointer-free object.
	group    string
	profile  *matchbox.Profile
	template *matchbox.Template
	// claim is set for a group file that does not load and never did:
	// the machines it may select get no group (matchbox.Claim).
	claim *matchbox.Claim
	// problems found in the current version of the file.
	problems []matchbox.Problem
	// noteOnly: the entry only reports a problem (an ignored file, a
	// folder that cannot be read); byRef: a template read only because a
	// profile names it.
	noteOnly, byRef bool
}

// DataDir reads a poseidon/matchbox data dir: groups/*.json,
// profiles/*.json and the ignition/, cloud/ and generic/ template folders.
// It keeps every parsed file in memory, rereads only files that changed,
// and when a file that once parsed becomes broken it keeps serving the last
// good version and reports the problem, so a half-saved edit never changes
// which machines get what.
type DataDir struct {
	root   string
	logger *slog.Logger

	mu sync.Mutex
	// A large data dir's bookkeeping lives as long as the server and the
	// collector looks at all of it on every cycle, so it holds few
	// pointers. The entries live in one slice (free slots reused) rather
	// than one object each, and files locates them by a hash of the path
	// relative to the root, so the map holds no strings for the collector
	// to follow; collided holds the rare path whose hash another path
	// already has.
	seed     maphash.Seed
	files    map[uint64]int32
	collided map[string]int32
	entries  []fileEntry
	free     []int32
	// refProblems are the problems of profiles' template names found by
	// the last byReference.
	refProblems []matchbox.Problem
	// examined counts the files refresh looked at, for tests of how much
	// a reload touches.
	examined atomic.Int64
}

// NewDataDir returns a loader for the data dir at root.
func NewDataDir(root string, logger *slog.Logger) *DataDir {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &DataDir{root: root, logger: logger, seed: maphash.MakeSeed(),
		files: make(map[uint64]int32), collided: make(map[string]int32)}
}

// Root is the data dir's path.
func (d *DataDir) Root() string { return d.root }

// dataDirs are the folders read, relative to the root.
var dataDirs = []string{"groups", "profiles", "ignition", "cloud", "generic"}

// Load scans the data dir and returns every object with the problems found.
// Unchanged files are not reread. A missing data dir is an error; missing
// folders inside it are not.
func (d *DataDir) Load(ctx context.Context) (matchbox.Objects, error) {
	objs, _, err := d.load(ctx, nil)
	return objs, err
}

// load rescans the data dir and tells whether anything changed since the
// last load. With paths (absolute, as the watcher reports them) it looks
// only at those files and folders and what is below them; without, at the
// whole tree.
func (d *DataDir) load(ctx context.Context, paths []string) (matchbox.Objects, bool, error) {
	st, err := os.Stat(d.root)
	if err != nil {
		return matchbox.Objects{}, false, fmt.Errorf("data dir: %w", err)
	}
	if !st.IsDir() {
		return matchbox.Objects{}, false, fmt.Errorf("data dir %s: not a directory", d.root)
	}
	d.mu.Lock()
	defer d.mu.Unlock()

	var subtrees []string // relative to the root
	if paths == nil {
		subtrees = dataDirs
	} else {
		subtrees = d.subtrees(paths)
	}
	sc := &scan{d: d, seen: make(map[int32]bool)}
	for _, sub := range subtrees {
		if err := ctx.Err(); err != nil {
			return matchbox.Objects{}, false, err
		}
		if err := sc.walk(sub); err != nil {
			return matchbox.Objects{}, false, err
		}
	}
	changed := sc.refresh()
	// Entries below a scanned subtree that the scan did not see are gone.
	// Templates loaded because a profile names them are kept or dropped
	// by byReference below.
	for i := range d.entries {
		ent := &d.entries[i]
		if ent.rel == "" || ent.byRef || sc.seen[int32(i)] {
			continue
		}
		for _, sub := range subtrees {
			if ent.rel == sub || strings.HasPrefix(ent.rel, sub+string(filepath.Separator)) {
				d.remove(int32(i))
				changed = true
				break
			}
		}
	}
	if d.byReference(sc) {
		changed = true
	}
	return d.objects(), changed, nil
}

// subtrees turns changed paths into the smallest set of paths relative to
// the root that rescanning covers them. Paths outside the folders matchbox
// reads (its own database, token and key files beside them) are left out.
func (d *DataDir) subtrees(paths []string) []string {
	var subs []string
	for _, p := range paths {
		rel := relPath(d.root, p)
		if rel == "." || rel == "" || !filepath.IsLocal(rel) {
			continue
		}
		top, rest, _ := strings.Cut(rel, string(filepath.Separator))
		if !slices.Contains(dataDirs, top) {
			continue
		}
		if (top == "groups" || top == "profiles") && strings.Contains(rest, string(filepath.Separator)) {
			continue // folders inside them are not read
		}
		subs = append(subs, rel)
	}
	// Drop paths inside another one of the set.
	slices.Sort(subs)
	out := subs[:0]
	for _, s := range subs {
		if n := len(out); n > 0 && (s == out[n-1] || strings.HasPrefix(s, out[n-1]+string(filepath.Separator))) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// scan is one load's work: the files to refresh and the entries seen.
type scan struct {
	d    *DataDir
	jobs []job
	seen map[int32]bool
}

type job struct {
	ent            int32
	rel, path, dir string
	regular        bool
}

// walk visits the subtree at rel (a folder matchbox reads, or a path in
// one) and queues its files, as poseidon/matchbox reads them: *.json files
// directly in groups/ and profiles/, every file below the template
// folders but hidden ones and backups (name~).
func (sc *scan) walk(rel string) error {
	d := sc.d
	dir, _, _ := strings.Cut(rel, string(filepath.Separator))
	recursive := dir != "groups" && dir != "profiles"
	base := filepath.Join(d.root, dir)
	start := filepath.Join(d.root, rel)
	if recursive {
		for _, part := range strings.Split(rel, string(filepath.Separator))[1:] {
			if strings.HasPrefix(part, ".") || strings.HasSuffix(part, "~") {
				return nil // skipped by full scans too; byReference reads it if named
			}
		}
	}
	return filepath.WalkDir(start, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path == start {
				return nil
			}
			sc.note(path, dir, matchbox.Problem{Origin: path, Severity: matchbox.SeverityError, Message: err.Error()})
			return nil
		}
		name := de.Name()
		if de.IsDir() {
			if path != base && (!recursive || strings.HasPrefix(name, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !recursive {
			// poseidon/matchbox reads every NAME.json here, hidden or
			// not; an editor's lock file (.#NAME) is not one.
			if strings.HasPrefix(name, ".#") || strings.HasSuffix(name, "~") {
				return nil
			}
			if !strings.HasSuffix(name, ".json") {
				if !strings.HasPrefix(name, ".") {
					sc.note(path, "", matchbox.Problem{Origin: path, Severity: matchbox.SeverityWarning,
						Message: "ignored: only .json files are read in " + dir + "/"})
				}
				return nil
			}
		} else if strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") {
			return nil
		}
		sc.queue(relPath(d.root, path), path, dir, de.Type().IsRegular(), false)
		return nil
	})
}

// queue adds the file at rel to the scan.
func (sc *scan) queue(rel, path, dir string, regular, byRef bool) {
	d := sc.d
	ent, ok := d.lookup(rel)
	if !ok {
		ent = d.add(rel)
	}
	if d.entries[ent].noteOnly {
		d.entries[ent] = fileEntry{rel: d.entries[ent].rel}
	}
	d.entries[ent].byRef = byRef
	sc.seen[ent] = true
	sc.jobs = append(sc.jobs, job{ent, rel, path, dir, regular})
}

// note records a problem with a path that holds no object (a folder that
// cannot be read, a file that is ignored). A folder of groups that cannot
// be read may hold any group: it claims every machine (matchbox.Claim).
func (sc *scan) note(path, claimDir string, p matchbox.Problem) {
	d := sc.d
	rel := relPath(d.root, path)
	ent, ok := d.lookup(rel)
	if !ok {
		ent = d.add(rel)
	}
	e := &d.entries[ent]
	*e = fileEntry{rel: e.rel, noteOnly: true, problems: []matchbox.Problem{p}}
	if claimDir == "groups" {
		e.claim = &matchbox.Claim{Origin: path, Reason: p.Message}
	}
	sc.seen[ent] = true
}

// refresh stats, reads and parses the queued files in parallel (each job
// owns its entry) and tells whether any was reread.
func (sc *scan) refresh() bool {
	d, jobs := sc.d, sc.jobs
	sc.jobs = nil
	workers := min(runtime.GOMAXPROCS(0), 8)
	var wg sync.WaitGroup
	var next atomic.Int64
	reread := make([]bool, len(jobs)) // each worker writes only its own jobs' flags
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(jobs) {
					return
				}
				j := jobs[i]
				reread[i] = d.refresh(&d.entries[j.ent], j.rel, j.path, j.dir, j.regular)
			}
		}()
	}
	wg.Wait()
	return slices.Contains(reread, true)
}

// byReference loads the templates that profiles name but the walk skips
// (hidden files, files in hidden folders, backups): poseidon/matchbox
// reads a template by the name its profile gives, whatever that name is.
// Such files are dropped again when no profile names them.
func (d *DataDir) byReference(sc *scan) bool {
	d.refProblems = nil
	want := make(map[string]string) // rel → kind folder
	for i := range d.entries {
		if p := d.entries[i].profile; p != nil {
			for _, r := range p.TemplateRefs() {
				name := filepath.FromSlash(r.Name)
				if !filepath.IsLocal(name) {
					// Never read: reported as missing, and why.
					d.refProblems = append(d.refProblems, matchbox.Problem{Origin: p.Origin, Severity: matchbox.SeverityError,
						Message: fmt.Sprintf("%s template name %q leaves the %s/ folder: not read", r.Kind, r.Name, r.Kind)})
					continue
				}
				want[filepath.Join(string(r.Kind), name)] = string(r.Kind)
			}
		}
	}
	changed := false
	for rel, dir := range want {
		if i, ok := d.lookup(rel); ok && !d.entries[i].byRef {
			continue // the walk reads it
		}
		path := filepath.Join(d.root, rel)
		fi, err := os.Lstat(path)
		if err != nil || fi.IsDir() {
			continue
		}
		sc.queue(rel, path, dir, fi.Mode().IsRegular(), true)
	}
	if sc.refresh() {
		changed = true
	}
	for i := range d.entries {
		ent := &d.entries[i]
		if ent.rel != "" && ent.byRef && !sc.seen[int32(i)] {
			d.remove(int32(i))
			changed = true
		}
	}
	return changed
}

// lookup finds the entry of the file at rel.
func (d *DataDir) lookup(rel string) (int32, bool) {
	if i, ok := d.files[maphash.String(d.seed, rel)]; ok && d.entries[i].rel == rel {
		return i, true
	}
	i, ok := d.collided[rel]
	return i, ok
}

// add makes an entry for the file at rel, in a free slot of d.entries.
// Call it only while no refresh runs: it may move the entries.
func (d *DataDir) add(rel string) int32 {
	var i int32
	if n := len(d.free); n > 0 {
		i = d.free[n-1]
		d.free = d.free[:n-1]
	} else {
		d.entries = append(d.entries, fileEntry{})
		i = int32(len(d.entries) - 1)
	}
	d.entries[i].rel = rel
	if h := maphash.String(d.seed, rel); !mapHas(d.files, h) {
		d.files[h] = i
	} else {
		d.collided[rel] = i
	}
	return i
}

// remove frees entry i.
func (d *DataDir) remove(i int32) {
	rel := d.entries[i].rel
	if h := maphash.String(d.seed, rel); d.files[h] == i && mapHas(d.files, h) {
		delete(d.files, h)
	} else {
		delete(d.collided, rel)
	}
	d.entries[i] = fileEntry{}
	d.free = append(d.free, i)
}

func mapHas[K comparable, V any](m map[K]V, k K) bool { _, ok := m[k]; return ok }

// relPath is path relative to root. For the paths WalkDir gives under root
// it is a substring of path, so the file's key and its origin share one
// string (at 100,000 files that is 100,000 objects fewer to collect).
func relPath(root, path string) string {
	r := filepath.Clean(root)
	if r == "." && !filepath.IsAbs(path) && !strings.HasPrefix(path, "..") {
		return path
	}
	if len(path) > len(r)+1 && strings.HasPrefix(path, r) && path[len(r)] == filepath.Separator {
		return path[len(r)+1:]
	}
	rel, err := filepath.Rel(root, path)
	if err != nil {
		return path
	}
	return rel
}

// refresh rereads one file into ent when its stamp changed, and reports
// whether it did.
func (d *DataDir) refresh(ent *fileEntry, rel, path, dir string, regular bool) bool {
	d.examined.Add(1)
	var st syscall.Stat_t
	fd := -1
	var err error
	if regular && ent.stamp == (fileStamp{}) {
		// First sight of a regular file: open and fstat, one system call
		// fewer than stat then open. Plain system calls, not os.File: the
		// runtime poller registration costs two more per file, which
		// matters at 100,000 files.
		if fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0); err == nil {
			if err = syscall.Fstat(fd, &st); err != nil {
				syscall.Close(fd)
				fd = -1
			}
		}
	} else {
		// Symlinks may point at anything (opening a FIFO would block), so
		// stat first; for known files the stamp tells whether to reread.
		err = syscall.Stat(path, &st)
	}
	if fd >= 0 {
		defer syscall.Close(fd)
	}
	// A group file that does not load and has no last good version
	// claims the machines it may select (what can be read of it says
	// which), so that they never get a less specific group instead.
	claim := func(data []byte, reason string) {
		if dir != "groups" || ent.group != "" {
			return
		}
		c := matchbox.Claim{Origin: path, Reason: reason}
		if data != nil {
			c = SalvageClaim(data, path, reason)
		}
		ent.claim = &c
	}
	if err != nil {
		msg := (&fs.PathError{Op: "open", Path: path, Err: err}).Error()
		ent.problems = []matchbox.Problem{{Origin: path, Severity: matchbox.SeverityError, Message: msg}}
		if !errors.Is(err, syscall.ENOENT) { // gone since the walk: removed on the next scan
			claim(nil, msg)
		}
		return true
	}
	stamp := fileStamp{mod: st.Mtim.Nano(), size: st.Size, ino: st.Ino, ctime: st.Ctim.Nano()}
	if stamp == ent.stamp {
		return false
	}
	ent.stamp = stamp
	ent.problems = nil
	ent.claim = nil
	var data []byte
	fail := func(msg string) {
		claim(data, msg)
		if ent.group != "" || ent.profile != nil || ent.template != nil {
			msg += " (still serving the last version that loaded)"
		}
		ent.problems = append(ent.problems, matchbox.Problem{Origin: path, Severity: matchbox.SeverityError, Message: msg})
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		fail("not a regular file")
		return true
	}
	if st.Size > maxFileSize {
		fail(fmt.Sprintf("file is larger than %d bytes", maxFileSize))
		return true
	}
	if fd < 0 {
		if fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0); err != nil {
			fail((&fs.PathError{Op: "open", Path: path, Err: err}).Error())
			return true
		}
		defer syscall.Close(fd)
	}
	// Read the size fstat saw; a file still growing changes its stamp and
	// is reread on the next scan.
	buf := make([]byte, st.Size)
	for n := 0; n < len(buf); {
		m, err := syscall.Read(fd, buf[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			fail((&fs.PathError{Op: "read", Path: path, Err: err}).Error())
			return true
		}
		if m == 0 {
			buf = buf[:n]
			break
		}
		n += m
	}
	data = buf
	warn := func(msg string) {
		ent.problems = append(ent.problems, matchbox.Problem{Origin: path, Severity: matchbox.SeverityWarning, Message: msg})
	}
	// A file's name is a profile's id, a template's name, a group's id
	// when the file has none, and its origin in every message: a control
	// or format character in it does not load.
	if err := matchbox.CheckName("file name", filepath.ToSlash(rel)); err != nil {
		fail(err.Error())
		return true
	}
	switch dir {
	case "groups":
		// poseidon/matchbox reads a group by its file name: a file
		// without an id takes that name.
		g, unknown, err := ParseGroupFile(data, strings.TrimSuffix(filepath.Base(rel), ".json"))
		if err != nil {
			fail(err.Error())
			return true
		}
		g.Origin = path
		g.Freeze() // held for the life of the server
		if !g.Frozen() {
			fail("metadata cannot be held")
			return true
		}
		ent.group = g.Packed()
		if strings.HasSuffix(g.Origin, rel) {
			// The packed group has its own copy of the path: share it
			// rather than keep the one the walk made as well.
			ent.rel = g.Origin[len(g.Origin)-len(rel):]
		}
		if len(unknown) > 0 {
			warn("unknown keys ignored: " + strings.Join(unknown, ", "))
		}
	case "profiles":
		p, unknown, err := ParseProfile(data)
		if err != nil {
			fail(err.Error())
			return true
		}
		// poseidon/matchbox finds a profile by its file name, so the file
		// name is the id that groups refer to.
		stem := strings.TrimSuffix(filepath.Base(rel), ".json")
		if p.ID != stem {
			warn(fmt.Sprintf("profile id %q differs from the file name; groups refer to it as %q", p.ID, stem))
			p.ID = stem
		}
		p.Origin = path
		ent.profile = p
		if len(unknown) > 0 {
			warn("unknown keys ignored: " + strings.Join(unknown, ", "))
		}
	default:
		name, _ := filepath.Rel(dir, rel)
		ent.template = &matchbox.Template{
			Kind:    matchbox.TemplateKind(dir),
			Name:    filepath.ToSlash(name),
			Content: data,
			Origin:  path,
		}
	}
	return true
}

// objects collects the current objects in path order.
func (d *DataDir) objects() matchbox.Objects {
	order := make([]int32, 0, len(d.entries)-len(d.free))
	for i := range d.entries {
		if d.entries[i].rel != "" {
			order = append(order, int32(i))
		}
	}
	slices.SortFunc(order, func(a, b int32) int { return strings.Compare(d.entries[a].rel, d.entries[b].rel) })
	objs := matchbox.Objects{Problems: slices.Clone(d.refProblems)}
	for _, i := range order {
		ent := &d.entries[i]
		objs.Problems = append(objs.Problems, ent.problems...)
		if ent.claim != nil {
			objs.Claims = append(objs.Claims, *ent.claim)
		}
		switch {
		case ent.group != "":
			objs.Groups = append(objs.Groups, matchbox.UnpackGroup(ent.group))
		case ent.profile != nil:
			objs.Profiles = append(objs.Profiles, ent.profile)
		case ent.template != nil:
			objs.Templates = append(objs.Templates, ent.template)
		case !ent.noteOnly && len(ent.problems) > 0:
			if dir, name, ok := strings.Cut(ent.rel, string(filepath.Separator)); ok && dir != "groups" && dir != "profiles" {
				objs.Unloaded = append(objs.Unloaded, matchbox.TemplateRef{Kind: matchbox.TemplateKind(dir), Name: filepath.ToSlash(name)})
			}
		}
	}
	return objs
}

// Watcher follows changes to a data dir.
type Watcher struct {
	d *DataDir
	w *fsnotify.Watcher
}

// NewWatcher starts watching the data dir. Create it before the initial
// Load: changes made from then on are seen by Run, so none can be missed
// between loading and watching.
func (d *DataDir) NewWatcher() (*Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("data dir watch: %w", err)
	}
	d.addWatches(w)
	return &Watcher{d: d, w: w}, nil
}

// Close stops watching. Run closes the watcher itself when it returns.
func (w *Watcher) Close() error { return w.w.Close() }

// maxPendingPaths bounds the changed paths remembered between reloads;
// beyond it (a tool rewriting the whole tree) one full rescan is cheaper.
const maxPendingPaths = 4096

// Run reloads the data dir whenever something in it changes and passes the
// new objects to onChange, until ctx ends. Bursts of events (an editor
// saving, a tool writing many files) are coalesced into one reload after
// settle, which rereads only the files and folders named by the events; a
// reload that finds nothing changed is not passed on. Changes to files
// beside the folders matchbox reads (its own database, token and key when
// they live in the data dir) are ignored. Folders created later are picked
// up; when events were lost (the kernel's queue overflowed) the whole tree
// is rescanned.
func (w *Watcher) Run(ctx context.Context, settle time.Duration, onChange func(matchbox.Objects)) error {
	defer w.w.Close()
	d := w.d
	var timer *time.Timer
	var fire <-chan time.Time
	arm := func() {
		if timer == nil {
			timer = time.NewTimer(settle)
			fire = timer.C
		}
	}
	d.watchReferenced(w.w) // those the initial Load found
	pending := make(map[string]bool)
	full, newDirs := false, false
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.w.Events:
			if !ok {
				return nil
			}
			if !d.relevant(ev.Name) {
				continue
			}
			if ev.Has(fsnotify.Create) {
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
					newDirs = true
				}
			}
			if len(pending) < maxPendingPaths {
				pending[ev.Name] = true
			} else {
				full = true
			}
			arm()
		case err, ok := <-w.w.Errors:
			if !ok {
				return nil
			}
			// An overflow loses events: a full rescan catches up.
			d.logger.Warn("data dir watch error; rescanning", "err", err)
			full = true
			arm()
		case <-fire:
			timer, fire = nil, nil
			if newDirs || full {
				d.addWatches(w.w)
			}
			var paths []string
			if !full {
				paths = slices.Collect(maps.Keys(pending))
			}
			clear(pending)
			full, newDirs = false, false
			objs, changed, err := d.load(ctx, paths)
			if err != nil {
				d.logger.Error("data dir reload failed; keeping the previous configuration", "err", err)
				continue
			}
			d.watchReferenced(w.w)
			if changed {
				onChange(objs)
			}
		}
	}
}

// relevant reports whether an event's path can change what the data dir
// holds: a path inside one of the folders matchbox reads, or such a folder
// itself. The root is watched only to see those folders come and go.
func (d *DataDir) relevant(path string) bool {
	rel := relPath(d.root, path)
	top, _, _ := strings.Cut(rel, string(filepath.Separator))
	return rel != "." && slices.Contains(dataDirs, top)
}

// Watch is NewWatcher, a rescan (passed to onChange if anything changed
// since the last Load) and Run, for callers that loaded before watching.
func (d *DataDir) Watch(ctx context.Context, settle time.Duration, onChange func(matchbox.Objects)) error {
	w, err := d.NewWatcher()
	if err != nil {
		return err
	}
	if objs, changed, err := d.load(ctx, nil); err != nil {
		d.logger.Error("data dir reload failed; keeping the previous configuration", "err", err)
	} else if changed {
		onChange(objs)
	}
	return w.Run(ctx, settle, onChange)
}

// addWatches watches the root and every folder matchbox reads.
func (d *DataDir) addWatches(w *fsnotify.Watcher) {
	add := func(p string) {
		if err := w.Add(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			d.logger.Warn("cannot watch folder", "path", p, "err", err)
		}
	}
	add(d.root)
	for _, dir := range dataDirs {
		base := filepath.Join(d.root, dir)
		if dir == "groups" || dir == "profiles" {
			add(base)
			continue
		}
		_ = filepath.WalkDir(base, func(path string, de fs.DirEntry, err error) error {
			if err == nil && de.IsDir() {
				if path != base && strings.HasPrefix(de.Name(), ".") {
					return filepath.SkipDir
				}
				add(path)
			}
			return nil
		})
	}
	d.watchReferenced(w)
}

// watchReferenced watches the hidden folders that hold templates profiles
// name (see byReference), which addWatches skips.
func (d *DataDir) watchReferenced(w *fsnotify.Watcher) {
	d.mu.Lock()
	var dirs []string
	for i := range d.entries {
		if ent := &d.entries[i]; ent.rel != "" && ent.byRef {
			dirs = append(dirs, filepath.Dir(filepath.Join(d.root, ent.rel)))
		}
	}
	d.mu.Unlock()
	for _, p := range dirs {
		_ = w.Add(p) // watching a folder twice is harmless
	}
}

// Objects returns the objects of the last Load without touching the disk.
func (d *DataDir) Objects(_ context.Context) (matchbox.Objects, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.objects(), nil
}

// GetGroup returns a group from the last Load by id.
func (d *DataDir) GetGroup(ctx context.Context, id string) (*matchbox.Group, error) {
	objs, _ := d.Objects(ctx)
	for _, g := range objs.Groups {
		if g.ID == id {
			return g, nil
		}
	}
	return nil, fmt.Errorf("group %q: %w", id, matchbox.ErrNotFound)
}

// GetProfile returns a profile from the last Load by id.
func (d *DataDir) GetProfile(ctx context.Context, id string) (*matchbox.Profile, error) {
	objs, _ := d.Objects(ctx)
	for _, p := range objs.Profiles {
		if p.ID == id {
			return p, nil
		}
	}
	return nil, fmt.Errorf("profile %q: %w", id, matchbox.ErrNotFound)
}

// GetTemplate returns a template from the last Load by kind and name.
func (d *DataDir) GetTemplate(ctx context.Context, kind matchbox.TemplateKind, name string) (*matchbox.Template, error) {
	objs, _ := d.Objects(ctx)
	for _, t := range objs.Templates {
		if t.Kind == kind && t.Name == name {
			return t, nil
		}
	}
	return nil, fmt.Errorf("%s template %q: %w", kind, name, matchbox.ErrNotFound)
}
