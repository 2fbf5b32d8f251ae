// Package api is matchbox's admin APIs, on their own listeners, separate
// from the boot endpoints machines use: a JSON REST API under /api/v1/ for
// automation and the CLI, where every call needs a bearer token (tokens
// have a role, read or admin, and are stored only as hashes) or a client
// certificate; and poseidon/matchbox's gRPC API for the automation written
// for it (grpc.go), over mutual TLS. Both write groups, profiles and
// templates through the same checks (objects.go).
package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/loglimit"
	"matchbox.dev/matchbox/render"
)

// OpenAPI is the OpenAPI 3.1 document of the API, served at
// /api/v1/openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// Store is what the API needs from the database.
type Store interface {
	GroupVersion(ctx context.Context, id string) (*matchbox.Group, string, error)
	PutGroupIf(ctx context.Context, g *matchbox.Group, cond matchbox.Condition) (string, error)
	DeleteGroupIf(ctx context.Context, id string, cond matchbox.Condition) error
	ProfileVersion(ctx context.Context, id string) (*matchbox.Profile, string, error)
	PutProfileIf(ctx context.Context, p *matchbox.Profile, cond matchbox.Condition) (string, error)
	DeleteProfileIf(ctx context.Context, id string, cond matchbox.Condition) error
	TemplateVersion(ctx context.Context, kind matchbox.TemplateKind, name string) (*matchbox.Template, string, error)
	PutTemplateIf(ctx context.Context, t *matchbox.Template, cond matchbox.Condition) (string, error)
	DeleteTemplateIf(ctx context.Context, kind matchbox.TemplateKind, name string, cond matchbox.Condition) error
	// Objects are the database's groups, profiles and templates; they
	// must not be changed.
	Objects(ctx context.Context) (matchbox.Objects, error)
	CreateToken(ctx context.Context, t matchbox.Token) error
	DeleteToken(ctx context.Context, name string) error
	Tokens(ctx context.Context) ([]matchbox.Token, error)
	RevokedToken(ctx context.Context, hash string) (matchbox.RevokedToken, error)
}

// Config configures the API.
type Config struct {
	Store Store
	// Catalog is what the boot endpoints serve; the API reads it for
	// objects from the data dir and for reference checks.
	Catalog *matchbox.Catalog
	// Reload makes the catalog see the database's current objects; it is
	// called after every successful write, before the reply, so a machine
	// asking right after gets the new configuration.
	Reload func(ctx context.Context) error
	Logger *slog.Logger
	// Changes, when set, is the change feed of the store Store is part
	// of: tokens other servers sharing the store create or revoke are
	// taken (or refused) here as they are committed (see Follow).
	Changes matchbox.ChangeFeed
	// Machines is the machine inventory (nil: the machine endpoints
	// answer 503).
	Machines MachineStore
	// BMC keeps machines' BMC settings (nil: not available).
	BMC BMCStore
	// Leases is the DHCP lease table (nil: DHCP is not in full mode).
	Leases LeaseAdmin
	// Power drives machines' BMCs (nil: the power endpoints answer 503).
	Power Power
	// Lifecycle runs reinstalls (nil: the reinstall endpoints answer
	// 503).
	Lifecycle Reinstaller
	// Releases is the Flatcar release mirror (nil: the release endpoints
	// answer 503).
	Releases ReleaseAdmin
	// Updates is the update service (nil: the update group and machine
	// endpoints answer 503).
	Updates Updates
	// Booter takes the boot decision previews show (default: one over
	// Catalog, without reinstall gates).
	Booter *matchbox.Booter
	// Engine renders previews (nil: previews show only the selection).
	Engine *render.Engine
	// BootHost is the host:port machines reach the boot endpoints at, for
	// URLs in previews.
	BootHost string
	// MaxBody bounds request bodies (default 1 MiB). Bodies are read only
	// after the request is authenticated.
	MaxBody int64
	// CertDefaultRole is the role of client certificates whose subject has
	// no organizational unit (empty: they are refused); see
	// matchbox.CertificateRole.
	CertDefaultRole matchbox.Role
	// VerifyCertificate, when set, is asked about the verified chains of
	// every request made with a client certificate (a revocation list
	// read again when it changes); an error refuses the request (403).
	VerifyCertificate func(chains [][]*x509.Certificate) error
}

