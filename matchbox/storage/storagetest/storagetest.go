package storagetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"matchbox.dev/matchbox"
)

// Reader is what every store offers the catalog and the API.
type Reader interface {
	Objects(ctx context.Context) (matchbox.Objects, error)
	GetGroup(ctx context.Context, id string) (*matchbox.Group, error)
	GetProfile(ctx context.Context, id string) (*matchbox.Profile, error)
	GetTemplate(ctx context.Context, kind matchbox.TemplateKind, name string) (*matchbox.Template, error)
}

// Writer is what a store that accepts objects through the API offers.
type Writer interface {
	PutGroup(ctx context.Context, g *matchbox.Group) error
	DeleteGroup(ctx context.Context, id string) error
	PutProfile(ctx context.Context, p *matchbox.Profile) error
	DeleteProfile(ctx context.Context, id string) error
	PutTemplate(ctx context.Context, t *matchbox.Template) error
	DeleteTemplate(ctx context.Context, kind matchbox.TemplateKind, name string) error
}

// Harness creates the store under test.
type Harness struct {
	// Open returns a new, empty store holding the seed objects, written
	// the way that store takes them (files, Put calls). The store must be
	// closed by a t.Cleanup registered by Open. Seed group metadata holds
	// only JSON-decoded types (float64, string, bool, []any, map[string]any).
	Open func(t *testing.T, seed matchbox.Objects) Reader
	// Reopen simulates a restart: it releases the store last opened with
	// the same t and opens a new one over the same storage. Nil when the
	// store does not persist.
	Reopen func(t *testing.T) Reader
}

// Run runs the conformance suite against the store h creates.
func Run(t *testing.T, h Harness) {
	t.Run("Read", func(t *testing.T) { runRead(t, h) })
	t.Run("Write", func(t *testing.T) {
		// Probe with an empty store: only stores that accept writes run
		// these cases.
		if _, ok := h.Open(t, matchbox.Objects{}).(Writer); !ok {
			t.Skip("store does not implement storagetest.Writer")
		}
		runWrite(t, h)
	})
	t.Run("Tokens", func(t *testing.T) {
		s, ok := h.Open(t, matchbox.Objects{}).(TokenStore)
		if !ok {
			t.Skip("store does not implement storagetest.TokenStore")
		}
		runTokens(t, h, s)
	})
}

// binary holds every byte value and invalid UTF-8, to prove templates are
// stored as bytes, not text.
var binary = func() []byte {
	b := make([]byte, 0, 260)
	for i := range 256 {
		b = append(b, byte(i))
	}
	return append(b, 0xff, 0xfe, 0x00, '\n')
}()

// seed returns a fresh copy of the objects the read cases are run with;
// fresh because a store may normalise what it is given in place.
func seed() matchbox.Objects {
	return matchbox.Objects{
		Groups: []*matchbox.Group{
			{ID: "default", Name: "Default", Profile: "live"},
			{
				ID: "node1", Name: "Node 1", Profile: "install",
				Selector: map[string]string{"mac": "52:54:00:A1:9C:AE", "os": "installed"},
				Metadata: map[string]any{
					"hostname": "node1.example.com",
					"ipv4":     "10.0.0.21",
					"port":     float64(2379),
					"ratio":    0.25,
					"enabled":  true,
					"nothing":  nil,
					"ssh_authorized_keys": []any{
						"ssh-ed25519 AAAA one", "ssh-ed25519 AAAA two",
					},
					"etcd": map[string]any{
						"name":    "node1",
						"members": []any{map[string]any{"name": "node1", "port": float64(2380)}, float64(-1), false},
						"empty":   map[string]any{},
					},
				},
			},
			{ID: "hyphen", Profile: "install", Selector: map[string]string{"mac": "52-54-00-B2-0D-01"}},
			{ID: "dot", Profile: "install", Selector: map[string]string{"mac": "5254.00c3.1e02", "region": "eu"}},
			{ID: "uuid", Profile: "install", Selector: map[string]string{"uuid": "16e7d8a7-bfa9-428b-9117-363341bb330b"}},
		},
		Profiles: []*matchbox.Profile{
			{
				ID: "install", Name: "Install to disk",
				Boot: matchbox.Boot{
					Kernel: "/assets/flatcar/current/flatcar_production_pxe.vmlinuz",
					Initrd: []string{"/assets/flatcar/current/flatcar_production_pxe_image.cpio.gz"},
					Args:   []string{"initrd=flatcar_production_pxe_image.cpio.gz", "flatcar.first_boot=yes", "console=ttyS0"},
				},
				IgnitionID: "sub/install.yaml",
				CloudID:    "install.yaml",
				GenericID:  "blob.bin",
			},
			{ID: "live", Boot: matchbox.Boot{Kernel: "/assets/vmlinuz"}, IgnitionID: "live.ign"},
		},
		Templates: []*matchbox.Template{
			{Kind: matchbox.KindIgnition, Name: "sub/install.yaml", Content: []byte("variant: flatcar\nversion: 1.0.0\n")},
			{Kind: matchbox.KindIgnition, Name: "live.ign", Content: []byte(`{"ignition":{"version":"3.3.0"}}`)},
			{Kind: matchbox.KindCloud, Name: "install.yaml", Content: []byte("#cloud-config\nhostname: {{.hostname}}\n")},
			{Kind: matchbox.KindGeneric, Name: "blob.bin", Content: binary},
		},
	}
}

