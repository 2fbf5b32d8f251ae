package render

import (
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox"
)

func mustJSONObject(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDataPrecedence(t *testing.T) {
	labels := map[string]string{"mac": "52:54:00:a1:9c:ae", "os": "from-query"}
	tests := []struct {
		name  string
		group *matchbox.Group
		req   Request
		want  map[string]any
	}{
		{name: "metadata only",
			group: &matchbox.Group{Metadata: map[string]any{"k8s": "v1.30", "count": 3.0}},
			req:   Request{},
			want: map[string]any{
				"k8s": "v1.30", "count": 3.0,
				"request": map[string]any{"query": map[string]string{}, "raw_query": ""},
			}},
		{name: "selectors override metadata, keys lowercased",
			group: &matchbox.Group{
				Metadata: map[string]any{"os": "from-metadata", "region": "from-metadata", "keep": "m"},
				Selector: map[string]string{"OS": "from-selector", "Region": "from-selector", "mac": "52:54:00:a1:9c:ae"},
			},
			req: Request{Labels: labels, RawQuery: "mac=52-54-00-a1-9c-ae&os=from-query", Host: "matchbox:8080"},
			want: map[string]any{
				"os": "from-selector", "region": "from-selector", "mac": "52:54:00:a1:9c:ae", "keep": "m",
				"request": map[string]any{
					"query":     map[string]string{"mac": "52:54:00:a1:9c:ae", "os": "from-query"},
					"raw_query": "mac=52-54-00-a1-9c-ae&os=from-query",
					"host":      "matchbox:8080",
				},
			}},
		{name: "request overrides a metadata key named request",
			group: &matchbox.Group{Metadata: map[string]any{"request": map[string]any{"query": "forged", "extra": "x"}}},
			req:   Request{Labels: labels, RawQuery: "q"},
			want: map[string]any{
				"request": map[string]any{"query": labels, "raw_query": "q"},
			}},
		{name: "request overrides a selector named request",
			group: &matchbox.Group{Selector: map[string]string{"Request": "sel"}},
			req:   Request{RawQuery: "request=sel"},
			want: map[string]any{
				"request": map[string]any{"query": map[string]string{}, "raw_query": "request=sel"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Data(tt.group, tt.req)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Data (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDataDoesNotModifyGroup(t *testing.T) {
	g := &matchbox.Group{Metadata: map[string]any{"os": "m"}, Selector: map[string]string{"OS": "s"}}
	d := Data(g, Request{})
	d["extra"] = 1
	if diff := cmp.Diff(map[string]any{"os": "m"}, g.Metadata); diff != "" {
		t.Errorf("group metadata changed (-want +got):\n%s", diff)
	}
}

func TestMetadata(t *testing.T) {
	g := &matchbox.Group{
		Metadata: mustJSONObject(t, `{
			"count": 1000000, "half": 0.5, "neg": -3, "big": 1000000000000000, "tiny": 1e-7,
			"flag": true, "off": false,
			"list": ["a", "b"], "objs": [{"a": 1}], "nums": [1000000, 2.5],
			"nothing": null,
			"nested": {"inner": {"deep": "x", "gone": null}, "n": 2},
			"k8s_version": "v1.30", "ssh-key": "ssh-ed25519 AAAA test", "empty": "",
			"request": "overridden"
		}`),
		Selector: map[string]string{"mac": "52:54:00:a1:9c:ae", "Region": "eu"},
	}
	data := Data(g, Request{
		Labels:   map[string]string{"mac": "52:54:00:a1:9c:ae", "uuid": "u1", "domain": ""},
		RawQuery: "mac=52-54-00-a1-9c-ae&uuid=u1&domain=",
		Host:     "matchbox:8080",
	})
	want := strings.Join([]string{
		"BIG=1000000000000000",
		"COUNT=1000000",
		"EMPTY=",
		"FLAG=true",
		"HALF=0.5",
		"K8S_VERSION=v1.30",
		`LIST=["a","b"]`,
		"MAC=52:54:00:a1:9c:ae",
		"NEG=-3",
		"NESTED_INNER_DEEP=x",
		"NESTED_N=2",
		`NUMS=[1000000,2.5]`,
		`OBJS=[{"a":1}]`,
		"OFF=false",
		"REGION=eu",
		"REQUEST_HOST=matchbox:8080",
		"REQUEST_QUERY_DOMAIN=",
		"REQUEST_QUERY_MAC=52:54:00:a1:9c:ae",
		"REQUEST_QUERY_UUID=u1",
		"REQUEST_RAW_QUERY=mac=52-54-00-a1-9c-ae&uuid=u1&domain=",
		"SSH-KEY=ssh-ed25519 AAAA test",
		"TINY=1e-07",
		"",
	}, "\n")
	got := string(Metadata(data))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Metadata (-want +got):\n%s", diff)
	}
	// Rendering is deterministic despite map iteration order.
	for range 20 {
		if again := string(Metadata(data)); again != got {
			t.Fatalf("Metadata is not deterministic:\n%s\nvs\n%s", got, again)
		}
	}
}

func TestMetadataGoTypes(t *testing.T) {
	// Metadata built in Go (not decoded from JSON) renders the same way.
	got := string(Metadata(map[string]any{
		"int": 42, "num": json.Number("1000000"), "f": 1e6, "strs": []string{"a"},
		"labels": map[string]string{"zone": "a", "Rack": "7"},
		"nil":    nil,
	}))
	want := "F=1000000\nINT=42\nLABELS_RACK=7\nLABELS_ZONE=a\nNUM=1000000\n" + `STRS=["a"]` + "\n"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Metadata (-want +got):\n%s", diff)
	}
	if got := Metadata(nil); len(got) != 0 {
		t.Errorf("Metadata(nil) = %q, want empty", got)
	}
}

// TestMetadataEnvFileFormat: /metadata is an env file, one KEY=value per
// line. A value with a newline (a PEM certificate in group metadata, or a
// query value the machine sends) must not spill into lines that are not
// KEY=value or that set another key (a forged ROLE=master beside the
// group's ROLE=worker), and an empty key must not give a line "=value",
// whatever escaping or omission is chosen for them.
func TestMetadataEnvFileFormat(t *testing.T) {
	tests := []struct {
		name     string
		metadata map[string]any
		query    string
	}{
		{name: "multi-line metadata value",
			metadata: map[string]any{"role": "worker", "pem": "-----BEGIN CERTIFICATE-----\nMIIB\nROLE=master\n-----END CERTIFICATE-----\n"}},
		{name: "multi-line query value",
			metadata: map[string]any{"role": "worker"},
			query:    "mac=52-54-00-a1-9c-ae&hostname=evil%0AROLE=master"},
		{name: "carriage return in query key",
			metadata: map[string]any{"role": "worker"},
			query:    "x%0D%0AROLE=master"},
		{name: "empty metadata key",
			metadata: map[string]any{"role": "worker", "": "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			// The boot endpoints refuse such labels (ParseLabels); the env
			// file holds even for labels that never passed through it.
			labels := make(map[string]string, len(q))
			for k, vs := range q {
				labels[k] = vs[0]
			}
			out := Metadata(Data(&matchbox.Group{Metadata: tt.metadata}, Request{Labels: labels, RawQuery: q.Encode()}))
			lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
			for _, l := range lines {
				if strings.TrimSuffix(l, "\r") == "ROLE=master" {
					t.Errorf("a value added the line ROLE=master")
				}
				if key, _, ok := strings.Cut(l, "="); !ok || key == "" || strings.ContainsAny(key, "\r\n") {
					t.Errorf("line %q is not KEY=value", l)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

// checkEnvFile checks the properties every /metadata body has.
func checkEnvFile(t *testing.T, out []byte) {
	t.Helper()
	if len(out) == 0 {
		return
	}
	if out[len(out)-1] != '\n' {
		t.Fatalf("output does not end with a newline: %q", out)
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if !slices.IsSorted(lines) {
		t.Errorf("lines are not sorted:\n%s", out)
	}
	for _, l := range lines {
		key, _, ok := strings.Cut(l, "=")
		if !ok || key == "" {
			t.Errorf("line %q is not KEY=value", l)
			continue
		}
		if key != strings.ToUpper(key) {
			t.Errorf("key %q is not upper case", key)
		}
	}
}

func FuzzMetadata(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"a": "b"}`,
		`{"count": 1000000, "half": 0.5, "big": 1e300, "neg": -0, "small": -1e-300}`,
		`{"flag": true, "list": [1, "a", null, {"x": 1}], "nothing": null}`,
		`{"nested": {"inner": {"deep": {"deeper": "x"}}, "n": 2}}`,
		`{"request": {"query": {"mac": "x"}}, "REQUEST": 1}`,
		`{"ä": "ü", "ß": "x", "ǆ": "titlecase"}`,
		`{"a_b": "1", "a": {"b": "2"}}`,
		`{"emptyobj": {}, "emptylist": []}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, js string) {
		var m map[string]any
		if err := json.Unmarshal([]byte(js), &m); err != nil {
			return
		}
		out := Metadata(m)
		checkEnvFile(t, out)
		if again := Metadata(m); string(again) != string(out) {
			t.Errorf("Metadata is not deterministic: %q vs %q", out, again)
		}
	})
}

func FuzzTemplateData(f *testing.F) {
	for _, s := range []struct{ query, metadata string }{
		{"mac=52-54-00-a1-9c-ae&uuid=u1", `{"hostname": "node1"}`},
		{"uuid=${uuid}&mac=52:54:00:a1:9c:ae&domain=&hostname=&serial=&arch=x86_64", `{}`},
		{"mac=5254.00a1.9cae&hostname=a%0Ab", `{"hostname": 1e6}`},
		{"", `{"request": "x"}`},
		{"mac=bad", `{"a": [1,2]}`},
		{"hostname={{.x}}", `{"hostname": "{{.y}}"}`},
		{"%zz&a=1", `null`},
	} {
		f.Add(s.query, s.metadata)
	}
	e := NewEngine(Options{})
	p := &matchbox.Profile{ID: "p", Boot: matchbox.Boot{
		Kernel: "/assets/vmlinuz",
		Initrd: []string{"/assets/initrd"},
		Args: []string{
			"mac={{.request.query.mac}}",
			"host={{.request.host}}",
			"raw={{.request.raw_query}}",
			"uuid=${uuid}",
		},
	}}
	f.Fuzz(func(t *testing.T, query, metadata string) {
		values, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		labels, err := matchbox.ParseLabels(values)
		if err != nil {
			if !errors.Is(err, matchbox.ErrInvalid) {
				t.Fatalf("ParseLabels: %v", err)
			}
			return
		}
		var md map[string]any
		_ = json.Unmarshal([]byte(metadata), &md)
		g := &matchbox.Group{ID: "g", Profile: "p", Metadata: md, Selector: map[string]string{"os": "flatcar"}}
		data := Data(g, Request{Labels: labels, RawQuery: query, Host: "matchbox:8080"})
		_ = Metadata(data)
		out, err := e.IPXE(t.Context(), matchbox.Selection{Group: g, Profile: p}, data)
		mac, hasMAC := labels["mac"]
		if !hasMAC {
			var rerr *Error
			if !errors.As(err, &rerr) {
				t.Fatalf("IPXE without a mac label = %q, %v; want a *render.Error", out, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("IPXE: %v", err)
		}
		want := "#!ipxe\nkernel /assets/vmlinuz mac=" + mac + " host=matchbox:8080 raw=" + query + " uuid=${uuid}\ninitrd /assets/initrd\nboot\n"
		if string(out) != want {
			t.Errorf("IPXE = %q, want %q", out, want)
		}
	})
}

func TestSprigFunctions(t *testing.T) {
	data := Data(&matchbox.Group{Metadata: map[string]any{
		"x": "", "y": "flatcar", "v": "set", "list": []any{"a", "b"}, "n": 3.0,
	}}, Request{Labels: map[string]string{"mac": "52:54:00:a1:9c:ae"}})
	tests := []struct{ src, want string }{
		{`{{ .x | default "d" }}`, "d"},
		{`{{ .v | default "d" }}`, "set"},
		{`{{ index . "absent" | default "d" }}`, "d"},
		{`{{ upper .y }}`, "FLATCAR"},
		{`{{ .y | b64enc }}`, "ZmxhdGNhcg=="},
		{`{{ .list | join "," }}`, "a,b"},
		{`{{ .request.query.mac | replace ":" "" }}`, "525400a19cae"},
		{`{{ add .n 1 }}`, "4"},
		{`{{ hasKey . "y" }} {{ hasKey . "absent" }}`, "true false"},
		{`{{ .y | quote }}`, `"flatcar"`},
	}
	e := NewEngine(Options{})
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			snap := matchbox.NewSnapshot(matchbox.Objects{
				Profiles:  []*matchbox.Profile{{ID: "p", GenericID: "g"}},
				Templates: []*matchbox.Template{{Kind: matchbox.KindGeneric, Name: "g", Content: []byte(tt.src)}},
			})
			p, _ := snap.Profile("p")
			got, err := e.Template(t.Context(), snap, matchbox.Selection{Group: &matchbox.Group{ID: "grp"}, Profile: p}, matchbox.KindGeneric, data)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("%s = %q, want %q", tt.src, got, tt.want)
			}
		})
	}
	// missingkey=error applies before any function sees the value, as in
	// poseidon/matchbox: `.absent | default` is an error, not the default.
	snap := matchbox.NewSnapshot(matchbox.Objects{
		Profiles:  []*matchbox.Profile{{ID: "p", GenericID: "g"}},
		Templates: []*matchbox.Template{{Kind: matchbox.KindGeneric, Name: "g", Content: []byte(`{{ .absent | default "d" }}`)}},
	})
	p, _ := snap.Profile("p")
	if out, err := e.Template(t.Context(), snap, matchbox.Selection{Group: &matchbox.Group{ID: "grp"}, Profile: p}, matchbox.KindGeneric, data); err == nil {
		t.Errorf("missing key with default = %q, want an error", out)
	}
}

func TestCloudAndGenericTemplates(t *testing.T) {
	snap := matchbox.NewSnapshot(matchbox.Objects{
		Profiles: []*matchbox.Profile{
			{ID: "full", CloudID: "c.tmpl", GenericID: "g.tmpl"},
			{ID: "none"},
			{ID: "dangling", CloudID: "gone.tmpl"},
			{ID: "missingkey", GenericID: "needs.tmpl"},
			{ID: "syntax", GenericID: "bad.tmpl"},
		},
		Templates: []*matchbox.Template{
			{Kind: matchbox.KindCloud, Name: "c.tmpl", Origin: "cloud/c.tmpl", Content: []byte("#cloud-config\nhostname: {{.hostname}}\nmac: {{.request.query.mac}}\n")},
			{Kind: matchbox.KindGeneric, Name: "g.tmpl", Origin: "generic/g.tmpl", Content: []byte("HOST={{.request.host}} OS={{.os}}\n")},
			{Kind: matchbox.KindGeneric, Name: "needs.tmpl", Origin: "generic/needs.tmpl", Content: []byte("{{.nope}}")},
			{Kind: matchbox.KindGeneric, Name: "bad.tmpl", Origin: "generic/bad.tmpl", Content: []byte("{{.nope")},
		},
	})
	g := &matchbox.Group{ID: "grp", Metadata: map[string]any{"hostname": "node1"}, Selector: map[string]string{"os": "flatcar"}}
	data := Data(g, Request{Labels: map[string]string{"mac": "52:54:00:a1:9c:ae"}, Host: "matchbox:8080"})
	e := NewEngine(Options{})
	sel := func(id string) matchbox.Selection {
		p, ok := snap.Profile(id)
		if !ok {
			t.Fatalf("no profile %s", id)
		}
		return matchbox.Selection{Group: g, Profile: p}
	}
	tests := []struct {
		name      string
		profile   string
		kind      matchbox.TemplateKind
		want      string
		notFound  bool
		renderErr []string
	}{
		{name: "cloud", profile: "full", kind: matchbox.KindCloud, want: "#cloud-config\nhostname: node1\nmac: 52:54:00:a1:9c:ae\n"},
		{name: "generic", profile: "full", kind: matchbox.KindGeneric, want: "HOST=matchbox:8080 OS=flatcar\n"},
		{name: "profile names none", profile: "none", kind: matchbox.KindCloud, notFound: true},
		{name: "template missing", profile: "dangling", kind: matchbox.KindCloud, notFound: true},
		{name: "missing key", profile: "missingkey", kind: matchbox.KindGeneric, renderErr: []string{"generic/needs.tmpl", "nope"}},
		{name: "syntax error", profile: "syntax", kind: matchbox.KindGeneric, renderErr: []string{"generic/bad.tmpl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.Template(t.Context(), snap, sel(tt.profile), tt.kind, data)
			switch {
			case tt.notFound:
				if !errors.Is(err, matchbox.ErrNotFound) {
					t.Errorf("Template = %q, %v; want ErrNotFound", got, err)
				}
			case tt.renderErr != nil:
				var rerr *Error
				if !errors.As(err, &rerr) {
					t.Fatalf("Template = %q, %v; want a *render.Error", got, err)
				}
				if errors.Is(err, matchbox.ErrNotFound) {
					t.Errorf("render failure %v must not be a not-found", err)
				}
				for _, s := range tt.renderErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tt.want, string(got)); diff != "" {
					t.Errorf("Template (-want +got):\n%s", diff)
				}
			}
		})
	}
}
