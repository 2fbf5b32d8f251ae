package omaha

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Bounds on what a client sends. A request beyond any of them is refused
// as a whole.
const (
	// MaxRequestSize is the largest body ParseRequest reads; the HTTP
	// handler reads at most this much (update_engine's requests are
	// about 1 KiB).
	MaxRequestSize = 64 << 10
	// MaxApps is the most <app> elements in a request (update_engine
	// sends one).
	MaxApps = 8
	// MaxEvents is the most <event> elements in an <app> (update_engine
	// sends one).
	MaxEvents = 8
	// MaxValueLen is the longest attribute value, in bytes after
	// entities are decoded.
	MaxValueLen = 256

	maxAttrs = 32 // attributes on one element
	maxDepth = 8  // element nesting, counting <request> as 1
)

// ErrTooLarge is returned when a body is larger than MaxRequestSize.
var ErrTooLarge = errors.New("omaha: request body larger than 64 KiB")

// FlatcarAppID is Flatcar's application id, normalised (NormalizeAppID);
// machines send it as {e96281a6-d1af-4bde-9a0a-97b76e56dc57} unless
// FLATCAR_RELEASE_APPID says otherwise.
const FlatcarAppID = "e96281a6-d1af-4bde-9a0a-97b76e56dc57"

// Request is what a machine POSTs: an update check, a ping or an event
// report, for one app (update_engine) or several (other clients).
type Request struct {
	Protocol       string // always "3.0"
	Version        string // the client, e.g. update_engine-0.4.10
	UpdaterVersion string
	InstallSource  string // "scheduler", or "ondemandupdate" when asked for by hand
	IsMachine      bool
	OS             OS
	Apps           []App
	// Repaired names the attributes (element.attribute) whose values
	// held an unescaped '"', as update_engine sends them, and that were
	// read by update_engine's fixed attribute order; empty when the body
	// was well-formed XML.
	Repaired []string
}

// Interactive reports whether someone asked for the check by hand
// (update_engine_client -check_for_update).
func (r *Request) Interactive() bool { return r.InstallSource == "ondemandupdate" }

// OS is the <os> element.
type OS struct {
	Version  string // "Chateau"
	Platform string // "CoreOS"
	SP       string // <running version>_<uname -m>, e.g. 3815.2.0_x86_64
}

// App is one <app>: the machine and what it asks about the OS it runs.
type App struct {
	// AppID is the appid as sent, to be echoed in the answer; compare it
	// with NormalizedID.
	AppID         string
	Version       string // running version
	Track         string // GROUP= in update.conf
	BootID        string
	OEM           string
	OEMVersion    string
	AlephVersion  string // the version first installed
	MachineID     string // /etc/machine-id
	MachineAlias  string // MACHINE_ALIAS= in update.conf
	Lang          string
	Board         string // amd64-usr, arm64-usr
	HardwareClass string
	DeltaOkay     bool

	Ping        bool    // a <ping>: answer it
	UpdateCheck bool    // an <updatecheck>: the machine asks for an update
	Events      []Event // in the order sent
}

// NormalizedID is the appid without braces, in lower case.
func (a *App) NormalizedID() string { return NormalizeAppID(a.AppID) }

// NormalizeAppID drops one pair of surrounding braces and lowers the
// case, so that "{E96281A6-...}" and "e96281a6-..." compare equal.
func NormalizeAppID(id string) string {
	if len(id) >= 2 && id[0] == '{' && id[len(id)-1] == '}' {
		id = id[1 : len(id)-1]
	}
	return strings.ToLower(id)
}

// Event is an <event>.
type Event struct {
	Type      EventType
	Result    EventResult
	ErrorCode ErrorCode // 0 when not sent (update_engine sends it only when Result is not ResultSuccess)
	// PreviousVersion is sent only with the event every update check
	// carries (EventUpdateComplete, ResultSuccessReboot): "0.0.0.0" on
	// the first check after install, "" on later checks, the version
	// updated from on the first check after rebooting into an update.
	PreviousVersion string
}

// noPreviousVersion is update_engine's previousversion before any update.
const noPreviousVersion = "0.0.0.0"

// UpdatedFrom returns the version the machine ran before it rebooted into
// the one it runs now, when the event says so: it is the update check's
// event and names a previous version. That is how an update's completion
// shows (not by EventUpdateComplete with ResultSuccess, which is sent
// before the reboot).
func (e Event) UpdatedFrom() (string, bool) {
	if e.Type != EventUpdateComplete || e.Result != ResultSuccessReboot {
		return "", false
	}
	if e.PreviousVersion == "" || e.PreviousVersion == noPreviousVersion {
		return "", false
	}
	return e.PreviousVersion, true
}