// seedWant is seed as every store must return it: MAC selectors normalised.
func seedWant() matchbox.Objects {
	want := seed()
	norm := map[string]string{
		"node1":  "52:54:00:a1:9c:ae",
		"hyphen": "52:54:00:b2:0d:01",
		"dot":    "52:54:00:c3:1e:02",
	}
	for _, g := range want.Groups {
		if mac, ok := norm[g.ID]; ok {
			g.Selector["mac"] = mac
		}
	}
	return want
}

// GroupOptions makes cmp compare groups by what they read as, frozen or
// not (stores may hand out frozen groups).
var GroupOptions = cmp.Options{
	cmp.Transformer("thaw", func(g *matchbox.Group) *matchbox.Group {
		if g == nil {
			return nil
		}
		return g.Thawed()
	}),
	cmpopts.IgnoreUnexported(matchbox.Group{}),
}

// opts compares objects regardless of order and of where they came from.
var opts = cmp.Options{
	GroupOptions,
	cmpopts.IgnoreFields(matchbox.Group{}, "Origin"),
	cmpopts.IgnoreFields(matchbox.Profile{}, "Origin"),
	cmpopts.IgnoreFields(matchbox.Template{}, "Origin"),
	cmpopts.IgnoreFields(matchbox.Objects{}, "Problems"),
	cmpopts.EquateEmpty(),
	cmpopts.SortSlices(func(a, b *matchbox.Group) bool { return a.ID < b.ID }),
	cmpopts.SortSlices(func(a, b *matchbox.Profile) bool { return a.ID < b.ID }),
	cmpopts.SortSlices(func(a, b *matchbox.Template) bool {
		return a.Kind < b.Kind || (a.Kind == b.Kind && a.Name < b.Name)
	}),
}

func objects(t *testing.T, r Reader) matchbox.Objects {
	t.Helper()
	objs, err := r.Objects(t.Context())
	if err != nil {
		t.Fatalf("Objects: %v", err)
	}
	return objs
}

func groupByID(t *testing.T, objs matchbox.Objects, id string) *matchbox.Group {
	t.Helper()
	for _, g := range objs.Groups {
		if g.ID == id {
			return g
		}
	}
	t.Fatalf("Objects has no group %q", id)
	return nil
}

