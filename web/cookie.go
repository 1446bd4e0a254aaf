package web

import (
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"gqlauth/account"
)

// RefreshCookieName is the cookie that carries the refresh token in cookie mode. It is scoped to
// the GraphQL endpoint, unreadable from JavaScript and never sent cross-site.
const RefreshCookieName = "gqlauth_refresh"

// cookieRequest is the one rule for the refresh cookie, on every endpoint: a request may read,
// set or clear it only if it is one that a browser sends from another origin only after a CORS
// preflight that this server approved. Otherwise any page could sign a visitor in as the page's
// author (login CSRF: the visitor's app silently becomes the attacker's account), sign them out,
// or rotate their session away. So the request must
//   - be a POST with a JSON body: HTML forms (application/x-www-form-urlencoded,
//     multipart/form-data) and text/plain are "simple" requests that need no preflight. This is
//     why /oauth/token, which takes form bodies, never reads, sets or clears the cookie;
//   - come from this server's own origin, or from a sibling listed in CORS_ALLOWED_ORIGINS, as the
//     browser says: Sec-Fetch-Site same-origin, or same-site with an allowed Origin (another
//     subdomain is same-site too). cross-site and none are refused; SameSite=Strict keeps the
//     cookie out of cross-site requests anyway;
//   - without Sec-Fetch-Site (older browsers), name no Origin or an allowed one: this server's
//     own host, or one in CORS_ALLOWED_ORIGINS ("null", an opaque origin, is neither).
//
// A request without Origin and Sec-Fetch-Site (curl, a mobile app, a server) passes: only browsers
// carry cookies on their own, and they send those headers on every cross-origin POST.
func (o *CredentialOptions) cookieRequest(r *http.Request) bool {
	if !o.RefreshCookie {
		return false
	}
	if r.Method != http.MethodPost {
		return false
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return false
	}
	origin := r.Header.Get("Origin")
	allowed := slices.Contains(o.Origins, strings.TrimRight(origin, "/"))
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin":
		return true
	case "same-site":
		return allowed
	case "":
	default: // cross-site, none (typed in the address bar: never a JSON POST), or unknown
		return false
	}
	if origin == "" || allowed {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// cookieWriter applies, before the response's headers go out, what the rules decided about the
// refresh cookie during the request (account.CookieIntent): they never see the response.
type cookieWriter struct {
	http.ResponseWriter
	req    *account.Request
	secure bool
	done   bool
}

func (w *cookieWriter) apply() {
	if w.done {
		return
	}
	w.done = true
	for _, c := range w.req.TakeCookies() {
		cookie := &http.Cookie{
			Name: RefreshCookieName, Value: c.Token, Path: "/query",
			Expires: c.Expires, MaxAge: int(time.Until(c.Expires).Seconds()),
			HttpOnly: true, Secure: w.secure, SameSite: http.SameSiteStrictMode,
		}
		if c.Clear {
			cookie.Value, cookie.Expires, cookie.MaxAge = "", time.Unix(0, 0), -1
		}
		http.SetCookie(w.ResponseWriter, cookie)
	}
}

func (w *cookieWriter) WriteHeader(status int) {
	w.apply()
	w.ResponseWriter.WriteHeader(status)
}

func (w *cookieWriter) Write(b []byte) (int, error) {
	w.apply()
	return w.ResponseWriter.Write(b)
}

// Unwrap lets LimitBody and http.ResponseController reach net/http's own writer.
func (w *cookieWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
