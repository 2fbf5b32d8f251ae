package bmcsim

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Redfish resource paths served by the simulator. The simulated service has
// exactly one ComputerSystem.
const (
	redfishRoot        = "/redfish/v1"
	redfishSessions    = redfishRoot + "/SessionService/Sessions"
	redfishSystems     = redfishRoot + "/Systems"
	redfishSystemID    = "1"
	redfishSystem      = redfishSystems + "/" + redfishSystemID
	redfishResetAction = redfishSystem + "/Actions/ComputerSystem.Reset"

	// redfishMsgPrefix prefixes MessageIds from the DMTF Base message registry.
	redfishMsgPrefix = "Base.1.16."
)

// redfishResetTypes are the ResetType values the simulated system advertises
// in ResetType@Redfish.AllowableValues and accepts.
var redfishResetTypes = []string{
	"On", "ForceOff", "GracefulShutdown", "ForceRestart",
	"GracefulRestart", "PowerCycle", "Nmi",
}

// redfishBootTargets are the BootSourceOverrideTarget values the simulated
// system advertises and accepts.
var redfishBootTargets = []string{
	"None", "Pxe", "Floppy", "Cd", "Usb", "Hdd", "BiosSetup", "Utilities",
	"Diags", "UefiShell", "UefiHttp", "SDCard", "RemoteDrive",
}

var (
	redfishBootEnabled = []string{"Disabled", "Once", "Continuous"}
	redfishBootModes   = []string{"UEFI", "Legacy"}
)

// RedfishConfig configures a simulated Redfish BMC.
type RedfishConfig struct {
	// User and Password are the only credentials the BMC accepts, both for
	// session login and for HTTP Basic authentication.
	User, Password string
	// InitialPower is the initial power state of the system: true is On,
	// false is Off.
	InitialPower bool
	// Certificate is the TLS certificate the BMC serves (nil: a new
	// self-signed one for 127.0.0.1, as most BMCs ship with).
	Certificate *tls.Certificate
	// EchoCredentials makes a failed login answer as careless firmware
	// does: a plain-text page that quotes the request body as received
	// and the credentials in a retry URL (query-escaped) and an account
	// path (path-escaped).
	EchoCredentials bool
	// LoginRedirect, when set, answers every login with a 307 redirect to
	// this URL: a client that follows it sends the credentials there.
	LoginRedirect string
}

// RedfishBoot is the one-time/persistent boot source override of the
// simulated system, as last written by a client.
type RedfishBoot struct {
	// Target is the BootSourceOverrideTarget, e.g. "Pxe", "Hdd" or "None".
	Target string
	// Enabled is the BootSourceOverrideEnabled value: "Once", "Continuous"
	// or "Disabled".
	Enabled string
	// Mode is the BootSourceOverrideMode: "UEFI", "Legacy", or "" if no
	// client has set it yet.
	Mode string
}

// RedfishSim is an in-memory Redfish BMC served over HTTPS on the loopback
// interface. It implements the service root, session login/logout, the
// Systems collection, one ComputerSystem (GET and a PATCH of Boot) and its
// #ComputerSystem.Reset action. It is safe for concurrent use.
//
// A Boot override set to "Once" is not consumed by a later reset, so tests
// can inspect what a client wrote after power-cycling the system.
type RedfishSim struct {
	// URL is the base URL of the service, e.g. "https://127.0.0.1:40123".
	URL string
	// Host is the address the BMC listens on, "127.0.0.1".
	Host string
	// Port is the TCP port the BMC listens on.
	Port string

	cfg       RedfishConfig
	srv       *httptest.Server
	closeOnce sync.Once

	mu          sync.Mutex
	power       bool
	boot        RedfishBoot
	resets      []string
	sessions    map[string]string // session Id -> token
	nextSession int
	refuse      int
	generation  int // bumped on every change of the system resource; used as ETag
	requests    []string
}

