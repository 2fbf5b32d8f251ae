package storagetest

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// versioned is one kind of object seen through its conditional methods,
// in one of two versions (0 and 1) that read back differently.
type versioned struct {
	kind string
	put  func(ctx context.Context, s storage.Store, version int, cond matchbox.Condition) (string, error)
	// get returns the version stored, with its ETag.
	get func(ctx context.Context, s storage.Store) (int, string, error)
	del func(ctx context.Context, s storage.Store, cond matchbox.Condition) error
}

var versionNames = [2]string{"v0", "v1"}

func versionOf(name string) int {
	if name == versionNames[1] {
		return 1
	}
	return 0
}

var versionedKinds = []versioned{
	{
		kind: "group",
		put: func(ctx context.Context, s storage.Store, v int, cond matchbox.Condition) (string, error) {
			return s.PutGroupIf(ctx, &matchbox.Group{ID: "g", Name: versionNames[v], Profile: "p"}, cond)
		},
		get: func(ctx context.Context, s storage.Store) (int, string, error) {
			g, tag, err := s.GroupVersion(ctx, "g")
			if err != nil {
				return 0, "", err
			}
			return versionOf(g.Name), tag, nil
		},
		del: func(ctx context.Context, s storage.Store, cond matchbox.Condition) error {
			return s.DeleteGroupIf(ctx, "g", cond)
		},
	},
	{
		kind: "profile",
		put: func(ctx context.Context, s storage.Store, v int, cond matchbox.Condition) (string, error) {
			return s.PutProfileIf(ctx, &matchbox.Profile{ID: "p", Name: versionNames[v]}, cond)
		},
		get: func(ctx context.Context, s storage.Store) (int, string, error) {
			p, tag, err := s.ProfileVersion(ctx, "p")
			if err != nil {
				return 0, "", err
			}
			return versionOf(p.Name), tag, nil
		},
		del: func(ctx context.Context, s storage.Store, cond matchbox.Condition) error {
			return s.DeleteProfileIf(ctx, "p", cond)
		},
	},
	{
		kind: "template",
		put: func(ctx context.Context, s storage.Store, v int, cond matchbox.Condition) (string, error) {
			return s.PutTemplateIf(ctx, &matchbox.Template{Kind: matchbox.KindIgnition, Name: "sub/t.yaml", Content: []byte(versionNames[v])}, cond)
		},
		get: func(ctx context.Context, s storage.Store) (int, string, error) {
			tm, tag, err := s.TemplateVersion(ctx, matchbox.KindIgnition, "sub/t.yaml")
			if err != nil {
				return 0, "", err
			}
			return versionOf(string(tm.Content)), tag, nil
		},
		del: func(ctx context.Context, s storage.Store, cond matchbox.Condition) error {
			return s.DeleteTemplateIf(ctx, matchbox.KindIgnition, "sub/t.yaml", cond)
		},
	},
}

