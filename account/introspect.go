package account

import (
	"context"
	"errors"

	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/token"
)

// The rules of token introspection (RFC 7662), which the edge serves at POST /oauth/introspect for
// services that must see a revocation at once.

// Why an introspection caller is refused.
var (
	ErrIntrospectionNoAPIKey   = errors.New("account: introspection without an API key")
	ErrIntrospectionNotAnAdmin = errors.New("account: introspection with an invalid key, or a key that does not pass an ADMIN field's guard")
)

// AuthorizeIntrospection checks that the request in ctx is made with an API key that passes the
// guard of an ADMIN field (Guard: the key's role ADMIN, at its owner's own level — a key minted at
// AAL1 is refused once its owner has a second factor or MFA_REQUIRED_ROLES names ADMIN).
func (s *Service) AuthorizeIntrospection(ctx context.Context) error {
	if ra := fromContext(ctx); ra == nil || ra.apiKey == "" {
		return ErrIntrospectionNoAPIKey
	}
	if _, err := s.Guard(ctx, Guard{Role: model.RoleAdmin}); err != nil {
		return ErrIntrospectionNotAnAdmin
	}
	return nil
}

// Introspection is what introspection tells about an active access token.
type Introspection struct {
	Claims *token.Claims
	User   *model.User
	// Session is the token's session as stored now: its level and methods (aal, amr) are the
	// session's current ones, which a step-up may have raised since the token was issued.
	Session *model.Session
}

// Introspect reports whether an access token is active: it verifies, its session is live and its
// user enabled — the check of a guarded field, in the same one query. nil: inactive. An error is
// one a client may see (ClientError).
func (s *Service) Introspect(ctx context.Context, accessToken string) (*Introspection, error) {
	claims, reason := s.tokens.Verify(accessToken)
	if reason != "" {
		return nil, nil
	}
	sess, user, err := s.db.TokenPrincipal(ctx, claims.SessionID, claims.Subject, claims.KeyID)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrSigningKeyRevoked):
		return nil, nil
	case err != nil:
		return nil, s.check(ctx, "Introspect", err)
	case user.Disabled || !sess.Live(s.clock()):
		return nil, nil
	}
	return &Introspection{Claims: claims, User: user, Session: sess}, nil
}
