package omaha

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Server is the <response server> attribute.
const Server = "matchbox"

// Response is the answer to a Request. Build it with NewResponse, which
// acknowledges everything and offers nothing, then set the offers.
type Response struct {
	// SinceMidnight is written, in whole seconds, as <daystart
	// elapsed_seconds>; update_engine does not read it.
	SinceMidnight time.Duration
	Apps          []AppResponse
}

// AppResponse answers one <app> of the request.
type AppResponse struct {
	AppID string // as the machine sent it
	// UnknownApp answers status="error-unknownApplication" instead of
	// "ok". update_engine never reads the app status; the updatecheck, if
	// any, must then be a noupdate, so that the machine reports no error.
	UnknownApp  bool
	Ping        bool         // answer <ping status="ok">
	Events      int          // how many <event status="ok"> to answer, one per event received
	UpdateCheck *UpdateCheck // nil when the app asked for no update check
}

// UpdateCheck answers an <updatecheck>.
type UpdateCheck struct {
	// Update is the offer; nil answers status="noupdate".
	Update *Update
	// PollInterval, when not zero, is written as PollInterval (whole
	// seconds, at least 1). update_engine reads it in every answer, even
	// a noupdate, for its next check only: an answer without it sets the
	// default (45 min) back, and anything shorter than that is read as
	// the default too, so it can only slow a machine down.
	PollInterval time.Duration
}

// Update is an offer: a Flatcar version's OS payload and the extension
// payloads the machine fetches during its postinstall, all under one
// base URL.
type Update struct {
	Version string // <manifest version>
	// URLs are the base URLs the payloads are under, tried in order;
	// each ends in '/'. update_engine fetches URLs[i]+name; ue-rs
	// (extensions) resolves name against URLs[0] only.
	URLs       []string
	Payload    Package   // the OS payload, flatcar_production_update.gz
	Extensions []Package // oem-<ID>.gz, flatcar-<NAME>.gz
}

// Package is a payload file as offered: its name under the base URLs,
// exact size and raw digests. The encodings each client wants are written
// in one place, by Marshal.
type Package struct {
	Name   string
	Size   int64
	SHA1   [sha1.Size]byte
	SHA256 [sha256.Size]byte
}

// NewResponse returns the answer to req that acknowledges every ping and
// event and answers every update check with noupdate. now gives the day
// start (by the clock in now's location, so a day with a DST change
// still stays under 24 hours).
func NewResponse(req *Request, now time.Time) *Response {
	h, m, s := now.Clock()
	resp := &Response{SinceMidnight: time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(s)*time.Second}
	for i := range req.Apps {
		app := &req.Apps[i]
		a := AppResponse{AppID: app.AppID, Ping: app.Ping, Events: len(app.Events)}
		if app.UpdateCheck {
			a.UpdateCheck = &UpdateCheck{}
		}
		resp.Apps = append(resp.Apps, a)
	}
	return resp
}

// Marshal writes the response. The output is the same bytes for the same
// Response. It fails on a response update_engine or ue-rs would refuse or
// misread.
func (r *Response) Marshal() ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	w := &xmlWriter{}
	w.raw(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	w.open(0, "response", "protocol", "3.0", "server", Server)
	w.line()
	w.empty(1, "daystart", "elapsed_seconds", strconv.FormatInt(int64(r.SinceMidnight/time.Second), 10))
	for _, a := range r.Apps {
		status := "ok"
		if a.UnknownApp {
			status = "error-unknownApplication"
		}
		w.open(1, "app", "appid", a.AppID, "status", status)
		w.line()
		if a.Ping {
			w.empty(2, "ping", "status", "ok")
		}
		if a.UpdateCheck != nil {
			a.UpdateCheck.write(w)
		}
		for range a.Events {
			w.empty(2, "event", "status", "ok")
		}
		w.close(1, "app")
	}
	w.close(0, "response")
	return w.b.Bytes(), nil
}

func (u *UpdateCheck) write(w *xmlWriter) {
	attrs := []string{"status", "noupdate"}
	if u.Update != nil {
		attrs[1] = "ok"
	}
	if u.PollInterval != 0 {
		attrs = append(attrs, "PollInterval", strconv.FormatInt(int64(u.PollInterval/time.Second), 10))
	}
	if u.Update == nil {
		w.empty(2, "updatecheck", attrs...)
		return
	}
	up := u.Update
	w.open(2, "updatecheck", attrs...)
	w.line()
	w.open(3, "urls")
	w.line()
	for _, codebase := range up.URLs {
		w.empty(4, "url", "codebase", codebase)
	}
	w.close(3, "urls")
	w.open(3, "manifest", "version", up.Version)
	w.line()
	w.open(4, "packages")
	w.line()
	// update_engine reads only the first package: the OS payload. It
	// does not read hash; ue-rs checks hash and hash_sha256 of the
	// extensions it fetches.
	p := up.Payload
	w.empty(5, "package", "name", p.Name, "hash", base64.StdEncoding.EncodeToString(p.SHA1[:]),
		"size", strconv.FormatInt(p.Size, 10), "required", "true")
	for _, e := range up.Extensions {
		w.empty(5, "package", "name", e.Name, "hash", base64.StdEncoding.EncodeToString(e.SHA1[:]),
			"hash_sha256", hex.EncodeToString(e.SHA256[:]), "size", strconv.FormatInt(e.Size, 10), "required", "false")
	}
	w.close(4, "packages")
	w.open(4, "actions")
	w.line()
	// update_engine compares sha256 as a string with the base64 of the
	// payload's SHA-256 after the download. DisablePayloadBackoff: a
	// machine whose download failed takes the next offer at once instead
	// of waiting up to 16 days; this server decides when to offer.
	w.empty(5, "action", "event", "postinstall", "sha256", base64.StdEncoding.EncodeToString(p.SHA256[:]),
		"DisablePayloadBackoff", "true")
	w.close(4, "actions")
	w.close(3, "manifest")
	w.close(2, "updatecheck")
}

