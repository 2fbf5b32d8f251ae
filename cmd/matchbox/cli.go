package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf16"

	yaml "go.yaml.in/yaml/v3"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// The CLI side of matchbox: commands that talk to a running server's admin
// API.

const cliUsage = `Usage:
  matchbox group   list | get ID | apply -f FILE | delete ID
  matchbox profile list | get ID | apply -f FILE | delete ID
  matchbox template list [KIND] | get KIND NAME | apply KIND -f FILE [-name NAME] | delete KIND NAME
  matchbox machine list | get MAC | events MAC [-follow] | preview MAC [K=V ...] | label MAC [K=V ...] | delete MAC
  matchbox machine bmc set|get|delete MAC | power MAC on|off|soft|reset|status | bootdev MAC pxe|disk
  matchbox machine reinstall MAC [MAC ...] [-profile P] [-force] [-concurrency N] [-wait] | cancel MAC
  matchbox lease   list [-mac MAC] | release IP
  matchbox token   list | create -name NAME -role read|admin | revoke NAME
  matchbox update  group set NAME -channel C [-version X.Y.Z|newest] [-match track|group:ID|label:K=V]
                   [-max-in-flight N] [-max-per-period N -period D] [-timeout D] [-canary N]
                   [-pause-after-failures N] [-window "Mon-Fri 09:00-17:00 Europe/Berlin"]... [-paused]
  matchbox update  group list | get NAME | rm NAME
  matchbox update  pause NAME [-reason TEXT] | resume NAME

FILE is JSON or YAML (one object; "-" reads standard input). For group and
profile, "apply -f DIR" applies a whole data dir (templates, then profiles,
then groups). Template KIND is ignition (raw Ignition), butane, cloud or
generic; NAME defaults to FILE's base name.

Connection (flags, the environment, or the config file $MATCHBOX_CONFIG or
~/.config/matchbox/cli.yaml with the keys endpoint, token-file, ca-file,
client-cert, client-key):
  -endpoint URL     admin API (MATCHBOX_ENDPOINT, default http://127.0.0.1:8081)
  -token TOKEN      API token (MATCHBOX_TOKEN)
  -token-file FILE  file holding the token (MATCHBOX_TOKEN_FILE, default
                    /var/lib/matchbox/admin.token, else ./admin.token)
  -ca-file FILE     CA certificate that signed the API's TLS certificate
                    (MATCHBOX_CA_FILE)
  -client-cert FILE, -client-key FILE
                    authenticate with a client certificate instead of a
                    token (MATCHBOX_CLIENT_CERT, MATCHBOX_CLIENT_KEY)
  -o table|json     output format of list and get (default table for list,
                    json for get)
`

// client talks to the admin API.
type client struct {
	endpoint string
	token    string
	http     *http.Client
}

// apiFailure is an error answer of the API.
type apiFailure struct {
	status  int
	code    string
	message string
}

func (e *apiFailure) Error() string {
	msg := matchbox.EscapeLine(e.message)
	if e.code == "" {
		return fmt.Sprintf("%d %s", e.status, msg)
	}
	return fmt.Sprintf("%s (%d): %s", matchbox.EscapeLine(e.code), e.status, msg)
}

// request sends one API request and returns the answer's body; an error
// answer becomes an *apiFailure.
func (c *client) request(ctx context.Context, method, path string, body io.Reader, contentType, ifMatch string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.endpoint+path, body)
	if err != nil {
		return nil, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	c.authorize(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach the admin API at %s: %w", c.endpoint, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode >= 300 {
		var e struct{ Code, Message string }
		if json.Unmarshal(data, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(data))
		}
		return nil, nil, &apiFailure{resp.StatusCode, e.Code, e.Message}
	}
	return resp, data, nil
}

// do sends body as JSON (nil: no body) and decodes the answer into out.
func (c *client) do(ctx context.Context, method, path string, body any, out any) (http.Header, error) {
	a, err := c.send(ctx, method, path, body, "", out)
	return a.header, err
}

