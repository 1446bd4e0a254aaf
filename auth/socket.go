package auth

import (
	"context"
	"time"

	"gqlauth/model"
)

// A WebSocket authenticates once, in its connection_init payload, and then lives for hours; these
// give the socket layer the same rules as a request, and a way to ask again.

// SocketContext returns ctx carrying the credentials of a connection_init payload, read with
// exactly the rules of Middleware (a Bearer token or an API key, never both). ctx is the upgrade
// request's, which Middleware served: it gives the client IP and user agent.
func SocketContext(ctx context.Context, tokens *Tokens, authorization, apiKey string) context.Context {
	ra := &requestAuth{}
	if up := fromContext(ctx); up != nil {
		ra.r, ra.proxies = up.r, up.proxies
	}
	ra.readCredentials(tokens, authorization, apiKey)
	return context.WithValue(ctx, ctxKey{}, ra)
}

// HasCredentials reports whether the request or socket in ctx presented a credential at all.
func HasCredentials(ctx context.Context) bool {
	ra := fromContext(ctx)
	return ra != nil && ra.reason != model.AuthErrorReasonMissingToken
}

// Now is the service's clock (injected in tests).
func (s *Service) Now() time.Time { return s.now() }

// TokenExpiry is when the access token in ctx expires; zero for an API key or no token.
func TokenExpiry(ctx context.Context) time.Time {
	if ra := fromContext(ctx); ra != nil && ra.claims != nil && ra.claims.ExpiresAt != nil {
		return ra.claims.ExpiresAt.Time
	}
	return time.Time{}
}

// Recheck authenticates the socket in ctx again, from scratch: the token is verified again (its key
// may have been revoked) and the session, key and user are read again from the database.
func (s *Service) Recheck(ctx context.Context) (*Principal, error) {
	ra := fromContext(ctx)
	if ra == nil {
		return s.Authenticate(ctx)
	}
	fresh := &requestAuth{r: ra.r, proxies: ra.proxies, apiKey: ra.apiKey, token: ra.token, reason: ra.reason}
	if ra.token != "" {
		fresh.claims, fresh.reason = s.tokens.Verify(ra.token)
	}
	return s.Authenticate(context.WithValue(ctx, ctxKey{}, fresh))
}
