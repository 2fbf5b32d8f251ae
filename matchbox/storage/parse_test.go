package storage_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
	"matchbox.dev/matchbox/storage/storagetest"
)

func TestParseGroup(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		want    *matchbox.Group
		unknown []string
		errHas  string // when set, ParseGroup must fail with ErrInvalid and this text
	}{
		{
			name: "minimal",
			data: `{"id": "a", "profile": "p"}`,
			want: &matchbox.Group{ID: "a", Profile: "p"},
		},
		{
			name: "full",
			data: `{"id": "a", "name": "A", "profile": "p", "selector": {"os": "installed", "uuid": "u"},
				"metadata": {"n": 1, "list": [1, "two", {"three": 3}], "obj": {"k": null}}}`,
			want: &matchbox.Group{ID: "a", Name: "A", Profile: "p",
				Selector: map[string]string{"os": "installed", "uuid": "u"},
				Metadata: map[string]any{"n": float64(1), "list": []any{float64(1), "two", map[string]any{"three": float64(3)}}, "obj": map[string]any{"k": nil}}},
		},
		{
			name: "mac with hyphens",
			data: `{"id": "a", "profile": "p", "selector": {"mac": "52-54-00-A1-9C-AE"}}`,
			want: &matchbox.Group{ID: "a", Profile: "p", Selector: map[string]string{"mac": "52:54:00:a1:9c:ae"}},
		},
		{
			name: "mac with dots",
			data: `{"id": "a", "profile": "p", "selector": {"mac": "5254.00a1.9cae"}}`,
			want: &matchbox.Group{ID: "a", Profile: "p", Selector: map[string]string{"mac": "52:54:00:a1:9c:ae"}},
		},
		{
			name: "mac key in capitals keeps its key, value normalised",
			data: `{"id": "a", "profile": "p", "selector": {"MAC": "52:54:00:A1:9C:AE", "os": "Installed"}}`,
			want: &matchbox.Group{ID: "a", Profile: "p", Selector: map[string]string{"MAC": "52:54:00:a1:9c:ae", "os": "Installed"}},
		},
		{
			name:    "unknown keys reported sorted",
			data:    `{"zeta": 1, "id": "a", "profile": "p", "alpha": {}}`,
			want:    &matchbox.Group{ID: "a", Profile: "p"},
			unknown: []string{"alpha", "zeta"},
		},
		{name: "no id", data: `{"profile": "p"}`, errHas: "no id"},
		{name: "empty id", data: `{"id": "", "profile": "p"}`, errHas: "no id"},
		{name: "no profile", data: `{"id": "a"}`, errHas: "no profile"},
		{name: "bad mac", data: `{"id": "a", "profile": "p", "selector": {"mac": "52:54:00:a1:9c"}}`, errHas: "not a MAC address"},
		{name: "bad MAC under a capital key", data: `{"id": "a", "profile": "p", "selector": {"Mac": "nope"}}`, errHas: "not a MAC address"},
		{name: "selector value not a string", data: `{"id": "a", "profile": "p", "selector": {"mac": 5}}`, errHas: "line 1"},
		{name: "metadata not an object", data: `{"id": "a", "profile": "p", "metadata": []}`, errHas: "metadata"},
		{name: "syntax error", data: `{"id": "a" "profile": "p"}`, errHas: "bad JSON"},
		{name: "empty", data: ``, errHas: "bad JSON"},
		{name: "null", data: `null`, errHas: "no id"},
		{name: "array", data: `[]`, errHas: "bad JSON"},
		{name: "trailing value", data: `{"id": "a", "profile": "p"} {"id": "b", "profile": "p"}`, errHas: "trailing data"},
		{name: "trailing text", data: `{"id": "a", "profile": "p"} x`, errHas: "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, unknown, err := storage.ParseGroup([]byte(tt.data))
			if tt.errHas != "" {
				if !errors.Is(err, matchbox.ErrInvalid) || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("ParseGroup error = %v, want ErrInvalid mentioning %q", err, tt.errHas)
				}
				if g != nil {
					t.Errorf("ParseGroup returned %+v along with an error", g)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseGroup: %v", err)
			}
			if diff := cmp.Diff(tt.want, g, cmpopts.EquateEmpty(), storagetest.GroupOptions); diff != "" {
				t.Errorf("group (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.unknown, unknown, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("unknown keys (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseGroupTrailingData checks that a file holding more than one JSON
// value is refused, whatever follows the object. A stray closing bracket is
// typical of a botched hand edit (one brace too many).
func TestParseGroupTrailingData(t *testing.T) {
	tests := []struct{ name, trailer string }{
		{"second object", ` {}`},
		{"text", ` x`},
		{"number", ` 1`},
		{"closing brace", `}`},
		{"closing bracket", `]`},
		{"closing brace after newline", "\n}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := `{"id": "a", "profile": "p"}` + tt.trailer
			g, _, err := storage.ParseGroup([]byte(data))
			if !errors.Is(err, matchbox.ErrInvalid) {
				t.Errorf("ParseGroup(%q) = %+v, %v; want an error wrapping ErrInvalid", data, g, err)
			}
		})
	}
	if _, _, err := storage.ParseGroup([]byte("{\"id\": \"a\", \"profile\": \"p\"}\n\n \t\n")); err != nil {
		t.Errorf("trailing white space refused: %v", err)
	}
}

// TestParseGroupErrorPosition checks that the line and column reported for
// bad JSON point at the offending character, so that an operator can jump
// straight to it.
func TestParseGroupErrorPosition(t *testing.T) {
	tests := []struct {
		name string
		data string
		want string
	}{
		{
			name: "missing comma",
			data: "{\n  \"id\": \"a\"\n  \"profile\": \"p\"\n}\n",
			want: "line 3, column 3",
		},
		{
			name: "trailing comma in an array",
			data: "{\n  \"id\": \"a\",\n  \"profile\": \"p\",\n  \"metadata\": {\"a\": [1, 2,]}\n}\n",
			want: "line 4, column 27",
		},
		{
			name: "first character",
			data: "x",
			want: "line 1, column 1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := storage.ParseGroup([]byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseGroup error = %v, want it to say %q", err, tt.want)
			}
		})
	}
}

// TestParseGroupTruncatedPosition checks that a file cut short, the usual
// result of a half-finished save, is reported with a position like every
// other syntax error.
func TestParseGroupTruncatedPosition(t *testing.T) {
	tests := []struct{ name, data, want string }{
		{"cut after a key", "{\n  \"id\": \"a\",\n  \"profile\":", "line 3"},
		{"cut inside a string", "{\n  \"id\": \"a", "line 2"},
		{"missing closing brace", "{\n  \"id\": \"a\",\n  \"profile\": \"p\"\n", "line 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := storage.ParseGroup([]byte(tt.data))
			if !errors.Is(err, matchbox.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseGroup error = %v, want ErrInvalid saying %q", err, tt.want)
			}
		})
	}
}

