package omaha

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// This file reads answers as the two Flatcar clients do, following the
// rules of OMAHA.md §5 (update_engine) and §7 (ue-rs) literally, in test
// code that shares nothing with the package's writer.

// xnode is an element with its attributes and children, in document
// order.
type xnode struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Kids    []xnode    `xml:",any"`
}

func (n *xnode) attr(name string) (string, bool) {
	for _, a := range n.Attrs {
		if a.Name.Space == "" && a.Name.Local == name {
			return a.Value, true
		}
	}
	return "", false
}

// find returns the elements at the XPath n/path[0]/path[1]/..., in
// document order.
func (n *xnode) find(path ...string) []*xnode {
	if len(path) == 0 {
		return []*xnode{n}
	}
	var out []*xnode
	for i := range n.Kids {
		if k := &n.Kids[i]; k.XMLName.Space == "" && k.XMLName.Local == path[0] {
			out = append(out, k.find(path[1:]...)...)
		}
	}
	return out
}

// parseTree reads a document as libxml2's xmlParseMemory would accept it.
func parseTree(body []byte) (*xnode, error) {
	var root xnode
	d := xml.NewDecoder(bytes.NewReader(body))
	if err := d.Decode(&root); err != nil {
		return nil, err
	}
	return &root, nil
}

// ueAnswer is what update_engine takes from an answer.
type ueAnswer struct {
	NoUpdate       bool
	PollInterval   int // -1 when absent
	Version        string
	PayloadURLs    []string // codebase (+ '/') + name of the first package, for each url
	Size           int64
	SHA256         []byte // the postinstall action's sha256, decoded
	DisableBackoff bool
}

// ueError is update_engine's reason to refuse an answer, with its code.
type ueError struct {
	code ErrorCode
	why  string
}

func (e *ueError) Error() string { return fmt.Sprintf("update_engine: code %d: %s", e.code, e.why) }

func refuse(code ErrorCode, format string, args ...any) error {
	return &ueError{code, fmt.Sprintf(format, args...)}
}

