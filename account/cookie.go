package account

import (
	"context"
	"time"
)

// The refresh cookie of cookie mode. The rules never touch a response: they leave what the
// response must do with the cookie on the Request (CookieIntent), and the edge applies it before
// the headers go out. Which requests may touch the cookie at all is the edge's rule (web/cookie.go):
// only those get CookieAllowed.

func (s *Service) setRefreshCookie(ctx context.Context, refresh string, expires time.Time) {
	if ra := fromContext(ctx); ra != nil && ra.CookieAllowed {
		ra.leaveCookie(CookieIntent{Token: refresh, Expires: expires})
	}
}

func (s *Service) clearRefreshCookie(ctx context.Context) {
	if ra := fromContext(ctx); ra != nil && ra.CookieAllowed {
		ra.leaveCookie(CookieIntent{Clear: true})
	}
}

// presentedCookie is the refresh cookie the request in ctx came with, when the request may use it.
func (s *Service) presentedCookie(ctx context.Context) string {
	if ra := fromContext(ctx); ra != nil && ra.CookieAllowed {
		return ra.RefreshCookie
	}
	return ""
}
