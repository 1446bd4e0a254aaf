package account

import (
	"context"
	"time"

	"gqlauth/model"
	"gqlauth/store"
)

// A WebSocket authenticates in its connection_init payload and then lives for hours. What it
// presented there is kept; what it was allowed is not: every operation on the socket reads the
// credentials afresh (the access token verified again, the principal loaded again with one
// query, as for a request), so nothing learned at connection_init grants more than a fresh
// request would.

// SocketContext returns ctx carrying the credentials of a connection_init payload, read with
// exactly the rules of an HTTP request's (NewRequest: one Bearer token or one API key, never two
// credentials, never one twice): authorization and apiKey are the values the payload holds under
// each name, as http.Header.Values gives a request's.
// ctx is the upgrade request's, which the edge served: it gives the client IP and user agent.
func (s *Service) SocketContext(ctx context.Context, authorization, apiKey []string) context.Context {
	ra := &Request{socket: true}
	if up := fromContext(ctx); up != nil {
		ra.ClientIP, ra.UserAgent = up.ClientIP, up.UserAgent
	}
	ra.readCredentials(s.tokens, authorization, apiKey)
	return context.WithValue(ctx, ctxKey{}, ra)
}

// renew is a fresh copy of the credentials ra: the access token verified again (its signing key
// may have been revoked, or it may have expired, since) and no principal loaded yet.
func (s *Service) renew(ra *Request) *Request {
	fresh := &Request{ClientIP: ra.ClientIP, UserAgent: ra.UserAgent, apiKey: ra.apiKey, token: ra.token, reason: ra.reason}
	if ra.token != "" {
		fresh.claims, fresh.reason = s.tokens.Verify(ra.token)
	}
	return fresh
}

// SocketOperation is the authentication of one operation on a socket.
type SocketOperation struct{ ra *Request }

// NewSocketOperation starts the authentication of one operation on the socket in ctx: the
// socket's token is verified again, and the operation's principal is loaded by the first guarded
// field that asks, once for the whole operation (one query, as for a request). It is nil when ctx
// is not a socket's.
func (s *Service) NewSocketOperation(ctx context.Context) *SocketOperation {
	ra := fromContext(ctx)
	if ra == nil || !ra.socket {
		return nil
	}
	return &SocketOperation{ra: s.renew(ra)}
}

// Context returns ctx carrying the operation's credentials (ctx itself for a nil operation).
func (op *SocketOperation) Context(ctx context.Context) context.Context {
	if op == nil {
		return ctx
	}
	return context.WithValue(ctx, ctxKey{}, op.ra)
}

// HasCredentials reports whether the request or socket in ctx presented a credential at all.
func HasCredentials(ctx context.Context) bool {
	ra := fromContext(ctx)
	return ra != nil && ra.reason != model.AuthErrorReasonMissingToken
}

// ClientKey is the key by which the client of the request in ctx is counted: its IP address, or
// for IPv6 its /64, exactly as the rate limits count it.
func ClientKey(ctx context.Context) string { return clientKey(ClientIP(ctx)) }

// Now is the service's clock (injected in tests).
func (s *Service) Now() time.Time { return s.now() }

// TokenSubject is the user id (sub) of the verified access token in ctx; "" for an API key, an
// unusable token or none.
func TokenSubject(ctx context.Context) string {
	if ra := fromContext(ctx); ra != nil && ra.claims != nil {
		return ra.claims.Subject
	}
	return ""
}

// TokenExpiry is when the access token in ctx expires; zero for an API key or no token.
func TokenExpiry(ctx context.Context) time.Time {
	if ra := fromContext(ctx); ra != nil && ra.claims != nil && ra.claims.ExpiresAt != nil {
		return ra.claims.ExpiresAt.Time
	}
	return time.Time{}
}

// Recheck authenticates the request or socket in ctx again, from scratch: the token is verified
// again (its key may have been revoked) and the session, key and user are read again from the
// database — never from the principal cache: the event that prompts a re-check may arrive before
// the cache's own invalidation does.
func (s *Service) Recheck(ctx context.Context) (*Principal, error) {
	ctx = store.Uncached(ctx)
	ra := fromContext(ctx)
	if ra == nil {
		return s.Authenticate(ctx)
	}
	return s.Authenticate(context.WithValue(ctx, ctxKey{}, s.renew(ra)))
}

// VerifyAgain verifies the access token of the socket in ctx again, without asking the database:
// "" while it verifies (or the socket has no token), else why it no longer does (a revoked
// signing key makes it INVALID_TOKEN).
func (s *Service) VerifyAgain(ctx context.Context) model.AuthErrorReason {
	ra := fromContext(ctx)
	if ra == nil || ra.token == "" {
		return ""
	}
	_, reason := s.tokens.Verify(ra.token)
	return reason
}
