package api

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/gorilla/mux"
)

// unrouted answers the requests no route of r takes: 405 with an Allow
// header when r serves the path with other methods, 404 otherwise. Set it
// as both r.NotFoundHandler and r.MethodNotAllowedHandler once every route
// is registered: gorilla/mux 1.8.1 reports some method mismatches as not
// found (a later route of a subrouter whose path prefix matches clears the
// mismatch), so the answer is decided here, by asking the router which
// methods it routes the path with. The Allow header names exactly those:
// no route takes HEAD, so HEAD is answered 405 and never listed.
func unrouted(r *mux.Router) http.Handler {
	methods := routerMethods(r)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		allow := allowedMethods(r, req, methods)
		if len(allow) == 0 {
			writeError(w, http.StatusNotFound, "not_found", "no such API path", nil)
			return
		}
		list := strings.Join(allow, ", ")
		w.Header().Set("Allow", list)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed",
			fmt.Sprintf("method %s not allowed on %s; allowed: %s", req.Method, req.URL.Path, list), nil)
	})
}

// routerMethods returns every method some route of r takes, in the order
// they are first registered.
func routerMethods(r *mux.Router) []string {
	var methods []string
	_ = r.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		ms, err := route.GetMethods()
		if err != nil {
			return nil // a route without a method matcher: the subrouter
		}
		for _, m := range ms {
			if !slices.Contains(methods, m) {
				methods = append(methods, m)
			}
		}
		return nil
	})
	return methods
}

// allowedMethods returns the methods, of those given, that r routes req's
// path with.
func allowedMethods(r *mux.Router, req *http.Request, methods []string) []string {
	var allow []string
	for _, m := range methods {
		probe := req.Clone(req.Context())
		probe.Method = m
		var match mux.RouteMatch
		if r.Match(probe, &match) && match.MatchErr == nil {
			allow = append(allow, m)
		}
	}
	return allow
}
