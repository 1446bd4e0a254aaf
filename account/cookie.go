package account

import (
	"context"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// RefreshCookieName is the cookie that carries the refresh token in cookie mode. It is scoped to
// the GraphQL endpoint, unreadable from JavaScript and never sent cross-site.
const RefreshCookieName = "gqlauth_refresh"

func (s *Service) setRefreshCookie(ctx context.Context, token string, expires time.Time) {
	s.writeCookie(ctx, token, expires, int(time.Until(expires).Seconds()))
}

func (s *Service) clearRefreshCookie(ctx context.Context) {
	s.writeCookie(ctx, "", time.Unix(0, 0), -1)
}

func (s *Service) writeCookie(ctx context.Context, value string, expires time.Time, maxAge int) {
	ra := fromContext(ctx)
	if !s.cookieRequest(ra) || ra.w == nil {
		return
	}
	http.SetCookie(ra.w, &http.Cookie{
		Name: RefreshCookieName, Value: value, Path: "/query",
		Expires: expires, MaxAge: maxAge,
		HttpOnly: true, Secure: s.cfg.CookieSecure, SameSite: http.SameSiteStrictMode,
	})
}

// presentedCookie is the refresh cookie the request in ctx came with, when the request may use it.
func (s *Service) presentedCookie(ctx context.Context) string {
	if ra := fromContext(ctx); s.cookieRequest(ra) {
		return ra.refreshCookie
	}
	return ""
}

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
func (s *Service) cookieRequest(ra *requestAuth) bool {
	if !s.cfg.RefreshCookie || ra == nil || ra.r == nil {
		return false
	}
	r := ra.r
	if r.Method != http.MethodPost {
		return false
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return false
	}
	origin := r.Header.Get("Origin")
	allowed := slices.Contains(s.cfg.Origins, strings.TrimRight(origin, "/"))
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