func runRead(t *testing.T, h Harness) {
	t.Run("Empty", func(t *testing.T) {
		r := h.Open(t, matchbox.Objects{})
		if diff := cmp.Diff(matchbox.Objects{}, objects(t, r), opts); diff != "" {
			t.Errorf("Objects of an empty store (-want +got):\n%s", diff)
		}
	})

	t.Run("ObjectsReturnsSeed", func(t *testing.T) {
		r := h.Open(t, seed())
		got := objects(t, r)
		if diff := cmp.Diff(seedWant(), got, opts); diff != "" {
			t.Errorf("Objects (-want +got):\n%s", diff)
		}
		for _, g := range got.Groups {
			if g.Origin == "" {
				t.Errorf("group %q has no Origin", g.ID)
			}
		}
		for _, p := range got.Profiles {
			if p.Origin == "" {
				t.Errorf("profile %q has no Origin", p.ID)
			}
		}
		for _, tm := range got.Templates {
			if tm.Origin == "" {
				t.Errorf("%s template %q has no Origin", tm.Kind, tm.Name)
			}
		}
	})

	t.Run("GetReturnsSeed", func(t *testing.T) {
		r := h.Open(t, seed())
		want := seedWant()
		ctx := t.Context()
		for _, wg := range want.Groups {
			t.Run("group/"+wg.ID, func(t *testing.T) {
				g, err := r.GetGroup(ctx, wg.ID)
				if err != nil {
					t.Fatalf("GetGroup(%q): %v", wg.ID, err)
				}
				if diff := cmp.Diff(wg, g, opts); diff != "" {
					t.Errorf("GetGroup(%q) (-want +got):\n%s", wg.ID, diff)
				}
			})
		}
		for _, wp := range want.Profiles {
			t.Run("profile/"+wp.ID, func(t *testing.T) {
				p, err := r.GetProfile(ctx, wp.ID)
				if err != nil {
					t.Fatalf("GetProfile(%q): %v", wp.ID, err)
				}
				if diff := cmp.Diff(wp, p, opts); diff != "" {
					t.Errorf("GetProfile(%q) (-want +got):\n%s", wp.ID, diff)
				}
			})
		}
		for _, wt := range want.Templates {
			t.Run("template/"+string(wt.Kind)+"/"+wt.Name, func(t *testing.T) {
				tm, err := r.GetTemplate(ctx, wt.Kind, wt.Name)
				if err != nil {
					t.Fatalf("GetTemplate(%s, %q): %v", wt.Kind, wt.Name, err)
				}
				if diff := cmp.Diff(wt, tm, opts); diff != "" {
					t.Errorf("GetTemplate(%s, %q) (-want +got):\n%s", wt.Kind, wt.Name, diff)
				}
			})
		}
	})

	t.Run("MACSelectorsNormalised", func(t *testing.T) {
		spellings := []struct{ name, mac string }{
			{"colon-lower", "52:54:00:0a:0b:0c"},
			{"colon-upper", "52:54:00:0A:0B:0C"},
			{"hyphen-upper", "52-54-00-0A-0B-0C"},
			{"hyphen-lower", "52-54-00-0a-0b-0c"},
			{"dot", "5254.000a.0b0c"},
			{"dot-upper", "5254.000A.0B0C"},
		}
		var s matchbox.Objects
		for _, sp := range spellings {
			s.Groups = append(s.Groups, &matchbox.Group{ID: sp.name, Profile: "p", Selector: map[string]string{"mac": sp.mac}})
		}
		r := h.Open(t, s)
		objs := objects(t, r)
		for _, sp := range spellings {
			t.Run(sp.name, func(t *testing.T) {
				want := map[string]string{"mac": "52:54:00:0a:0b:0c"}
				if diff := cmp.Diff(want, groupByID(t, objs, sp.name).SelectorMap()); diff != "" {
					t.Errorf("Objects: selector of %q (-want +got):\n%s", sp.mac, diff)
				}
				g, err := r.GetGroup(t.Context(), sp.name)
				if err != nil {
					t.Fatalf("GetGroup: %v", err)
				}
				if diff := cmp.Diff(want, g.SelectorMap()); diff != "" {
					t.Errorf("GetGroup: selector of %q (-want +got):\n%s", sp.mac, diff)
				}
			})
		}
	})

	t.Run("MetadataRoundTrips", func(t *testing.T) {
		meta := map[string]any{
			"int":      float64(42),
			"negative": float64(-7),
			"float":    3.5,
			"big":      float64(1 << 52),
			"string":   "with \"quotes\", <html> & unicode ✓",
			"bool":     false,
			"null":     nil,
			"array":    []any{"a", float64(1), true, nil, []any{}, map[string]any{"k": "v"}},
			"object": map[string]any{
				"nested": map[string]any{"deeper": []any{map[string]any{"x": float64(1)}}},
			},
		}
		r := h.Open(t, matchbox.Objects{Groups: []*matchbox.Group{{ID: "meta", Profile: "p", Metadata: meta}}})
		g, err := r.GetGroup(t.Context(), "meta")
		if err != nil {
			t.Fatalf("GetGroup: %v", err)
		}
		// Compare without EquateEmpty: an empty array must stay an empty array.
		if diff := cmp.Diff(meta, g.MetadataMap()); diff != "" {
			t.Errorf("metadata (-want +got):\n%s", diff)
		}
	})

	t.Run("MissingIsNotFound", func(t *testing.T) {
		r := h.Open(t, seed())
		ctx := t.Context()
		tests := []struct {
			name string
			get  func() error
		}{
			{"group", func() error { _, err := r.GetGroup(ctx, "nope"); return err }},
			{"group-empty-id", func() error { _, err := r.GetGroup(ctx, ""); return err }},
			{"group-by-name-not-id", func() error { _, err := r.GetGroup(ctx, "Node 1"); return err }},
			{"profile", func() error { _, err := r.GetProfile(ctx, "nope"); return err }},
			{"profile-is-not-group", func() error { _, err := r.GetProfile(ctx, "node1"); return err }},
			{"template", func() error { _, err := r.GetTemplate(ctx, matchbox.KindIgnition, "nope.yaml"); return err }},
			{"template-other-kind", func() error { _, err := r.GetTemplate(ctx, matchbox.KindCloud, "live.ign"); return err }},
			{"template-without-subfolder", func() error { _, err := r.GetTemplate(ctx, matchbox.KindIgnition, "install.yaml"); return err }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := tt.get()
				if !errors.Is(err, matchbox.ErrNotFound) {
					t.Errorf("error = %v, want one wrapping matchbox.ErrNotFound", err)
				}
			})
		}
	})

	t.Run("TemplatesAreBinarySafe", func(t *testing.T) {
		contents := map[string][]byte{
			"all-bytes.bin": binary,
			"crlf.txt":      []byte("line\r\nline\r\n"),
			"nul.bin":       {0, 0, 0},
			"invalid-utf8":  {'a', 0xc3, 0x28, 'b'},
			"empty":         {},
		}
		var s matchbox.Objects
		for name, c := range contents {
			s.Templates = append(s.Templates, &matchbox.Template{Kind: matchbox.KindGeneric, Name: name, Content: c})
		}
		r := h.Open(t, s)
		for name, want := range contents {
			t.Run(name, func(t *testing.T) {
				tm, err := r.GetTemplate(t.Context(), matchbox.KindGeneric, name)
				if err != nil {
					t.Fatalf("GetTemplate: %v", err)
				}
				if diff := cmp.Diff(want, tm.Content, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("content (-want +got):\n%s", diff)
				}
			})
		}
	})

	t.Run("TemplateSubfolders", func(t *testing.T) {
		names := []string{"x.yaml", "sub/x.yaml", "sub/deeper/x.yaml", "other/x.yaml"}
		var s matchbox.Objects
		for _, n := range names {
			s.Templates = append(s.Templates, &matchbox.Template{Kind: matchbox.KindIgnition, Name: n, Content: []byte(n)})
		}
		r := h.Open(t, s)
		for _, n := range names {
			t.Run(n, func(t *testing.T) {
				tm, err := r.GetTemplate(t.Context(), matchbox.KindIgnition, n)
				if err != nil {
					t.Fatalf("GetTemplate: %v", err)
				}
				if tm.Name != n || tm.Kind != matchbox.KindIgnition || string(tm.Content) != n {
					t.Errorf("GetTemplate(ignition, %q) = %s %q with %q, want the template of that name", n, tm.Kind, tm.Name, tm.Content)
				}
			})
		}
		if diff := cmp.Diff(s, objects(t, r), opts); diff != "" {
			t.Errorf("Objects (-want +got):\n%s", diff)
		}
	})

	t.Run("Reopen", func(t *testing.T) {
		if h.Reopen == nil {
			t.Skip("store does not persist")
		}
		h.Open(t, seed())
		r := h.Reopen(t)
		if diff := cmp.Diff(seedWant(), objects(t, r), opts); diff != "" {
			t.Errorf("Objects after reopen (-want +got):\n%s", diff)
		}
		if _, err := r.GetGroup(t.Context(), "node1"); err != nil {
			t.Errorf("GetGroup after reopen: %v", err)
		}
	})
}