// TestParseUnknownKeysCaseInsensitive checks that keys encoding/json
// matched to a field (it matches names case-insensitively) are not
// reported as ignored: the warning would tell the operator that a key
// which changed the object had no effect. Each file also holds one really
// unknown key, which must be the only one reported.
func TestParseUnknownKeysCaseInsensitive(t *testing.T) {
	t.Run("group", func(t *testing.T) {
		g, unknown, err := storage.ParseGroup([]byte(`{"ID": "a", "Profile": "p", "SELECTOR": {"os": "x"}, "comment": "c"}`))
		if err != nil {
			t.Fatalf("ParseGroup: %v", err)
		}
		want := &matchbox.Group{ID: "a", Profile: "p", Selector: map[string]string{"os": "x"}}
		if diff := cmp.Diff(want, g, storagetest.GroupOptions); diff != "" {
			t.Errorf("group (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"comment"}, unknown); diff != "" {
			t.Errorf("unknown keys (-want +got):\n%s", diff)
		}
	})
	t.Run("profile", func(t *testing.T) {
		p, unknown, err := storage.ParseProfile([]byte(`{"Id": "p", "Ignition_ID": "x.yaml", "comment": "c"}`))
		if err != nil {
			t.Fatalf("ParseProfile: %v", err)
		}
		if p.ID != "p" || p.IgnitionID != "x.yaml" {
			t.Errorf("profile = %+v, want id p and ignition_id x.yaml", p)
		}
		if diff := cmp.Diff([]string{"comment"}, unknown); diff != "" {
			t.Errorf("unknown keys (-want +got):\n%s", diff)
		}
	})
}

func TestParseProfile(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		want    *matchbox.Profile
		unknown []string
		errHas  string
	}{
		{
			name: "matchbox profile",
			data: `{"id": "install", "name": "Install", "boot": {"kernel": "/k", "initrd": ["/i1", "/i2"], "args": ["a=b", "c"]},
				"ignition_id": "install.yaml", "cloud_id": "c.yaml", "generic_id": "g"}`,
			want: &matchbox.Profile{ID: "install", Name: "Install",
				Boot:       matchbox.Boot{Kernel: "/k", Initrd: []string{"/i1", "/i2"}, Args: []string{"a=b", "c"}},
				IgnitionID: "install.yaml", CloudID: "c.yaml", GenericID: "g"},
		},
		{
			name: "no boot section",
			data: `{"id": "p", "ignition_id": "x.ign"}`,
			want: &matchbox.Profile{ID: "p", IgnitionID: "x.ign"},
		},
		{
			name:    "unknown keys",
			data:    `{"id": "p", "cloud_config": "old", "boot": {"cmdline": {}}}`,
			want:    &matchbox.Profile{ID: "p"},
			unknown: []string{"cloud_config"},
		},
		{name: "no id", data: `{"boot": {"kernel": "/k"}}`, errHas: "no id"},
		{name: "initrd not a list", data: `{"id": "p", "boot": {"initrd": "/i"}}`, errHas: "initrd"},
		{name: "syntax error", data: `{"id": "p",}`, errHas: "bad JSON"},
		{name: "trailing data", data: `{"id": "p"} {}`, errHas: "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, unknown, err := storage.ParseProfile([]byte(tt.data))
			if tt.errHas != "" {
				if !errors.Is(err, matchbox.ErrInvalid) || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("ParseProfile error = %v, want ErrInvalid mentioning %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseProfile: %v", err)
			}
			if diff := cmp.Diff(tt.want, p, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("profile (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.unknown, unknown, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("unknown keys (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseGroup(f *testing.F) {
	for _, s := range []string{
		`{"id": "a", "profile": "p"}`,
		`{"id": "a", "name": "A", "profile": "p", "selector": {"mac": "52-54-00-A1-9C-AE", "os": "installed"}}`,
		`{"id": "a", "profile": "p", "selector": {"MAC": "5254.00a1.9cae"}}`,
		`{"id": "a", "profile": "p", "selector": {"mac": "02:00:00:00:00:00:00:01"}}`,
		`{"id": "a", "profile": "p", "selector": {"mac": "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"}}`,
		`{"id": "a", "profile": "p", "metadata": {"n": 1e300, "neg": -0, "s": "\u00e9\ud800", "l": [[], {}, null, true]}}`,
		`{"id": "a", "profile": "p", "unknown": 1}`,
		`{"id": "a", "profile": "p"} {}`,
		`{"id": "a", "profile": "p", "selector": {"mac": "zz"}}`,
		"{\n  \"id\": \"a\"\n  \"profile\": \"p\"\n}",
		"{\"id\": \"\xff\xfe\", \"profile\": \"p\"}",
		`null`, ``, `[]`, `"x"`, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g, unknown, err := storage.ParseGroup(data)
		if err != nil {
			if g != nil {
				t.Errorf("ParseGroup returned a group along with error %v", err)
			}
			if !errors.Is(err, matchbox.ErrInvalid) {
				t.Errorf("ParseGroup error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if g.ID == "" || g.Profile == "" {
			t.Fatalf("ParseGroup accepted a group without id or profile: %+v", g)
		}
		for k, v := range g.Selector {
			if !strings.EqualFold(k, "mac") {
				continue
			}
			norm, err := matchbox.NormalizeMAC(v)
			if err != nil || norm != v {
				t.Errorf("selector %q = %q is not a normalised MAC (NormalizeMAC: %q, %v)", k, v, norm, err)
			}
		}
		for _, k := range unknown {
			switch k {
			case "id", "name", "profile", "selector", "metadata":
				t.Errorf("known key %q reported as unknown", k)
			}
		}
		// What we parsed, written back in matchbox format, parses to the same group.
		again, err := json.Marshal(g)
		if err != nil {
			t.Fatalf("marshal parsed group: %v", err)
		}
		g2, unknown2, err := storage.ParseGroup(again)
		if err != nil {
			t.Fatalf("ParseGroup of the re-encoded group %s: %v", again, err)
		}
		if diff := cmp.Diff(g, g2, cmpopts.EquateEmpty(), storagetest.GroupOptions); diff != "" {
			t.Errorf("re-parsed group differs (-first +second):\n%s", diff)
		}
		if len(unknown2) != 0 {
			t.Errorf("re-encoded group has unknown keys %q", unknown2)
		}
	})
}

// Every key a profile may hold is known, release included: only the typo
// is reported as ignored.
func TestParseProfileKnowsEveryField(t *testing.T) {
	p, unknown, err := storage.ParseProfile([]byte(`{"id": "p", "release": {"channel": "stable", "version": "current"}, "typo_key": 1}`))
	if err != nil {
		t.Fatalf("ParseProfile: %v", err)
	}
	if p.Release == nil {
		t.Error("release not decoded")
	}
	if diff := cmp.Diff([]string{"typo_key"}, unknown); diff != "" {
		t.Errorf("unknown keys (-want +got):\n%s", diff)
	}
}
