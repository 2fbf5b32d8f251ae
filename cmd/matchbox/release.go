package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/api"
	"matchbox.dev/matchbox/release"
)

const releaseUsage = `Usage:
  matchbox release pull [-channel stable|beta|alpha|lts] [-version current|X.Y.Z] [-arch amd64|arm64]
                        [-base-url URL] [-key FILE] [-assets-path DIR]
                        [-update-base-url URL] [-payload-key FILE] [-extensions NAME,...]
  matchbox release list [-assets-path DIR] [-o table|json]
  matchbox release rm -channel C -version X.Y.Z [-arch A] [-assets-path DIR]

pull downloads a Flatcar release (version.txt, the PXE kernel and initrd,
the disk image, and their signatures), verifies every file against
Flatcar's image signing key (or -key), and places it under
<assets>/flatcar/<channel>/<board>/<version>/; <board>/current names the
newest verified version. With it come the release's update payloads from
Flatcar's update release server (or -update-base-url):
flatcar_production_update.gz and the -extensions (oem-<ID>.gz,
flatcar-<NAME>.gz), each verified as update_engine verifies it, against
Flatcar's payload key (or -payload-key), and listed with its size and
hashes in <version>/payloads.json. With -base-url and no -update-base-url,
payloads are not mirrored. An interrupted pull resumes where it stopped.
These commands work on the assets folder directly; a running server's
admin API offers the same under /api/v1/releases.

Flags (also MATCHBOX_<FLAG> in the environment):
`

