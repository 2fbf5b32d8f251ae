package render

import (
	"strings"

	"matchbox.dev/matchbox"
)

// The files of a Flatcar release a profile naming the release boots when
// it names none.
const (
	releaseKernel = "flatcar_production_pxe.vmlinuz"
	releaseInitrd = "--name main flatcar_production_pxe_image.cpio.gz"
)

// publicReleaseBase is Flatcar's release server for a channel.
func (e *Engine) publicReleaseBase(channel string) string {
	if e.opts.ReleaseBaseURL != "" {
		return strings.TrimRight(strings.ReplaceAll(e.opts.ReleaseBaseURL, "{channel}", channel), "/")
	}
	return "https://" + channel + ".release.flatcar-linux.net"
}

// ReleaseData is the template data of a profile's Flatcar release (nil
// without one): the version its "current" resolves to and where the
// release's files are — the local mirror under /assets/flatcar/ when it
// holds the release, Flatcar's release server otherwise. host is the
// host:port machines reach matchbox at.
//
//	channel, arch, board, version  the release
//	local                          whether the mirror holds it
//	path                           URL path (local) or URL of its files
//	base_url                       the board's URL, for flatcar-install -b
func (e *Engine) ReleaseData(p *matchbox.Profile, host string) map[string]any {
	if p == nil || p.Release == nil {
		return nil
	}
	r := *p.Release
	arch := r.Arch
	if arch == "" {
		arch = "amd64"
	}
	board, want := r.Board(), r.VersionOrCurrent()
	d := map[string]any{"channel": r.Channel, "arch": arch, "board": board, "version": want, "local": false}
	if e.opts.Releases != nil {
		if v, err := e.opts.Releases.Resolve(r.Channel, board, want); err == nil {
			dir := "/assets/flatcar/" + r.Channel + "/" + board
			d["version"], d["local"], d["path"] = v, true, dir+"/"+v
			d["base_url"] = "http://" + host + dir
			return d
		}
	}
	public := e.publicReleaseBase(r.Channel) + "/" + board
	d["path"], d["base_url"] = public+"/"+want, public
	return d
}

// bootFiles returns the kernel and initrd lines a profile boots: as
// written, or for a profile naming a release, its relative names (or the
// release's PXE kernel and initrd when it names none) under the release's
// path in data.
func bootFiles(p *matchbox.Profile, data map[string]any) (string, []string) {
	if p.Release == nil {
		return p.Boot.Kernel, p.Boot.Initrd
	}
	rel, _ := data["release"].(map[string]any)
	prefix, _ := rel["path"].(string)
	kernel := p.Boot.Kernel
	if kernel == "" {
		kernel = releaseKernel
	}
	initrds := p.Boot.Initrd
	if len(initrds) == 0 {
		initrds = []string{releaseInitrd}
	}
	out := make([]string, len(initrds))
	for i, line := range initrds {
		// The file is the last field; options (--name main) come first.
		fields := strings.Fields(line)
		if n := len(fields); n > 0 {
			fields[n-1] = releasePath(prefix, fields[n-1])
		}
		out[i] = strings.Join(fields, " ")
	}
	return releasePath(prefix, kernel), out
}

// releasePath puts a relative file name under the release's path; absolute
// paths and URLs stay as written.
func releasePath(prefix, name string) string {
	if prefix == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "://") {
		return name
	}
	return prefix + "/" + name
}
