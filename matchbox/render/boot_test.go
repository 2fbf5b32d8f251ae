package render

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"text/template"

	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/internal/golden"
)

// poseidon/matchbox's boot script templates (matchbox/http/ipxe.go and
// grub.go), verbatim.
const (
	matchboxIPXE = "#!ipxe\nkernel {{.Kernel}}{{range $arg := .Args}} {{$arg}}{{end}}\n{{- range $element := .Initrd }}\ninitrd {{$element}}\n{{- end}}\nboot\n"
	matchboxGRUB = "default=0\nfallback=1\ntimeout=1\nmenuentry \"CoreOS (EFI)\" {\necho \"Loading kernel\"\nlinuxefi \"{{.Kernel}}\"{{range $arg := .Args}} {{$arg}}{{end}}\necho \"Loading initrd\"\ninitrdefi {{ range $element := .Initrd }} \"{{$element}}\"{{end}}\n}\nmenuentry \"CoreOS (BIOS)\" {\necho \"Loading kernel\"\nlinux \"{{.Kernel}}\"{{range $arg := .Args}} {{$arg}}{{end}}\necho \"Loading initrd\"\ninitrd {{ range $element := .Initrd }} \"{{$element}}\"{{end}}\n}\n"
)

// execMatchbox renders one of matchbox's templates for a profile's boot
// section, as matchbox does.
func execMatchbox(t *testing.T, src string, boot matchbox.Boot) []byte {
	t.Helper()
	tmpl := template.Must(template.New("").Parse(src))
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, boot); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// selection wraps a profile in a selection with a group using it.
func selection(p *matchbox.Profile) matchbox.Selection {
	return matchbox.Selection{Group: &matchbox.Group{ID: "g", Profile: p.ID}, Profile: p}
}

var bootProfiles = []struct {
	name string
	boot matchbox.Boot
	// grubInitrd is what GRUB is told to load when it differs from Initrd
	// (our one deliberate change: iPXE initrd options are dropped).
	grubInitrd []string
}{
	{name: "no-args", boot: matchbox.Boot{
		Kernel: "/assets/vmlinuz",
		Initrd: []string{"/assets/initrd.img"},
	}},
	{name: "no-initrd", boot: matchbox.Boot{
		Kernel: "/assets/vmlinuz",
		Args:   []string{"console=ttyS0", "quiet"},
	}},
	{name: "kernel-only", boot: matchbox.Boot{Kernel: "http://example.com/vmlinuz"}},
	{name: "flatcar", boot: matchbox.Boot{
		Kernel: "/assets/flatcar/current/flatcar_production_pxe.vmlinuz",
		Initrd: []string{"/assets/flatcar/current/flatcar_production_pxe_image.cpio.gz"},
		Args: []string{
			"initrd=flatcar_production_pxe_image.cpio.gz",
			"flatcar.config.url=http://matchbox.example.com:8080/ignition?uuid=${uuid}&mac=${mac:hexhyp}",
			"flatcar.first_boot=yes",
			"console=tty0",
			"console=ttyS0",
		},
	}},
	{name: "several-initrds", boot: matchbox.Boot{
		Kernel: "https://builds.coreos.fedoraproject.org/prod/streams/stable/builds/40.20240416.3.1/x86_64/fedora-coreos-40.20240416.3.1-live-kernel-x86_64",
		Initrd: []string{
			"https://builds.coreos.fedoraproject.org/prod/streams/stable/builds/40.20240416.3.1/x86_64/fedora-coreos-40.20240416.3.1-live-initramfs.x86_64.img",
			"/assets/extra.cpio",
			"/assets/firmware.cpio",
		},
		Args: []string{"rd.neednet=1", "ip=dhcp", "ignition.firstboot", "ignition.platform.id=metal", "coreos.live.rootfs_url=https://example.com/rootfs.img"},
	}},
	{name: "named-initrd", boot: matchbox.Boot{
		Kernel: "/assets/fedora-coreos/fedora-coreos-live-kernel-x86_64",
		Initrd: []string{"--name main /assets/fedora-coreos/fedora-coreos-live-initramfs.x86_64.img", "--name=extra /assets/extra.img"},
		Args:   []string{"initrd=main", "coreos.live.rootfs_url=http://matchbox/assets/rootfs.img", "ignition.config.url=http://matchbox/ignition?uuid=${uuid}&mac=${mac:hexhyp}"},
	},
		grubInitrd: []string{"/assets/fedora-coreos/fedora-coreos-live-initramfs.x86_64.img", "/assets/extra.img"}},
}

