package account

import (
	"context"
	"errors"

	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/token"
)

// The admin side of signing keys. The keys themselves are the KeyRing's.

func errNoKeys() *model.Error {
	return &model.Error{Code: model.ErrorCodeBadUserInput, Message: "JWT_ALG is HS256, which has no signing keys to rotate or revoke; set JWT_ALG to ES256, EdDSA or RS256"}
}

// SigningKeys lists the published signing keys, newest first; none with HS256.
func (s *Service) SigningKeys(ctx context.Context) ([]*model.SigningKey, error) {
	if _, err := s.Authorize(ctx, model.RoleAdmin); err != nil {
		return nil, err
	}
	if s.tokens.Keys() == nil {
		return []*model.SigningKey{}, nil
	}
	return s.tokens.Keys().Keys(), nil
}

// RotateSigningKey creates the next signing key; it signs after the publish delay.
func (s *Service) RotateSigningKey(ctx context.Context) (*model.SigningKey, error) {
	if _, err := s.Authorize(ctx, model.RoleAdmin); err != nil {
		return nil, err
	}
	if s.tokens.Keys() == nil {
		return nil, errNoKeys()
	}
	actor, session := actorOf(ctx)
	k, err := s.tokens.Keys().Rotate(ctx, func(tx *store.Tx, kid string) error {
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeSigningKeyRotated, actor, "", session, kid))
	})
	return k, s.check(ctx, "RotateSigningKey", err)
}

// RotateSigningKeyIfDue rotates on the JWT_KEY_ROTATION schedule.
func (s *Service) RotateSigningKeyIfDue(ctx context.Context) error {
	if s.tokens.Keys() == nil {
		return nil
	}
	return s.tokens.Keys().RotateIfDue(ctx, func(tx *store.Tx, kid string) error {
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeSigningKeyRotated, "", "", "", "scheduled: "+kid))
	})
}

// RevokeSigningKey revokes a signing key: its tokens fail from the next request on.
func (s *Service) RevokeSigningKey(ctx context.Context, kid string) (bool, error) {
	if _, err := s.Authorize(ctx, model.RoleAdmin); err != nil {
		return false, err
	}
	if s.tokens.Keys() == nil {
		return false, errNoKeys()
	}
	actor, session := actorOf(ctx)
	ok, err := s.tokens.Keys().Revoke(ctx, kid, func(tx *store.Tx) error {
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeSigningKeyRevoked, actor, "", session, kid))
	})
	switch {
	case errors.Is(err, token.ErrOnlySigningKey):
		return false, model.BadInput("kid", "this is the only key that can sign: rotate first, then revoke it (the new key takes over at once)")
	case err == nil && !ok:
		return false, model.NotFound("no live signing key has this kid")
	}
	return ok, s.check(ctx, "RevokeSigningKey", err)
}