// authorize adds the token, when there is one (a client certificate may
// authenticate instead).
func (c *client) authorize(req *http.Request) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
}

// cliFlags are the connection and output flags every CLI command takes.
type cliFlags struct {
	endpoint, token, tokenFile, caFile, output string
	clientCert, clientKey                      string
	configErr                                  error // from the config file
}

func (f *cliFlags) register(fs *flag.FlagSet) {
	cfg, err := cliConfigFile()
	f.configErr = err
	def := func(env, key, fallback string) string {
		if v := os.Getenv(env); v != "" {
			return v
		}
		if v := cfg[key]; v != "" {
			return v
		}
		return fallback
	}
	fs.StringVar(&f.endpoint, "endpoint", def("MATCHBOX_ENDPOINT", "endpoint", "http://127.0.0.1:8081"), "admin API URL")
	fs.StringVar(&f.token, "token", os.Getenv("MATCHBOX_TOKEN"), "API token")
	fs.StringVar(&f.tokenFile, "token-file", def("MATCHBOX_TOKEN_FILE", "token-file", ""), "file holding the API token")
	fs.StringVar(&f.caFile, "ca-file", def("MATCHBOX_CA_FILE", "ca-file", ""), "CA certificate of the API's TLS certificate")
	fs.StringVar(&f.output, "o", "", "output: table or json")
	fs.StringVar(&f.clientCert, "client-cert", def("MATCHBOX_CLIENT_CERT", "client-cert", ""), "client certificate (PEM) to authenticate with instead of a token")
	fs.StringVar(&f.clientKey, "client-key", def("MATCHBOX_CLIENT_KEY", "client-key", ""), "private key (PEM) of -client-cert")
}

// cliConfigKeys are the settings the CLI config file may hold.
var cliConfigKeys = []string{"endpoint", "token-file", "ca-file", "client-cert", "client-key"}

// cliConfigFile reads the CLI's config file: $MATCHBOX_CONFIG, or
// $XDG_CONFIG_HOME/matchbox/cli.yaml (~/.config/matchbox/cli.yaml). A
// missing file is no error; a broken one stops the command with a clear
// message.
func cliConfigFile() (map[string]string, error) {
	path := os.Getenv("MATCHBOX_CONFIG")
	if path == "" {
		dir, err := os.UserConfigDir()
		if err != nil {
			return nil, nil
		}
		path = filepath.Join(dir, "matchbox", "cli.yaml")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) || os.Getenv("MATCHBOX_CONFIG") != "" {
			return nil, fmt.Errorf("config file: %w", err)
		}
		return nil, nil
	}
	var m map[string]string
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	for k := range m {
		if !slices.Contains(cliConfigKeys, k) {
			return nil, fmt.Errorf("config file %s: unknown key %q (known: %s)", path, k, strings.Join(cliConfigKeys, ", "))
		}
	}
	return m, nil
}