func TestIPXEMatchesMatchbox(t *testing.T) {
	e := NewEngine(Options{})
	for _, tt := range bootProfiles {
		t.Run(tt.name, func(t *testing.T) {
			p := &matchbox.Profile{ID: tt.name, Boot: tt.boot}
			got, err := e.IPXE(t.Context(), selection(p), Data(&matchbox.Group{}, Request{}))
			if err != nil {
				t.Fatal(err)
			}
			want := execMatchbox(t, matchboxIPXE, tt.boot)
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("iPXE differs from poseidon/matchbox's (-matchbox +ours):\n%s", diff)
			}
			golden.Check(t, "ipxe-"+tt.name+".golden", got)
		})
	}
}

func TestGRUBMatchesMatchbox(t *testing.T) {
	e := NewEngine(Options{})
	for _, tt := range bootProfiles {
		t.Run(tt.name, func(t *testing.T) {
			p := &matchbox.Profile{ID: tt.name, Boot: tt.boot}
			got, err := e.GRUB(t.Context(), selection(p), Data(&matchbox.Group{}, Request{}))
			if err != nil {
				t.Fatal(err)
			}
			boot := tt.boot
			if tt.grubInitrd != nil {
				boot.Initrd = tt.grubInitrd
			}
			want := execMatchbox(t, matchboxGRUB, boot)
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("GRUB differs from poseidon/matchbox's (-matchbox +ours):\n%s", diff)
			}
			golden.Check(t, "grub-"+tt.name+".golden", got)
		})
	}
}

func TestGRUBInitrdPaths(t *testing.T) {
	tests := []struct{ initrd, want string }{
		{"/assets/initrd.img", "/assets/initrd.img"},
		{"--name main /assets/initrd.img", "/assets/initrd.img"},
		{"--name=main /assets/initrd.img", "/assets/initrd.img"},
		{"--name main --mode 0755 /assets/initrd.img", "/assets/initrd.img"},
		// Nothing left to load, or more than one path: left as written.
		{"--name main", "--name main"},
		{"/a /b", "/a /b"},
	}
	e := NewEngine(Options{})
	for _, tt := range tests {
		t.Run(tt.initrd, func(t *testing.T) {
			p := &matchbox.Profile{ID: "p", Boot: matchbox.Boot{Kernel: "/k", Initrd: []string{tt.initrd}}}
			got, err := e.GRUB(t.Context(), selection(p), nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range []string{`initrdefi  "` + tt.want + `"`, `initrd  "` + tt.want + `"`} {
				if !strings.Contains(string(got), "\n"+line+"\n") {
					t.Errorf("GRUB output has no line %q:\n%s", line, got)
				}
			}
		})
	}
}

func TestBootArgsTemplated(t *testing.T) {
	const mac = "52:54:00:a1:9c:ae"
	p := &matchbox.Profile{ID: "flatcar", Origin: "profiles/flatcar.json", Boot: matchbox.Boot{
		Kernel: "/assets/vmlinuz",
		Initrd: []string{"/assets/initrd.cpio.gz"},
		Args: []string{
			"flatcar.config.url=http://{{.request.host}}/ignition?uuid=${uuid}&mac=${mac:hexhyp}",
			"hostname={{.hostname}}",
			"mac={{.request.query.mac}}",
			"region={{.region}}",
			"uuid=${uuid}",
			"{{if .debug}}debug{{else}}quiet{{end}}",
			"literal-{braces}",
		},
	}}
	g := &matchbox.Group{ID: "node1", Profile: "flatcar",
		Selector: map[string]string{"mac": mac, "Region": "eu-west"},
		Metadata: map[string]any{"hostname": "node1.example.com", "debug": false}}
	data := Data(g, Request{Labels: map[string]string{"mac": mac, "uuid": "u1"}, RawQuery: "mac=52-54-00-a1-9c-ae&uuid=u1", Host: "matchbox.example.com:8080"})
	sel := matchbox.Selection{Group: g, Profile: p}
	e := NewEngine(Options{})

	wantArgs := " flatcar.config.url=http://matchbox.example.com:8080/ignition?uuid=${uuid}&mac=${mac:hexhyp}" +
		" hostname=node1.example.com mac=52:54:00:a1:9c:ae region=eu-west uuid=${uuid} quiet literal-{braces}"

	got, err := e.IPXE(t.Context(), sel, data)
	if err != nil {
		t.Fatal(err)
	}
	want := "#!ipxe\nkernel /assets/vmlinuz" + wantArgs + "\ninitrd /assets/initrd.cpio.gz\nboot\n"
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("iPXE (-want +got):\n%s", diff)
	}

	got, err = e.GRUB(t.Context(), sel, data)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		`linuxefi "/assets/vmlinuz"` + wantArgs,
		`linux "/assets/vmlinuz"` + wantArgs,
	} {
		if !strings.Contains(string(got), "\n"+line+"\n") {
			t.Errorf("GRUB output has no line %q:\n%s", line, got)
		}
	}

	// The same data renders the same arguments again (compiled once).
	again, err := e.IPXE(t.Context(), sel, data)
	if err != nil || string(again) != want {
		t.Errorf("second render = %q, %v", again, err)
	}
}