func runObjects(t *testing.T, h Harness) {
	for _, o := range versionedKinds {
		t.Run("Conditions/"+o.kind, func(t *testing.T) { runConditions(t, h.Open(t), o) })
	}

	t.Run("ObjectsFollowWrites", func(t *testing.T) {
		s := h.Open(t)
		ctx := t.Context()
		put(t, s, seed())
		steps := []struct {
			name string
			do   func() error
		}{
			{"put group", func() error {
				_, err := s.PutGroupIf(ctx, &matchbox.Group{ID: "new", Profile: "live", Selector: map[string]string{"MAC": "02-AA-BB-CC-DD-EE"}}, matchbox.Condition{IfNoneMatch: true})
				return err
			}},
			{"replace group", func() error {
				_, err := s.PutGroupIf(ctx, &matchbox.Group{ID: "default", Profile: "install"}, matchbox.Condition{IfMatch: "*"})
				return err
			}},
			{"delete group", func() error { return s.DeleteGroupIf(ctx, "uuid", matchbox.Condition{}) }},
			{"put profile", func() error {
				_, err := s.PutProfileIf(ctx, &matchbox.Profile{ID: "new", GenericID: "g"}, matchbox.Condition{})
				return err
			}},
			{"delete profile", func() error { return s.DeleteProfileIf(ctx, "live", matchbox.Condition{IfMatch: "*"}) }},
			{"put template", func() error {
				_, err := s.PutTemplateIf(ctx, &matchbox.Template{Kind: matchbox.KindIgnition, Name: "sub/new.ign", Content: binary}, matchbox.Condition{})
				return err
			}},
			{"delete template", func() error { return s.DeleteTemplateIf(ctx, matchbox.KindCloud, "install.yaml", matchbox.Condition{}) }},
		}
		for _, st := range steps {
			if err := st.do(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
		}
		if diff := cmp.Diff(afterSteps(), objects(t, s), opts); diff != "" {
			t.Errorf("Objects after the writes (-want +got):\n%s", diff)
		}
	})

	t.Run("SameNameDifferentKind", func(t *testing.T) {
		s := h.Open(t)
		ctx := t.Context()
		for _, kind := range matchbox.TemplateKinds {
			if _, err := s.PutTemplateIf(ctx, &matchbox.Template{Kind: kind, Name: "same.yaml", Content: []byte(kind)}, matchbox.Condition{IfNoneMatch: true}); err != nil {
				t.Fatalf("PutTemplateIf(%s): %v", kind, err)
			}
		}
		if err := s.DeleteTemplateIf(ctx, matchbox.KindCloud, "same.yaml", matchbox.Condition{}); err != nil {
			t.Fatalf("DeleteTemplateIf(cloud): %v", err)
		}
		for _, kind := range []matchbox.TemplateKind{matchbox.KindIgnition, matchbox.KindGeneric} {
			got, _, err := s.TemplateVersion(ctx, kind, "same.yaml")
			if err != nil {
				t.Fatalf("TemplateVersion(%s): %v", kind, err)
			}
			if string(got.Content) != string(kind) {
				t.Errorf("TemplateVersion(%s) content %q, want %q", kind, got.Content, kind)
			}
		}
	})

	t.Run("DeleteMissingIsNotFound", func(t *testing.T) {
		s := h.Open(t)
		ctx := t.Context()
		put(t, s, seed())
		tests := []struct {
			name string
			del  func() error
		}{
			{"group", func() error { return s.DeleteGroupIf(ctx, "nope", matchbox.Condition{}) }},
			{"group-if-match-any", func() error { return s.DeleteGroupIf(ctx, "nope", matchbox.Condition{IfMatch: "*"}) }},
			{"profile", func() error { return s.DeleteProfileIf(ctx, "nope", matchbox.Condition{}) }},
			{"profile-named-like-a-group", func() error { return s.DeleteProfileIf(ctx, "node1", matchbox.Condition{}) }},
			{"template", func() error { return s.DeleteTemplateIf(ctx, matchbox.KindIgnition, "nope.yaml", matchbox.Condition{}) }},
			{"template-other-kind", func() error { return s.DeleteTemplateIf(ctx, matchbox.KindCloud, "live.ign", matchbox.Condition{}) }},
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
		groups := map[string]*matchbox.Group{
			"group-without-id":                {Profile: "install"},
			"group-without-profile":           {ID: "bad"},
			"group-bad-mac":                   {ID: "bad", Profile: "install", Selector: map[string]string{"mac": "not-a-mac"}},
			"group-empty-mac":                 {ID: "bad", Profile: "install", Selector: map[string]string{"mac": ""}},
			"replacing-group-bad-mac":         {ID: "node1", Profile: "other", Selector: map[string]string{"mac": "52:54:00"}},
			"replacing-group-without-profile": {ID: "default"},
		}
		tests := map[string]func(context.Context, storage.Store) error{
			"profile-without-id": func(ctx context.Context, s storage.Store) error {
				_, err := s.PutProfileIf(ctx, &matchbox.Profile{Name: "no id"}, matchbox.Condition{})
				return err
			},
			"template-without-name": func(ctx context.Context, s storage.Store) error {
				_, err := s.PutTemplateIf(ctx, &matchbox.Template{Kind: matchbox.KindIgnition, Content: []byte("x")}, matchbox.Condition{})
				return err
			},
			"template-unknown-kind": func(ctx context.Context, s storage.Store) error {
				_, err := s.PutTemplateIf(ctx, &matchbox.Template{Kind: "assets", Name: "x", Content: []byte("x")}, matchbox.Condition{})
				return err
			},
		}
		for name, g := range groups {
			tests[name] = func(ctx context.Context, s storage.Store) error {
				_, err := s.PutGroupIf(ctx, g, matchbox.Condition{})
				return err
			}
		}
		for name, write := range tests {
			t.Run(name, func(t *testing.T) {
				s := h.Open(t)
				put(t, s, seed())
				before := objects(t, s)
				if err := write(t.Context(), s); !errors.Is(err, matchbox.ErrInvalid) {
					t.Errorf("error = %v, want one wrapping matchbox.ErrInvalid", err)
				}
				if diff := cmp.Diff(before, objects(t, s), opts); diff != "" {
					t.Errorf("a refused write changed the store (-before +after):\n%s", diff)
				}
			})
		}
	})

	t.Run("PutKeepsNoReference", func(t *testing.T) {
		s := h.Open(t)
		ctx := t.Context()
		g := &matchbox.Group{ID: "g", Profile: "p", Selector: map[string]string{"os": "a"}, Metadata: map[string]any{"k": "v"}}
		tm := &matchbox.Template{Kind: matchbox.KindGeneric, Name: "t", Content: []byte("abc")}
		put(t, s, matchbox.Objects{Groups: []*matchbox.Group{g}, Templates: []*matchbox.Template{tm}})
		g.Profile, g.Selector["os"], g.Metadata["k"] = "changed", "changed", "changed"
		tm.Content[0] = 'X'
		got, _, err := s.GroupVersion(ctx, "g")
		if err != nil {
			t.Fatalf("GroupVersion: %v", err)
		}
		want := &matchbox.Group{ID: "g", Profile: "p", Selector: map[string]string{"os": "a"}, Metadata: map[string]any{"k": "v"}}
		if diff := cmp.Diff(want, got, opts); diff != "" {
			t.Errorf("stored group changed with the caller's value (-want +got):\n%s", diff)
		}
		gotT, _, err := s.TemplateVersion(ctx, matchbox.KindGeneric, "t")
		if err != nil {
			t.Fatalf("TemplateVersion: %v", err)
		}
		if string(gotT.Content) != "abc" {
			t.Errorf("stored template content %q changed with the caller's slice, want %q", gotT.Content, "abc")
		}
		// Nor does the store keep what it hands out.
		gotT.Content[0] = 'Y'
		if again, _, err := s.TemplateVersion(ctx, matchbox.KindGeneric, "t"); err != nil || string(again.Content) != "abc" {
			t.Errorf("template after changing a read copy: %q, %v; want %q", again.Content, err, "abc")
		}
	})
}

// afterSteps is seed as ObjectsFollowWrites leaves it.
func afterSteps() matchbox.Objects {
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
	return want
}

// runConditions walks one object through every kind of condition: a
// write or delete whose condition fails is ErrPrecondition and changes
// nothing.
func runConditions(t *testing.T, s storage.Store, o versioned) {
	ctx := t.Context()
	// has checks the version stored (-1: none).
	has := func(step string, want int, wantTag string) {
		t.Helper()
		v, tag, err := o.get(ctx, s)
		switch {
		case want < 0:
			if !errors.Is(err, matchbox.ErrNotFound) {
				t.Errorf("%s: read = version %d, %v; want ErrNotFound", step, v, err)
			}
		case err != nil:
			t.Fatalf("%s: read: %v", step, err)
		case v != want || (wantTag != "" && tag != wantTag):
			t.Errorf("%s: read version %d ETag %s, want version %d ETag %s", step, v, tag, want, wantTag)
		}
	}
	refused := func(step string, err error) {
		t.Helper()
		if !errors.Is(err, matchbox.ErrPrecondition) {
			t.Errorf("%s: error = %v, want ErrPrecondition", step, err)
		}
	}
	putV := func(v int, cond matchbox.Condition) (string, error) { return o.put(ctx, s, v, cond) }

	has("before any write", -1, "")
	_, err := putV(0, matchbox.Condition{IfMatch: "*"})
	refused("put If-Match * of a missing object", err)
	_, err = putV(0, matchbox.Condition{IfMatch: `"0123"`})
	refused("put If-Match of a missing object", err)
	has("after refused creates", -1, "")

	tag0, err := putV(0, matchbox.Condition{IfNoneMatch: true})
	if err != nil || tag0 == "" {
		t.Fatalf("create with If-None-Match: ETag %q, %v", tag0, err)
	}
	has("after create", 0, tag0)
	_, err = putV(1, matchbox.Condition{IfNoneMatch: true})
	refused("second create with If-None-Match", err)
	_, err = putV(1, matchbox.Condition{IfMatch: `"0123"`})
	refused("put with a wrong If-Match", err)
	has("after refused replaces", 0, tag0)

	tag1, err := putV(1, matchbox.Condition{IfMatch: tag0})
	if err != nil || tag1 == "" || tag1 == tag0 {
		t.Fatalf("replace with If-Match: ETag %q (was %q), %v; want a new ETag", tag1, tag0, err)
	}
	has("after replace", 1, tag1)
	_, err = putV(0, matchbox.Condition{IfMatch: tag0})
	refused("put with the ETag before the replace", err)
	refused("delete with the ETag before the replace", o.del(ctx, s, matchbox.Condition{IfMatch: tag0}))
	refused("delete with If-None-Match", o.del(ctx, s, matchbox.Condition{IfNoneMatch: true}))
	has("after refused writes", 1, tag1)

	tagAny, err := putV(0, matchbox.Condition{IfMatch: "*"})
	if err != nil {
		t.Fatalf("replace with If-Match *: %v", err)
	}
	has("after replace with If-Match *", 0, tagAny)
	if err := o.del(ctx, s, matchbox.Condition{IfMatch: tagAny}); err != nil {
		t.Fatalf("delete with If-Match: %v", err)
	}
	has("after delete", -1, "")
	if err := o.del(ctx, s, matchbox.Condition{}); !errors.Is(err, matchbox.ErrNotFound) {
		t.Errorf("delete twice: %v, want ErrNotFound", err)
	}
	if _, err := putV(1, matchbox.Condition{}); err != nil {
		t.Fatalf("unconditional put: %v", err)
	}
	has("after unconditional put", 1, "")
	if err := o.del(ctx, s, matchbox.Condition{}); err != nil {
		t.Fatalf("unconditional delete: %v", err)
	}
	has("after unconditional delete", -1, "")
}