func (r *Response) validate() error {
	if r.SinceMidnight < 0 || r.SinceMidnight >= 24*time.Hour {
		return fmt.Errorf("omaha: day start %v is not within a day", r.SinceMidnight)
	}
	for i, a := range r.Apps {
		if err := a.validate(); err != nil {
			return fmt.Errorf("omaha: app %d: %w", i+1, err)
		}
	}
	return nil
}

func (a *AppResponse) validate() error {
	if a.AppID == "" {
		return errors.New("no appid")
	}
	if a.Events < 0 {
		return fmt.Errorf("%d events", a.Events)
	}
	u := a.UpdateCheck
	if u == nil {
		return nil
	}
	if u.PollInterval < 0 || u.PollInterval != 0 && u.PollInterval < time.Second {
		return fmt.Errorf("poll interval %v is not whole seconds of at least 1", u.PollInterval)
	}
	if u.Update == nil {
		return nil
	}
	if a.UnknownApp {
		return errors.New("an update offered to an unknown app")
	}
	return u.Update.validate()
}

func (up *Update) validate() error {
	if up.Version == "" {
		return errors.New("update has no version")
	}
	if len(up.URLs) == 0 {
		return errors.New("update has no URL")
	}
	for _, u := range up.URLs {
		if err := checkCodebase(u); err != nil {
			return err
		}
	}
	if err := up.Payload.validate(); err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	names := map[string]bool{up.Payload.Name: true}
	for _, e := range up.Extensions {
		if err := e.validate(); err != nil {
			return fmt.Errorf("extension: %w", err)
		}
		if names[e.Name] {
			return fmt.Errorf("package %s listed twice", e.Name)
		}
		names[e.Name] = true
	}
	return nil
}

// checkCodebase accepts an absolute http(s) URL ending in '/' with no
// query or fragment, under which update_engine (appending the name) and
// ue-rs (resolving it) find the same file.
func checkCodebase(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("codebase: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("codebase %q is not an http or https URL", s)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#") {
		return fmt.Errorf("codebase %q has a query or fragment", s)
	}
	if !strings.HasSuffix(s, "/") {
		return fmt.Errorf("codebase %q does not end in '/'", s)
	}
	return nil
}

func (p *Package) validate() error {
	if !packageName(p.Name) {
		return fmt.Errorf("package name %q is not a file name of letters, digits, '.', '_', '-' and '+'", p.Name)
	}
	if p.Size <= 0 {
		return fmt.Errorf("package %s: size %d is not positive", p.Name, p.Size)
	}
	if p.SHA1 == [sha1.Size]byte{} || p.SHA256 == [sha256.Size]byte{} {
		return fmt.Errorf("package %s: a digest is not set", p.Name)
	}
	return nil
}

// packageName accepts names that need no escaping in a URL path and stay
// in the codebase's directory.
func packageName(s string) bool {
	if s == "" || s[0] == '.' {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-', c == '+':
		default:
			return false
		}
	}
	return true
}

// xmlWriter writes the response one element per line, indented by two
// spaces a level.
type xmlWriter struct {
	b bytes.Buffer
}

func (w *xmlWriter) raw(s string) { w.b.WriteString(s) }

func (w *xmlWriter) line() { w.b.WriteByte('\n') }

// open writes an indented start tag with attributes given as name, value
// pairs.
func (w *xmlWriter) open(depth int, name string, attrs ...string) {
	w.b.WriteString(strings.Repeat("  ", depth))
	w.b.WriteByte('<')
	w.b.WriteString(name)
	for i := 0; i+1 < len(attrs); i += 2 {
		w.b.WriteByte(' ')
		w.b.WriteString(attrs[i])
		w.b.WriteString(`="`)
		// Writing to a bytes.Buffer does not fail.
		_ = xml.EscapeText(&w.b, []byte(attrs[i+1]))
		w.b.WriteByte('"')
	}
	w.b.WriteByte('>')
}

// empty writes an element without content on a line of its own, with an
// end tag (as Nebraska and flatcar-update do).
func (w *xmlWriter) empty(depth int, name string, attrs ...string) {
	w.open(depth, name, attrs...)
	w.b.WriteString("</" + name + ">\n")
}

// close writes an indented end tag on a line of its own.
func (w *xmlWriter) close(depth int, name string) {
	w.b.WriteString(strings.Repeat("  ", depth) + "</" + name + ">\n")
}