// Server is the admin API.
type Server struct {
	cfg Config
	log *slog.Logger

	// writes serialises the REST API's writes from their reference
	// checks to their commit, so that a check sees every write before it.
	writes sync.Mutex

	// tableMu serialises the changes of the token table: a reload's read
	// of the store and swap, a token write's store call and table change;
	// so a reload that read before a revocation cannot bring the revoked
	// token back. mu guards the table itself (taken after tableMu).
	tableMu sync.Mutex
	mu      sync.RWMutex
	tokens  map[string]matchbox.Token // by hash

	booter *matchbox.Booter
	// reloads coalesces the catalog reloads of writes.
	reloads *reloader
	// lines bounds the log lines of refused gRPC calls.
	lines *loglimit.Limiter
	// tokenChanges are the store's token changes (nil: not followed).
	tokenChanges <-chan matchbox.Change
}

// New returns the API server, with the stored tokens loaded.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Booter == nil {
		cfg.Booter = matchbox.NewBooter(cfg.Catalog, nil)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, booter: cfg.Booter, reloads: newReloader(), lines: loglimit.New(cfg.Logger)}
	if cfg.Changes != nil {
		// Subscribed before the load: nothing written between is missed.
		s.tokenChanges = cfg.Changes.Changes(ctx, matchbox.ChangeToken)
	}
	if err := s.loadTokens(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Follow keeps the token table in line with the store until ctx ends:
// a token another server sharing the store creates is accepted here, one
// it revokes refused, as soon as the change is committed. (This server's
// own token writes change its table as they are made.) Without
// Config.Changes it returns at once.
func (s *Server) Follow(ctx context.Context) error {
	changes := s.tokenChanges
	if changes == nil {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case c, ok := <-changes:
			if !ok {
				return nil
			}
			if c.Local {
				continue
			}
			// Tokens are few: read them all again.
			if err := s.loadTokens(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("API tokens written elsewhere not loaded: the table is as before", "err", err)
			}
		}
	}
}

func (s *Server) loadTokens(ctx context.Context) error {
	s.tableMu.Lock()
	defer s.tableMu.Unlock()
	ts, err := s.cfg.Store.Tokens(ctx)
	if err != nil {
		return fmt.Errorf("load API tokens: %w", err)
	}
	m := make(map[string]matchbox.Token, len(ts))
	for _, t := range ts {
		m[t.Hash] = t
	}
	s.mu.Lock()
	s.tokens = m
	s.mu.Unlock()
	return nil
}

// NewSecret returns a new random token secret.
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "mbx_" + base64.RawURLEncoding.EncodeToString(b), nil
}