// releaseCLI runs `matchbox release VERB …` on an assets folder.
func releaseCLI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("matchbox release", flag.ContinueOnError)
	fs.SetOutput(stderr)
	assets := fs.String("assets-path", "/var/lib/matchbox/assets", "assets folder the release mirror lives in (<assets>/flatcar/…)")
	channel := fs.String("channel", "stable", "release channel: stable, beta, alpha or lts")
	version := fs.String("version", "current", "release version: current (the channel's newest) or X.Y.Z")
	arch := fs.String("arch", "amd64", "architecture: amd64 or arm64")
	baseURL := fs.String("base-url", "", "release server to read from instead of https://<channel>.release.flatcar-linux.net (files under <base-url>/<board>/<version>/)")
	keyFile := fs.String("key", "", "OpenPGP public key (armored) that signs the release (default: Flatcar's image signing key shipped with matchbox)")
	updateBaseURL := fs.String("update-base-url", "", "update release server to read update payloads from (files under <update-base-url>/<board>/<version>/; default "+release.DefaultUpdateBaseURL+", none with -base-url)")
	payloadKey := fs.String("payload-key", "", "PEM RSA public key update payloads must verify with (default: Flatcar's payload key shipped with matchbox)")
	extensions := fs.String("extensions", "", "extension payloads to mirror besides the OS payload, e.g. oem-qemu,flatcar-docker")
	output := fs.String("o", "table", "list output: table or json")
	fs.Usage = func() {
		fmt.Fprint(stderr, releaseUsage)
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if _, err := applyEnv(fs); err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	opts := mirrorOptions{baseURL: *baseURL, key: *keyFile, updateBaseURL: *updateBaseURL, payloadKey: *payloadKey, extensions: *extensions}
	m, err := openMirror(*assets, opts, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	switch pos[0] {
	case "pull":
		if opts.updateURL() == "" {
			fmt.Fprintln(stderr, "update payloads not mirrored: -base-url names another release server; give its update server as -update-base-url")
		}
		p := newProgressPrinter(stderr)
		rel, err := m.Pull(ctx, release.Request{Channel: *channel, Version: *version, Arch: *arch}, p.update)
		p.finish()
		if err != nil {
			return err
		}
		cur := ""
		if rel.Current {
			cur = " (current)"
		}
		fmt.Fprintf(stdout, "flatcar %s/%s %s verified in %s%s\n", rel.Channel, rel.Board, rel.Version, *assets, cur)
		for _, p := range rel.Payloads {
			fmt.Fprintf(stdout, "  update payload %s verified: %d bytes, sha256 %x\n", p.Name, p.Size, p.SHA256)
		}
		return nil
	case "list":
		rels, err := m.List()
		if err != nil {
			return err
		}
		if *output == "json" {
			if rels == nil {
				rels = []release.Release{}
			}
			return printJSON(stdout, rels)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CHANNEL\tBOARD\tVERSION\tCURRENT\tSIZE\tPAYLOADS\tPULLED")
		for _, r := range rels {
			var size int64
			for _, f := range r.Files {
				size += f.Size
			}
			for _, p := range r.Payloads {
				size += p.Size
			}
			cur := ""
			if r.Current {
				cur = "*"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Channel, r.Board, r.Version, cur, mib(size), len(r.Payloads), r.Pulled.Format(time.RFC3339))
		}
		return tw.Flush()
	case "rm":
		board, err := release.BoardFor(*arch)
		if err != nil {
			return err
		}
		if *version == "" || *version == "current" {
			return fmt.Errorf("rm: give -version X.Y.Z (current moves to the newest remaining version)")
		}
		if err := m.Remove(*channel, board, *version); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "flatcar %s/%s %s removed\n", *channel, board, *version)
		return nil
	}
	fs.Usage()
	return errUsage
}

// releaseServeConfig is the release mirror part of `matchbox serve`.
type releaseServeConfig struct {
	sync    string
	every   time.Duration
	keep    int
	arch    string
	baseURL string
	key     string

	updateBaseURL string
	payloadKey    string
	extensions    string
}

func releaseServeFlags(fs *flag.FlagSet) *releaseServeConfig {
	c := &releaseServeConfig{}
	fs.StringVar(&c.sync, "release-sync", "", "pull these channels' newest Flatcar release in the background, e.g. stable,beta (off when empty)")
	fs.DurationVar(&c.every, "every", 6*time.Hour, "with -release-sync: how often to look for a new release")
	fs.IntVar(&c.keep, "release-keep", 3, "Flatcar versions kept per channel after a pull by the server; older ones are removed (0 keeps all)")
	fs.StringVar(&c.arch, "release-sync-arch", "amd64", "with -release-sync: architecture to pull (amd64 or arm64)")
	fs.StringVar(&c.baseURL, "release-base-url", "", "Flatcar release server to pull from and to point machines at for releases not mirrored (default https://<channel>.release.flatcar-linux.net)")
	fs.StringVar(&c.key, "release-key", "", "OpenPGP public key (armored) that signs Flatcar releases (default: Flatcar's image signing key shipped with matchbox)")
	fs.StringVar(&c.updateBaseURL, "release-update-base-url", "", "update release server the server's pulls read update payloads from (files under <url>/<board>/<version>/; default "+release.DefaultUpdateBaseURL+", none with -release-base-url)")
	fs.StringVar(&c.payloadKey, "release-payload-key", "", "PEM RSA public key update payloads must verify with (default: Flatcar's payload key shipped with matchbox)")
	fs.StringVar(&c.extensions, "release-extensions", "", "extension payloads the server's pulls mirror besides the OS payload, e.g. oem-qemu,flatcar-docker")
	return c
}

// mirror returns the options that open the server's release mirror.
func (c *releaseServeConfig) mirror() mirrorOptions {
	return mirrorOptions{baseURL: c.baseURL, key: c.key, updateBaseURL: c.updateBaseURL, payloadKey: c.payloadKey, extensions: c.extensions, prefix: "release-"}
}

// channels returns the -release-sync channels, checked.
func (c *releaseServeConfig) channels() ([]string, error) {
	var out []string
	for ch := range strings.SplitSeq(c.sync, ",") {
		if ch = strings.TrimSpace(ch); ch == "" {
			continue
		}
		if err := (matchbox.ReleaseRef{Channel: ch, Arch: c.arch}).Check(); err != nil {
			return nil, fmt.Errorf("-release-sync: %w", err)
		}
		out = append(out, ch)
	}
	if len(out) > 0 && c.every < time.Minute {
		return nil, fmt.Errorf("-every %v: at least 1m", c.every)
	}
	return out, nil
}

// mirrorOptions are the flags of the release mirror (those of `release
// pull`; serve's have prefix "release-" and -release-sync ones).
type mirrorOptions struct {
	baseURL, key                          string
	updateBaseURL, payloadKey, extensions string
	prefix                                string
}

// updateURL returns the update release server payloads come from, "" for
// none: Flatcar's goes with Flatcar's release servers; a release server of
// the operator's own (a mirror, perhaps air-gapped) implies none, so that
// no pull reaches for the internet unasked.
func (o mirrorOptions) updateURL() string {
	if o.updateBaseURL == "" && o.baseURL == "" {
		return release.DefaultUpdateBaseURL
	}
	return o.updateBaseURL
}

// openMirror opens the release mirror in an assets folder.
func openMirror(assets string, o mirrorOptions, log *slog.Logger) (*release.Mirror, error) {
	if assets == "" {
		return nil, errors.New("no assets folder (-assets-path): the release mirror lives in it")
	}
	cfg := release.Config{AssetsPath: assets, BaseURL: o.baseURL, UpdateBaseURL: o.updateURL(), Logger: log}
	if o.key != "" {
		var err error
		if cfg.Key, err = os.ReadFile(o.key); err != nil {
			return nil, fmt.Errorf("-%skey: %w", o.prefix, err)
		}
	}
	if o.payloadKey != "" {
		pem, err := os.ReadFile(o.payloadKey)
		if err == nil {
			cfg.PayloadKey, err = release.ParsePayloadKey(pem)
		}
		if err != nil {
			return nil, fmt.Errorf("-%spayload-key %s: %w", o.prefix, o.payloadKey, err)
		}
	}
	for e := range strings.SplitSeq(o.extensions, ",") {
		if e = strings.TrimSpace(e); e != "" {
			cfg.Extensions = append(cfg.Extensions, e)
		}
	}
	if len(cfg.Extensions) > 0 && cfg.UpdateBaseURL == "" {
		return nil, fmt.Errorf("-%sextensions: no update release server to fetch them from: with -%sbase-url, give -%supdate-base-url too", o.prefix, o.prefix, o.prefix)
	}
	if cfg.UpdateBaseURL == "" {
		log.Info("update payloads not mirrored: the release server is not Flatcar's and no update release server is given", "flag", "-"+o.prefix+"update-base-url")
	}
	return release.New(cfg)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// progressPrinter shows a pull's progress: a bar redrawn in place on a
// terminal, a line per tenth of each file otherwise (logs, CI).
type progressPrinter struct {
	w        io.Writer
	terminal bool
	file     string
	last     time.Time
	lastTen  int64
	started  time.Time
	drawn    bool
}

func newProgressPrinter(w io.Writer) *progressPrinter {
	p := &progressPrinter{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.terminal = true
		}
	}
	return p
}

func (p *progressPrinter) update(pr release.Progress) {
	now := time.Now()
	if pr.File != p.file {
		p.finish()
		p.file, p.started, p.lastTen = pr.File, now, -1
		if pr.Resumed > 0 {
			fmt.Fprintf(p.w, "%s: resuming at %s\n", pr.File, mib(pr.Resumed))
		}
	}
	done := pr.Total >= 0 && pr.Done >= pr.Total
	if p.terminal {
		if !done && now.Sub(p.last) < 100*time.Millisecond {
			return
		}
		p.last, p.drawn = now, true
		rate := float64(pr.Done-pr.Resumed) / max(now.Sub(p.started).Seconds(), 0.001) / (1 << 20)
		if pr.Total <= 0 {
			fmt.Fprintf(p.w, "\r%-40s %s  %.1f MiB/s\x1b[K", pr.File, mib(pr.Done), rate)
			return
		}
		const width = 30
		filled := int(int64(width) * pr.Done / pr.Total)
		fmt.Fprintf(p.w, "\r%-40s [%s%s] %3d%%  %s of %s  %.1f MiB/s\x1b[K", pr.File,
			strings.Repeat("#", filled), strings.Repeat(".", width-filled), 100*pr.Done/pr.Total, mib(pr.Done), mib(pr.Total), rate)
		return
	}
	if pr.Total <= 0 {
		if done || now.Sub(p.last) >= 5*time.Second {
			p.last = now
			fmt.Fprintf(p.w, "%s: %s\n", pr.File, mib(pr.Done))
		}
		return
	}
	if ten := 10 * pr.Done / pr.Total; ten != p.lastTen {
		p.lastTen = ten
		fmt.Fprintf(p.w, "%s: %d%% (%s of %s)\n", pr.File, 10*ten, mib(pr.Done), mib(pr.Total))
	}
}

// finish ends a bar drawn in place.
func (p *progressPrinter) finish() {
	if p.terminal && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// releaseAdmin is the admin API's view of the mirror: releases, and pulls
// run in the background (a pull may take many minutes).
type releaseAdmin struct {
	m   *release.Mirror
	log *slog.Logger
	// keep, when positive, is how many versions per channel and board a
	// pull leaves (older ones are pruned).
	keep int

	mu    sync.Mutex
	pulls map[string]*api.ReleasePull // by channel/arch/version
}

func newReleaseAdmin(m *release.Mirror, keep int, log *slog.Logger) *releaseAdmin {
	return &releaseAdmin{m: m, keep: keep, log: log, pulls: map[string]*api.ReleasePull{}}
}

func viewRelease(r release.Release) api.Release {
	out := api.Release{Channel: r.Channel, Board: r.Board, Version: r.Version, Current: r.Current, Pulled: r.Pulled}
	for _, f := range r.Files {
		out.Files = append(out.Files, api.ReleaseFile{Name: f.Name, Size: f.Size})
	}
	return out
}

// Releases lists the mirrored releases and the pulls of this server.
func (a *releaseAdmin) Releases() ([]api.Release, []api.ReleasePull, error) {
	rels, err := a.m.List()
	if err != nil {
		return nil, nil, err
	}
	out := make([]api.Release, 0, len(rels))
	for _, r := range rels {
		out = append(out, viewRelease(r))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	pulls := make([]api.ReleasePull, 0, len(a.pulls))
	for _, p := range a.pulls {
		pulls = append(pulls, *p)
	}
	return out, pulls, nil
}

// StartPull starts a pull in the background, or returns the one of the
// same release already running.
func (a *releaseAdmin) StartPull(req api.ReleasePullRequest) (api.ReleasePull, error) {
	r := release.Request{Channel: req.Channel, Version: req.Version, Arch: req.Arch}
	if r.Version == "" {
		r.Version = "current"
	}
	if r.Arch == "" {
		r.Arch = "amd64"
	}
	if err := (matchbox.ReleaseRef{Channel: r.Channel, Version: r.Version, Arch: r.Arch}).Check(); err != nil {
		return api.ReleasePull{}, err
	}
	key := r.Channel + "/" + r.Arch + "/" + r.Version
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.pulls[key]; p != nil && p.State == "running" {
		return *p, nil
	}
	p := &api.ReleasePull{Channel: r.Channel, Version: r.Version, Arch: r.Arch, State: "running", Started: time.Now()}
	a.pulls[key] = p
	go a.run(r, p)
	return *p, nil
}

func (a *releaseAdmin) run(r release.Request, p *api.ReleasePull) {
	rel, err := a.pull(context.Background(), r, func(pr release.Progress) {
		a.mu.Lock()
		p.File, p.Done, p.Total = pr.File, pr.Done, pr.Total
		a.mu.Unlock()
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	p.Finished = time.Now()
	if err != nil {
		p.State, p.Error = "failed", err.Error()
		return
	}
	p.State, p.Resolved = "done", rel.Version
}

// pull pulls one release and prunes old versions, logging both.
func (a *releaseAdmin) pull(ctx context.Context, r release.Request, progress func(release.Progress)) (release.Release, error) {
	start := time.Now()
	a.log.Info("release pull", "channel", r.Channel, "version", r.Version, "arch", r.Arch)
	rel, err := a.m.Pull(ctx, r, progress)
	if err != nil {
		a.log.Error("release pull failed", "channel", r.Channel, "version", r.Version, "arch", r.Arch, "err", err)
		return rel, err
	}
	a.log.Info("release verified", "channel", rel.Channel, "board", rel.Board, "version", rel.Version, "current", rel.Current,
		"took", time.Since(start).Round(time.Millisecond))
	if a.keep > 0 {
		removed, err := a.m.Prune(rel.Channel, rel.Board, a.keep)
		if err != nil {
			a.log.Warn("release prune failed", "channel", rel.Channel, "board", rel.Board, "err", err)
		} else if len(removed) > 0 {
			a.log.Info("old releases removed", "channel", rel.Channel, "board", rel.Board, "versions", removed, "keep", a.keep)
		}
	}
	return rel, nil
}

// RemoveRelease removes one mirrored version.
func (a *releaseAdmin) RemoveRelease(channel, board, version string) error {
	if err := a.m.Remove(channel, board, version); err != nil {
		return err
	}
	a.log.Info("release removed", "channel", channel, "board", board, "version", version)
	return nil
}

// sync pulls each channel's current release every interval, from the
// first tick on, until ctx ends.
func (a *releaseAdmin) sync(ctx context.Context, channels []string, arch string, every time.Duration) error {
	for {
		for _, ch := range channels {
			if ctx.Err() != nil {
				return nil
			}
			_, _ = a.pull(ctx, release.Request{Channel: ch, Version: "current", Arch: arch}, nil)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}