// ueParse follows ParseResponse (ue/omaha_request_action.cc:344-608,
// OMAHA.md §5 items 1-8).
func ueParse(body []byte) (*ueAnswer, error) {
	if len(body) == 0 {
		return nil, refuse(CodeOmahaResponseEmpty, "empty body")
	}
	root, err := parseTree(body)
	if err != nil {
		return nil, refuse(CodeOmahaResponseNotXML, "%v", err)
	}
	if root.XMLName != (xml.Name{Local: "response"}) {
		root = &xnode{} // /response/... matches nothing
	}
	ans := &ueAnswer{PollInterval: -1}
	// 2. Only the first /response/app/updatecheck, across all apps.
	checks := root.find("app", "updatecheck")
	if len(checks) == 0 {
		return nil, refuse(CodeOmahaResponseInvalid, "no /response/app/updatecheck")
	}
	check := checks[0]
	// 3. PollInterval, a strict decimal, even for noupdate.
	if s, ok := check.attr("PollInterval"); ok {
		n, err := strconv.Atoi(s)
		if err != nil {
			return nil, refuse(CodeOmahaResponseInvalid, "PollInterval %q", s)
		}
		ans.PollInterval = n
	}
	// 4. status.
	status, ok := check.attr("status")
	if !ok {
		return nil, refuse(CodeOmahaResponseInvalid, "updatecheck has no status")
	}
	if status == "noupdate" {
		ans.NoUpdate = true
		return ans, nil
	}
	if status != "ok" {
		return nil, refuse(CodeOmahaResponseInvalid, "updatecheck status %q", status)
	}
	// 5. A manifest; its version is informational.
	manifests := root.find("app", "updatecheck", "manifest")
	if len(manifests) == 0 {
		return nil, refuse(CodeOmahaResponseInvalid, "no manifest")
	}
	ans.Version, _ = manifests[0].attr("version")
	// 6. urls/url, every codebase non-empty.
	urls := root.find("app", "updatecheck", "urls", "url")
	if len(urls) == 0 {
		return nil, refuse(CodeOmahaResponseInvalid, "no url")
	}
	var codebases []string
	for _, u := range urls {
		c, _ := u.attr("codebase")
		if c == "" {
			return nil, refuse(CodeOmahaResponseInvalid, "empty codebase")
		}
		codebases = append(codebases, c)
	}
	// 7. The first package: name, and size by sscanf("%" PRIi64) > 0.
	packages := root.find("app", "updatecheck", "manifest", "packages", "package")
	if len(packages) == 0 {
		return nil, refuse(CodeOmahaResponseInvalid, "no package")
	}
	name, _ := packages[0].attr("name")
	if name == "" {
		return nil, refuse(CodeOmahaResponseInvalid, "package has no name")
	}
	for _, c := range codebases {
		if !strings.HasSuffix(c, "/") {
			c += "/"
		}
		ans.PayloadURLs = append(ans.PayloadURLs, c+name)
	}
	sizeAttr, _ := packages[0].attr("size")
	size, ok := scanfInt64(sizeAttr)
	if !ok || size <= 0 {
		return nil, refuse(CodeOmahaResponseInvalid, "package size %q", sizeAttr)
	}
	ans.Size = size
	// 8. The first postinstall action, with a sha256.
	actions := root.find("app", "updatecheck", "manifest", "actions", "action")
	if len(actions) == 0 {
		return nil, refuse(CodeOmahaResponseInvalid, "no action")
	}
	var post *xnode
	for _, a := range actions {
		if ev, _ := a.attr("event"); ev == "postinstall" {
			post = a
			break
		}
	}
	if post == nil {
		return nil, refuse(CodeOmahaResponseInvalid, "no postinstall action")
	}
	sum, _ := post.attr("sha256")
	if sum == "" {
		return nil, refuse(CodeOmahaResponseInvalid, "postinstall action has no sha256")
	}
	// After the download the payload's base64 SHA-256 must be this
	// string: anything but base64 of 32 bytes can never match (code 10).
	raw, err := base64.StdEncoding.DecodeString(sum)
	if err != nil || len(raw) != 32 || base64.StdEncoding.EncodeToString(raw) != sum {
		return nil, refuse(CodePayloadHashMismatch, "sha256 %q is not base64 of 32 bytes", sum)
	}
	ans.SHA256 = raw
	backoff, _ := post.attr("DisablePayloadBackoff")
	ans.DisableBackoff = backoff == "true"
	return ans, nil
}