// HashSecret is how a token secret is stored.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Handler serves the API.
func (s *Server) Handler() http.Handler {
	r := mux.NewRouter()
	v1 := r.PathPrefix("/api/v1").Subrouter()
	v1.HandleFunc("/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(OpenAPI)
	}).Methods(http.MethodGet)
	v1.HandleFunc("/groups", s.auth(matchbox.RoleRead, s.listGroups)).Methods(http.MethodGet)
	v1.HandleFunc("/groups/{id}", s.auth(matchbox.RoleRead, s.getGroup)).Methods(http.MethodGet)
	v1.HandleFunc("/groups/{id}", s.auth(matchbox.RoleAdmin, s.putGroup)).Methods(http.MethodPut)
	v1.HandleFunc("/groups/{id}", s.auth(matchbox.RoleAdmin, s.deleteGroup)).Methods(http.MethodDelete)
	v1.HandleFunc("/profiles", s.auth(matchbox.RoleRead, s.listProfiles)).Methods(http.MethodGet)
	v1.HandleFunc("/profiles/{id}", s.auth(matchbox.RoleRead, s.getProfile)).Methods(http.MethodGet)
	v1.HandleFunc("/profiles/{id}", s.auth(matchbox.RoleAdmin, s.putProfile)).Methods(http.MethodPut)
	v1.HandleFunc("/profiles/{id}", s.auth(matchbox.RoleAdmin, s.deleteProfile)).Methods(http.MethodDelete)
	v1.HandleFunc("/templates", s.auth(matchbox.RoleRead, s.listTemplates)).Methods(http.MethodGet)
	v1.HandleFunc("/templates/{kind}", s.auth(matchbox.RoleRead, s.listTemplates)).Methods(http.MethodGet)
	v1.HandleFunc("/templates/{kind}/{name:(?s:.+)}", s.auth(matchbox.RoleRead, s.getTemplate)).Methods(http.MethodGet)
	v1.HandleFunc("/templates/{kind}/{name:(?s:.+)}", s.auth(matchbox.RoleAdmin, s.putTemplate)).Methods(http.MethodPut)
	v1.HandleFunc("/templates/{kind}/{name:(?s:.+)}", s.auth(matchbox.RoleAdmin, s.deleteTemplate)).Methods(http.MethodDelete)
	v1.HandleFunc("/machines", s.auth(matchbox.RoleRead, s.need(s.cfg.Machines != nil, errNoInventory.Error(), s.listMachines))).Methods(http.MethodGet)
	v1.HandleFunc("/machines/{mac}", s.auth(matchbox.RoleRead, s.need(s.cfg.Machines != nil, errNoInventory.Error(), s.getMachine))).Methods(http.MethodGet)
	v1.HandleFunc("/machines/{mac}", s.auth(matchbox.RoleAdmin, s.need(s.cfg.Machines != nil, errNoInventory.Error(), s.deleteMachine))).Methods(http.MethodDelete)
	v1.HandleFunc("/machines/{mac}/events", s.auth(matchbox.RoleRead, s.need(s.cfg.Machines != nil, errNoInventory.Error(), s.machineEvents))).Methods(http.MethodGet)
	v1.HandleFunc("/machines/{mac}/labels", s.auth(matchbox.RoleAdmin, s.need(s.cfg.Machines != nil, errNoInventory.Error(), s.setMachineLabels))).Methods(http.MethodPut)
	v1.HandleFunc("/machines/{mac}/bmc", s.auth(matchbox.RoleRead, s.need(s.cfg.BMC != nil, "no BMC settings store configured", s.getBMC))).Methods(http.MethodGet)
	v1.HandleFunc("/machines/{mac}/bmc", s.auth(matchbox.RoleAdmin, s.need(s.cfg.BMC != nil, "no BMC settings store configured", s.setBMC))).Methods(http.MethodPut)
	v1.HandleFunc("/machines/{mac}/bmc", s.auth(matchbox.RoleAdmin, s.need(s.cfg.BMC != nil, "no BMC settings store configured", s.deleteBMC))).Methods(http.MethodDelete)
	v1.HandleFunc("/machines/{mac}/preview", s.auth(matchbox.RoleRead, s.preview)).Methods(http.MethodGet)
	v1.HandleFunc("/machines/{mac}/power", s.auth(matchbox.RoleRead, s.need(s.cfg.Power != nil, errNoPower, s.getPower))).Methods(http.MethodGet)
	v1.HandleFunc("/machines/{mac}/power", s.auth(matchbox.RoleAdmin, s.need(s.cfg.Power != nil, errNoPower, s.setPower))).Methods(http.MethodPost)
	v1.HandleFunc("/machines/{mac}/bootdev", s.auth(matchbox.RoleAdmin, s.need(s.cfg.Power != nil, errNoPower, s.setBootDevice))).Methods(http.MethodPost)
	v1.HandleFunc("/machines/{mac}/workflow", s.auth(matchbox.RoleRead, s.need(s.cfg.Lifecycle != nil, errNoLifecycle, s.getWorkflow))).Methods(http.MethodGet)
	v1.HandleFunc("/machines/{mac}/reinstall", s.auth(matchbox.RoleAdmin, s.need(s.cfg.Lifecycle != nil, errNoLifecycle, s.reinstall))).Methods(http.MethodPost)
	v1.HandleFunc("/machines/{mac}/cancel", s.auth(matchbox.RoleAdmin, s.need(s.cfg.Lifecycle != nil, errNoLifecycle, s.cancelReinstall))).Methods(http.MethodPost)
	v1.HandleFunc("/releases", s.auth(matchbox.RoleRead, s.need(s.cfg.Releases != nil, errNoReleases, s.listReleases))).Methods(http.MethodGet)
	v1.HandleFunc("/releases", s.auth(matchbox.RoleAdmin, s.need(s.cfg.Releases != nil, errNoReleases, s.pullRelease))).Methods(http.MethodPost)
	v1.HandleFunc("/releases/{channel}/{board}/{version}", s.auth(matchbox.RoleAdmin, s.need(s.cfg.Releases != nil, errNoReleases, s.removeRelease))).Methods(http.MethodDelete)
	upd := func(role matchbox.Role, h http.HandlerFunc) http.HandlerFunc {
		return s.auth(role, s.need(s.cfg.Updates != nil, errNoUpdates, h))
	}
	v1.HandleFunc("/update-groups", upd(matchbox.RoleRead, s.listUpdateGroups)).Methods(http.MethodGet)
	v1.HandleFunc("/update-groups/{name}", upd(matchbox.RoleRead, s.getUpdateGroup)).Methods(http.MethodGet)
	v1.HandleFunc("/update-groups/{name}", upd(matchbox.RoleAdmin, s.putUpdateGroup)).Methods(http.MethodPut)
	v1.HandleFunc("/update-groups/{name}", upd(matchbox.RoleAdmin, s.deleteUpdateGroup)).Methods(http.MethodDelete)
	v1.HandleFunc("/update-groups/{name}/pause", upd(matchbox.RoleAdmin, s.pauseUpdateGroup)).Methods(http.MethodPost)
	v1.HandleFunc("/update-groups/{name}/resume", upd(matchbox.RoleAdmin, s.resumeUpdateGroup)).Methods(http.MethodPost)
	v1.HandleFunc("/update-machines/{id}", upd(matchbox.RoleRead, s.getUpdateMachine)).Methods(http.MethodGet)
	v1.HandleFunc("/update-machines/{id}/hold", upd(matchbox.RoleAdmin, s.holdUpdateMachine(true))).Methods(http.MethodPost)
	v1.HandleFunc("/update-machines/{id}/release", upd(matchbox.RoleAdmin, s.holdUpdateMachine(false))).Methods(http.MethodPost)
	v1.HandleFunc("/update-status", upd(matchbox.RoleRead, s.updateStatus)).Methods(http.MethodGet)
	v1.HandleFunc("/reinstalls", s.auth(matchbox.RoleAdmin, s.need(s.cfg.Lifecycle != nil, errNoLifecycle, s.reinstall))).Methods(http.MethodPost)
	v1.HandleFunc("/leases", s.auth(matchbox.RoleRead, s.need(s.cfg.Leases != nil, "the DHCP server is not running in full mode: there are no leases", s.listLeases))).Methods(http.MethodGet)
	v1.HandleFunc("/leases/{ip}", s.auth(matchbox.RoleAdmin, s.need(s.cfg.Leases != nil, "the DHCP server is not running in full mode: there are no leases", s.releaseLease))).Methods(http.MethodDelete)
	v1.HandleFunc("/tokens", s.auth(matchbox.RoleAdmin, s.listTokens)).Methods(http.MethodGet)
	v1.HandleFunc("/tokens", s.auth(matchbox.RoleAdmin, s.createToken)).Methods(http.MethodPost)
	v1.HandleFunc("/tokens/{name}", s.auth(matchbox.RoleAdmin, s.revokeToken)).Methods(http.MethodDelete)
	// 404 for an unknown path, 405 with Allow for a method its routes do
	// not take; last, so that it sees every route.
	r.NotFoundHandler = unrouted(r)
	r.MethodNotAllowedHandler = r.NotFoundHandler
	return r
}