// ParseRequest reads a request body. It reads the body update_engine
// writes even when an unescaped '"' in a value made it malformed, if the
// fixed attribute order says unambiguously where each value ends
// (Request.Repaired says so), and refuses anything else that is not
// well-formed, not an Omaha 3.0 request, or beyond the bounds above.
func ParseRequest(body []byte) (*Request, error) {
	if len(body) > MaxRequestSize {
		return nil, ErrTooLarge
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errors.New("omaha: empty request")
	}
	req, err := decodeRequest(body)
	if err == nil {
		return req, nil
	}
	fixed, repaired, rerr := escapeQuotes(body)
	if rerr != nil {
		return nil, fmt.Errorf("%w; %v", err, rerr)
	}
	if len(repaired) == 0 {
		return nil, err
	}
	req, err = decodeRequest(fixed)
	if err != nil {
		return nil, fmt.Errorf("%w (after escaping the '\"' in %s)", err, strings.Join(repaired, ", "))
	}
	req.Repaired = repaired
	return req, nil
}

// decodeRequest reads a well-formed body.
func decodeRequest(body []byte) (*Request, error) {
	d := xml.NewDecoder(bytes.NewReader(body))
	var req *Request
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, syntaxError(err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if req != nil {
				return nil, errors.New("omaha: more than one root element")
			}
			if t.Name != (xml.Name{Local: "request"}) {
				return nil, fmt.Errorf("omaha: root element is <%s>, want <request>", elementName(t.Name))
			}
			if req, err = readRequest(d, t); err != nil {
				return nil, err
			}
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return nil, errors.New("omaha: text outside the root element")
			}
		}
	}
	if req == nil {
		return nil, errors.New("omaha: no <request> element")
	}
	return req, nil
}

func readRequest(d *xml.Decoder, start xml.StartElement) (*Request, error) {
	req := &Request{}
	var isMachine string
	if err := readAttrs("request", start.Attr, map[string]*string{
		"protocol":       &req.Protocol,
		"version":        &req.Version,
		"updaterversion": &req.UpdaterVersion,
		"installsource":  &req.InstallSource,
		"ismachine":      &isMachine,
	}); err != nil {
		return nil, err
	}
	switch req.Protocol {
	case "3.0":
	case "":
		return nil, errors.New("omaha: <request> has no protocol attribute")
	default:
		return nil, fmt.Errorf("omaha: protocol %q is not supported, want 3.0", req.Protocol)
	}
	req.IsMachine = isMachine == "1"
	seenOS := false
	for {
		tok, err := next(d)
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.EndElement:
			if len(req.Apps) == 0 {
				return nil, errors.New("omaha: request has no <app>")
			}
			return req, nil
		case xml.StartElement:
			switch t.Name {
			case xml.Name{Local: "os"}:
				if seenOS {
					return nil, errors.New("omaha: more than one <os>")
				}
				seenOS = true
				if err := readAttrs("os", t.Attr, map[string]*string{
					"version":  &req.OS.Version,
					"platform": &req.OS.Platform,
					"sp":       &req.OS.SP,
				}); err != nil {
					return nil, err
				}
				err = skip(d, 2)
			case xml.Name{Local: "app"}:
				if len(req.Apps) == MaxApps {
					return nil, fmt.Errorf("omaha: more than %d <app> elements", MaxApps)
				}
				var app App
				app, err = readApp(d, t, len(req.Apps)+1)
				req.Apps = append(req.Apps, app)
			default:
				err = skip(d, 2)
			}
			if err != nil {
				return nil, err
			}
		}
	}
}

// readApp reads the n-th <app>.
func readApp(d *xml.Decoder, start xml.StartElement, n int) (App, error) {
	var app App
	var delta string
	if err := readAttrs("app", start.Attr, map[string]*string{
		"appid":          &app.AppID,
		"version":        &app.Version,
		"track":          &app.Track,
		"bootid":         &app.BootID,
		"oem":            &app.OEM,
		"oemversion":     &app.OEMVersion,
		"alephversion":   &app.AlephVersion,
		"machineid":      &app.MachineID,
		"machinealias":   &app.MachineAlias,
		"lang":           &app.Lang,
		"board":          &app.Board,
		"hardware_class": &app.HardwareClass,
		"delta_okay":     &delta,
	}); err != nil {
		return App{}, err
	}
	if app.AppID == "" {
		return App{}, fmt.Errorf("omaha: app %d has no appid", n)
	}
	if app.Version == "" {
		return App{}, fmt.Errorf("omaha: app %d (%s) has no version", n, app.AppID)
	}
	app.DeltaOkay = delta == "true"
	for {
		tok, err := next(d)
		if err != nil {
			return App{}, err
		}
		switch t := tok.(type) {
		case xml.EndElement:
			return app, nil
		case xml.StartElement:
			switch t.Name {
			case xml.Name{Local: "ping"}:
				if app.Ping {
					return App{}, fmt.Errorf("omaha: app %d has more than one <ping>", n)
				}
				app.Ping = true
				err = checkAttrs("ping", t.Attr)
			case xml.Name{Local: "updatecheck"}:
				if app.UpdateCheck {
					return App{}, fmt.Errorf("omaha: app %d has more than one <updatecheck>", n)
				}
				app.UpdateCheck = true
				err = checkAttrs("updatecheck", t.Attr)
			case xml.Name{Local: "event"}:
				if len(app.Events) == MaxEvents {
					return App{}, fmt.Errorf("omaha: app %d has more than %d <event> elements", n, MaxEvents)
				}
				var ev Event
				ev, err = readEvent(t, n, len(app.Events)+1)
				app.Events = append(app.Events, ev)
			}
			if err == nil {
				err = skip(d, 3)
			}
			if err != nil {
				return App{}, err
			}
		}
	}
}