func (f *cliFlags) client() (*client, error) {
	if f.configErr != nil {
		return nil, f.configErr
	}
	token := f.token
	if (f.clientCert == "") != (f.clientKey == "") {
		return nil, errors.New("-client-cert and -client-key go together")
	}
	if token == "" && f.clientCert == "" {
		file := f.tokenFile
		if file == "" {
			// The server's default data dir, else the quick start's (a
			// server run with -data-path .).
			file = "/var/lib/matchbox/admin.token"
			if _, err := os.Stat(file); err != nil {
				file = "admin.token"
			}
		}
		data, err := os.ReadFile(file)
		if err != nil {
			if f.tokenFile == "" {
				return nil, errors.New("no API token: give -token, -token-file, MATCHBOX_TOKEN or MATCHBOX_TOKEN_FILE")
			}
			return nil, fmt.Errorf("-token-file: %w", err)
		}
		token = strings.TrimSpace(string(data))
	}
	u, err := url.Parse(f.endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("-endpoint %q: want http(s)://HOST:PORT", f.endpoint)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if f.clientCert != "" {
		cert, err := tls.LoadX509KeyPair(f.clientCert, f.clientKey)
		if err != nil {
			return nil, fmt.Errorf("-client-cert: %w", err)
		}
		tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
	}
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return nil, fmt.Errorf("-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-ca-file %s: no PEM certificate in it", f.caFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &client{endpoint: strings.TrimRight(f.endpoint, "/"), token: token, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

// parseInterleaved parses flags that may come before or after positional
// arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// newCLIFlags is the flag set of a CLI command, with the connection and
// output flags every one takes.
func newCLIFlags(name string, stderr io.Writer) (*flag.FlagSet, *cliFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, cliUsage) }
	cf := &cliFlags{}
	cf.register(fs)
	return fs, cf
}

// startCLI parses a CLI command's arguments (flags anywhere) and connects:
// it returns the verb, the other positional arguments and the client.
func startCLI(fs *flag.FlagSet, cf *cliFlags, args []string) (string, []string, *client, error) {
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", nil, nil, err
		}
		return "", nil, nil, errUsage
	}
	if len(pos) == 0 {
		fs.Usage()
		return "", nil, nil, errUsage
	}
	c, err := cf.client()
	if err != nil {
		return "", nil, nil, err
	}
	return pos[0], pos[1:], c, nil
}

// objectCLI runs `matchbox group|profile VERB …`.
func objectCLI(ctx context.Context, kind string, args []string, stdout, stderr io.Writer) error {
	plural := kind + "s"
	fs, cf := newCLIFlags("matchbox "+kind, stderr)
	file := fs.String("f", "", "file to apply (JSON or YAML; - for standard input)")
	ifMatch := fs.String("if-match", "", "apply only if the object still has this ETag")
	verb, pos, c, err := startCLI(fs, cf, args)
	if err != nil {
		return err
	}
	switch {
	case verb == "list" && len(pos) == 0:
		var out struct {
			Items []map[string]any `json:"items"`
		}
		if _, err := c.do(ctx, "GET", "/api/v1/"+plural, nil, &out); err != nil {
			return fmt.Errorf("list %s: %w", plural, err)
		}
		if cf.output == "json" {
			return printJSON(stdout, out.Items)
		}
		return printObjects(stdout, kind, out.Items)
	case verb == "get" && len(pos) == 1:
		var obj map[string]any
		h, err := c.do(ctx, "GET", "/api/v1/"+plural+"/"+url.PathEscape(pos[0]), nil, &obj)
		if err != nil {
			return fmt.Errorf("get %s %s: %w", kind, matchbox.Printable(pos[0]), err)
		}
		if cf.output == "table" {
			return printObjects(stdout, kind, []map[string]any{obj})
		}
		if tag := h.Get("ETag"); tag != "" && cf.output != "json" {
			fmt.Fprintf(stderr, "ETag: %s\n", tag)
		}
		return printJSON(stdout, obj)
	case verb == "apply" && len(pos) == 0 && *file != "":
		if st, err := os.Stat(*file); err == nil && st.IsDir() {
			return applyDataDir(ctx, c, *file, stdout)
		}
		obj, err := readObject(*file)
		if err != nil {
			return err
		}
		id, _ := obj["id"].(string)
		if id == "" {
			return fmt.Errorf("%s: the %s has no id", *file, kind)
		}
		if err := matchbox.CheckName(kind+" id", id); err != nil {
			return fmt.Errorf("%s: %w", *file, err)
		}
		a, err := c.send(ctx, "PUT", "/api/v1/"+plural+"/"+url.PathEscape(id), obj, *ifMatch, nil)
		return reportApply(stdout, kind, id, a, err)
	case verb == "delete" && len(pos) == 1:
		if _, err := c.do(ctx, "DELETE", "/api/v1/"+plural+"/"+url.PathEscape(pos[0]), nil, nil); err != nil {
			return fmt.Errorf("delete %s %s: %w", kind, matchbox.Printable(pos[0]), err)
		}
		fmt.Fprintf(stdout, "%s %s deleted\n", kind, matchbox.Printable(pos[0]))
		return nil
	}
	fmt.Fprint(stderr, cliUsage)
	return errUsage
}

