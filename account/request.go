package account

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gqlauth/model"
	"gqlauth/token"
)

// MaxUserAgentLength bounds the User-Agent kept with a session.
const MaxUserAgentLength = 256

// Request is what the edge (web) read from one HTTP request, as plain values — the credentials,
// the client's address and user agent, and the refresh cookie where the request may use it — and
// what the rules leave for the edge to do with the response (the refresh cookie: CookieIntent).
// The rules never see an http.Request or a ResponseWriter. The edge builds it with NewRequest and
// puts it in the context with WithRequest; a socket's connection_init gets one of its own
// (Service.SocketContext).
//
// It is also the memo of the principal, so that the database is asked at most once per request
// however many guarded fields the request resolves, and concurrently resolved fields share the
// one answer.
type Request struct {
	// ClientIP returns the client's address (X-Forwarded-For counts only from trusted proxies),
	// worked out only when an operation needs it (a sign-in, a rate limit), not on every request.
	// nil: no network request (the request is the server's own).
	ClientIP func() string
	// UserAgent is the User-Agent header as sent; it is truncated where it is kept.
	UserAgent string
	// ClientID is the OAuth client_id of a token request.
	ClientID string
	// CookieAllowed says that this request may read, set or clear the refresh cookie: cookie mode
	// is on and the edge's cookie rule lets this request touch it. RefreshCookie is the cookie
	// the request came with, if CookieAllowed.
	CookieAllowed bool
	RefreshCookie string

	claims *token.Claims
	token  string                // the access token the claims came from (sockets verify it again)
	apiKey string                // an API key secret, not yet checked against the database
	reason model.AuthErrorReason // why neither claims nor apiKey is set
	// loadFailure is why loading the principal refused the credential (a revoked session or API
	// key, an expired API key), once a guarded field tried; read by CredentialRejected.
	loadFailure atomic.Pointer[model.AuthErrorReason]
	// socket marks the credentials a WebSocket presented in connection_init. They are never
	// memoized: each operation on the socket authenticates with its own fresh copy (see
	// SocketOperation), and anything asking with the socket's own context is checked from scratch.
	socket bool

	once      sync.Once
	principal *Principal
	err       error
	// issued: a mutation of this request signed someone in (see issue).
	issued atomic.Bool

	mu      sync.Mutex
	cookies []CookieIntent
}

// CookieIntent is what the response must do with the refresh cookie, as the rules decided it: set
// it to Token until Expires, or Clear it. The edge applies every intent, in order, before the
// response's headers go out.
type CookieIntent struct {
	Token   string
	Expires time.Time
	Clear   bool
}

// Principal is the caller of a request, as loaded from the database.
type Principal struct {
	User *model.User
	// Session is the caller's session; nil when the request was made with an API key.
	Session *model.Session
	// APIKey is the key the request was made with, or nil.
	APIKey *model.APIKey
	// Role is what the request may do: the user's role, capped by the API key's.
	Role model.Role
}

type ctxKey struct{}

func fromContext(ctx context.Context) *Request {
	ra, _ := ctx.Value(ctxKey{}).(*Request)
	return ra
}

// WithRequest returns ctx carrying the request r.
func WithRequest(ctx context.Context, r *Request) context.Context {
	return context.WithValue(ctx, ctxKey{}, r)
}

// RequestFrom returns the request in ctx, or nil.
func RequestFrom(ctx context.Context) *Request { return fromContext(ctx) }

// MaxAuthorizationLength bounds the Authorization header that is parsed at all; real access
// tokens are well under 1 KiB.
const MaxAuthorizationLength = 4096

// NewRequest reads the credentials of a request: every Authorization value and every X-API-Key
// value as sent (http.Header.Values; a WebSocket's connection_init payload gives its own, read
// the same way). It yields a verified Bearer token, an API key to look up, or the reason neither
// is usable: two credentials, or one of them sent twice, are INVALID_TOKEN (refuse rather than
// guess which one counts). It refuses nothing by itself, so that public operations still work
// with a stale token; only guarded fields fail.
func NewRequest(tokens *token.Tokens, authorization, apiKey []string) *Request {
	r := &Request{}
	r.readCredentials(tokens, authorization, apiKey)
	return r
}