// StartRedfish starts a simulated Redfish BMC on an ephemeral port of
// 127.0.0.1 serving cfg.Certificate, by default a self-signed certificate
// of its own (a client trusts it by its fingerprint, Fingerprint). The
// server is closed when the test finishes.
func StartRedfish(t testing.TB, cfg RedfishConfig) *RedfishSim {
	t.Helper()
	s := &RedfishSim{
		cfg:        cfg,
		power:      cfg.InitialPower,
		boot:       RedfishBoot{Target: "None", Enabled: "Disabled"},
		sessions:   map[string]string{},
		generation: 1,
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	cert := cfg.Certificate
	if cert == nil {
		c := SelfSigned(t, "127.0.0.1")
		cert = &c
	}
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
	// Silence "TLS handshake error" noise from clients that give up early.
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	s.URL = s.srv.URL
	host, port, err := net.SplitHostPort(s.srv.Listener.Addr().String())
	if err != nil {
		s.srv.Close()
		t.Fatalf("bmcsim: redfish listener address: %v", err)
	}
	s.Host, s.Port = host, port
	t.Cleanup(s.Close)
	return s
}

// Certificate returns the certificate the BMC serves.
func (s *RedfishSim) Certificate() *x509.Certificate {
	return s.srv.Certificate()
}

// Fingerprint returns the SHA-256 fingerprint of the certificate the BMC
// serves (see Fingerprint).
func (s *RedfishSim) Fingerprint() string {
	return Fingerprint(s.srv.Certificate())
}

// Power returns the simulated power state, "On" or "Off".
func (s *RedfishSim) Power() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return redfishPowerString(s.power)
}

// Boot returns the current boot source override.
func (s *RedfishSim) Boot() RedfishBoot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.boot
}

// Resets returns the ResetType values of all accepted
// #ComputerSystem.Reset requests, in order.
func (s *RedfishSim) Resets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.resets)
}

// Sessions returns the number of currently open Redfish sessions.
func (s *RedfishSim) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Requests returns a log of the requests received, in order, one line each:
// method, path, the top-level JSON body keys (nested keys of objects in
// braces) and, when sent, "If-Match=<etag>".
func (s *RedfishSim) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// SetRefuse makes the BMC answer every request except the unauthenticated
// service root documents with the given HTTP status code and a Redfish error
// body, after credentials have been checked. Zero restores normal service.
func (s *RedfishSim) SetRefuse(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse = status
}

