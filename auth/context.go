package auth

import (
	"context"
	"net/http"
	"strings"
	"sync"

	"gqlauth/model"
)

// MaxUserAgentLength bounds the User-Agent kept with a session.
const MaxUserAgentLength = 256

// requestAuth is what the middleware learned from one request's credentials, plus the memo of the
// principal, so that the database is asked at most once per request however many guarded fields
// the request resolves, and concurrently resolved fields share the one answer.
type requestAuth struct {
	claims    *Claims
	reason    model.AuthErrorReason // why claims is nil
	userAgent string

	once      sync.Once
	principal *Principal
	err       error
}

// Principal is the caller of a request, as loaded from the database.
type Principal struct {
	User    *model.User
	Session *model.Session
}

type ctxKey struct{}

func fromContext(ctx context.Context) *requestAuth {
	ra, _ := ctx.Value(ctxKey{}).(*requestAuth)
	return ra
}

// Middleware decodes the Bearer token of each request into its context: the verified claims or
// the reason the token is unusable. It never rejects a request by itself, so that public
// operations still work with a stale token; only guarded fields fail. When a token was sent but
// is unusable, it says so in WWW-Authenticate (RFC 6750).
func Middleware(tokens *Tokens) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ra := &requestAuth{userAgent: truncate(r.UserAgent(), MaxUserAgentLength)}
			switch header := r.Header.Get("Authorization"); {
			case header == "":
				ra.reason = model.AuthErrorReasonMissingToken
			default:
				scheme, token, _ := strings.Cut(header, " ")
				if !strings.EqualFold(scheme, "Bearer") || token == "" {
					ra.reason = model.AuthErrorReasonInvalidToken
				} else {
					ra.claims, ra.reason = tokens.Verify(strings.TrimSpace(token))
				}
				if ra.reason != "" {
					w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
				}
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, ra)))
		})
	}
}

// UserAgent returns the User-Agent of the request in ctx, truncated.
func UserAgent(ctx context.Context) string {
	if ra := fromContext(ctx); ra != nil {
		return ra.userAgent
	}
	return ""
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence, and drops bytes the
// databases will not store.
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