// CredentialRejected reports whether the request sent a credential that turned out unusable,
// either on its face (malformed, bad signature, expired, two of them) or, once a guarded field
// loaded the principal, because its session or API key is revoked or expired. The resource
// server says so in WWW-Authenticate (RFC 6750 invalid_token). A disabled account is not counted:
// the credential is valid, its owner lacks the authority (RFC 6750 §3.1: that is not
// invalid_token), and the response's ACCOUNT_DISABLED says so.
func (ra *Request) CredentialRejected() bool {
	return (ra.reason != "" && ra.reason != model.AuthErrorReasonMissingToken) || ra.loadFailure.Load() != nil
}

// noteLoadFailure keeps, for CredentialRejected, a principal load's refusal of the credential.
func (ra *Request) noteLoadFailure(err error) {
	var merr *model.Error
	if !errors.As(err, &merr) {
		return
	}
	switch merr.Reason {
	case model.AuthErrorReasonInvalidToken, model.AuthErrorReasonTokenExpired, model.AuthErrorReasonSessionRevoked:
		reason := merr.Reason
		ra.loadFailure.Store(&reason)
	}
}

// readCredentials reads the Authorization values and the X-API-Key values of a request: a
// verified Bearer token, an API key to look up, or the reason neither is usable.
func (ra *Request) readCredentials(tokens *token.Tokens, headers, keys []string) {
	if len(headers) > 1 || len(keys) > 1 {
		ra.reason = model.AuthErrorReasonInvalidToken // one credential sent twice: refuse rather than guess
		return
	}
	var header, key string
	if len(headers) == 1 {
		header = headers[0]
	}
	if len(keys) == 1 {
		key = keys[0]
	}
	scheme, tok, _ := strings.Cut(header, " ")
	tok = strings.TrimSpace(tok)
	switch {
	case header == "" && key == "":
		ra.reason = model.AuthErrorReasonMissingToken
	case header != "" && key != "":
		ra.reason = model.AuthErrorReasonInvalidToken // two credentials: refuse rather than guess
	case key != "":
		ra.apiKey, ra.reason = checkAPIKeyFormat(key)
	case len(header) > MaxAuthorizationLength || !strings.EqualFold(scheme, "Bearer") || tok == "":
		ra.reason = model.AuthErrorReasonInvalidToken
	case strings.HasPrefix(tok, APIKeyPrefix):
		ra.apiKey, ra.reason = checkAPIKeyFormat(tok)
	default:
		ra.token = tok
		ra.claims, ra.reason = tokens.Verify(tok)
	}
}

// TakeCookies returns what the rules decided about the refresh cookie during the request, in
// order, and forgets it.
func (ra *Request) TakeCookies() []CookieIntent {
	ra.mu.Lock()
	defer ra.mu.Unlock()
	c := ra.cookies
	ra.cookies = nil
	return c
}

func (ra *Request) leaveCookie(c CookieIntent) {
	ra.mu.Lock()
	defer ra.mu.Unlock()
	ra.cookies = append(ra.cookies, c)
}

// ClientIP returns the client IP of the request in ctx ("" outside a request).
func ClientIP(ctx context.Context) string {
	if ra := fromContext(ctx); ra != nil && ra.ClientIP != nil {
		return ra.ClientIP()
	}
	return ""
}

// CallerID returns the id of the user authenticated so far in this request, or "". It never
// queries the database: it reports what a guarded field already loaded.
func CallerID(ctx context.Context) string {
	ra := fromContext(ctx)
	if ra == nil {
		return ""
	}
	if ra.principal != nil {
		return ra.principal.User.ID
	}
	if ra.claims != nil {
		return ra.claims.Subject
	}
	return ""
}

// UserAgent returns the User-Agent of the request in ctx, truncated.
func UserAgent(ctx context.Context) string {
	if ra := fromContext(ctx); ra != nil {
		return model.Truncate(ra.UserAgent, MaxUserAgentLength)
	}
	return ""
}
