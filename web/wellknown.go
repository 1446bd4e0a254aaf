package web

import (
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"gqlauth/account"
	"gqlauth/token"
)

// JWKS serves GET /.well-known/jwks.json: the RFC 7517 key set of the public keys that may verify
// a live token (empty with HS256, whose key is a secret: keys nil), cacheable for maxAge.
func JWKS(keys *token.KeyRing, maxAge time.Duration) http.Handler {
	cache := "public, max-age=" + strconv.Itoa(int(maxAge.Seconds()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !getOnly(w, r) {
			return
		}
		set := []map[string]string{}
		if keys != nil {
			set = keys.JWKS()
		}
		w.Header().Set("Cache-Control", cache)
		writeJSON(w, http.StatusOK, map[string]any{"keys": set})
	})
}

// Metadata serves GET /.well-known/oauth-authorization-server (RFC 8414). publicURL is the base
// of the absolute URLs; empty, it is taken from the request. providers says whether provider
// sign-in is configured (its codes are redeemed at the token endpoint).
func Metadata(issuer, publicURL string, maxAge time.Duration, providers bool) http.Handler {
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
		if providers {
			// The code of a provider sign-in (/auth/<name>/start) is redeemed here with PKCE.
			meta["grant_types_supported"] = []string{"password", "refresh_token", "authorization_code"}
			meta["code_challenge_methods_supported"] = []string{"S256"}
		}
		writeJSON(w, http.StatusOK, meta)
	})
}

// Introspection is POST /oauth/introspect (RFC 7662) for services that must see revocation at
// once. The caller authenticates with an API key whose owner is an ADMIN; the rules decide whether
// a token is active (account.Service.Introspect). It must be served behind Credentials.
func Introspection(svc *account.Service) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "use POST")
			return
		}
		ctx := r.Context()
		switch err := svc.AuthorizeIntrospection(ctx); err {
		case nil:
		case account.ErrIntrospectionNoAPIKey:
			refuseIntrospection(w, "authenticate with an ADMIN's API key (X-API-Key or Authorization: Bearer gqa_…)")
			return
		default:
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
		tok := r.PostForm.Get("token")
		if tok == "" {
			oauthError(w, http.StatusBadRequest, "invalid_request", "token is required")
			return
		}
		active, err := svc.Introspect(ctx, tok)
		switch {
		case err != nil:
			oauthError(w, http.StatusInternalServerError, "server_error", "the token could not be checked; try again")
			return
		case active == nil:
			writeJSON(w, http.StatusOK, map[string]any{"active": false})
			return
		}
		claims, user := active.Claims, active.User
		writeJSON(w, http.StatusOK, map[string]any{
			"active": true, "token_type": "access_token",
			"sub": claims.Subject, "sid": claims.SessionID, "username": user.Username, "role": user.Role,
			"iss": claims.Issuer, "aud": claims.Audience, "iat": claims.IssuedAt.Unix(), "exp": claims.ExpiresAt.Unix(),
			"aal": active.Session.AAL.Claim(), "amr": active.Session.Methods(),
		})
	})
}

func refuseIntrospection(w http.ResponseWriter, description string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="gqlauth", error="invalid_token"`)
	oauthError(w, http.StatusUnauthorized, "invalid_token", description)
}