// readEvent reads the attributes of the i-th <event> of app n.
func readEvent(start xml.StartElement, n, i int) (Event, error) {
	var typ, result, code, prev string
	if err := readAttrs("event", start.Attr, map[string]*string{
		"eventtype":       &typ,
		"eventresult":     &result,
		"errorcode":       &code,
		"previousversion": &prev,
	}); err != nil {
		return Event{}, err
	}
	ev := Event{PreviousVersion: prev}
	t, err := smallNumber("eventtype", typ)
	if err == nil {
		ev.Type = EventType(t)
		t, err = smallNumber("eventresult", result)
		ev.Result = EventResult(t)
	}
	if err == nil && code != "" {
		ev.ErrorCode, err = errorCode(code)
	}
	if err != nil {
		return Event{}, fmt.Errorf("omaha: app %d event %d: %w", n, i, err)
	}
	return ev, nil
}

// smallNumber reads a required non-negative decimal of at most 9 digits.
func smallNumber(name, s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("no %s", name)
	}
	if len(s) > 9 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("%s %q is not a number", name, s)
	}
	return strconv.Atoi(s)
}

// errorCode reads an errorcode. update_engine prints the C enum with %d,
// so a code with FlagDevMode (1<<31) arrives negative; both forms are
// read as the same 32 bits.
func errorCode(s string) (ErrorCode, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < -1<<31 || n > 1<<32-1 || s[0] == '+' {
		return 0, fmt.Errorf("errorcode %q is not a 32-bit number", s)
	}
	return ErrorCode(uint32(n)), nil
}

// readAttrs copies the attributes of a known element into fields and
// checks them all against the bounds; attributes not in fields are
// ignored.
func readAttrs(elem string, attrs []xml.Attr, fields map[string]*string) error {
	if err := checkAttrs(elem, attrs); err != nil {
		return err
	}
	for _, a := range attrs {
		if p, ok := fields[a.Name.Local]; ok && a.Name.Space == "" {
			*p = a.Value
		}
	}
	return nil
}

// checkAttrs checks a known element's attributes against the bounds and
// for duplicates, which encoding/xml lets through.
func checkAttrs(elem string, attrs []xml.Attr) error {
	if len(attrs) > maxAttrs {
		return fmt.Errorf("omaha: <%s> has more than %d attributes", elem, maxAttrs)
	}
	for i, a := range attrs {
		if len(a.Value) > MaxValueLen {
			return fmt.Errorf("omaha: <%s> attribute %s is %d bytes, more than %d", elem, elementName(a.Name), len(a.Value), MaxValueLen)
		}
		for _, b := range attrs[:i] {
			if a.Name == b.Name {
				return fmt.Errorf("omaha: <%s> has attribute %s twice", elem, elementName(a.Name))
			}
		}
	}
	return nil
}

// skip reads up to the end of the element just started at depth, which
// is read for its attributes only.
func skip(d *xml.Decoder, depth int) error {
	open := 1
	for open > 0 {
		tok, err := next(d)
		if err != nil {
			return err
		}
		switch tok.(type) {
		case xml.StartElement:
			open++
			if depth+open-1 > maxDepth {
				return fmt.Errorf("omaha: elements nested more than %d deep", maxDepth)
			}
		case xml.EndElement:
			open--
		}
	}
	return nil
}

// next reads a token inside the root element, where the end of the input
// means the body was cut short.
func next(d *xml.Decoder) (xml.Token, error) {
	tok, err := d.Token()
	if err == io.EOF {
		return nil, errors.New("omaha: request is not well-formed XML: truncated")
	}
	if err != nil {
		return nil, syntaxError(err)
	}
	return tok, nil
}

func syntaxError(err error) error {
	return fmt.Errorf("omaha: request is not well-formed XML: %w", err)
}

func elementName(n xml.Name) string {
	if n.Space != "" {
		return n.Space + ":" + n.Local
	}
	return n.Local
}