// Close shuts the BMC down; later connections are refused. It is safe to call
// more than once.
func (s *RedfishSim) Close() {
	s.closeOnce.Do(func() {
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
}

func redfishPowerString(on bool) string {
	if on {
		return "On"
	}
	return "Off"
}

// serveHTTP routes a request. Every response carries OData-Version 4.0.
func (s *RedfishSim) serveHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("OData-Version", "4.0")
	w.Header().Set("Cache-Control", "no-cache")

	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		redfishError(w, http.StatusBadRequest, "MalformedJSON", "The request body could not be read.")
		return
	}
	s.logRequest(r, body)

	path := r.URL.Path
	if len(path) > 1 {
		path = strings.TrimSuffix(path, "/")
	}

	// Documents readable without authentication (Redfish spec: the version
	// document and the service root).
	switch path {
	case "/redfish":
		if !redfishAllowMethods(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		redfishWriteJSON(w, http.StatusOK, map[string]any{"v1": redfishRoot + "/"})
		return
	case redfishRoot:
		if !redfishAllowMethods(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		redfishWriteJSON(w, http.StatusOK, redfishServiceRoot())
		return
	case redfishSessions:
		if r.Method == http.MethodPost {
			s.login(w, r, body)
			return
		}
	}

	if !s.authenticated(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="bmcsim"`)
		redfishError(w, http.StatusUnauthorized, "NoValidSession", "There is no valid session established with the implementation.")
		return
	}
	if s.refused(w) {
		return
	}

	switch {
	case path == redfishSessions:
		if redfishAllowMethods(w, r, http.MethodGet, http.MethodHead, http.MethodPost) {
			s.listSessions(w)
		}
	case strings.HasPrefix(path, redfishSessions+"/"):
		s.session(w, r, strings.TrimPrefix(path, redfishSessions+"/"))
	case path == redfishSystems:
		if redfishAllowMethods(w, r, http.MethodGet, http.MethodHead) {
			redfishWriteJSON(w, http.StatusOK, redfishCollection("#ComputerSystemCollection.ComputerSystemCollection",
				redfishSystems, "Computer System Collection", []string{redfishSystem}))
		}
	case path == redfishSystem:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			s.getSystem(w)
		case http.MethodPatch:
			s.patchSystem(w, r, body)
		default:
			redfishAllowMethods(w, r, http.MethodGet, http.MethodHead, http.MethodPatch)
		}
	case path == redfishResetAction:
		if redfishAllowMethods(w, r, http.MethodPost) {
			s.reset(w, r, body)
		}
	default:
		redfishError(w, http.StatusNotFound, "ResourceMissingAtURI",
			fmt.Sprintf("The resource at the URI '%s' was not found.", r.URL.Path), r.URL.Path)
	}
}

func redfishServiceRoot() map[string]any {
	return map[string]any{
		"@odata.id":      redfishRoot + "/",
		"@odata.type":    "#ServiceRoot.v1_11_0.ServiceRoot",
		"Id":             "RootService",
		"Name":           "Root Service",
		"RedfishVersion": "1.15.0",
		"UUID":           "3a4d5c58-0000-4000-8000-626d6373696d",
		"Systems":        redfishLink(redfishSystems),
		"Links": map[string]any{
			"Sessions": redfishLink(redfishSessions),
		},
	}
}

func redfishLink(path string) map[string]string {
	return map[string]string{"@odata.id": path}
}

func redfishCollection(odataType, id, name string, members []string) map[string]any {
	links := make([]map[string]string, 0, len(members))
	for _, m := range members {
		links = append(links, redfishLink(m))
	}
	return map[string]any{
		"@odata.id":           id,
		"@odata.type":         odataType,
		"Name":                name,
		"Members":             links,
		"Members@odata.count": len(links),
	}
}

// authenticated reports whether r carries a valid X-Auth-Token or valid HTTP
// Basic credentials.
func (s *RedfishSim) authenticated(r *http.Request) bool {
	if tok := r.Header.Get("X-Auth-Token"); tok != "" {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, t := range s.sessions {
			if t == tok {
				return true
			}
		}
		return false
	}
	if u, p, ok := r.BasicAuth(); ok {
		return s.validCredentials(u, p)
	}
	return false
}

func (s *RedfishSim) validCredentials(user, pass string) bool {
	return user == s.cfg.User && pass == s.cfg.Password
}

// refused answers with the configured refusal status, if any.
func (s *RedfishSim) refused(w http.ResponseWriter) bool {
	s.mu.Lock()
	status := s.refuse
	s.mu.Unlock()
	if status == 0 {
		return false
	}
	switch status {
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
		redfishError(w, status, "ServiceTemporarilyUnavailable",
			"The service is temporarily unavailable.  Retry in 1 seconds.", "1")
	case http.StatusInternalServerError:
		redfishError(w, status, "InternalError",
			"The request failed due to an internal service error.  The service is still operational.")
	default:
		redfishError(w, status, "GeneralError",
			fmt.Sprintf("The service refused the request (HTTP %d).", status))
	}
	return true
}

// login implements POST to the Sessions collection (Redfish session login).
func (s *RedfishSim) login(w http.ResponseWriter, r *http.Request, body []byte) {
	if s.cfg.LoginRedirect != "" {
		w.Header().Set("Location", s.cfg.LoginRedirect)
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	if !redfishJSONContent(w, r) {
		return
	}
	var req struct {
		UserName *string
		Password *string
	}
	if err := json.Unmarshal(body, &req); err != nil {
		redfishError(w, http.StatusBadRequest, "MalformedJSON",
			"The request body submitted was malformed JSON and could not be parsed by the receiving service.")
		return
	}
	for name, v := range map[string]*string{"UserName": req.UserName, "Password": req.Password} {
		if v == nil {
			redfishError(w, http.StatusBadRequest, "CreateFailedMissingReqProperties",
				fmt.Sprintf("The create operation failed because the required property %s was missing from the request.", name), name)
			return
		}
	}
	if !s.validCredentials(*req.UserName, *req.Password) && s.cfg.EchoCredentials {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, "login refused for %s; retry at %s?UserName=%s&Password=%s or see /redfish/v1/AccountService/Accounts/%s/%s\n",
			body, redfishSessions, url.QueryEscape(*req.UserName), url.QueryEscape(*req.Password), url.PathEscape(*req.UserName), url.PathEscape(*req.Password))
		return
	}
	if !s.validCredentials(*req.UserName, *req.Password) {
		redfishError(w, http.StatusUnauthorized, "ResourceAtUriUnauthorized",
			fmt.Sprintf("While accessing the resource at '%s', the service received an authorization error 'invalid username or password'.", redfishSessions),
			redfishSessions, "invalid username or password")
		return
	}
	if s.refused(w) {
		return
	}

	token := redfishRandomHex(16)
	s.mu.Lock()
	s.nextSession++
	id := strconv.Itoa(s.nextSession)
	s.sessions[id] = token
	s.mu.Unlock()

	loc := redfishSessions + "/" + id
	w.Header().Set("X-Auth-Token", token)
	w.Header().Set("Location", loc)
	redfishWriteJSON(w, http.StatusCreated, redfishSessionResource(id, *req.UserName))
}

func redfishSessionResource(id, user string) map[string]any {
	return map[string]any{
		"@odata.id":   redfishSessions + "/" + id,
		"@odata.type": "#Session.v1_3_0.Session",
		"Id":          id,
		"Name":        "User Session " + id,
		"UserName":    user,
		"SessionType": "Redfish",
	}
}

func (s *RedfishSim) listSessions(w http.ResponseWriter) {
	s.mu.Lock()
	ids := make([]string, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	sort.Slice(ids, func(i, j int) bool {
		a, _ := strconv.Atoi(ids[i])
		b, _ := strconv.Atoi(ids[j])
		return a < b
	})
	members := make([]string, 0, len(ids))
	for _, id := range ids {
		members = append(members, redfishSessions+"/"+id)
	}
	redfishWriteJSON(w, http.StatusOK, redfishCollection("#SessionCollection.SessionCollection",
		redfishSessions, "Session Collection", members))
}

// session implements GET and DELETE (logout) of one session.
func (s *RedfishSim) session(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	_, ok := s.sessions[id]
	s.mu.Unlock()
	if !ok {
		redfishError(w, http.StatusNotFound, "ResourceMissingAtURI",
			fmt.Sprintf("The resource at the URI '%s' was not found.", r.URL.Path), r.URL.Path)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		redfishWriteJSON(w, http.StatusOK, redfishSessionResource(id, s.cfg.User))
	case http.MethodDelete:
		s.mu.Lock()
		delete(s.sessions, id)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		redfishAllowMethods(w, r, http.MethodGet, http.MethodHead, http.MethodDelete)
	}
}

// etagLocked returns the current ETag of the system resource. s.mu must be
// held.
func (s *RedfishSim) etagLocked() string {
	return fmt.Sprintf(`"bmcsim-%d"`, s.generation)
}

// ifMatchLocked checks an If-Match precondition against the system ETag and
// answers 412 if it fails. s.mu must be held.
func (s *RedfishSim) ifMatchLocked(w http.ResponseWriter, r *http.Request) bool {
	hdr := r.Header.Get("If-Match")
	if hdr == "" {
		return true
	}
	cur := strings.Trim(s.etagLocked(), `"`)
	for _, tag := range strings.Split(hdr, ",") {
		tag = strings.TrimSpace(tag)
		if tag == "*" || strings.Trim(strings.TrimPrefix(tag, "W/"), `"`) == cur {
			return true
		}
	}
	redfishError(w, http.StatusPreconditionFailed, "PreconditionFailed",
		"The ETag supplied did not match the ETag required to change this resource.")
	return false
}

func (s *RedfishSim) getSystem(w http.ResponseWriter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	boot := map[string]any{
		"BootSourceOverrideTarget":                          s.boot.Target,
		"BootSourceOverrideTarget@Redfish.AllowableValues":  redfishBootTargets,
		"BootSourceOverrideEnabled":                         s.boot.Enabled,
		"BootSourceOverrideEnabled@Redfish.AllowableValues": redfishBootEnabled,
	}
	if s.boot.Mode != "" {
		boot["BootSourceOverrideMode"] = s.boot.Mode
	}
	boot["BootSourceOverrideMode@Redfish.AllowableValues"] = redfishBootModes
	sys := map[string]any{
		"@odata.id":    redfishSystem,
		"@odata.type":  "#ComputerSystem.v1_13_0.ComputerSystem",
		"Id":           redfishSystemID,
		"Name":         "bmcsim",
		"SystemType":   "Physical",
		"Manufacturer": "bmcsim",
		"Model":        "Redfish simulator",
		"PowerState":   redfishPowerString(s.power),
		"Status":       map[string]string{"State": "Enabled", "Health": "OK"},
		"Boot":         boot,
		"Actions": map[string]any{
			"#ComputerSystem.Reset": map[string]any{
				"target":                            redfishResetAction,
				"ResetType@Redfish.AllowableValues": redfishResetTypes,
			},
		},
	}
	w.Header().Set("ETag", s.etagLocked())
	redfishWriteJSON(w, http.StatusOK, sys)
}

// patchSystem accepts a PATCH of the system whose only writable property is
// Boot with BootSourceOverrideTarget, BootSourceOverrideEnabled and
// BootSourceOverrideMode. The update is all-or-nothing.
func (s *RedfishSim) patchSystem(w http.ResponseWriter, r *http.Request, body []byte) {
	if !redfishJSONContent(w, r) {
		return
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		redfishError(w, http.StatusBadRequest, "MalformedJSON",
			"The request body submitted was malformed JSON and could not be parsed by the receiving service.")
		return
	}
	var rawBoot json.RawMessage
	for k, v := range top {
		switch {
		case k == "Boot":
			rawBoot = v
		case strings.HasPrefix(k, "@odata."):
			// Annotations are ignored.
		case slices.Contains([]string{"Id", "Name", "PowerState", "Status", "Actions", "Manufacturer", "Model", "SystemType"}, k):
			redfishError(w, http.StatusBadRequest, "PropertyNotWritable",
				fmt.Sprintf("The property %s is a read only property and cannot be assigned a value.", k), k)
			return
		default:
			redfishError(w, http.StatusBadRequest, "PropertyUnknown",
				fmt.Sprintf("The property %s is not in the list of valid properties for the resource.", k), k)
			return
		}
	}
	if rawBoot == nil {
		redfishError(w, http.StatusBadRequest, "NoOperation",
			"The request body submitted contain no data to act upon and no changes to the resource took place.")
		return
	}
	var boot map[string]json.RawMessage
	if err := json.Unmarshal(rawBoot, &boot); err != nil || boot == nil {
		redfishError(w, http.StatusBadRequest, "PropertyValueTypeError",
			fmt.Sprintf("The value '%s' for the property Boot is of a different type than the property can accept.", rawBoot),
			string(rawBoot), "Boot")
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.boot
	fields := map[string]struct {
		dst     *string
		allowed []string
	}{
		"BootSourceOverrideTarget":  {&next.Target, redfishBootTargets},
		"BootSourceOverrideEnabled": {&next.Enabled, redfishBootEnabled},
		"BootSourceOverrideMode":    {&next.Mode, redfishBootModes},
	}
	for k, v := range boot {
		f, ok := fields[k]
		if !ok {
			redfishError(w, http.StatusBadRequest, "PropertyUnknown",
				fmt.Sprintf("The property Boot/%s is not in the list of valid properties for the resource.", k), "Boot/"+k)
			return
		}
		var val string
		if err := json.Unmarshal(v, &val); err != nil {
			redfishError(w, http.StatusBadRequest, "PropertyValueTypeError",
				fmt.Sprintf("The value '%s' for the property Boot/%s is of a different type than the property can accept.", v, k),
				string(v), "Boot/"+k)
			return
		}
		if !slices.Contains(f.allowed, val) {
			redfishError(w, http.StatusBadRequest, "PropertyValueNotInList",
				fmt.Sprintf("The value '%s' for the property Boot/%s is not in the list of acceptable values.", val, k),
				val, "Boot/"+k)
			return
		}
		*f.dst = val
	}
	if !s.ifMatchLocked(w, r) {
		return
	}
	if next != s.boot {
		s.boot = next
		s.generation++
	}
	w.Header().Set("ETag", s.etagLocked())
	w.WriteHeader(http.StatusNoContent)
}

// reset implements the #ComputerSystem.Reset action.
func (s *RedfishSim) reset(w http.ResponseWriter, r *http.Request, body []byte) {
	if !redfishJSONContent(w, r) {
		return
	}
	const action = "#ComputerSystem.Reset"
	var req map[string]json.RawMessage
	if err := json.Unmarshal(body, &req); err != nil || req == nil {
		redfishError(w, http.StatusBadRequest, "MalformedJSON",
			"The request body submitted was malformed JSON and could not be parsed by the receiving service.")
		return
	}
	raw, ok := req["ResetType"]
	if !ok {
		redfishError(w, http.StatusBadRequest, "ActionParameterMissing",
			fmt.Sprintf("The action %s requires the parameter ResetType to be present in the request body.", action),
			action, "ResetType")
		return
	}
	for k := range req {
		if k != "ResetType" {
			redfishError(w, http.StatusBadRequest, "ActionParameterUnknown",
				fmt.Sprintf("The action %s was submitted with the invalid parameter %s.", action, k), action, k)
			return
		}
	}
	var rt string
	if err := json.Unmarshal(raw, &rt); err != nil {
		redfishError(w, http.StatusBadRequest, "ActionParameterValueTypeError",
			fmt.Sprintf("The value '%s' for the parameter ResetType in the action %s is of a different type than the parameter can accept.", raw, action),
			string(raw), "ResetType", action)
		return
	}
	if !slices.Contains(redfishResetTypes, rt) {
		redfishError(w, http.StatusBadRequest, "ActionParameterValueNotInList",
			fmt.Sprintf("The value '%s' for the parameter ResetType in the action %s is not in the list of acceptable values.", rt, action),
			rt, "ResetType", action)
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ifMatchLocked(w, r) {
		return
	}
	was := s.power
	switch rt {
	case "On", "ForceRestart", "GracefulRestart", "PowerCycle":
		// A restart or power cycle leaves the system running; on a system
		// that is off it amounts to powering it on.
		s.power = true
	case "ForceOff", "GracefulShutdown":
		s.power = false
	case "Nmi":
		// A diagnostic interrupt does not change the power state.
	}
	s.resets = append(s.resets, rt)
	if was != s.power {
		s.generation++
	}
	w.WriteHeader(http.StatusNoContent)
}

// redfishAllowMethods answers 405 with an Allow header unless r.Method is
// listed.
func redfishAllowMethods(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	if slices.Contains(methods, r.Method) {
		return true
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	redfishError(w, http.StatusMethodNotAllowed, "OperationNotAllowed",
		"The HTTP method is not allowed on this resource.")
	return false
}

// redfishJSONContent answers 415 unless the request body is declared as JSON
// (an absent Content-Type is tolerated).
func redfishJSONContent(w http.ResponseWriter, r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return true
	}
	if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == "application/json" {
		return true
	}
	redfishError(w, http.StatusUnsupportedMediaType, "GeneralError",
		fmt.Sprintf("The media type '%s' is not supported; use application/json.", ct))
	return false
}

// redfishError writes a Redfish error response (Redfish specification,
// "Error responses"): an "error" object whose code is a Base registry
// MessageId, with the same message in @Message.ExtendedInfo.
func redfishError(w http.ResponseWriter, status int, messageKey, message string, args ...string) {
	id := redfishMsgPrefix + messageKey
	info := map[string]any{
		"@odata.type": "#Message.v1_1_1.Message",
		"MessageId":   id,
		"Message":     message,
		"Severity":    "Critical",
		"Resolution":  "See the Redfish Base message registry for " + messageKey + ".",
	}
	if len(args) > 0 {
		info["MessageArgs"] = args
	}
	redfishWriteJSON(w, status, map[string]any{
		"error": map[string]any{
			"code":                  id,
			"message":               message,
			"@Message.ExtendedInfo": []any{info},
		},
	})
}

func redfishWriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func redfishRandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// logRequest records method, path, body keys and If-Match of a request.
func (s *RedfishSim) logRequest(r *http.Request, body []byte) {
	line := r.Method + " " + r.URL.Path
	if len(body) > 0 {
		line += " " + redfishJSONKeys(body)
	}
	if im := r.Header.Get("If-Match"); im != "" {
		line += " If-Match=" + im
	}
	s.mu.Lock()
	s.requests = append(s.requests, line)
	s.mu.Unlock()
}

// redfishJSONKeys renders the keys of a JSON object, recursing into object values:
// {"Boot":{"A":1}} becomes "{Boot{A}}". Non-objects render as "<non-object>".
func redfishJSONKeys(b []byte) string {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return "<non-object>"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	sb.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(k)
		if v := strings.TrimSpace(string(m[k])); strings.HasPrefix(v, "{") {
			sb.WriteString(redfishJSONKeys(m[k]))
		}
	}
	sb.WriteByte('}')
	return sb.String()
}
