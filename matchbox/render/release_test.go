package render

import (
	"fmt"
	"strings"
	"testing"

	"matchbox.dev/matchbox"
)

// mirrored is a local mirror holding the given current versions, by
// "channel/board".
type mirrored map[string]string

func (m mirrored) Resolve(channel, board, version string) (string, error) {
	v, ok := m[channel+"/"+board]
	if !ok || (version != "current" && version != v) {
		return "", fmt.Errorf("%s/%s %s: %w", channel, board, version, matchbox.ErrNotFound)
	}
	return v, nil
}

func TestReleaseProfiles(t *testing.T) {
	mirror := mirrored{"stable/amd64-usr": "4081.2.0"}
	for _, tc := range []struct {
		name      string
		ref       matchbox.ReleaseRef
		boot      matchbox.Boot
		mirror    matchbox.ReleaseResolver
		kernel    string
		initrd    string
		baseURL   string
		localData bool
	}{
		{name: "mirrored current, default files", ref: matchbox.ReleaseRef{Channel: "stable"}, mirror: mirror,
			kernel:  "/assets/flatcar/stable/amd64-usr/4081.2.0/flatcar_production_pxe.vmlinuz",
			initrd:  "--name main /assets/flatcar/stable/amd64-usr/4081.2.0/flatcar_production_pxe_image.cpio.gz",
			baseURL: "http://mb:8080/assets/flatcar/stable/amd64-usr", localData: true},
		{name: "mirrored pinned, relative names", ref: matchbox.ReleaseRef{Channel: "stable", Version: "4081.2.0"}, mirror: mirror,
			boot:    matchbox.Boot{Kernel: "flatcar_production_pxe.vmlinuz", Initrd: []string{"--name main flatcar_production_pxe_image.cpio.gz"}},
			kernel:  "/assets/flatcar/stable/amd64-usr/4081.2.0/flatcar_production_pxe.vmlinuz",
			initrd:  "--name main /assets/flatcar/stable/amd64-usr/4081.2.0/flatcar_production_pxe_image.cpio.gz",
			baseURL: "http://mb:8080/assets/flatcar/stable/amd64-usr", localData: true},
		{name: "not mirrored: the release server", ref: matchbox.ReleaseRef{Channel: "beta", Arch: "arm64"}, mirror: mirror,
			kernel:  "https://beta.release.flatcar-linux.net/arm64-usr/current/flatcar_production_pxe.vmlinuz",
			initrd:  "--name main https://beta.release.flatcar-linux.net/arm64-usr/current/flatcar_production_pxe_image.cpio.gz",
			baseURL: "https://beta.release.flatcar-linux.net/arm64-usr"},
		{name: "pinned version not mirrored", ref: matchbox.ReleaseRef{Channel: "stable", Version: "3975.2.2"}, mirror: mirror,
			kernel:  "https://stable.release.flatcar-linux.net/amd64-usr/3975.2.2/flatcar_production_pxe.vmlinuz",
			initrd:  "--name main https://stable.release.flatcar-linux.net/amd64-usr/3975.2.2/flatcar_production_pxe_image.cpio.gz",
			baseURL: "https://stable.release.flatcar-linux.net/amd64-usr"},
		{name: "absolute paths stay", ref: matchbox.ReleaseRef{Channel: "stable"}, mirror: mirror,
			boot:   matchbox.Boot{Kernel: "/assets/custom/vmlinuz", Initrd: []string{"http://elsewhere/initrd.img"}},
			kernel: "/assets/custom/vmlinuz", initrd: "http://elsewhere/initrd.img",
			baseURL: "http://mb:8080/assets/flatcar/stable/amd64-usr", localData: true},
		{name: "no mirror at all", ref: matchbox.ReleaseRef{Channel: "lts"},
			kernel:  "https://lts.release.flatcar-linux.net/amd64-usr/current/flatcar_production_pxe.vmlinuz",
			initrd:  "--name main https://lts.release.flatcar-linux.net/amd64-usr/current/flatcar_production_pxe_image.cpio.gz",
			baseURL: "https://lts.release.flatcar-linux.net/amd64-usr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEngine(Options{Releases: tc.mirror})
			ref := tc.ref
			p := &matchbox.Profile{ID: "p", Release: &ref, Boot: tc.boot}
			p.Boot.Args = append(p.Boot.Args, "initrd=main", "flatcar.version={{.release.version}}")
			data := Data(&matchbox.Group{ID: "g"}, Request{Host: "mb:8080"})
			data["release"] = e.ReleaseData(p, "mb:8080")
			rel := data["release"].(map[string]any)
			if rel["base_url"] != tc.baseURL || rel["local"] != tc.localData {
				t.Errorf("release data %v", rel)
			}
			ipxe, err := e.IPXE(t.Context(), selection(p), data)
			if err != nil {
				t.Fatal(err)
			}
			version := rel["version"].(string)
			want := "#!ipxe\nkernel " + tc.kernel + " initrd=main flatcar.version=" + version + "\ninitrd " + tc.initrd + "\nboot\n"
			if string(ipxe) != want {
				t.Errorf("iPXE:\n%s\nwant:\n%s", ipxe, want)
			}
			grub, err := e.GRUB(t.Context(), selection(p), data)
			if err != nil {
				t.Fatal(err)
			}
			initrdFile := tc.initrd[strings.LastIndex(tc.initrd, " ")+1:]
			if !strings.Contains(string(grub), `linuxefi "`+tc.kernel+`"`) || !strings.Contains(string(grub), `"`+initrdFile+`"`) {
				t.Errorf("GRUB:\n%s", grub)
			}
		})
	}
}

func TestReleaseRefChecks(t *testing.T) {
	for _, bad := range []matchbox.ReleaseRef{{Channel: "nightly"}, {Channel: "stable", Arch: "riscv64"}, {Channel: "stable", Version: "../4081"}, {Channel: "stable", Version: "4081..2"}} {
		ref := bad
		if err := CheckProfile(&matchbox.Profile{ID: "p", Release: &ref}); err == nil {
			t.Errorf("release %+v accepted", bad)
		}
	}
	if err := CheckProfile(&matchbox.Profile{ID: "p", Release: &matchbox.ReleaseRef{Channel: "lts", Version: "3510.3.6", Arch: "arm64"}}); err != nil {
		t.Error(err)
	}
}
