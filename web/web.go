// Package web is the edge: every net/http surface that is not GraphQL's own transport (graph
// serves /query). The credential middleware (Authorization, X-API-Key, the refresh cookie, the
// client IP through trusted proxies) and the refresh-cookie rule, CORS, POST /oauth/token,
// POST /oauth/introspect, /.well-known/*, provider sign-in under /auth/, body limits and the
// playground. It holds no rules: it translates requests into calls of the account rules (and the
// OpenID relying party) with plain values, and writes what they return.
package web

import (
	"encoding/json"
	"net/http"
)

// NoSniff keeps browsers from guessing content types on every endpoint.
func NoSniff(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}

func getOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	w.WriteHeader(http.StatusMethodNotAllowed)
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
