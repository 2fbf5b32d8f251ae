package main

// Compatibility suite: for the data dir in testdata/compat (poseidon/matchbox
// layout), every query must select the same group and profile and render the
// same iPXE, GRUB, Ignition, generic, cloud and metadata bodies as
// poseidon/matchbox, except for the improvements documented in
// docs/compatibility.md.
//
// The reference below is an independent model of poseidon/matchbox's
// behaviour (loading, labels, selection, template data, renderers), written
// from its rules, not from this repository's implementation. It renders
// templates as poseidon/matchbox does, with plain text/template and
// missingkey=error and no functions beyond text/template's built-ins, so
// the fixtures' shared scenarios use only those. Each documented
// difference is applied to the reference's answer explicitly (see
// refExpect), so any other difference fails a subtest that names the query,
// the endpoint and the difference. One of them: ours offers sprig's
// functions (docs/compatibility.md lists them) and poseidon/matchbox cannot
// parse a template that calls one, so what ours renders from it is written
// out literally (extensionBodies).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"text/template"

	butane "github.com/coreos/butane/config"
	butanecommon "github.com/coreos/butane/config/common"
	"github.com/google/go-cmp/cmp"

	"matchbox.dev/matchbox"
	mbhttp "matchbox.dev/matchbox/http"
	"matchbox.dev/matchbox/render"
	"matchbox.dev/matchbox/storage"
)

const compatDir = "testdata/compat"

// ---------------------------------------------------------------------------
// Reference: poseidon/matchbox's behaviour.
// ---------------------------------------------------------------------------

type refGroup struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Profile  string            `json:"profile"`
	Selector map[string]string `json:"selector"`
	Metadata json.RawMessage   `json:"metadata"`
}

type refBoot struct {
	Kernel string   `json:"kernel"`
	Initrd []string `json:"initrd"`
	Args   []string `json:"args"`
}

type refProfile struct {
	ID         string  `json:"id"`
	Boot       refBoot `json:"boot"`
	IgnitionID string  `json:"ignition_id"`
	CloudID    string  `json:"cloud_id"`
	GenericID  string  `json:"generic_id"`
}

type reference struct {
	dir    string
	groups []*refGroup
}

// loadReference reads groups/*.json as poseidon/matchbox does: mac selector
// values are normalised with net.ParseMAC.
func loadReference(t *testing.T, dir string) *reference {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "groups", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no groups in %s: %v", dir, err)
	}
	r := &reference{dir: dir}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		g := &refGroup{}
		if err := json.Unmarshal(b, g); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for k, v := range g.Selector {
			if strings.ToLower(k) == "mac" {
				hw, err := net.ParseMAC(v)
				if err != nil {
					t.Fatalf("%s: selector %s: %v", p, k, err)
				}
				g.Selector[k] = hw.String()
			}
		}
		r.groups = append(r.groups, g)
	}
	return r
}

// profile reads profiles/<name>.json, the file a group's profile names.
func (r *reference) profile(name string) (*refProfile, bool) {
	b, err := os.ReadFile(filepath.Join(r.dir, "profiles", name+".json"))
	if err != nil {
		return nil, false
	}
	p := &refProfile{}
	if err := json.Unmarshal(b, p); err != nil {
		return nil, false
	}
	return p, true
}

// refLabels turns a raw query into labels the way poseidon/matchbox does
// (req.URL.Query(), which drops malformed pairs): the first value of each
// key; a key equal to "mac" in any case is parsed and stored, under the key
// as sent, in normalised form, or dropped when it does not parse. malformed
// and dropped tell whether our server answers 400 instead (documented).
func refLabels(raw string) (labels map[string]string, malformed, dropped bool) {
	values, err := url.ParseQuery(raw)
	malformed = err != nil
	labels = map[string]string{}
	for key := range values {
		if strings.ToLower(key) == "mac" {
			hw, err := net.ParseMAC(values.Get(key))
			if err != nil {
				dropped = true
				continue
			}
			labels[key] = hw.String()
			continue
		}
		labels[key] = values.Get(key)
	}
	return labels, malformed, dropped
}

