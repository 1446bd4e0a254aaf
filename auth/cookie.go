package auth

import (
	"context"
	"net/http"
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
	if !s.cfg.RefreshCookie || ra == nil || ra.w == nil {
		return
	}
	http.SetCookie(ra.w, &http.Cookie{
		Name: RefreshCookieName, Value: value, Path: "/query",
		Expires: expires, MaxAge: maxAge,
		HttpOnly: true, Secure: s.cfg.CookieSecure, SameSite: http.SameSiteStrictMode,
	})
}
