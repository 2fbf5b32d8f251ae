package render

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/Masterminds/sprig/v3"
	butane "github.com/coreos/butane/config"
	butanecommon "github.com/coreos/butane/config/common"
	ignition "github.com/coreos/ignition/v2/config"

	"matchbox.dev/matchbox"
)

// Error is a render failure: the request matched, but what it should be
// served cannot be produced. The message names the profile and template.
type Error struct {
	Group, Profile, Template string
	Err                      error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("render")
	if e.Profile != "" {
		fmt.Fprintf(&b, " profile %q", e.Profile)
	}
	if e.Template != "" {
		fmt.Fprintf(&b, " template %q", e.Template)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// funcs is what templates may call besides text/template's built-ins,
// which poseidon/matchbox's templates have and nothing more: sprig's text
// functions, a matchbox extension, less those named like a built-in. Built
// once: sprig.TxtFuncMap allocates a new map per call.
var funcs = extensionFuncs()

// extensionFuncs returns sprig's text functions without the ones whose name
// is a text/template built-in: a FuncMap entry replaces the built-in of
// that name (sprig's slice would replace Go's, and {{slice .mac 0 8}} would
// fail). A name is a built-in when a template without functions of its own
// parses a call to it, so built-ins a later Go release adds are kept too.
//
// Also left out: env and expandenv, which would hand the server's
// environment (MATCHBOX_PASSPHRASE among it) to any booting machine whose
// template names a variable, and getHostByName, which makes a request wait
// on a DNS lookup the server's network did not ask for.
//
// until, untilStep and seq are the engine's own: sprig's never return when
// the step overflows.
func extensionFuncs() template.FuncMap {
	fm := sprig.TxtFuncMap()
	for name := range fm {
		if _, err := template.New("").Parse("{{" + name + "}}"); err == nil {
			delete(fm, name)
		}
	}
	for _, name := range withheldFuncs {
		delete(fm, name)
	}
	fm["until"], fm["untilStep"], fm["seq"] = until, untilStep, seq
	return fm
}

// ExtensionFuncs returns, sorted, the names of the functions templates get
// besides text/template's built-ins (docs/compatibility.md lists them).
func ExtensionFuncs() []string {
	names := make([]string, 0, len(funcs))
	for name := range funcs {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// withheldFuncs are sprig functions templates do not get (see
// extensionFuncs).
var withheldFuncs = []string{"env", "expandenv", "getHostByName"}

// Stats counts what the engine did, for metrics.
type Stats struct {
	TranslateHits, TranslateMisses uint64
	// Renders stopped by a limit, by LimitError kind.
	LimitTimeout, LimitSize, LimitNesting uint64
}

// Engine renders configs. It caches parsed templates per template object
// (unchanged objects keep their pointer across catalog reloads) and Butane
// translations by rendered text. Safe for concurrent use.
type Engine struct {
	// Read on every request, written once per template change: sync.Map
	// keeps readers free of a shared lock.
	templates sync.Map // *matchbox.Template → *compiled
	args      sync.Map // *matchbox.Profile → *compiledArgs
	butane    *lru
	// translating bounds concurrent Butane translations: they are CPU-bound
	// and allocate megabytes each, so more of them than CPUs only costs
	// memory.
	translating chan struct{}
	opts        Options
	lim         limits
	// limitHits counts renders stopped by a limit: timeout, size,
	// nesting.
	limitHits [3]atomic.Uint64
}

// compiled is a parsed template, or the reason it cannot be used.
type compiled struct {
	prog *program
	// raw holds validated raw Ignition JSON, served as is.
	raw []byte
	err error
}

// compiledArgs is a profile's kernel arguments; nil entries are literals.
type compiledArgs struct {
	progs []*program
	err   error
}

// Options configures an Engine.
type Options struct {
	// TranslateCacheBytes bounds the Butane translation cache (default 32 MiB).
	TranslateCacheBytes int
	// Releases resolves Flatcar releases in the local mirror (nil: none
	// mirrored).
	Releases matchbox.ReleaseResolver
	// ReleaseBaseURL replaces https://<channel>.release.flatcar-linux.net
	// for releases not mirrored locally; "{channel}" in it is replaced by
	// the channel.
	ReleaseBaseURL string
	// RenderTimeout bounds the time one template may take to render
	// (default DefaultRenderTimeout); a render also stops when its
	// context ends.
	RenderTimeout time.Duration
	// RenderMaxBytes bounds the output of one render, the size of every
	// value a template function makes, and (times 4) of all the values
	// the functions of one render make together (default
	// DefaultRenderMaxBytes).
	RenderMaxBytes int
}

// NewEngine returns an Engine.
func NewEngine(opts Options) *Engine {
	if opts.TranslateCacheBytes <= 0 {
		opts.TranslateCacheBytes = 32 << 20
	}
	if opts.RenderTimeout <= 0 {
		opts.RenderTimeout = DefaultRenderTimeout
	}
	if opts.RenderMaxBytes <= 0 {
		opts.RenderMaxBytes = DefaultRenderMaxBytes
	}
	return &Engine{
		butane:      newLRU(opts.TranslateCacheBytes),
		translating: make(chan struct{}, runtime.GOMAXPROCS(0)),
		opts:        opts,
		lim:         limits{timeout: opts.RenderTimeout, maxBytes: opts.RenderMaxBytes},
	}
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	h, m := e.butane.stats()
	return Stats{TranslateHits: h, TranslateMisses: m,
		LimitTimeout: e.limitHits[0].Load(), LimitSize: e.limitHits[1].Load(), LimitNesting: e.limitHits[2].Load()}
}

// Prune drops cached templates that are no longer in snap. Call it after
// every catalog change.
func (e *Engine) Prune(snap *matchbox.Snapshot) {
	e.templates.Range(func(k, _ any) bool {
		t := k.(*matchbox.Template)
		if cur, ok := snap.Template(t.Kind, t.Name); !ok || cur != t {
			e.templates.Delete(k)
		}
		return true
	})
	e.args.Range(func(k, _ any) bool {
		p := k.(*matchbox.Profile)
		if cur, ok := snap.Profile(p.ID); !ok || cur != p {
			e.args.Delete(k)
		}
		return true
	})
}

func newTemplate(name string) *template.Template {
	return template.New(name).Funcs(funcs).Option("missingkey=error")
}

func (e *Engine) compile(t *matchbox.Template) *compiled {
	if c, ok := e.templates.Load(t); ok {
		return c.(*compiled)
	}
	c := &compiled{}
	if t.Kind == matchbox.KindIgnition && matchbox.IsRawIgnition(t.Name) {
		c.raw, c.err = validateRawIgnition(t.Content)
	} else {
		c.prog, c.err = parseProgram(t.Name, string(t.Content))
		if c.err == nil && t.Kind == matchbox.KindCloud && !bytes.Contains(t.Content, []byte("{{")) {
			// Without actions it renders as it is: refuse it once, at
			// load, rather than on every request.
			c.err = checkCloudConfig(t.Content)
		}
	}
	actual, _ := e.templates.LoadOrStore(t, c)
	return actual.(*compiled)
}

func (e *Engine) compileArgs(p *matchbox.Profile) *compiledArgs {
	if c, ok := e.args.Load(p); ok {
		return c.(*compiledArgs)
	}
	c := &compiledArgs{progs: make([]*program, len(p.Boot.Args))}
	for i, a := range p.Boot.Args {
		if !strings.Contains(a, "{{") {
			continue
		}
		prog, err := parseProgram(fmt.Sprintf("boot.args[%d]", i), a)
		if err != nil {
			c.err = fmt.Errorf("boot.args[%d]: %w", i, err)
			break
		}
		c.progs[i] = prog
	}
	actual, _ := e.args.LoadOrStore(p, c)
	return actual.(*compiledArgs)
}

// bootArgs renders the profile's kernel arguments with data; together they
// are bounded like one render's output.
func (e *Engine) bootArgs(ctx context.Context, sel matchbox.Selection, data map[string]any) ([]string, error) {
	p := sel.Profile
	c := e.compileArgs(p)
	if c.err != nil {
		return nil, &Error{Group: sel.Group.ID, Profile: p.ID, Err: c.err}
	}
	out := make([]string, len(p.Boot.Args))
	var buf bytes.Buffer
	w := e.output(&buf, e.lim.maxBytes)
	for i, a := range p.Boot.Args {
		if c.progs[i] == nil {
			out[i] = a
			continue
		}
		buf.Reset()
		if err := e.execute(ctx, c.progs[i], w, data); err != nil {
			return nil, &Error{Group: sel.Group.ID, Profile: p.ID, Err: fmt.Errorf("boot.args[%d]: %w", i, err)}
		}
		w.max -= buf.Len()
		out[i] = buf.String()
	}
	return out, nil
}

// kernelArgs checks that the profile has a kernel and renders its
// arguments: what both boot script formats start from.
func (e *Engine) kernelArgs(ctx context.Context, sel matchbox.Selection, data map[string]any) ([]string, error) {
	if sel.Profile.Boot.Kernel == "" && sel.Profile.Release == nil {
		return nil, &Error{Group: sel.Group.ID, Profile: sel.Profile.ID, Err: errors.New("profile has no boot.kernel")}
	}
	return e.bootArgs(ctx, sel, data)
}

// IPXE renders the iPXE boot script for a selection, byte for byte as
// poseidon/matchbox does, with templated kernel arguments.
func (e *Engine) IPXE(ctx context.Context, sel matchbox.Selection, data map[string]any) ([]byte, error) {
	args, err := e.kernelArgs(ctx, sel, data)
	if err != nil {
		return nil, err
	}
	kernel, initrds := bootFiles(sel.Profile, data)
	var b bytes.Buffer
	// One allocation of the right size rather than a buffer doubling its
	// way up: this is on every boot request.
	n := len("#!ipxe\nkernel ") + len(kernel) + len("\nboot\n")
	for _, a := range args {
		n += 1 + len(a)
	}
	for _, i := range initrds {
		n += len("\ninitrd ") + len(i)
	}
	b.Grow(n)
	b.WriteString("#!ipxe\nkernel ")
	b.WriteString(kernel)
	for _, a := range args {
		b.WriteByte(' ')
		b.WriteString(a)
	}
	for _, i := range initrds {
		b.WriteString("\ninitrd ")
		b.WriteString(i)
	}
	b.WriteString("\nboot\n")
	return b.Bytes(), nil
}

// GRUB renders a GRUB2 config with an EFI and a BIOS menu entry, in
// poseidon/matchbox's format, with templated kernel arguments.
func (e *Engine) GRUB(ctx context.Context, sel matchbox.Selection, data map[string]any) ([]byte, error) {
	args, err := e.kernelArgs(ctx, sel, data)
	if err != nil {
		return nil, err
	}
	kernel, initrds := bootFiles(sel.Profile, data)
	var b bytes.Buffer
	b.WriteString("default=0\nfallback=1\ntimeout=1\n")
	for _, entry := range []struct{ title, linux, initrd string }{
		{"CoreOS (EFI)", "linuxefi", "initrdefi"},
		{"CoreOS (BIOS)", "linux", "initrd"},
	} {
		fmt.Fprintf(&b, "menuentry %q {\necho \"Loading kernel\"\n%s \"%s\"", entry.title, entry.linux, kernel)
		for _, a := range args {
			b.WriteByte(' ')
			b.WriteString(a)
		}
		fmt.Fprintf(&b, "\necho \"Loading initrd\"\n%s ", entry.initrd)
		for _, i := range initrds {
			fmt.Fprintf(&b, " \"%s\"", grubInitrdPath(i))
		}
		b.WriteString("\n}\n")
	}
	return b.Bytes(), nil
}

// grubInitrdPath drops iPXE's initrd options ("--name main /path" becomes
// "/path"): profiles written for iPXE name their initrd, and GRUB would
// otherwise be told to load a file called "--name main /path".
func grubInitrdPath(initrd string) string {
	fields := strings.Fields(initrd)
	for len(fields) > 1 && strings.HasPrefix(fields[0], "--") {
		if strings.Contains(fields[0], "=") {
			fields = fields[1:]
		} else {
			fields = fields[2:]
		}
	}
	if len(fields) == 1 {
		return fields[0]
	}
	return initrd
}

// templateFor returns the compiled template a profile names for kind.
func (e *Engine) templateFor(snap *matchbox.Snapshot, sel matchbox.Selection, kind matchbox.TemplateKind) (*compiled, string, error) {
	var name string
	switch kind {
	case matchbox.KindIgnition:
		name = sel.Profile.IgnitionID
	case matchbox.KindCloud:
		name = sel.Profile.CloudID
	case matchbox.KindGeneric:
		name = sel.Profile.GenericID
	}
	if name == "" {
		return nil, "", fmt.Errorf("profile %q has no %s template: %w", sel.Profile.ID, kind, matchbox.ErrNotFound)
	}
	t, ok := snap.Template(kind, name)
	if !ok {
		return nil, name, fmt.Errorf("%s: %w", snap.MissingTemplate(sel.Profile.ID, matchbox.TemplateRef{Kind: kind, Name: name}), matchbox.ErrNotFound)
	}
	c := e.compile(t)
	if c.err != nil {
		return nil, name, &Error{Group: sel.Group.ID, Profile: sel.Profile.ID, Template: t.Origin, Err: c.err}
	}
	return c, t.Origin, nil
}

// Template renders the cloud or generic template the profile names. A
// rendered cloud template that is neither a #cloud-config YAML document nor
// a #! script is refused, as by poseidon/matchbox, with an *Error that
// matches matchbox.ErrNotFound (its answer is 404).
func (e *Engine) Template(ctx context.Context, snap *matchbox.Snapshot, sel matchbox.Selection, kind matchbox.TemplateKind, data map[string]any) ([]byte, error) {
	c, origin, err := e.templateFor(snap, sel, kind)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := e.execute(ctx, c.prog, e.output(&buf, e.lim.maxBytes), data); err != nil {
		return nil, &Error{Group: sel.Group.ID, Profile: sel.Profile.ID, Template: origin, Err: err}
	}
	if kind == matchbox.KindCloud {
		if err := checkCloudConfig(buf.Bytes()); err != nil {
			return nil, &Error{Group: sel.Group.ID, Profile: sel.Profile.ID, Template: origin, Err: err}
		}
	}
	return buf.Bytes(), nil
}

// Ignition returns the Ignition config for a selection: raw Ignition JSON
// as validated at load, or the Butane template rendered with data and
// translated to the Ignition spec version its Butane version maps to.
func (e *Engine) Ignition(ctx context.Context, snap *matchbox.Snapshot, sel matchbox.Selection, data map[string]any) ([]byte, error) {
	c, origin, err := e.templateFor(snap, sel, matchbox.KindIgnition)
	if err != nil {
		return nil, err
	}
	if c.raw != nil {
		return c.raw, nil
	}
	var buf bytes.Buffer
	if err := e.execute(ctx, c.prog, e.output(&buf, e.lim.maxBytes), data); err != nil {
		return nil, &Error{Group: sel.Group.ID, Profile: sel.Profile.ID, Template: origin, Err: err}
	}
	out, err := e.translate(ctx, buf.Bytes())
	if err != nil {
		return nil, &Error{Group: sel.Group.ID, Profile: sel.Profile.ID, Template: origin, Err: err}
	}
	return out, nil
}

// translate converts rendered Butane to Ignition JSON, through the cache.
func (e *Engine) translate(ctx context.Context, butaneText []byte) ([]byte, error) {
	key := sha256.Sum256(butaneText)
	if v, ok := e.butane.get(key); ok {
		return v.out, v.err
	}
	if err := ctx.Err(); err != nil {
		return nil, err // nobody waits for the answer: skip the translation
	}
	select {
	case e.translating <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-e.translating }()
	// Another request may have translated the same text while this one
	// waited.
	if v, ok := e.butane.peek(key); ok {
		return v.out, v.err
	}
	out, err := TranslateButane(butaneText)
	e.butane.add(key, cacheValue{out: out, err: err})
	return out, err
}

// TranslateButane translates a Butane config of any variant and version the
// butane library supports into compact Ignition JSON. Warnings are not
// fatal; errors carry the report with line and column.
func TranslateButane(src []byte) ([]byte, error) {
	out, rep, err := butane.TranslateBytes(src, butanecommon.TranslateBytesOptions{Raw: true})
	if err != nil {
		if len(rep.Entries) > 0 {
			return nil, fmt.Errorf("butane: %w: %s", err, strings.TrimSpace(rep.String()))
		}
		return nil, fmt.Errorf("butane: %w", err)
	}
	if rep.IsFatal() {
		return nil, fmt.Errorf("butane: %s", strings.TrimSpace(rep.String()))
	}
	return out, nil
}

// validateRawIgnition checks raw Ignition JSON. Spec 3.x configs are parsed
// and validated by the Ignition library; spec 2.x configs (still accepted by
// Flatcar) are checked to be a JSON object with a 2.x version.
func validateRawIgnition(raw []byte) ([]byte, error) {
	var head struct {
		Ignition struct {
			Version string `json:"version"`
		} `json:"ignition"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, fmt.Errorf("ignition: not valid JSON: %w", err)
	}
	if strings.HasPrefix(head.Ignition.Version, "2.") {
		return raw, nil
	}
	_, rep, err := ignition.Parse(raw)
	if err != nil {
		if len(rep.Entries) > 0 {
			return nil, fmt.Errorf("ignition: %w: %s", err, strings.TrimSpace(rep.String()))
		}
		return nil, fmt.Errorf("ignition: %w", err)
	}
	if rep.IsFatal() {
		return nil, fmt.Errorf("ignition: %s", strings.TrimSpace(rep.String()))
	}
	return raw, nil
}
