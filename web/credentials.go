package web

import (
	"net/http"

	"gqlauth/account"
	"gqlauth/token"
)

// CredentialOptions configure Credentials.
type CredentialOptions struct {
	Proxies Proxies // whose X-Forwarded-For to believe
	// RefreshCookie (cookie mode) sets the refresh token as an HttpOnly cookie on sign-in and
	// refresh, and lets refresh read it from there; CookieSecure marks that cookie Secure (HTTPS
	// only).
	RefreshCookie bool
	CookieSecure  bool
	// Origins are the other origins (CORS_ALLOWED_ORIGINS) whose requests may use the refresh
	// cookie, besides the server's own; see cookieRequest.
	Origins []string
}

// Credentials is the middleware in front of every endpoint that reads credentials (/query,
// /oauth/token, /oauth/introspect, /auth/). It reads each request into an account.Request of plain
// values in its context: the Bearer token (verified) or API key, or the reason they are unusable;
// the client's IP, taking X-Forwarded-For into account only from proxies; the user agent; and, in
// cookie mode, the refresh cookie where the cookie rule lets the request use it. It never rejects
// a request by itself, so that public operations still work with a stale token; only guarded
// fields fail. Every value of Authorization and X-API-Key is read (Header.Values): one sent twice
// is refused like two credentials, never taken first-wins. It sends no WWW-Authenticate itself:
// the RFC 6750 challenge belongs to the resource server (/query: graph writes it with the
// response, once the guarded fields have also checked the session or API key in the database),
// not to the OAuth form endpoints, where an Authorization: Basic header identifies the client.
// What the rules decide about the refresh cookie, it writes before the headers go out.
func Credentials(tokens *token.Tokens, opts CredentialOptions) func(http.Handler) http.Handler {
	proxies := &opts.Proxies // what the per-request closure captures, instead of a copy of opts
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Header.Values and Get canonicalize their key on every call; these keys are canonical
			// (X-API-Key's canonical form is X-Api-Key).
			req := account.NewRequest(tokens, r.Header["Authorization"], r.Header["X-Api-Key"])
			req.ClientIP = func() string { return proxies.ClientIP(r) }
			if ua := r.Header["User-Agent"]; len(ua) > 0 {
				req.UserAgent = ua[0]
			}
			if opts.cookieRequest(r) {
				req.CookieAllowed = true
				if c, err := r.Cookie(RefreshCookieName); err == nil {
					req.RefreshCookie = c.Value
				}
				cw := &cookieWriter{ResponseWriter: w, req: req, secure: opts.CookieSecure}
				defer cw.apply() // a handler that wrote nothing: net/http writes the headers after it
				w = cw
			}
			next.ServeHTTP(w, r.WithContext(account.WithRequest(r.Context(), req)))
		})
	}
}