type ctxKey struct{}

// caller is the token a request was made with.
func caller(r *http.Request) matchbox.Token {
	t, _ := r.Context().Value(ctxKey{}).(matchbox.Token)
	return t
}

// certToken is the identity of a request's verified client certificate
// (cert is nil when the request has none); err says why a certificate is
// refused (revoked, or its OUs name no role: matchbox.CertificateRole).
func (s *Server) certToken(r *http.Request) (t matchbox.Token, cert *x509.Certificate, err error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return matchbox.Token{}, nil, nil
	}
	cert = r.TLS.VerifiedChains[0][0]
	t.Name = "cert:" + cert.Subject.CommonName
	if s.cfg.VerifyCertificate != nil {
		if err := s.cfg.VerifyCertificate(r.TLS.VerifiedChains); err != nil {
			return t, cert, err
		}
	}
	t.Role, err = matchbox.CertificateRole(cert.Subject.OrganizationalUnit, s.cfg.CertDefaultRole)
	return t, cert, err
}

// refuse answers a request that is not let in. A request with a body
// also gets its connection closed, so the server does not read a body it
// will not use.
func refuse(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	if r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
	writeError(w, status, code, msg, nil)
}

// auth requires a bearer token, or a verified client certificate, with at
// least role need. It runs before the handler, so no request body is read
// before the caller is known.
func (s *Server) auth(need matchbox.Role, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			t, cert, err := s.certToken(r)
			if err != nil {
				s.log.Warn("admin API client certificate refused", "cn", matchbox.Quote(cert.Subject.CommonName), "serial", strings.ToUpper(cert.SerialNumber.Text(16)), "remote", r.RemoteAddr, "reason", err)
				refuse(w, r, http.StatusForbidden, "forbidden", fmt.Sprintf("client certificate CN=%s refused: %v", matchbox.Quote(cert.Subject.CommonName), err))
				return
			}
			if cert != nil {
				if need == matchbox.RoleAdmin && t.Role != matchbox.RoleAdmin {
					refuse(w, r, http.StatusForbidden, "forbidden", fmt.Sprintf("client certificate CN=%s has role read; this needs admin", matchbox.Quote(cert.Subject.CommonName)))
					return
				}
				h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, t)))
				return
			}
		}
		secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || secret == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="matchbox"`)
			refuse(w, r, http.StatusUnauthorized, "unauthenticated", "a bearer token (Authorization: Bearer TOKEN) or a client certificate is required")
			return
		}
		s.mu.RLock()
		t, known := s.tokens[HashSecret(strings.TrimSpace(secret))]
		s.mu.RUnlock()
		if !known {
			w.Header().Set("WWW-Authenticate", `Bearer realm="matchbox", error="invalid_token"`)
			refuse(w, r, http.StatusUnauthorized, "unauthenticated", "unknown or revoked token")
			return
		}
		if need == matchbox.RoleAdmin && t.Role != matchbox.RoleAdmin {
			refuse(w, r, http.StatusForbidden, "forbidden", fmt.Sprintf("token %q has role %s; this needs admin", t.Name, t.Role))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, t)))
	}
}

// apiError is the body of every error answer.
type apiError struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

func writeError(w http.ResponseWriter, status int, code, msg string, details map[string]any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(apiError{Code: code, Message: msg, Details: details})
}

// fail maps a store or validation error to its answer.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var oe *objErr
	switch {
	case errors.As(err, &oe):
		writeError(w, oe.status, oe.code, oe.msg, oe.details)
	case errors.Is(err, matchbox.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error(), nil)
	case errors.Is(err, matchbox.ErrInvalid):
		writeError(w, http.StatusBadRequest, "invalid", err.Error(), nil)
	case errors.Is(err, matchbox.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", err.Error(), nil)
	case errors.Is(err, matchbox.ErrPrecondition):
		writeError(w, http.StatusPreconditionFailed, "precondition_failed", err.Error(), nil)
	case errors.Is(err, matchbox.ErrUnavailable):
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error(), nil)
	default:
		s.log.Error("admin API request failed", "method", r.Method, "path", r.URL.Path, "token", caller(r).Name, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "internal error: "+err.Error(), nil)
	}
}

func writeJSON(w http.ResponseWriter, status int, etag string, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decode reads one JSON object into v: bounded size, unknown fields and
// trailing data refused.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json", nil)
		return false
	}
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("trailing data after the JSON object")
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body larger than %d bytes", s.cfg.MaxBody), nil)
			return false
		}
		writeError(w, http.StatusBadRequest, "invalid_json", "request body: "+err.Error(), nil)
		return false
	}
	return true
}

// condition reads If-Match / If-None-Match.
func condition(r *http.Request) matchbox.Condition {
	return matchbox.Condition{IfMatch: strings.TrimSpace(r.Header.Get("If-Match")), IfNoneMatch: strings.TrimSpace(r.Header.Get("If-None-Match")) == "*"}
}

func fromDB(origin string) bool { return origin == "db" }

// objectJSON is an object's JSON with where it comes from added.
func objectJSON(v any, origin string) map[string]any {
	data, _ := json.Marshal(v)
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	if fromDB(origin) {
		m["source"] = "api"
	} else {
		m["source"] = "data-dir"
		m["read_only"] = true
	}
	return m
}

// need answers 503 with why unless have: a part the server runs without.
func (s *Server) need(have bool, why string, h http.HandlerFunc) http.HandlerFunc {
	if have {
		return h
	}
	return func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusServiceUnavailable, "unavailable", why, nil)
	}
}

// Writes share their shape: check, store conditionally, make the boot
// endpoints see it, log, answer.

// pathID fills an empty id in a body from the path and refuses another.
func pathID(w http.ResponseWriter, path string, body *string) bool {
	if *body == "" {
		*body = path
	}
	if *body != path {
		writeError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("body id %q differs from the path's %q", *body, path), nil)
		return false
	}
	return true
}

// answerPut answers a write: view with the new ETag, 201 when the object
// is new.
func (s *Server) answerPut(w http.ResponseWriter, r *http.Request, tag string, created bool, err error, view any) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, tag, view)
}

// answerDelete answers a delete: 204.
func (s *Server) answerDelete(w http.ResponseWriter, r *http.Request, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// restWrite is how the REST API writes: conditional on If-Match /
// If-None-Match, references checked.
func restWrite(r *http.Request) writeMode {
	return writeMode{cond: condition(r), who: caller(r).Name, refs: true}
}

// getObject answers with an object from the database (with its ETag), or
// else from the data dir (read-only, no ETag).
func getObject[T any](s *Server, w http.ResponseWriter, r *http.Request, version func() (*T, string, error), fromDataDir func() (*T, string, bool)) {
	obj, tag, err := version()
	if errors.Is(err, matchbox.ErrNotFound) {
		if dobj, origin, ok := fromDataDir(); ok {
			writeJSON(w, http.StatusOK, "", objectJSON(dobj, origin))
			return
		}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, tag, objectJSON(obj, "db"))
}

// listObjects answers with every object of a kind, from both sources.
func listObjects[T any](w http.ResponseWriter, objs []*T, origin func(*T) string) {
	out := make([]map[string]any, 0, len(objs))
	for _, o := range objs {
		out = append(out, objectJSON(o, origin(o)))
	}
	writeJSON(w, http.StatusOK, "", map[string]any{"items": out})
}

// Groups.

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request) {
	listObjects(w, s.cfg.Catalog.Snapshot().Groups(), func(g *matchbox.Group) string { return g.Origin })
}

func (s *Server) getGroup(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	getObject(s, w, r, func() (*matchbox.Group, string, error) { return s.cfg.Store.GroupVersion(r.Context(), id) },
		func() (*matchbox.Group, string, bool) {
			g, ok := s.cfg.Catalog.Snapshot().Group(id)
			if !ok {
				return nil, "", false
			}
			return g, g.Origin, true
		})
}

func (s *Server) putGroup(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	var g matchbox.Group
	if !s.decode(w, r, &g) || !pathID(w, id, &g.ID) {
		return
	}
	tag, created, err := s.storeGroup(r.Context(), &g, restWrite(r))
	s.answerPut(w, r, tag, created, err, objectJSON(&g, "db"))
}

func (s *Server) deleteGroup(w http.ResponseWriter, r *http.Request) {
	s.answerDelete(w, r, s.removeGroup(r.Context(), mux.Vars(r)["id"], restWrite(r)))
}

// Profiles.

func (s *Server) listProfiles(w http.ResponseWriter, r *http.Request) {
	listObjects(w, s.cfg.Catalog.Snapshot().Profiles(), func(p *matchbox.Profile) string { return p.Origin })
}

func (s *Server) getProfile(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	getObject(s, w, r, func() (*matchbox.Profile, string, error) { return s.cfg.Store.ProfileVersion(r.Context(), id) },
		func() (*matchbox.Profile, string, bool) {
			p, ok := s.cfg.Catalog.Snapshot().Profile(id)
			if !ok {
				return nil, "", false
			}
			return p, p.Origin, true
		})
}

func (s *Server) putProfile(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	var p matchbox.Profile
	if !s.decode(w, r, &p) || !pathID(w, id, &p.ID) {
		return
	}
	tag, created, err := s.storeProfile(r.Context(), &p, restWrite(r))
	s.answerPut(w, r, tag, created, err, objectJSON(&p, "db"))
}

func (s *Server) deleteProfile(w http.ResponseWriter, r *http.Request) {
	s.answerDelete(w, r, s.removeProfile(r.Context(), mux.Vars(r)["id"], restWrite(r)))
}

// Templates. The API's kinds are ignition (raw Ignition, names ending in
// .ign or .ignition), butane (Butane, the other names of the ignition
// folder), cloud and generic.

// templateKind maps an API kind and name to the stored kind.
func templateKind(kind, name string) (matchbox.TemplateKind, error) {
	switch kind {
	case "ignition":
		if !matchbox.IsRawIgnition(name) {
			return "", fmt.Errorf("%w: an ignition template name ends in .ign or .ignition; Butane templates are kind butane", matchbox.ErrInvalid)
		}
		return matchbox.KindIgnition, nil
	case "butane":
		if matchbox.IsRawIgnition(name) {
			return "", fmt.Errorf("%w: names ending in .ign or .ignition are raw Ignition (kind ignition), not Butane", matchbox.ErrInvalid)
		}
		return matchbox.KindIgnition, nil
	case "cloud":
		return matchbox.KindCloud, nil
	case "generic":
		return matchbox.KindGeneric, nil
	}
	return "", fmt.Errorf("%w: template kind %q: want ignition, butane, cloud or generic", matchbox.ErrInvalid, kind)
}

// apiKind is the API's kind of a stored template.
func apiKind(t *matchbox.Template) string {
	if t.Kind == matchbox.KindIgnition && !matchbox.IsRawIgnition(t.Name) {
		return "butane"
	}
	return string(t.Kind)
}

func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) {
	want := mux.Vars(r)["kind"]
	switch want {
	case "", "ignition", "butane", "cloud", "generic":
	default:
		s.fail(w, r, fmt.Errorf("%w: template kind %q: want ignition, butane, cloud or generic", matchbox.ErrInvalid, want))
		return
	}
	var out []map[string]any
	for _, t := range s.cfg.Catalog.Snapshot().Templates() {
		k := apiKind(t)
		if want != "" && k != want {
			continue
		}
		item := map[string]any{"kind": k, "name": t.Name, "size": len(t.Content), "source": "api"}
		if !fromDB(t.Origin) {
			item["source"], item["read_only"] = "data-dir", true
		}
		out = append(out, item)
	}
	if out == nil {
		out = []map[string]any{}
	}
	writeJSON(w, http.StatusOK, "", map[string]any{"items": out})
}

func (s *Server) getTemplate(w http.ResponseWriter, r *http.Request) {
	v := mux.Vars(r)
	kind, err := templateKind(v["kind"], v["name"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	t, tag, err := s.cfg.Store.TemplateVersion(r.Context(), kind, v["name"])
	if errors.Is(err, matchbox.ErrNotFound) {
		if dt, ok := s.cfg.Catalog.Snapshot().Template(kind, v["name"]); ok {
			t, tag, err = dt, "", nil
			w.Header().Set("X-Matchbox-Read-Only", "data dir: "+dt.Origin)
		}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if tag != "" {
		w.Header().Set("ETag", tag)
	}
	_, _ = w.Write(t.Content)
}

func (s *Server) putTemplate(w http.ResponseWriter, r *http.Request) {
	v := mux.Vars(r)
	kind, err := templateKind(v["kind"], v["name"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	content, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("template larger than %d bytes", s.cfg.MaxBody), nil)
		return
	}
	t := &matchbox.Template{Kind: kind, Name: v["name"], Content: content}
	tag, created, err := s.storeTemplate(r.Context(), t, v["kind"], restWrite(r))
	s.answerPut(w, r, tag, created, err, map[string]any{"kind": v["kind"], "name": t.Name, "size": len(content), "source": "api"})
}

func (s *Server) deleteTemplate(w http.ResponseWriter, r *http.Request) {
	v := mux.Vars(r)
	kind, err := templateKind(v["kind"], v["name"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.answerDelete(w, r, s.removeTemplate(r.Context(), kind, v["name"], restWrite(r)))
}

// Tokens.

type tokenInfo struct {
	Name    string        `json:"name"`
	Role    matchbox.Role `json:"role"`
	Created time.Time     `json:"created"`
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := s.cfg.Store.Tokens(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]tokenInfo, 0, len(ts))
	for _, t := range ts {
		out = append(out, tokenInfo{t.Name, t.Role, t.Created})
	}
	writeJSON(w, http.StatusOK, "", map[string]any{"items": out})
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string        `json:"name"`
		Role matchbox.Role `json:"role"`
	}
	if !s.decode(w, r, &req) {
		return
	}
	secret, err := NewSecret()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	t := matchbox.Token{Name: req.Name, Role: req.Role, Hash: HashSecret(secret), Created: time.Now().UTC()}
	s.tableMu.Lock()
	if err := s.cfg.Store.CreateToken(r.Context(), t); err != nil {
		s.tableMu.Unlock()
		s.fail(w, r, err)
		return
	}
	s.mu.Lock()
	s.tokens[t.Hash] = t
	s.mu.Unlock()
	s.tableMu.Unlock()
	s.log.Info("API token created", "name", t.Name, "role", t.Role, "by", caller(r).Name)
	writeJSON(w, http.StatusCreated, "", map[string]any{"name": t.Name, "role": t.Role, "created": t.Created, "token": secret})
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	s.tableMu.Lock()
	if err := s.cfg.Store.DeleteToken(r.Context(), name); err != nil {
		s.tableMu.Unlock()
		s.fail(w, r, err)
		return
	}
	s.mu.Lock()
	for h, t := range s.tokens {
		if t.Name == name {
			delete(s.tokens, h)
		}
	}
	s.mu.Unlock()
	s.tableMu.Unlock()
	s.log.Info("API token revoked", "name", name, "by", caller(r).Name)
	w.WriteHeader(http.StatusNoContent)
}

// AdminTokenName is the name of the token the server creates for itself.
const AdminTokenName = "admin"

// EnsureAdminToken makes sure an admin token exists, and tells the
// operator through log where it is. It returns the file holding the
// admin token's secret ("" when no file does).
//
// With tokenFile set (-api-token-file), the secret in that file is the
// admin token: registered under the name "admin", replacing (and so
// revoking) another admin token. Otherwise, on first start, a new secret
// is generated, written to defaultFile (mode 0600, never logged) and
// registered; a secret already in defaultFile is registered again if the
// database lost it.
//
// A revoked secret is never registered again. When tokenFile holds one,
// the file is left as it is (it is the operator's) and an error is
// logged: the operator writes a new secret into it. When defaultFile
// holds one, that file is matchbox's own: a new secret is generated into
// it (unless another token named admin was created since), and an error
// is logged all the same, since whoever used the old secret needs the new
// one.
func EnsureAdminToken(ctx context.Context, store Store, tokenFile, defaultFile string, log *slog.Logger) (string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ts, err := store.Tokens(ctx)
	if err != nil {
		return "", err
	}
	var have *matchbox.Token
	for i := range ts {
		if ts[i].Name == AdminTokenName {
			have = &ts[i]
		}
	}
	register := func(secret string) error {
		h := HashSecret(secret)
		if have != nil && have.Hash == h && have.Role == matchbox.RoleAdmin {
			return nil
		}
		if have != nil {
			if err := store.DeleteToken(ctx, AdminTokenName); err != nil {
				return err
			}
		}
		return store.CreateToken(ctx, matchbox.Token{Name: AdminTokenName, Role: matchbox.RoleAdmin, Hash: h, Created: time.Now().UTC()})
	}
	// revoked is the revocation of secret, if it was revoked.
	revoked := func(secret string) (*matchbox.RevokedToken, error) {
		rv, err := store.RevokedToken(ctx, HashSecret(secret))
		if errors.Is(err, matchbox.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return &rv, nil
	}
	readSecret := func(path string) (string, error) {
		data, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		secret := strings.TrimSpace(string(data))
		if len(secret) < 16 {
			return "", fmt.Errorf("API token file %s: the token must be at least 16 characters", path)
		}
		return secret, nil
	}
	// generate writes a new secret into defaultFile and registers it.
	generate := func() error {
		secret, err := NewSecret()
		if err != nil {
			return err
		}
		if err := writeSecretFile(defaultFile, secret); err != nil {
			return fmt.Errorf("write the admin token: %w", err)
		}
		if err := register(secret); err != nil {
			os.Remove(defaultFile)
			return err
		}
		return nil
	}
	if tokenFile != "" {
		secret, err := readSecret(tokenFile)
		if err != nil {
			return "", fmt.Errorf("-api-token-file: %w", err)
		}
		rv, err := revoked(secret)
		if err != nil {
			return "", err
		}
		if rv != nil {
			log.Error("the admin API token in -api-token-file was revoked and is not accepted: write a new token (at least 16 characters) into the file and restart",
				"file", tokenFile, "revoked_as", rv.Name, "revoked_at", rv.Revoked.Format(time.RFC3339))
			return "", nil
		}
		if err := register(secret); err != nil {
			return "", err
		}
		log.Info("admin API token", "file", tokenFile)
		return tokenFile, nil
	}
	secret, err := readSecret(defaultFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if have != nil {
			// Registered before; its file was removed. The token still
			// works for whoever kept it.
			log.Warn("the admin API token file is gone; the token registered before still works (revoke the token named admin, or give -api-token-file, to set a new one)", "file", defaultFile)
			return "", nil
		}
	case err != nil:
		return "", err
	default:
		rv, err := revoked(secret)
		if err != nil {
			return "", err
		}
		if rv == nil {
			if err := register(secret); err != nil {
				return "", err
			}
			log.Info("admin API token", "file", defaultFile)
			return defaultFile, nil
		}
		if have != nil {
			log.Error("the admin API token in this file was revoked and is not accepted; the token named admin was created again since, through the API or -api-token-file: delete the file, or put that token's secret into it",
				"file", defaultFile, "revoked_at", rv.Revoked.Format(time.RFC3339))
			return "", nil
		}
		if err := generate(); err != nil {
			return "", err
		}
		log.Error("the admin API token in this file was revoked and is not accepted; a new admin token was generated into the file: give it to whoever needs admin access",
			"file", defaultFile, "revoked_at", rv.Revoked.Format(time.RFC3339))
		return defaultFile, nil
	}
	if err := generate(); err != nil {
		return "", err
	}
	log.Info("admin API token created", "file", defaultFile)
	return defaultFile, nil
}

// writeSecretFile writes secret to path, mode 0600, through a file beside
// it renamed into place, so that path holds the old secret or the new one,
// never a part of either.
func writeSecretFile(path, secret string) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	// CreateTemp makes files of mode 0600; say so, in case it changes.
	err = f.Chmod(0o600)
	if err == nil {
		_, err = io.WriteString(f, secret+"\n")
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