func refSelectorString(g *refGroup) string {
	pairs := make([]string, 0, len(g.Selector))
	for k, v := range g.Selector {
		pairs = append(pairs, k+"="+v)
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

// byReqs is poseidon/matchbox's group order.
type byReqs []*refGroup

func (g byReqs) Len() int      { return len(g) }
func (g byReqs) Swap(i, j int) { g[i], g[j] = g[j], g[i] }
func (g byReqs) Less(i, j int) bool {
	if len(g[i].Selector) == len(g[j].Selector) {
		return refSelectorString(g[i]) < refSelectorString(g[j])
	}
	return len(g[i].Selector) < len(g[j].Selector)
}

func refMatches(g *refGroup, labels map[string]string) bool {
	for k, v := range g.Selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// selectGroup returns poseidon/matchbox's choice and the matching groups
// tied with it (same selector string: matchbox's choice among them is
// undefined), sorted by id.
func (r *reference) selectGroup(labels map[string]string) (*refGroup, []*refGroup) {
	gs := slices.Clone(r.groups)
	sort.Sort(sort.Reverse(byReqs(gs)))
	var winner *refGroup
	for _, g := range gs {
		if refMatches(g, labels) {
			winner = g
			break
		}
	}
	if winner == nil {
		return nil, nil
	}
	var tied []*refGroup
	for _, g := range gs {
		if refMatches(g, labels) && refSelectorString(g) == refSelectorString(winner) {
			tied = append(tied, g)
		}
	}
	slices.SortFunc(tied, func(a, b *refGroup) int { return strings.Compare(a.ID, b.ID) })
	return winner, tied
}

// refData is the template data: metadata, then selectors (keys lowercased),
// then request.query and request.raw_query.
func refData(t *testing.T, g *refGroup, labels map[string]string, raw string) map[string]any {
	t.Helper()
	data := map[string]any{}
	if len(g.Metadata) > 0 {
		if err := json.Unmarshal(g.Metadata, &data); err != nil {
			t.Fatalf("group %s metadata: %v", g.ID, err)
		}
	}
	for k, v := range g.Selector {
		data[strings.ToLower(k)] = v
	}
	data["request"] = map[string]any{"query": labels, "raw_query": raw}
	return data
}

// refTemplate parses a template as poseidon/matchbox's renderTemplate
// does: no functions of its own, missingkey=error.
func refTemplate(name, text string) (*template.Template, error) {
	return template.New(name).Option("missingkey=error").Parse(text)
}

const refIPXE = "#!ipxe\nkernel {{.Kernel}}{{range $arg := .Args}} {{$arg}}{{end}}\n{{- range $element := .Initrd }}\ninitrd {{$element}}\n{{- end}}\nboot\n"

const refGRUB = "default=0\nfallback=1\ntimeout=1\nmenuentry \"CoreOS (EFI)\" {\necho \"Loading kernel\"\nlinuxefi \"{{.Kernel}}\"{{range $arg := .Args}} {{$arg}}{{end}}\necho \"Loading initrd\"\ninitrdefi {{ range $element := .Initrd }} \"{{$element}}\"{{end}}\n}\nmenuentry \"CoreOS (BIOS)\" {\necho \"Loading kernel\"\nlinux \"{{.Kernel}}\"{{range $arg := .Args}} {{$arg}}{{end}}\necho \"Loading initrd\"\ninitrd {{ range $element := .Initrd }} \"{{$element}}\"{{end}}\n}\n"

func execBoot(t *testing.T, tmpl string, boot refBoot) string {
	t.Helper()
	tp := template.Must(template.New("boot").Parse(tmpl))
	var b bytes.Buffer
	if err := tp.Execute(&b, boot); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// refEnvLine is one leaf of the metadata env file.
type refEnvLine struct {
	key   string
	value any // string, bool, float64 or (ours only) []any
}

// refEnv walks data as poseidon/matchbox's renderAsEnvFile does. With
// arrays set it also returns array leaves, which only our server prints
// (documented).
func refEnv(prefix string, data map[string]any, arrays bool) []refEnvLine {
	var out []refEnvLine
	for key, value := range data {
		k := strings.ToUpper(prefix + key)
		switch v := value.(type) {
		case string, bool, float64:
			out = append(out, refEnvLine{k, v})
		case []any:
			if arrays {
				out = append(out, refEnvLine{k, v})
			}
		case map[string]string:
			m := make(map[string]any, len(v))
			for kk, vv := range v {
				m[kk] = vv
			}
			out = append(out, refEnv(k+"_", m, arrays)...)
		case map[string]any:
			out = append(out, refEnv(k+"_", v, arrays)...)
		}
	}
	return out
}

// refMetadataLines returns poseidon/matchbox's /metadata lines (order
// unspecified) and the same lines with exactly the documented differences
// applied, sorted: whole numbers as integers, arrays JSON-encoded, CR and
// LF in values escaped, keys with "=" or a newline left out.
func refMetadataLines(data map[string]any) (matchboxLines, normalised []string) {
	for _, l := range refEnv("", data, false) {
		matchboxLines = append(matchboxLines, fmt.Sprintf("%s=%v", l.key, l.value))
	}
	esc := strings.NewReplacer("\r", `\r`, "\n", `\n`)
	for _, l := range refEnv("", data, true) {
		if strings.ContainsAny(l.key, "=\n") {
			continue
		}
		var v string
		switch x := l.value.(type) {
		case float64:
			if x == math.Trunc(x) && math.Abs(x) < 1e15 {
				v = strconv.FormatFloat(x, 'f', -1, 64)
			} else {
				v = fmt.Sprintf("%v", x)
			}
		case []any:
			b, err := json.Marshal(x)
			if err != nil {
				panic(err)
			}
			v = string(b)
		case string:
			v = esc.Replace(x)
		default:
			v = fmt.Sprintf("%v", x)
		}
		normalised = append(normalised, l.key+"="+v)
	}
	sort.Strings(normalised)
	return matchboxLines, normalised
}

// refResult is the reference's answer for one endpoint.
type refResult struct {
	code int    // 200 or 404; 0 when matchbox fails to render (our 500)
	body []byte // for 200
	err  error  // why rendering failed
	json bool   // compare as JSON (rendered Butane)
}

func (r *reference) readTemplate(kind, name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(r.dir, kind, name))
}

// render answers one endpoint for group g, as poseidon/matchbox does.
func (r *reference) render(t *testing.T, endpoint string, g *refGroup, labels map[string]string, raw string) refResult {
	t.Helper()
	data := refData(t, g, labels, raw)
	if endpoint == "metadata" {
		_, norm := refMetadataLines(data)
		return refResult{code: 200, body: []byte(strings.Join(norm, "\n"))}
	}
	p, ok := r.profile(g.Profile)
	if !ok {
		return refResult{code: 404}
	}
	switch endpoint {
	case "ipxe":
		return refResult{code: 200, body: []byte(execBoot(t, refIPXE, p.Boot))}
	case "grub":
		return refResult{code: 200, body: []byte(execBoot(t, refGRUB, p.Boot))}
	}
	var kind, name string
	switch endpoint {
	case "ignition":
		kind, name = "ignition", p.IgnitionID
	case "generic":
		kind, name = "generic", p.GenericID
	case "cloud":
		kind, name = "cloud", p.CloudID
	}
	if name == "" {
		return refResult{code: 404}
	}
	src, err := r.readTemplate(kind, name)
	if err != nil {
		return refResult{code: 404}
	}
	if kind == "ignition" && (strings.HasSuffix(name, ".ign") || strings.HasSuffix(name, ".ignition")) {
		return refResult{code: 200, body: src}
	}
	tp, err := refTemplate(name, string(src))
	if err != nil {
		return refResult{err: err}
	}
	var b bytes.Buffer
	if err := tp.Execute(&b, data); err != nil {
		return refResult{err: err}
	}
	if kind != "ignition" {
		return refResult{code: 200, body: b.Bytes()}
	}
	out, rep, err := butane.TranslateBytes(b.Bytes(), butanecommon.TranslateBytesOptions{Raw: true})
	if err != nil {
		return refResult{err: fmt.Errorf("butane: %v: %s", err, rep.String())}
	}
	return refResult{code: 200, body: out, json: true}
}

// ---------------------------------------------------------------------------
// Documented differences applied to the reference.
// ---------------------------------------------------------------------------

var namedInitrd = regexp.MustCompile(`^--name\s+\S+\s+(\S+)$`)

// expectation is what our server must answer.
type expectation struct {
	code int
	body []byte
	json bool
	// documented lists the documented differences applied.
	documented []string
}

// undefinedFunc finds the function a template failed to parse for.
var undefinedFunc = regexp.MustCompile(`function "([^"]+)" not defined`)

// extensionBodies is what ours serves, by "endpoint?raw query", for a
// template that calls a sprig function: poseidon/matchbox does not parse
// such a template (function not defined, 404), so the reference has no
// body to compare with and the body is pinned here.
var extensionBodies = map[string]string{
	"generic?ext=sprig&hostname=s1": "# sprig functions: a matchbox extension, not defined on poseidon/matchbox.\n" +
		"channel=STABLE group=\"ext-sprig\"\nhostname=s1\nraw_query=ext=sprig&hostname=s1\n",
	"generic?ext=sprig": "# sprig functions: a matchbox extension, not defined on poseidon/matchbox.\n" +
		"channel=STABLE group=\"ext-sprig\"\nhostname=unnamed\nraw_query=ext=sprig\n",
}

// refExpect turns the reference's answer into ours by applying only the
// documented improvements.
func (r *reference) refExpect(t *testing.T, endpoint string, g *refGroup, labels map[string]string, raw string) expectation {
	t.Helper()
	res := r.render(t, endpoint, g, labels, raw)
	if res.code == 0 {
		if m := undefinedFunc.FindStringSubmatch(res.err.Error()); m != nil && slices.Contains(render.ExtensionFuncs(), m[1]) {
			body, ok := extensionBodies[endpoint+"?"+raw]
			if !ok {
				t.Fatalf("/%s?%s calls the sprig function %s: add what ours renders to extensionBodies", endpoint, raw, m[1])
			}
			return expectation{code: 200, body: []byte(body), documented: []string{
				"sprig function " + m[1] + " is a matchbox extension: ours renders, matchbox fails to parse (" + res.err.Error() + ") and answers 404"}}
		}
		return expectation{code: 500, documented: []string{"render failure is 500, matchbox: 404 or empty 200 (" + res.err.Error() + ")"}}
	}
	e := expectation{code: res.code, body: res.body, json: res.json}
	if res.code != 200 || (endpoint != "ipxe" && endpoint != "grub") {
		if endpoint == "metadata" {
			e.documented = append(e.documented, "metadata: sorted, integers, arrays, escapes, invalid keys left out")
		}
		return e
	}
	p, _ := r.profile(g.Profile)
	boot := p.Boot
	if boot.Kernel == "" {
		return expectation{code: 500, documented: []string{"profile without boot.kernel is 500, matchbox: empty kernel line"}}
	}
	changed := false
	if slices.ContainsFunc(boot.Args, func(a string) bool { return strings.Contains(a, "{{") }) {
		data := refData(t, g, labels, raw)
		args := make([]string, len(boot.Args))
		for i, a := range boot.Args {
			if !strings.Contains(a, "{{") {
				args[i] = a
				continue
			}
			tp, err := refTemplate("arg", a)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if err := tp.Execute(&b, data); err != nil {
				return expectation{code: 500, documented: []string{"templated kernel arg fails: " + err.Error()}}
			}
			args[i] = b.String()
		}
		boot.Args = args
		changed = true
		e.documented = append(e.documented, "kernel args are templates")
	}
	if endpoint == "grub" {
		initrd := make([]string, len(boot.Initrd))
		for i, s := range boot.Initrd {
			initrd[i] = s
			if m := namedInitrd.FindStringSubmatch(s); m != nil {
				initrd[i] = m[1]
				changed = true
				e.documented = append(e.documented, "GRUB initrd --name X /path becomes /path")
			}
		}
		boot.Initrd = initrd
	}
	if changed {
		tmpl := refIPXE
		if endpoint == "grub" {
			tmpl = refGRUB
		}
		e.body = []byte(execBoot(t, tmpl, boot))
	}
	return e
}

// ---------------------------------------------------------------------------
// Our server, loaded the way `matchbox serve` loads it.
// ---------------------------------------------------------------------------

func compatServer(t *testing.T) (*httptest.Server, *matchbox.Snapshot) {
	t.Helper()
	return compatServerDir(t, compatDir)
}

func compatServerDir(t *testing.T, dir string) (*httptest.Server, *matchbox.Snapshot) {
	t.Helper()
	ctx := context.Background()
	objs, err := storage.NewDataDir(dir, nil).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Problems) > 0 {
		t.Errorf("data dir problems: %v", objs.Problems)
	}
	catalog := matchbox.NewCatalog("datadir", "db")
	snap := catalog.UpdateSources(ctx, map[string]matchbox.Objects{"datadir": objs, "db": {}})
	engine := render.NewEngine(render.Options{})
	srv := mbhttp.New(mbhttp.Config{Catalog: catalog, Engine: engine})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts, snap
}

func compatGet(t *testing.T, ts *httptest.Server, endpoint, rawQuery string) (int, []byte) {
	t.Helper()
	u := ts.URL + "/" + endpoint
	if rawQuery != "" {
		u += "?" + rawQuery
	}
	resp, err := ts.Client().Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

type compatCase struct {
	name  string
	query string
	// group is the group both must select ("" when ours answers 400).
	group string
}

var compatCases = []compatCase{
	// Default group.
	{"empty_query", "", "default"},
	{"unknown_labels_only", "foo=bar&baz=1", "default"},
	{"boot_ipxe_labels_unknown_mac", "uuid=8a1c6f9e-0d2b-4c3a-9f00-2b6c7e1d0a11&mac=52-54-00-99-99-99&domain=&hostname=&serial=&arch=x86_64", "default"},
	// MAC spellings.
	{"mac_colon", "mac=52:54:00:12:34:56", "node1"},
	{"mac_hyphen", "mac=52-54-00-12-34-56", "node1"},
	{"mac_dot", "mac=5254.0012.3456", "node1"},
	{"mac_percent_encoded", "mac=52%3A54%3A00%3A12%3A34%3A56", "node1"},
	{"mac_upper_colon", "mac=52:54:00:AB:CD:EF", "node2"},
	{"mac_upper_hyphen", "mac=52-54-00-AB-CD-EF", "node2"},
	{"mac_lower_dot", "mac=5254.00ab.cdef", "node2"},
	{"mac_upper_dot", "mac=5254.00AB.CDEF", "node2"},
	{"key_MAC_not_mac_selector", "MAC=52:54:00:12:34:56", "default"},
	{"key_Mac_not_mac_selector", "Mac=52-54-00-ab-cd-ef", "default"},
	{"key_MAC_matches_MAC_selector", "MAC=52-54-00-00-00-0D", "mac-key"},
	{"key_MAC_dot_matches_MAC_selector", "MAC=5254.0000.000d", "mac-key"},
	{"key_mac_not_MAC_selector", "mac=52:54:00:00:00:0d", "default"},
	{"mac_eui64", "mac=02:00:5e:10:00:00:00:01", "default"},
	{"mac_repeated_first_wins", "mac=52:54:00:12:34:56&mac=52:54:00:ab:cd:ef", "node1"},
	// A group that needs an extra label.
	{"node2_installed", "mac=52:54:00:ab:cd:ef&os=installed", "node2-installed"},
	{"node2_installed_reordered", "os=installed&mac=52-54-00-AB-CD-EF", "node2-installed"},
	{"node2_installed_extra_labels", "os=installed&mac=5254.00ab.cdef&uuid=u-2&hostname=node2&serial=XYZ", "node2-installed"},
	// Ties: equal selector counts, greatest selector string wins.
	{"tie_os_installed_beats_mac", "mac=52:54:00:12:34:56&os=installed", "installed"},
	{"tie_os_fcos_beats_mac", "os=fcos&mac=5254.0012.3456", "fcos"},
	{"installed", "os=installed", "installed"},
	{"installed_case_sensitive", "os=Installed", "default"},
	{"fcos", "os=fcos&hostname=f1", "fcos"},
	{"eu_rack1", "region=eu&rack=1", "eu-rack1"},
	{"eu_os_x", "region=eu&os=x", "eu-os-x"},
	{"tie_rack_beats_os_x", "region=eu&rack=1&os=x", "eu-rack1"},
	{"three_selectors_win", "region=eu&rack=1&mac=52:54:00:00:00:0c", "eu-rack1-mac"},
	{"three_selectors_repeated_os", "mac=52-54-00-00-00-0C&rack=1&region=eu&os=x&os=installed", "eu-rack1-mac"},
	{"tie_rack_beats_mac_os_installed", "os=installed&region=eu&rack=1&mac=52:54:00:ab:cd:ef", "eu-rack1"},
	{"region_case_sensitive", "region=EU&rack=1", "default"},
	{"rack_2", "region=eu&rack=2", "default"},
	{"rack_extra_labels", "region=eu&rack=1&hostname=r1&domain=eu.example.com", "eu-rack1"},
	// Case-sensitive values.
	{"env_Prod", "env=Prod", "case"},
	{"env_prod", "env=prod", "default"},
	{"env_PROD", "env=PROD", "default"},
	{"env_Prod_extra", "env=Prod&hostname=raw1&mac=52:54:00:12:34:57", "case"},
	// Empty-valued selector.
	{"worker_no_domain", "role=worker&hostname=w1", "worker-nodomain"},
	{"worker_empty_domain", "role=worker&domain=&hostname=w2", "worker-nodomain"},
	{"worker_domain", "role=worker&domain=example.com&hostname=w3", "worker"},
	{"worker_no_hostname_template_fails", "role=worker&domain=example.com", "worker"},
	// Identical selector sets (matchbox: undefined; ours: lowest id).
	{"identical_selectors", "team=blue", "dup-a"},
	{"identical_selectors_beat_mac", "team=blue&mac=52:54:00:12:34:56", "dup-a"},
	// Upper-case selector key: template data has it lowercased.
	{"Zone_selector", "Zone=z1&hostname=Zed", "zone"},
	{"zone_lower_not_Zone", "zone=z1", "default"},
	// Templated kernel args (ours only; asserted again in TestCompatTemplatedArgs).
	{"templated_args", "role=templated&hostname=h1&serial=sn-42", "templated"},
	{"templated_args_defaults", "role=templated", "templated"},
	// Template variables: escapes in the query, odd label names.
	{"query_escapes", "mac=52:54:00:12:34:56&hostname=a+b&note=x%26y%3Dz", "node1"},
	{"query_equals_labels", "mac=52-54-00-ab-cd-ef&x%3Dy=1&x-request-id=abc.def", "node2"},
	{"query_unicode", "hostname=gr%C3%BC%C3%9Fe&foo=%E2%9C%93", "default"},
	{"query_unicode_key", "%C3%BCber=1&os=fcos", "fcos"},
	{"query_empty_and_bare_keys", "=foo&debug&os=installed", "installed"},
	{"query_repeated_key_empty_first", "os=&os=installed", "default"},
	{"query_mac_and_MAC_keys", "mac=52:54:00:12:34:56&MAC=52-54-00-00-00-0d", "node1"},
	// Template functions. Documented: ours renders sprig's functions (200),
	// matchbox does not parse the template (404). Go's built-in slice, not
	// sprig's, renders the same on both.
	{"sprig_extension_upper_quote", "ext=sprig&hostname=s1", "ext-sprig"},
	{"sprig_extension_default", "ext=sprig", "ext-sprig"},
	{"builtin_slice", "ext=slice&mac=52:54:00:5a:1c:e0", "ext-slice"},
	{"builtin_slice_mac_dot", "mac=5254.005A.1CE0&ext=slice&hostname=s2", "ext-slice"},
	// Documented: our 400 where matchbox drops the label or pair.
	{"mac_not_a_mac", "mac=not-a-mac", ""},
	{"mac_empty", "mac=", ""},
	{"mac_bad_first_value", "mac=garbage&mac=52:54:00:12:34:56", ""},
	{"MAC_key_bad", "MAC=zz&os=installed", ""},
	{"malformed_escape", "mac=52:54:00:12:34:56&bad=%zz", ""},
	{"semicolon_separator", "mac=52:54:00:12:34:56;os=installed", ""},
	{"query_newline_label", "mac=52-54-00-ab-cd-ef&note=line1%0Aline2", ""},
	{"query_escape_sequence_label", "mac=52-54-00-ab-cd-ef&hostname=%1B%5B2J", ""},
	{"query_bidi_override_label", "os=%E2%80%AEdellatsni", ""},
	{"query_invalid_utf8_label", "mac=52-54-00-ab-cd-ef&serial=%FF", ""},
	{"query_control_in_key", "mac=52-54-00-ab-cd-ef&ro%0Ale=x", ""},
}

var compatEndpoints = []string{"ipxe", "grub", "ignition", "generic", "cloud", "metadata"}

var groupNameLine = regexp.MustCompile(`(?m)^GROUP_NAME=(.*)$`)

// TestCompatQueries runs every query against every endpoint of our server
// and of the reference.
func TestCompatQueries(t *testing.T) {
	if len(compatCases) < 40 {
		t.Fatalf("only %d cases", len(compatCases))
	}
	ts, _ := compatServer(t)
	ref := loadReference(t, compatDir)
	for i, tc := range compatCases {
		t.Run(fmt.Sprintf("%02d_%s", i, tc.name), func(t *testing.T) {
			labels, malformed, dropped := refLabels(tc.query)
			unprintable := false
			for k, v := range labels {
				unprintable = unprintable || matchbox.CheckLabel("label", k, v) != nil
			}
			if malformed || dropped || unprintable {
				why := "mac that is not a MAC address"
				switch {
				case malformed:
					why = "malformed query"
				case unprintable:
					why = "a label holding a control or format character, or invalid UTF-8"
				}
				var refGroupID string
				if g, _ := ref.selectGroup(labels); g != nil {
					refGroupID = g.ID
				}
				if tc.group != "" {
					t.Fatalf("case lists group %q but the query is a documented 400 (%s)", tc.group, why)
				}
				for _, ep := range compatEndpoints {
					code, body := compatGet(t, ts, ep, tc.query)
					if code != 400 {
						t.Errorf("/%s?%s: got %d, want 400 (documented: %s; matchbox would drop it and select %q)\n%s",
							ep, tc.query, code, why, refGroupID, body)
					}
				}
				return
			}
			winner, tied := ref.selectGroup(labels)
			if winner == nil {
				t.Fatalf("reference selects no group for %q", tc.query)
			}
			// Among tied groups ours picks the lowest id; matchbox picks
			// one of them.
			want := tied[0]
			if !slices.Contains(tied, winner) {
				t.Fatalf("reference winner %s not among tied %v", winner.ID, tied)
			}
			if want.ID != tc.group {
				t.Fatalf("reference selects %q (tied: %v), case expects %q: fix the case or the reference", want.ID, groupIDs(tied), tc.group)
			}
			tieNote := ""
			if len(tied) > 1 {
				tieNote = fmt.Sprintf(" (documented: identical selectors %v, ours takes the lowest id; matchbox: any)", groupIDs(tied))
			}
			// Which group did ours pick? Every fixture group has group_name.
			_, meta := compatGet(t, ts, "metadata", tc.query)
			oursGroup := "?"
			if m := groupNameLine.FindSubmatch(meta); m != nil {
				oursGroup = string(m[1])
			}
			for _, ep := range compatEndpoints {
				t.Run(ep, func(t *testing.T) {
					exp := ref.refExpect(t, ep, want, labels, tc.query)
					code, body := compatGet(t, ts, ep, tc.query)
					ctx := fmt.Sprintf("/%s?%s: matchbox selects %q%s, ours %q; documented differences applied: %v",
						ep, tc.query, want.ID, tieNote, oursGroup, exp.documented)
					if code != exp.code {
						t.Fatalf("%s\nstatus %d, want %d\nbody: %s", ctx, code, exp.code, body)
					}
					if code != 200 {
						return
					}
					switch {
					case ep == "metadata":
						lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
						if !slices.IsSorted(lines) {
							t.Errorf("%s\nmetadata lines not sorted:\n%s", ctx, body)
						}
						wantLines := strings.Split(string(exp.body), "\n")
						if d := cmp.Diff(wantLines, lines); d != "" {
							t.Errorf("%s\nmetadata lines differ (-matchbox normalised +ours):\n%s", ctx, d)
						}
					case exp.json:
						var w, g any
						if err := json.Unmarshal(exp.body, &w); err != nil {
							t.Fatalf("reference Ignition: %v", err)
						}
						if err := json.Unmarshal(body, &g); err != nil {
							t.Fatalf("%s\nours is not JSON: %v\n%s", ctx, err, body)
						}
						if d := cmp.Diff(w, g); d != "" {
							t.Errorf("%s\nIgnition differs (-matchbox +ours):\n%s", ctx, d)
						}
					default:
						if !bytes.Equal(body, exp.body) {
							t.Errorf("%s\nbody differs (-matchbox +ours):\n%s", ctx, cmp.Diff(string(exp.body), string(body)))
						}
					}
				})
			}
		})
	}
}

func groupIDs(gs []*refGroup) []string {
	ids := make([]string, len(gs))
	for i, g := range gs {
		ids[i] = g.ID
	}
	return ids
}

// TestCompatReferenceOrder pins the reference's selection order on the
// fixtures, so that the reference itself is checked against poseidon's
// rules: more selectors first, then the greatest selector string.
func TestCompatReferenceOrder(t *testing.T) {
	ref := loadReference(t, compatDir)
	gs := slices.Clone(ref.groups)
	sort.Sort(sort.Reverse(byReqs(gs)))
	var got []string
	for _, g := range gs {
		got = append(got, refSelectorString(g))
	}
	want := []string{
		"mac=52:54:00:00:00:0c,rack=1,region=eu",
		"rack=1,region=eu",
		"os=x,region=eu",
		"mac=52:54:00:ab:cd:ef,os=installed",
		"ext=slice,mac=52:54:00:5a:1c:e0",
		"domain=,role=worker",
		"team=blue", "team=blue",
		"role=worker",
		"role=templated",
		"os=installed",
		"os=fcos",
		"mac=52:54:00:ab:cd:ef",
		"mac=52:54:00:12:34:56",
		"ext=sprig",
		"env=Prod",
		"Zone=z1",
		"MAC=52:54:00:00:00:0d",
		"",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("reference order (-want +got):\n%s", d)
	}
}

// TestCompatTemplatedArgs asserts our templated kernel args (a documented
// addition) literally.
func TestCompatTemplatedArgs(t *testing.T) {
	ts, _ := compatServer(t)
	const kernel = "/assets/flatcar/current/flatcar_production_pxe.vmlinuz"
	const initrd = "/assets/flatcar/current/flatcar_production_pxe_image.cpio.gz"
	for _, tc := range []struct {
		query string
		args  string
	}{
		{"role=templated&hostname=h1&serial=sn-42", "initrd=main pool=p1 flatcar.hostname=h1 serial=sn-42 console=ttyS0"},
		{"role=templated", "initrd=main pool=p1 flatcar.hostname=anon serial=none console=ttyS0"},
	} {
		wantIPXE := "#!ipxe\nkernel " + kernel + " " + tc.args + "\ninitrd --name main " + initrd + "\nboot\n"
		if code, body := compatGet(t, ts, "ipxe", tc.query); code != 200 || string(body) != wantIPXE {
			t.Errorf("/ipxe?%s: %d\n%s", tc.query, code, cmp.Diff(wantIPXE, string(body)))
		}
		wantGRUB := "default=0\nfallback=1\ntimeout=1\n" +
			"menuentry \"CoreOS (EFI)\" {\necho \"Loading kernel\"\nlinuxefi \"" + kernel + "\" " + tc.args +
			"\necho \"Loading initrd\"\ninitrdefi  \"" + initrd + "\"\n}\n" +
			"menuentry \"CoreOS (BIOS)\" {\necho \"Loading kernel\"\nlinux \"" + kernel + "\" " + tc.args +
			"\necho \"Loading initrd\"\ninitrd  \"" + initrd + "\"\n}\n"
		if code, body := compatGet(t, ts, "grub", tc.query); code != 200 || string(body) != wantGRUB {
			t.Errorf("/grub?%s: %d\n%s", tc.query, code, cmp.Diff(wantGRUB, string(body)))
		}
	}
}

// TestCompatMetadataReference pins the reference env file and the
// documented differences on one machine, so that the normalisation in
// refMetadataLines cannot hide a change: matchbox's own lines for node1,
// and the lines ours must print.
func TestCompatMetadataReference(t *testing.T) {
	ref := loadReference(t, compatDir)
	const q = "mac=52-54-00-12-34-56&hostname=n1"
	labels, _, _ := refLabels(q)
	g, _ := ref.selectGroup(labels)
	data := refData(t, g, labels, q)
	matchboxLines, normalised := refMetadataLines(data)
	sort.Strings(matchboxLines)
	for _, want := range []string{
		"COUNT=1e+06", "RATIO=0.5", "PORT=10250", "NEGATIVE=-3", "TINY=1.5e-07",
		"ENABLED=true", "DEBUG=false", "NETWORK_MTU=1500", "NETWORK_BOND_ENABLED=true",
		"MAC=52:54:00:12:34:56", "REQUEST_QUERY_MAC=52:54:00:12:34:56", "REQUEST_QUERY_HOSTNAME=n1",
		"REQUEST_RAW_QUERY=" + q, "WEIRD=KEY=keys with = are not env names",
		"MOTD=line one\nline two\r\nline three",
	} {
		if !slices.Contains(matchboxLines, want) {
			t.Errorf("matchbox's lines lack %q", want)
		}
	}
	for _, l := range matchboxLines {
		if strings.HasPrefix(l, "SSH_AUTHORIZED_KEYS=") || strings.HasPrefix(l, "NOTHING=") || strings.HasPrefix(l, "NETWORK_DNS=") {
			t.Errorf("matchbox prints no arrays or nulls: %q", l)
		}
	}
	for _, want := range []string{
		"COUNT=1000000", "RATIO=0.5", "TINY=1.5e-07", `MOTD=line one\nline two\r\nline three`,
		`NETWORK_DNS=["1.1.1.1","8.8.8.8"]`, `DISKS=[{"device":"/dev/sda","size_gb":100,"wipe":true}]`, "EMPTY_LIST=[]",
	} {
		if !slices.Contains(normalised, want) {
			t.Errorf("normalised lines lack %q", want)
		}
	}
	for _, l := range normalised {
		if strings.HasPrefix(l, "WEIRD") || strings.HasPrefix(l, "NOTHING") {
			t.Errorf("normalised lines keep %q", l)
		}
	}
}

// TestCompatLoad checks what our loader reports for the fixtures: nothing
// but the deliberate identical-selector warning.
func TestCompatLoad(t *testing.T) {
	_, snap := compatServer(t)
	g, p, n := snap.Counts()
	if g != 19 || p != 12 || n != 17 {
		t.Errorf("loaded %d groups, %d profiles, %d templates; want 19, 12, 17", g, p, n)
	}
	probs := append([]matchbox.Problem{}, snap.Problems()...)
	probs = append(probs, render.NewEngine(render.Options{}).CheckTemplates(snap)...)
	if len(probs) != 1 || probs[0].Severity != matchbox.SeverityWarning ||
		!strings.Contains(probs[0].Message, `group "dup-b" has the same selectors as group "dup-a"`) {
		t.Errorf("problems: want only the dup-b warning, got %v", probs)
	}
	// Selectors in hyphen and upper-case form are normalised at load.
	for id, want := range map[string]string{"node1": "52:54:00:12:34:56", "node2": "52:54:00:ab:cd:ef", "node2-installed": "52:54:00:ab:cd:ef", "eu-rack1-mac": "52:54:00:00:00:0c"} {
		grp, ok := snap.Group(id)
		if !ok || func() string { v, _ := grp.SelectorValue("mac"); return v }() != want {
			t.Errorf("group %s mac selector: %+v, want %s", id, grp, want)
		}
	}
}

// TestCompatValidate runs `matchbox validate` on the fixtures: no errors,
// and only the deliberate identical-selector warning.
func TestCompatValidate(t *testing.T) {
	dir, err := filepath.Abs(compatDir)
	if err != nil {
		t.Fatal(err)
	}
	code, out := runCLI(t, nil, "validate", "-data-path", dir)
	if code != 0 {
		t.Errorf("validate exit %d\n%s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	summary := lines[len(lines)-1]
	if !strings.HasSuffix(summary, "19 groups, 12 profiles, 17 templates; 0 errors, 1 warnings") {
		t.Errorf("summary %q, want 0 errors and 1 warning\n%s", summary, out)
	}
	for _, l := range lines[:len(lines)-1] {
		if !strings.Contains(l, "groups/dup-b.json: warning:") || !strings.Contains(l, `has the same selectors as group "dup-a"`) {
			t.Errorf("unexpected validate line: %s", l)
		}
	}
	code, out = runCLI(t, nil, "validate", "-data-path", dir, "-o", "json")
	var rep struct {
		Problems []matchbox.Problem `json:"problems"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
		t.Fatalf("json output: exit %d, %v\n%s", code, err, out)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Severity != matchbox.SeverityWarning {
		t.Errorf("json problems: %+v", rep.Problems)
	}
}

// TestCompatFixturesPlainTemplate: the fixtures' templates and kernel
// arguments parse as poseidon/matchbox parses them (plain text/template), so
// the shared scenarios test what upstream serves; the one exception is
// generic/sprig.tmpl, which calls documented sprig functions on purpose.
// Go's slice is a built-in, not one of them.
func TestCompatFixturesPlainTemplate(t *testing.T) {
	// render's TestSprigExtensionDocumented holds docs/compatibility.md's
	// list to these.
	documented := render.ExtensionFuncs()
	for _, name := range []string{"upper", "quote", "default"} {
		if !slices.Contains(documented, name) {
			t.Errorf("docs/compatibility.md does not list %s, which generic/sprig.tmpl calls", name)
		}
	}
	if slices.Contains(documented, "slice") {
		t.Error("docs/compatibility.md lists slice: Go's built-in must stay")
	}
	var sources []string
	for _, kind := range []string{"ignition", "cloud", "generic"} {
		paths, err := filepath.Glob(filepath.Join(compatDir, kind, "*"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			if strings.HasSuffix(p, ".ign") {
				continue
			}
			sources = append(sources, p)
		}
	}
	var extension []string
	for _, p := range sources {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := refTemplate(filepath.Base(p), string(b)); err != nil {
			rel, _ := filepath.Rel(compatDir, p)
			if m := undefinedFunc.FindStringSubmatch(err.Error()); m != nil && slices.Contains(documented, m[1]) {
				extension = append(extension, rel)
				continue
			}
			t.Errorf("%s does not parse as plain text/template: %v", rel, err)
		}
	}
	if d := cmp.Diff([]string{"generic/sprig.tmpl"}, extension); d != "" {
		t.Errorf("templates calling sprig functions (-want +got):\n%s", d)
	}
	profiles, err := filepath.Glob(filepath.Join(compatDir, "profiles", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range profiles {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var prof refProfile
		if err := json.Unmarshal(b, &prof); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, a := range prof.Boot.Args {
			if _, err := refTemplate("arg", a); err != nil {
				t.Errorf("%s: kernel argument %q does not parse as plain text/template: %v", p, a, err)
			}
		}
	}
}

// TestCompatRawIgnitionBytes: a raw .ign file is served byte for byte.
func TestCompatRawIgnitionBytes(t *testing.T) {
	ts, _ := compatServer(t)
	want, err := os.ReadFile(filepath.Join(compatDir, "ignition", "raw.ign"))
	if err != nil {
		t.Fatal(err)
	}
	code, body := compatGet(t, ts, "ignition", "env=Prod")
	if code != 200 || !bytes.Equal(body, want) {
		t.Errorf("/ignition?env=Prod: %d\n%s", code, cmp.Diff(string(want), string(body)))
	}
}

// TestCompatNoDefaultGroup: without a default group, a machine no group
// selects gets 404 from every endpoint, as from matchbox.
func TestCompatNoDefaultGroup(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(compatDir)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "groups", "default.json")); err != nil {
		t.Fatal(err)
	}
	ts, _ := compatServerDir(t, dir)
	ref := loadReference(t, dir)
	for _, q := range []string{"", "foo=bar", "os=Installed", "MAC=52:54:00:12:34:56", "region=eu&rack=2", "role=templated&os=x", "mac=52:54:00:12:34:56", "env=Prod"} {
		labels, _, _ := refLabels(q)
		g, tied := ref.selectGroup(labels)
		for _, ep := range compatEndpoints {
			code, body := compatGet(t, ts, ep, q)
			if g == nil {
				if code != 404 {
					t.Errorf("/%s?%s: no group matches, got %d, want 404\n%s", ep, q, code, body)
				}
				continue
			}
			exp := ref.refExpect(t, ep, tied[0], labels, q)
			if code != exp.code {
				t.Errorf("/%s?%s: matchbox selects %q: got %d, want %d\n%s", ep, q, g.ID, code, exp.code, body)
			}
		}
	}
	// A malformed MAC: matchbox drops it and finds no group (404); ours
	// answers 400 (documented).
	for _, ep := range compatEndpoints {
		if code, body := compatGet(t, ts, ep, "mac=zz"); code != 400 {
			t.Errorf("/%s?mac=zz: got %d, want 400\n%s", ep, code, body)
		}
	}
}
