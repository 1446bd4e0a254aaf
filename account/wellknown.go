package account

import (
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"gqlauth/model"
	"gqlauth/store"
)

// JWKSHandler serves GET /.well-known/jwks.json: the RFC 7517 key set of the public keys that may
// verify a live token (empty with HS256, whose key is a secret), cacheable for maxAge.
func (s *Service) JWKSHandler(maxAge time.Duration) http.Handler {
	cache := "public, max-age=" + strconv.Itoa(int(maxAge.Seconds()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !getOnly(w, r) {
			return
		}
		keys := []map[string]string{}
		if s.tokens.Keys() != nil {
			keys = s.tokens.Keys().JWKS()
		}
		w.Header().Set("Cache-Control", cache)
		writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
	})
}

// MetadataHandler serves GET /.well-known/oauth-authorization-server (RFC 8414). publicURL is the
// base of the absolute URLs; empty, it is taken from the request.
func (s *Service) MetadataHandler(issuer, publicURL string, maxAge time.Duration) http.Handler {
	cache := "public, max-age=" + strconv.Itoa(int(maxAge.Seconds()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !getOnly(w, r) {
			return
		}
		base := strings.TrimRight(publicURL, "/")
		w.Header().Set("Cache-Control", cache)
		if base == "" {
			scheme := "http"
			if r.TLS != nil {
				scheme = "https"
			}
			base = scheme + "://" + r.Host
			// Built from a header the client chose: a shared cache must not serve it to others.
			w.Header().Set("Cache-Control", "no-store")
		}
		meta := map[string]any{
			"issuer":                                issuer,
			"jwks_uri":                              base + "/.well-known/jwks.json",
			"token_endpoint":                        base + "/oauth/token",
			"introspection_endpoint":                base + "/oauth/introspect",
			"grant_types_supported":                 []string{"password", "refresh_token"},
			"response_types_supported":              []string{},
			"token_endpoint_auth_methods_supported": []string{"none"},
		}
		if s.signIns != nil {
			// The code of a provider sign-in (/auth/<name>/start) is redeemed here with PKCE.
			meta["grant_types_supported"] = []string{"password", "refresh_token", "authorization_code"}
			meta["code_challenge_methods_supported"] = []string{"S256"}
		}
		writeJSON(w, http.StatusOK, meta)
	})
}

// IntrospectionHandler is POST /oauth/introspect (RFC 7662) for services that must see revocation
// at once. The caller authenticates with an API key whose owner is an ADMIN. A token is active
// only when it verifies and its session is live and its user enabled: the check of a guarded
// field, in the same one query. It must be served behind Middleware.
func (s *Service) IntrospectionHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "use POST")
			return
		}
		ctx := r.Context()
		if ra := fromContext(ctx); ra == nil || ra.apiKey == "" {
			refuseIntrospection(w, "authenticate with an ADMIN's API key (X-API-Key or Authorization: Bearer gqa_…)")
			return
		}
		if p, err := s.Authenticate(ctx); err != nil || p.Role != model.RoleAdmin {
			refuseIntrospection(w, "the API key is not valid, or its owner is not an ADMIN")
			return
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
			oauthError(w, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
			return
		}
		if !readForm(w, r) {
			return
		}
		if !validForm(r.PostForm) {
			oauthError(w, http.StatusBadRequest, "invalid_request", "the body is not a valid form")
			return
		}
		token := r.PostForm.Get("token")
		if token == "" {
			oauthError(w, http.StatusBadRequest, "invalid_request", "token is required")
			return
		}
		inactive := map[string]any{"active": false}
		claims, reason := s.tokens.Verify(token)
		if reason != "" {
			writeJSON(w, http.StatusOK, inactive)
			return
		}
		sess, user, err := s.db.Principal(ctx, claims.SessionID, claims.Subject)
		switch {
		case errors.Is(err, store.ErrNotFound):
			writeJSON(w, http.StatusOK, inactive)
			return
		case err != nil:
			s.check(ctx, "Introspect", err)
			oauthError(w, http.StatusInternalServerError, "server_error", "the token could not be checked; try again")
			return
		case user.Disabled || !sess.Live(s.clock()):
			writeJSON(w, http.StatusOK, inactive)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"active": true, "token_type": "access_token",
			"sub": claims.Subject, "sid": claims.SessionID, "username": user.Username, "role": user.Role,
			"iss": claims.Issuer, "aud": claims.Audience, "iat": claims.IssuedAt.Unix(), "exp": claims.ExpiresAt.Unix(),
		})
	})
}

func refuseIntrospection(w http.ResponseWriter, description string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="gqlauth", error="invalid_token"`)
	oauthError(w, http.StatusUnauthorized, "invalid_token", description)
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
