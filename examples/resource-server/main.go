// Command resource-server is an HTTP API that trusts gqlauth's access tokens without sharing a
// secret with it: it verifies them with gqlauth's public keys (JWKS) alone, enforces a role claim,
// and, for the one operation that must see a logout at once, asks gqlauth's introspection
// endpoint instead.
//
// It uses github.com/MicahParks/keyfunc/v3 (on github.com/MicahParks/jwkset): a small,
// dependency-light JWKS client made for golang-jwt/v5, the library gqlauth itself uses. It keeps
// the key set in memory, refreshes it in the background, and on a token whose kid it does not
// know it refetches at once, rate-limited (the cooldown), so a rotation never needs a restart and
// a flood of made-up kids cannot turn into a flood of JWKS requests. (lestrrat-go/jwx does the same
// and much more — JWE, JWT building — which an API that only verifies does not need.)
//
//	GQLAUTH_URL=http://localhost:8080 INTROSPECTION_API_KEY=gqa_… go run .
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Config says where gqlauth is and how fresh the keys must be.
type Config struct {
	GqlauthURL       string        // gqlauth's base URL
	Issuer           string        // JWT_ISSUER of gqlauth
	Audience         string        // JWT_AUDIENCE of gqlauth
	RefreshInterval  time.Duration // background JWKS refresh: how late a revoked key is noticed
	UnknownKIDEvery  time.Duration // cooldown between refetches caused by an unknown kid
	IntrospectionKey string        // an ADMIN's API key, for /api/transfer
}

// claims are the parts of a gqlauth access token this API uses.
type claims struct {
	jwt.RegisteredClaims
	SessionID string `json:"sid"`
	Role      string `json:"role"`
}

// NewAPI returns the API's handler; it stops refreshing keys when ctx ends.
func NewAPI(ctx context.Context, cfg Config) (http.Handler, error) {
	jwks, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.GqlauthURL + "/.well-known/jwks.json"}, keyfunc.Override{
		RefreshInterval:   cfg.RefreshInterval,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(cfg.UnknownKIDEvery), 1),
	})
	if err != nil {
		return nil, err
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{"ES256", "EdDSA", "RS256"}), // never HS256: that key is gqlauth's secret
		jwt.WithIssuer(cfg.Issuer), jwt.WithAudience(cfg.Audience), jwt.WithExpirationRequired(),
		jwt.WithLeeway(5*time.Second),
	)
	// verify checks the Bearer token locally: signature by a published key, typ, iss, aud, exp.
	verify := func(r *http.Request) (*claims, bool) {
		raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			return nil, false
		}
		c := &claims{}
		tok, err := parser.ParseWithClaims(raw, c, jwks.Keyfunc)
		if err != nil || tok.Header["typ"] != "at+jwt" || c.Subject == "" {
			return nil, false
		}
		return c, true
	}
	guard := func(role string, next func(w http.ResponseWriter, r *http.Request, c *claims)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			c, ok := verify(r)
			switch {
			case !ok:
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
				reply(w, http.StatusUnauthorized, map[string]any{"error": "invalid_token"})
			case role == "ADMIN" && c.Role != "ADMIN":
				reply(w, http.StatusForbidden, map[string]any{"error": "insufficient_role"})
			default:
				next(w, r, c)
			}
		}
	}
	mux := http.NewServeMux()
	// Local verification: fast, no call to gqlauth, but a logout is seen only at the token's exp.
	mux.HandleFunc("GET /api/profile", guard("USER", func(w http.ResponseWriter, r *http.Request, c *claims) {
		reply(w, http.StatusOK, map[string]any{"sub": c.Subject, "role": c.Role})
	}))
	mux.HandleFunc("GET /api/admin", guard("ADMIN", func(w http.ResponseWriter, r *http.Request, c *claims) {
		reply(w, http.StatusOK, map[string]any{"admin": c.Subject})
	}))
	// Moving money must not outlive a logout by 15 minutes: ask gqlauth, which checks the session.
	mux.HandleFunc("POST /api/transfer", guard("USER", func(w http.ResponseWriter, r *http.Request, c *claims) {
		active, err := introspect(r.Context(), cfg, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		switch {
		case err != nil:
			reply(w, http.StatusBadGateway, map[string]any{"error": "introspection unavailable"})
		case !active:
			reply(w, http.StatusUnauthorized, map[string]any{"error": "session_revoked"})
		default:
			reply(w, http.StatusOK, map[string]any{"transferred": true, "by": c.Subject})
		}
	}))
	return mux, nil
}

// introspect asks gqlauth (RFC 7662) whether the token's session is live right now.
func introspect(ctx context.Context, cfg Config, token string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.GqlauthURL+"/oauth/introspect",
		strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-API-Key", cfg.IntrospectionKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return false, fmt.Errorf("introspection: %s", res.Status)
	}
	var out struct {
		Active bool `json:"active"`
	}
	err = json.NewDecoder(res.Body).Decode(&out)
	return out.Active, err
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func main() {
	env := func(name, def string) string {
		if v := os.Getenv(name); v != "" {
			return v
		}
		return def
	}
	api, err := NewAPI(context.Background(), Config{
		GqlauthURL: strings.TrimRight(env("GQLAUTH_URL", "http://localhost:8080"), "/"),
		Issuer:     env("JWT_ISSUER", "gqlauth"), Audience: env("JWT_AUDIENCE", "gqlauth"),
		RefreshInterval: 5 * time.Minute, UnknownKIDEvery: 10 * time.Second,
		IntrospectionKey: os.Getenv("INTROSPECTION_API_KEY"),
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(http.ListenAndServe(":"+env("PORT", "9090"), api))
}