// applied is what a write reports: created or updated, and the new ETag.
type applied struct {
	status int
	etag   string
	header http.Header
}

// send is a JSON request with an optional If-Match.
func (c *client) send(ctx context.Context, method, path string, body any, etag string, out any) (applied, error) {
	var rd io.Reader
	ctype := ""
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return applied{}, err
		}
		rd, ctype = bytes.NewReader(data), "application/json"
	}
	resp, data, err := c.request(ctx, method, path, rd, ctype, etag)
	if err != nil {
		return applied{}, err
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return applied{}, fmt.Errorf("unexpected answer from %s: %w", c.endpoint, err)
		}
	}
	return applied{resp.StatusCode, resp.Header.Get("ETag"), resp.Header}, nil
}

func reportApply(w io.Writer, kind, id string, a applied, err error) error {
	id = matchbox.Printable(id)
	if err != nil {
		return fmt.Errorf("apply %s %s: %w", kind, id, err)
	}
	what := "updated"
	if a.status == http.StatusCreated {
		what = "created"
	}
	fmt.Fprintf(w, "%s %s %s (ETag %s)\n", kind, id, what, cell(a.etag))
	return nil
}

// readObject reads one JSON or YAML object from a file ("-": stdin).
func readObject(path string) (map[string]any, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(os.Stdin, 16<<20))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	var obj map[string]any
	if ext := strings.ToLower(filepath.Ext(path)); ext == ".json" || bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
		dec := json.NewDecoder(bytes.NewReader(data))
		if err := dec.Decode(&obj); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return obj, nil
	}
	if err := yaml.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if obj == nil {
		return nil, fmt.Errorf("%s: no object in it", path)
	}
	return obj, nil
}

// printJSON prints v as indented JSON. encoding/json escapes the C0
// controls; the other characters group metadata may not hold
// (matchbox.CheckValue: DEL, C1, bidirectional and other format
// characters, invisible ones) are escaped too (\u202e), so that -o json is
// as safe on a terminal as a table, and decodes to the same value.
func printJSON(w io.Writer, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	_, err := w.Write(escapeJSON(buf.Bytes()))
	return err
}

// escapeJSON escapes such characters in encoded JSON as \uXXXX. Outside
// strings JSON holds only ASCII, so every such character is in a string.
func escapeJSON(data []byte) []byte {
	s := string(data)
	if matchbox.CheckValue("JSON", s, true) == nil {
		return data
	}
	var b bytes.Buffer
	for _, r := range s {
		if r < 0x7f || matchbox.CheckValue("", string(r), true) == nil {
			b.WriteRune(r)
			continue
		}
		for _, u := range utf16.Encode([]rune{r}) {
			fmt.Fprintf(&b, "\\u%04x", u)
		}
	}
	return b.Bytes()
}

// cell is a value as a table or a line of output shows it: "-" for none,
// text escaped by matchbox.Printable, so that an id holding a newline, a
// tab or an escape sequence (stored before such ids were refused, or sent
// by a machine) cannot forge a row or a column or drive the terminal, and
// a bidirectional override shows as \u202e instead of reversing text.
func cell(v any) string {
	s := ""
	if v != nil {
		s = fmt.Sprint(v)
	}
	if s == "" {
		return "-"
	}
	return matchbox.Printable(s)
}

// printObjects prints groups or profiles as a table.
func printObjects(w io.Writer, kind string, items []map[string]any) error {
	sort.Slice(items, func(i, j int) bool { return fmt.Sprint(items[i]["id"]) < fmt.Sprint(items[j]["id"]) })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if kind == "group" {
		fmt.Fprintln(tw, "ID\tPROFILE\tSELECTOR\tSOURCE")
		for _, it := range items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cell(it["id"]), cell(it["profile"]), selectorText(it["selector"]), cell(it["source"]))
		}
	} else {
		fmt.Fprintln(tw, "ID\tKERNEL\tIGNITION\tSOURCE")
		for _, it := range items {
			var kernel any
			if b, ok := it["boot"].(map[string]any); ok {
				kernel = b["kernel"]
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cell(it["id"]), cell(kernel), cell(it["ignition_id"]), cell(it["source"]))
		}
	}
	return tw.Flush()
}