// scanfInt64 reads s as sscanf("%" PRIi64) does: leading white space, a
// sign, a 0x (hex) or 0 (octal) prefix, as many digits as there are;
// what follows is ignored. ok is false when no digit was read.
func scanfInt64(s string) (int64, bool) {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg, s = s[0] == '-', s[1:]
	}
	base := 10
	switch {
	case len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && isDigit(s[2], 16):
		base, s = 16, s[2:]
	case len(s) > 0 && s[0] == '0':
		base = 8
	}
	var n int64
	read := 0
	for read < len(s) && isDigit(s[read], base) {
		d, _ := strconv.ParseInt(s[read:read+1], 16, 64)
		n = n*int64(base) + d
		read++
	}
	if read == 0 {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

func isDigit(c byte, base int) bool {
	d, err := strconv.ParseInt(string(c), 16, 64)
	return err == nil && int(d) < base
}

// uuidRE is ue-rs' braced_uuid: a UUID, braces optional.
var uuidRE = regexp.MustCompile(`^(\{[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$`)

var hex64RE = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// uersPackage is an extension as download_sysext would fetch it.
type uersPackage struct {
	Name, URL string
	Size      uint64
	SHA1      []byte
	SHA256    []byte
}

// uersParse follows ue-rs' response parsing (omaha/src/response.rs,
// OMAHA.md §7: every element and attribute not optional is required,
// one bad element fails the whole response) and download_sysext's view of
// the packages after the first (src/download/mod.rs: URL =
// Url::join(first codebase, name), packages without any hash skipped).
// ue-rs only ever reads an answer that offered an update.
func uersParse(body []byte) ([]uersPackage, error) {
	root, err := parseTree(body)
	if err != nil {
		return nil, err
	}
	if root.XMLName.Local != "response" {
		return nil, errors.New("ue-rs: root is not response")
	}
	if _, ok := root.attr("protocol"); !ok {
		return nil, errors.New("ue-rs: response has no protocol")
	}
	var out []uersPackage
	for _, app := range root.find("app") {
		id, _ := app.attr("appid")
		if !uuidRE.MatchString(id) {
			return nil, fmt.Errorf("ue-rs: appid %q is not a UUID", id)
		}
		if _, ok := app.attr("status"); !ok {
			return nil, errors.New("ue-rs: app has no status")
		}
		checks := app.find("updatecheck")
		if len(checks) == 0 {
			return nil, errors.New("ue-rs: app has no updatecheck")
		}
		check := checks[0]
		if _, ok := check.attr("status"); !ok {
			return nil, errors.New("ue-rs: updatecheck has no status")
		}
		if len(check.find("urls")) == 0 {
			return nil, errors.New("ue-rs: updatecheck has no urls")
		}
		var codebases []*url.URL
		for _, u := range check.find("urls", "url") {
			c, ok := u.attr("codebase")
			if !ok {
				continue
			}
			parsed, err := url.Parse(c)
			if err != nil || !parsed.IsAbs() {
				return nil, fmt.Errorf("ue-rs: codebase %q is not a URL", c)
			}
			codebases = append(codebases, parsed)
		}
		manifests := check.find("manifest")
		if len(manifests) == 0 {
			return nil, errors.New("ue-rs: updatecheck has no manifest")
		}
		if _, ok := manifests[0].attr("version"); !ok {
			return nil, errors.New("ue-rs: manifest has no version")
		}
		if len(manifests[0].find("packages")) == 0 || len(manifests[0].find("actions")) == 0 {
			return nil, errors.New("ue-rs: manifest lacks packages or actions")
		}
		for _, a := range manifests[0].find("actions", "action") {
			ev, _ := a.attr("event")
			switch ev {
			case "preinstall", "install", "postinstall", "update":
			default:
				return nil, fmt.Errorf("ue-rs: action event %q", ev)
			}
			sum, ok := a.attr("sha256")
			if raw, err := base64.StdEncoding.DecodeString(sum); !ok || err != nil || len(raw) != 32 {
				return nil, fmt.Errorf("ue-rs: action sha256 %q is not base64 of 32 bytes", sum)
			}
			if v, ok := a.attr("DisablePayloadBackoff"); ok && v != "true" && v != "false" {
				return nil, fmt.Errorf("ue-rs: DisablePayloadBackoff %q", v)
			}
		}
		for i, p := range manifests[0].find("packages", "package") {
			name, ok := p.attr("name")
			if !ok {
				return nil, errors.New("ue-rs: package has no name")
			}
			sizeAttr, _ := p.attr("size")
			size, err := strconv.ParseUint(sizeAttr, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("ue-rs: package %s size %q", name, sizeAttr)
			}
			if req, _ := p.attr("required"); req != "true" && req != "false" {
				return nil, fmt.Errorf("ue-rs: package %s required %q", name, req)
			}
			pkg := uersPackage{Name: name, Size: size}
			if h, ok := p.attr("hash"); ok {
				if pkg.SHA1, err = base64.StdEncoding.DecodeString(h); err != nil || len(pkg.SHA1) != 20 {
					return nil, fmt.Errorf("ue-rs: package %s hash %q is not base64 of 20 bytes", name, h)
				}
			}
			if h, ok := p.attr("hash_sha256"); ok {
				if !hex64RE.MatchString(h) {
					return nil, fmt.Errorf("ue-rs: package %s hash_sha256 %q is not 64 hex digits", name, h)
				}
				pkg.SHA256, _ = hex.DecodeString(h)
			}
			if i == 0 || len(codebases) == 0 || pkg.SHA1 == nil && pkg.SHA256 == nil {
				continue
			}
			ref, err := url.Parse(name)
			if err != nil {
				return nil, fmt.Errorf("ue-rs: package name %q: %v", name, err)
			}
			pkg.URL = codebases[0].ResolveReference(ref).String()
			out = append(out, pkg)
		}
	}
	return out, nil
}