func TestBootArgsErrors(t *testing.T) {
	data := Data(&matchbox.Group{Metadata: map[string]any{"present": "x"}}, Request{Labels: map[string]string{"mac": "52:54:00:a1:9c:ae"}})
	tests := []struct {
		name     string
		boot     matchbox.Boot
		contains []string
	}{
		{name: "missing metadata key", boot: matchbox.Boot{Kernel: "/k", Args: []string{"ok", "a={{.absent}}"}},
			contains: []string{"boot.args[1]", "absent"}},
		{name: "missing query key", boot: matchbox.Boot{Kernel: "/k", Args: []string{"a={{.request.query.hostname}}"}},
			contains: []string{"boot.args[0]", "hostname"}},
		{name: "missing host", boot: matchbox.Boot{Kernel: "/k", Args: []string{"a={{.request.host}}"}},
			contains: []string{"boot.args[0]", "host"}},
		{name: "syntax error", boot: matchbox.Boot{Kernel: "/k", Args: []string{"a={{.present}}", "b={{.present"}},
			contains: []string{"boot.args[1]"}},
		{name: "no kernel", boot: matchbox.Boot{Args: []string{"a"}}, contains: []string{"kernel"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEngine(Options{})
			p := &matchbox.Profile{ID: "prof", Boot: tt.boot}
			sel := matchbox.Selection{Group: &matchbox.Group{ID: "grp"}, Profile: p}
			for name, render := range map[string]func(context.Context, matchbox.Selection, map[string]any) ([]byte, error){"ipxe": e.IPXE, "grub": e.GRUB} {
				out, err := render(t.Context(), sel, data)
				var rerr *Error
				if !errors.As(err, &rerr) {
					t.Fatalf("%s = %q, %v; want a *render.Error", name, out, err)
				}
				if rerr.Profile != "prof" || rerr.Group != "grp" {
					t.Errorf("%s: Error names group %q, profile %q; want grp, prof", name, rerr.Group, rerr.Profile)
				}
				for _, s := range append([]string{`profile "prof"`}, tt.contains...) {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("%s: error %q does not contain %q", name, err, s)
					}
				}
				if errors.Is(err, matchbox.ErrNotFound) {
					t.Errorf("%s: render failure %v must not be a not-found", name, err)
				}
			}
		})
	}
}