// selectorText is a selector (or labels) as k=v pairs, each key and value
// escaped (matchbox.Printable: an empty value shows as "").
func selectorText(v any) string {
	m, _ := v.(map[string]any)
	if len(m) == 0 {
		return "(default)"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = matchbox.Printable(k) + "=" + matchbox.Printable(fmt.Sprint(m[k]))
	}
	return strings.Join(parts, ",")
}

// tokenCLI runs `matchbox token VERB …`.
func tokenCLI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := newCLIFlags("matchbox token", stderr)
	name := fs.String("name", "", "name of the new token")
	role := fs.String("role", "read", "role of the new token: read or admin")
	verb, pos, c, err := startCLI(fs, cf, args)
	if err != nil {
		return err
	}
	switch {
	case verb == "list" && len(pos) == 0:
		var out struct {
			Items []struct {
				Name    string    `json:"name"`
				Role    string    `json:"role"`
				Created time.Time `json:"created"`
			} `json:"items"`
		}
		if _, err := c.do(ctx, "GET", "/api/v1/tokens", nil, &out); err != nil {
			return fmt.Errorf("list tokens: %w", err)
		}
		if cf.output == "json" {
			return printJSON(stdout, out.Items)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tROLE\tCREATED")
		for _, t := range out.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", cell(t.Name), cell(t.Role), t.Created.Format(time.RFC3339))
		}
		return tw.Flush()
	case verb == "create" && len(pos) == 0:
		if *name == "" {
			return errors.New("token create: -name is required")
		}
		if err := matchbox.CheckName("-name", *name); err != nil {
			return fmt.Errorf("token create: %w", err)
		}
		var out struct {
			Token string `json:"token"`
		}
		if _, err := c.do(ctx, "POST", "/api/v1/tokens", map[string]string{"name": *name, "role": *role}, &out); err != nil {
			return fmt.Errorf("create token %s: %w", matchbox.Printable(*name), err)
		}
		// Only the token, so scripts can capture it; it is shown once.
		fmt.Fprintln(stdout, out.Token)
		return nil
	case verb == "revoke" && len(pos) == 1:
		if _, err := c.do(ctx, "DELETE", "/api/v1/tokens/"+url.PathEscape(pos[0]), nil, nil); err != nil {
			return fmt.Errorf("revoke token %s: %w", matchbox.Printable(pos[0]), err)
		}
		fmt.Fprintf(stdout, "token %s revoked\n", matchbox.Printable(pos[0]))
		return nil
	}
	fmt.Fprint(stderr, cliUsage)
	return errUsage
}

// applyDataDir applies every object of a data dir: templates, then
// profiles, then groups, so references resolve. It stops at the first
// refusal.
func applyDataDir(ctx context.Context, c *client, dir string, stdout io.Writer) error {
	objs, err := storage.NewDataDir(dir, nil).Load(ctx)
	if err != nil {
		return err
	}
	for _, p := range objs.Problems {
		if p.Severity == matchbox.SeverityError {
			return fmt.Errorf("%s: %s (fix it first; nothing was applied)", p.Origin, p.Message)
		}
	}
	for _, t := range objs.Templates {
		kind := string(t.Kind)
		if t.Kind == matchbox.KindIgnition && !matchbox.IsRawIgnition(t.Name) {
			kind = "butane"
		}
		a, err := c.sendRaw(ctx, "/api/v1/templates/"+kind+"/"+escapePath(t.Name), t.Content)
		if err := reportApply(stdout, kind+" template", t.Name, a, err); err != nil {
			return err
		}
	}
	for _, p := range objs.Profiles {
		a, err := c.send(ctx, "PUT", "/api/v1/profiles/"+url.PathEscape(p.ID), p, "", nil)
		if err := reportApply(stdout, "profile", p.ID, a, err); err != nil {
			return err
		}
	}
	for _, g := range objs.Groups {
		a, err := c.send(ctx, "PUT", "/api/v1/groups/"+url.PathEscape(g.ID), g, "", nil)
		if err := reportApply(stdout, "group", g.ID, a, err); err != nil {
			return err
		}
	}
	return nil
}