func runWrite(t *testing.T, h Harness) {
	open := func(t *testing.T, s matchbox.Objects) (Reader, Writer) {
		r := h.Open(t, s)
		return r, r.(Writer)
	}

	t.Run("Groups", func(t *testing.T) {
		r, w := open(t, matchbox.Objects{})
		ctx := t.Context()
		g := &matchbox.Group{ID: "g", Profile: "p", Selector: map[string]string{"mac": "AA-BB-CC-DD-EE-FF"}, Metadata: map[string]any{"n": float64(1)}}
		if err := w.PutGroup(ctx, g); err != nil {
			t.Fatalf("PutGroup: %v", err)
		}
		want := &matchbox.Group{ID: "g", Profile: "p", Selector: map[string]string{"mac": "aa:bb:cc:dd:ee:ff"}, Metadata: map[string]any{"n": float64(1)}}
		got, err := r.GetGroup(ctx, "g")
		if err != nil {
			t.Fatalf("GetGroup after put: %v", err)
		}
		if diff := cmp.Diff(want, got, opts); diff != "" {
			t.Errorf("GetGroup after put (-want +got):\n%s", diff)
		}

		replaced := &matchbox.Group{ID: "g", Name: "renamed", Profile: "q", Selector: map[string]string{"os": "installed"}}
		if err := w.PutGroup(ctx, replaced); err != nil {
			t.Fatalf("PutGroup (replace): %v", err)
		}
		want = &matchbox.Group{ID: "g", Name: "renamed", Profile: "q", Selector: map[string]string{"os": "installed"}}
		got, err = r.GetGroup(ctx, "g")
		if err != nil {
			t.Fatalf("GetGroup after replace: %v", err)
		}
		if diff := cmp.Diff(want, got, opts); diff != "" {
			t.Errorf("GetGroup after replace (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(matchbox.Objects{Groups: []*matchbox.Group{want}}, objects(t, r), opts); diff != "" {
			t.Errorf("Objects after replace (-want +got):\n%s", diff)
		}

		if err := w.DeleteGroup(ctx, "g"); err != nil {
			t.Fatalf("DeleteGroup: %v", err)
		}
		if _, err := r.GetGroup(ctx, "g"); !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("GetGroup after delete: error = %v, want ErrNotFound", err)
		}
		if diff := cmp.Diff(matchbox.Objects{}, objects(t, r), opts); diff != "" {
			t.Errorf("Objects after delete (-want +got):\n%s", diff)
		}
	})

	t.Run("Profiles", func(t *testing.T) {
		r, w := open(t, matchbox.Objects{})
		ctx := t.Context()
		p := &matchbox.Profile{ID: "p", Boot: matchbox.Boot{Kernel: "/k", Initrd: []string{"/i"}, Args: []string{"a=b"}}, IgnitionID: "x.yaml"}
		if err := w.PutProfile(ctx, p); err != nil {
			t.Fatalf("PutProfile: %v", err)
		}
		want := &matchbox.Profile{ID: "p", Boot: matchbox.Boot{Kernel: "/k", Initrd: []string{"/i"}, Args: []string{"a=b"}}, IgnitionID: "x.yaml"}
		got, err := r.GetProfile(ctx, "p")
		if err != nil {
			t.Fatalf("GetProfile after put: %v", err)
		}
		if diff := cmp.Diff(want, got, opts); diff != "" {
			t.Errorf("GetProfile after put (-want +got):\n%s", diff)
		}

		want = &matchbox.Profile{ID: "p", Name: "replaced", CloudID: "c.yaml"}
		if err := w.PutProfile(ctx, &matchbox.Profile{ID: "p", Name: "replaced", CloudID: "c.yaml"}); err != nil {
			t.Fatalf("PutProfile (replace): %v", err)
		}
		got, err = r.GetProfile(ctx, "p")
		if err != nil {
			t.Fatalf("GetProfile after replace: %v", err)
		}
		if diff := cmp.Diff(want, got, opts); diff != "" {
			t.Errorf("GetProfile after replace (-want +got):\n%s", diff)
		}

		if err := w.DeleteProfile(ctx, "p"); err != nil {
			t.Fatalf("DeleteProfile: %v", err)
		}
		if _, err := r.GetProfile(ctx, "p"); !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("GetProfile after delete: error = %v, want ErrNotFound", err)
		}
		if diff := cmp.Diff(matchbox.Objects{}, objects(t, r), opts); diff != "" {
			t.Errorf("Objects after delete (-want +got):\n%s", diff)
		}
	})

	t.Run("Templates", func(t *testing.T) {
		r, w := open(t, matchbox.Objects{})
		ctx := t.Context()
		for _, kind := range matchbox.TemplateKinds {
			t.Run(string(kind), func(t *testing.T) {
				name := "sub/" + string(kind) + ".tmpl"
				if err := w.PutTemplate(ctx, &matchbox.Template{Kind: kind, Name: name, Content: binary}); err != nil {
					t.Fatalf("PutTemplate: %v", err)
				}
				got, err := r.GetTemplate(ctx, kind, name)
				if err != nil {
					t.Fatalf("GetTemplate after put: %v", err)
				}
				if diff := cmp.Diff(&matchbox.Template{Kind: kind, Name: name, Content: binary}, got, opts); diff != "" {
					t.Errorf("GetTemplate after put (-want +got):\n%s", diff)
				}
				if err := w.PutTemplate(ctx, &matchbox.Template{Kind: kind, Name: name, Content: []byte("v2")}); err != nil {
					t.Fatalf("PutTemplate (replace): %v", err)
				}
				got, err = r.GetTemplate(ctx, kind, name)
				if err != nil {
					t.Fatalf("GetTemplate after replace: %v", err)
				}
				if string(got.Content) != "v2" {
					t.Errorf("GetTemplate after replace: content %q, want %q", got.Content, "v2")
				}
				if err := w.DeleteTemplate(ctx, kind, name); err != nil {
					t.Fatalf("DeleteTemplate: %v", err)
				}
				if _, err := r.GetTemplate(ctx, kind, name); !errors.Is(err, matchbox.ErrNotFound) {
					t.Errorf("GetTemplate after delete: error = %v, want ErrNotFound", err)
				}
			})
		}
		if diff := cmp.Diff(matchbox.Objects{}, objects(t, r), opts); diff != "" {
			t.Errorf("Objects after deleting every template (-want +got):\n%s", diff)
		}
	})

	t.Run("SameNameDifferentKind", func(t *testing.T) {
		r, w := open(t, matchbox.Objects{})
		ctx := t.Context()
		for _, kind := range matchbox.TemplateKinds {
			if err := w.PutTemplate(ctx, &matchbox.Template{Kind: kind, Name: "same.yaml", Content: []byte(kind)}); err != nil {
				t.Fatalf("PutTemplate(%s): %v", kind, err)
			}
		}
		if err := w.DeleteTemplate(ctx, matchbox.KindCloud, "same.yaml"); err != nil {
			t.Fatalf("DeleteTemplate(cloud): %v", err)
		}
		for _, kind := range []matchbox.TemplateKind{matchbox.KindIgnition, matchbox.KindGeneric} {
			got, err := r.GetTemplate(ctx, kind, "same.yaml")
			if err != nil {
				t.Fatalf("GetTemplate(%s): %v", kind, err)
			}
			if string(got.Content) != string(kind) {
				t.Errorf("GetTemplate(%s) content %q, want %q", kind, got.Content, kind)
			}
		}
	})

	t.Run("DeleteMissingIsNotFound", func(t *testing.T) {
		_, w := open(t, seed())
		ctx := t.Context()
		tests := []struct {
			name string
			del  func() error
		}{
			{"group", func() error { return w.DeleteGroup(ctx, "nope") }},
			{"profile", func() error { return w.DeleteProfile(ctx, "nope") }},
			{"profile-named-like-a-group", func() error { return w.DeleteProfile(ctx, "node1") }},
			{"template", func() error { return w.DeleteTemplate(ctx, matchbox.KindIgnition, "nope.yaml") }},
			{"template-other-kind", func() error { return w.DeleteTemplate(ctx, matchbox.KindCloud, "live.ign") }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := tt.del(); !errors.Is(err, matchbox.ErrNotFound) {
					t.Errorf("error = %v, want one wrapping matchbox.ErrNotFound", err)
				}
			})
		}
	})

	t.Run("InvalidRefused", func(t *testing.T) {
		tests := []struct {
			name string
			put  func(context.Context, Writer) error
		}{
			{"group-without-id", func(ctx context.Context, w Writer) error {
				return w.PutGroup(ctx, &matchbox.Group{Profile: "install"})
			}},
			{"group-without-profile", func(ctx context.Context, w Writer) error {
				return w.PutGroup(ctx, &matchbox.Group{ID: "bad"})
			}},
			{"group-bad-mac", func(ctx context.Context, w Writer) error {
				return w.PutGroup(ctx, &matchbox.Group{ID: "bad", Profile: "install", Selector: map[string]string{"mac": "not-a-mac"}})
			}},
			{"group-empty-mac", func(ctx context.Context, w Writer) error {
				return w.PutGroup(ctx, &matchbox.Group{ID: "bad", Profile: "install", Selector: map[string]string{"mac": ""}})
			}},
			{"replacing-group-bad-mac", func(ctx context.Context, w Writer) error {
				return w.PutGroup(ctx, &matchbox.Group{ID: "node1", Profile: "other", Selector: map[string]string{"mac": "52:54:00"}})
			}},
			{"replacing-group-without-profile", func(ctx context.Context, w Writer) error {
				return w.PutGroup(ctx, &matchbox.Group{ID: "default"})
			}},
			{"profile-without-id", func(ctx context.Context, w Writer) error {
				return w.PutProfile(ctx, &matchbox.Profile{Name: "no id"})
			}},
			{"template-without-name", func(ctx context.Context, w Writer) error {
				return w.PutTemplate(ctx, &matchbox.Template{Kind: matchbox.KindIgnition, Content: []byte("x")})
			}},
			{"template-unknown-kind", func(ctx context.Context, w Writer) error {
				return w.PutTemplate(ctx, &matchbox.Template{Kind: "assets", Name: "x", Content: []byte("x")})
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r, w := open(t, seed())
				before := objects(t, r)
				if err := tt.put(t.Context(), w); !errors.Is(err, matchbox.ErrInvalid) {
					t.Errorf("error = %v, want one wrapping matchbox.ErrInvalid", err)
				}
				if diff := cmp.Diff(before, objects(t, r), opts); diff != "" {
					t.Errorf("a refused write changed the store (-before +after):\n%s", diff)
				}
				if _, err := r.GetGroup(t.Context(), "bad"); !errors.Is(err, matchbox.ErrNotFound) {
					t.Errorf("GetGroup(bad) after a refused write: error = %v, want ErrNotFound", err)
				}
			})
		}
	})

	t.Run("PutKeepsNoReference", func(t *testing.T) {
		r, w := open(t, matchbox.Objects{})
		ctx := t.Context()
		g := &matchbox.Group{ID: "g", Profile: "p", Selector: map[string]string{"os": "a"}, Metadata: map[string]any{"k": "v"}}
		if err := w.PutGroup(ctx, g); err != nil {
			t.Fatalf("PutGroup: %v", err)
		}
		g.Profile, g.Selector["os"], g.Metadata["k"] = "changed", "changed", "changed"
		tm := &matchbox.Template{Kind: matchbox.KindGeneric, Name: "t", Content: []byte("abc")}
		if err := w.PutTemplate(ctx, tm); err != nil {
			t.Fatalf("PutTemplate: %v", err)
		}
		tm.Content[0] = 'X'
		got, err := r.GetGroup(ctx, "g")
		if err != nil {
			t.Fatalf("GetGroup: %v", err)
		}
		want := &matchbox.Group{ID: "g", Profile: "p", Selector: map[string]string{"os": "a"}, Metadata: map[string]any{"k": "v"}}
		if diff := cmp.Diff(want, got, opts); diff != "" {
			t.Errorf("stored group changed with the caller's value (-want +got):\n%s", diff)
		}
		gotT, err := r.GetTemplate(ctx, matchbox.KindGeneric, "t")
		if err != nil {
			t.Fatalf("GetTemplate: %v", err)
		}
		if string(gotT.Content) != "abc" {
			t.Errorf("stored template content %q changed with the caller's slice, want %q", gotT.Content, "abc")
		}
	})

	t.Run("ConcurrentPuts", func(t *testing.T) {
		const writers, each = 8, 10
		r, w := open(t, matchbox.Objects{})
		ctx := t.Context()
		var wg sync.WaitGroup
		errs := make(chan error, writers*each)
		for i := range writers {
			wg.Go(func() {
				for j := range each {
					id := fmt.Sprintf("w%d-%02d", i, j)
					mac := fmt.Sprintf("02-00-00-00-%02X-%02X", i, j)
					if err := w.PutGroup(ctx, &matchbox.Group{ID: id, Profile: "p", Selector: map[string]string{"mac": mac}}); err != nil {
						errs <- fmt.Errorf("PutGroup(%s): %w", id, err)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		var want matchbox.Objects
		for i := range writers {
			for j := range each {
				want.Groups = append(want.Groups, &matchbox.Group{
					ID: fmt.Sprintf("w%d-%02d", i, j), Profile: "p",
					Selector: map[string]string{"mac": strings.ToLower(fmt.Sprintf("02:00:00:00:%02X:%02X", i, j))},
				})
			}
		}
		if diff := cmp.Diff(want, objects(t, r), opts); diff != "" {
			t.Errorf("Objects after concurrent puts (-want +got):\n%s", diff)
		}
	})

	t.Run("WritesSurviveReopen", func(t *testing.T) {
		if h.Reopen == nil {
			t.Skip("store does not persist")
		}
		_, w := open(t, seed())
		ctx := t.Context()
		steps := []struct {
			name string
			do   func() error
		}{
			{"put group", func() error {
				return w.PutGroup(ctx, &matchbox.Group{ID: "new", Profile: "live", Selector: map[string]string{"MAC": "02-AA-BB-CC-DD-EE"}})
			}},
			{"replace group", func() error { return w.PutGroup(ctx, &matchbox.Group{ID: "default", Profile: "install"}) }},
			{"delete group", func() error { return w.DeleteGroup(ctx, "uuid") }},
			{"put profile", func() error { return w.PutProfile(ctx, &matchbox.Profile{ID: "new", GenericID: "g"}) }},
			{"delete profile", func() error { return w.DeleteProfile(ctx, "live") }},
			{"put template", func() error {
				return w.PutTemplate(ctx, &matchbox.Template{Kind: matchbox.KindIgnition, Name: "sub/new.ign", Content: binary})
			}},
			{"delete template", func() error { return w.DeleteTemplate(ctx, matchbox.KindCloud, "install.yaml") }},
		}
		for _, s := range steps {
			if err := s.do(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
		}
		want := seedWant()
		want.Groups = append(want.Groups, &matchbox.Group{ID: "new", Profile: "live", Selector: map[string]string{"MAC": "02:aa:bb:cc:dd:ee"}})
		want.Profiles = append(want.Profiles, &matchbox.Profile{ID: "new", GenericID: "g"})
		want.Templates = append(want.Templates, &matchbox.Template{Kind: matchbox.KindIgnition, Name: "sub/new.ign", Content: binary})
		want.Groups = slices.DeleteFunc(want.Groups, func(g *matchbox.Group) bool { return g.ID == "uuid" })
		want.Profiles = slices.DeleteFunc(want.Profiles, func(p *matchbox.Profile) bool { return p.ID == "live" })
		want.Templates = slices.DeleteFunc(want.Templates, func(tm *matchbox.Template) bool { return tm.Kind == matchbox.KindCloud })
		for _, g := range want.Groups {
			if g.ID == "default" {
				g.Name, g.Profile = "", "install"
			}
		}

		r := h.Reopen(t)
		if diff := cmp.Diff(want, objects(t, r), opts); diff != "" {
			t.Errorf("Objects after reopen (-want +got):\n%s", diff)
		}
		if _, err := r.GetGroup(ctx, "uuid"); !errors.Is(err, matchbox.ErrNotFound) {
			t.Errorf("deleted group after reopen: error = %v, want ErrNotFound", err)
		}
		if _, err := r.GetProfile(ctx, "new"); err != nil {
			t.Errorf("GetProfile(new) after reopen: %v", err)
		}
	})
}
