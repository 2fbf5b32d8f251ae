package storagetest

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"matchbox.dev/matchbox"
)

// Source is a read-only source of objects, such as the data dir: what the
// catalog and the read cases ask of every store.
type Source interface {
	Objects(ctx context.Context) (matchbox.Objects, error)
	GetGroup(ctx context.Context, id string) (*matchbox.Group, error)
	GetProfile(ctx context.Context, id string) (*matchbox.Profile, error)
	GetTemplate(ctx context.Context, kind matchbox.TemplateKind, name string) (*matchbox.Template, error)
}

// SourceHarness creates the source under test.
type SourceHarness struct {
	// Open returns a new source holding the seed objects, written the
	// way that source takes them (files, for the data dir); a t.Cleanup
	// registered by Open releases it. Seed group metadata holds only
	// JSON-decoded types (float64, string, bool, []any, map[string]any).
	Open func(t *testing.T, seed matchbox.Objects) Source
	// Reopen simulates a restart: it releases the source last opened
	// with the same t and opens a new one over the same storage. Nil
	// when the source does not persist.
	Reopen func(t *testing.T) Source
}

// RunSource runs the read cases against the source h creates: what the
// objects of a store read back as (normalised MAC selectors, metadata and
// templates byte for byte, not-found errors). Run runs them against every
// store too.
func RunSource(t *testing.T, h SourceHarness) {
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

func objects(t *testing.T, r interface {
	Objects(context.Context) (matchbox.Objects, error)
}) matchbox.Objects {
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