// escapePath escapes each segment of a slash-separated name.
func escapePath(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// sendRaw PUTs a raw body (a template).
func (c *client) sendRaw(ctx context.Context, path string, body []byte) (applied, error) {
	resp, _, err := c.request(ctx, "PUT", path, bytes.NewReader(body), "text/plain; charset=utf-8", "")
	if err != nil {
		return applied{}, err
	}
	return applied{resp.StatusCode, resp.Header.Get("ETag"), resp.Header}, nil
}

// templateCLI runs `matchbox template VERB …`.
func templateCLI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := newCLIFlags("matchbox template", stderr)
	file := fs.String("f", "", "template file to apply (- for standard input)")
	name := fs.String("name", "", "template name (default: the file's base name)")
	verb, pos, c, err := startCLI(fs, cf, args)
	if err != nil {
		return err
	}
	switch {
	case verb == "list" && len(pos) <= 1:
		path := "/api/v1/templates"
		if len(pos) == 1 {
			path += "/" + url.PathEscape(pos[0])
		}
		var out struct {
			Items []map[string]any `json:"items"`
		}
		if _, err := c.do(ctx, "GET", path, nil, &out); err != nil {
			return fmt.Errorf("list templates: %w", err)
		}
		if cf.output == "json" {
			return printJSON(stdout, out.Items)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tNAME\tSIZE\tSOURCE")
		for _, it := range out.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cell(it["kind"]), cell(it["name"]), cell(it["size"]), cell(it["source"]))
		}
		return tw.Flush()
	case verb == "get" && len(pos) == 2:
		_, raw, err := c.request(ctx, "GET", "/api/v1/templates/"+url.PathEscape(pos[0])+"/"+escapePath(pos[1]), nil, "", "")
		if err != nil {
			return fmt.Errorf("get template %s %s: %w", matchbox.Printable(pos[0]), matchbox.Printable(pos[1]), err)
		}
		_, err = stdout.Write(raw)
		return err
	case verb == "apply" && len(pos) == 1 && *file != "":
		var content []byte
		if *file == "-" {
			content, err = io.ReadAll(io.LimitReader(os.Stdin, 16<<20))
		} else {
			content, err = os.ReadFile(*file)
		}
		if err != nil {
			return err
		}
		n := *name
		if n == "" {
			if *file == "-" {
				return errors.New("template apply -f -: give -name")
			}
			n = filepath.Base(*file)
		}
		if err := matchbox.CheckName("template name", n); err != nil {
			return fmt.Errorf("template apply: %w", err)
		}
		a, err := c.sendRaw(ctx, "/api/v1/templates/"+url.PathEscape(pos[0])+"/"+escapePath(n), content)
		return reportApply(stdout, matchbox.Printable(pos[0])+" template", n, a, err)
	case verb == "delete" && len(pos) == 2:
		if _, err := c.do(ctx, "DELETE", "/api/v1/templates/"+url.PathEscape(pos[0])+"/"+escapePath(pos[1]), nil, nil); err != nil {
			return fmt.Errorf("delete template %s %s: %w", matchbox.Printable(pos[0]), matchbox.Printable(pos[1]), err)
		}
		fmt.Fprintf(stdout, "%s template %s deleted\n", matchbox.Printable(pos[0]), matchbox.Printable(pos[1]))
		return nil
	}
	fmt.Fprint(stderr, cliUsage)
	return errUsage
}
