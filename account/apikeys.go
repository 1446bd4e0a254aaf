package account

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"gqlauth/mailer"
	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/token"
)

// APIKeyPrefix starts every API key secret, so that keys are recognizable in configuration files
// and by secret scanners.
const APIKeyPrefix = "gqa_"

// API key rules.
const (
	DefaultAPIKeyLifetime = 90 * 24 * time.Hour
	MaxAPIKeyLifetime     = 366 * 24 * time.Hour
	MinAPIKeyLifetime     = time.Minute
	MaxAPIKeysPerUser     = 50
	maxAPIKeyNameLength   = 100
	apiKeyDisplayLength   = len(APIKeyPrefix) + 8
	// touchInterval is how stale lastUsedAt may get: updating it on every request would turn every
	// read into a write.
	touchInterval = time.Minute
)

// newAPIKeySecret returns a fresh secret: the prefix and 256 random bits.
func newAPIKeySecret() string { return APIKeyPrefix + token.Random(32) }

func checkAPIKeyFormat(secret string) (string, model.AuthErrorReason) {
	secret = strings.TrimSpace(secret)
	if !strings.HasPrefix(secret, APIKeyPrefix) || len(secret) != len(newAPIKeySecret()) {
		return "", model.AuthErrorReasonInvalidToken
	}
	return secret, ""
}

// errNeedsSession refuses operations that an API key must not perform.
func errNeedsSession() *model.Error {
	return &model.Error{Code: model.ErrorCodeForbidden, Message: "this operation needs a signed-in session; an API key cannot perform it"}
}

// RequireSession authenticates the caller and refuses API keys (an operation, or a link's start,
// that needs a signed-in session).
func (s *Service) RequireSession(ctx context.Context) (*Principal, error) {
	p, err := s.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if p.Session == nil {
		return nil, errNeedsSession()
	}
	return p, nil
}

// CreateAPIKey creates a key for the caller and returns its secret, once; it needs a recent
// authentication (REAUTH_WINDOW). It is a credential
// operation, rate limited per client IP and per user (each creation writes an audit event, and
// the cap of live keys does not bound creations that are revoked again).
func (s *Service) CreateAPIKey(ctx context.Context, name string, role *model.Role, expiresIn *int) (*model.APIKeySecret, error) {
	// A key outlives the session that mints it: only a session that signed in or stepped up
	// within REAUTH_WINDOW may, so a stolen access token alone cannot mint one.
	p, err := s.RequireSession(ctx) // @recentAuth checked the recent authentication
	if err != nil {
		return nil, err
	}
	if err := s.LimitClient(ctx); err != nil {
		return nil, err
	}
	if err := s.limitUser(ctx, p.User.ID); err != nil {
		return nil, err
	}
	name = strings.TrimSpace(name)
	if name == "" || len(name) > maxAPIKeyNameLength || strings.ContainsRune(name, 0) {
		return nil, model.BadInput("name", "name must be 1–100 characters")
	}
	keyRole := p.Role
	if role != nil {
		if !p.Role.Satisfies(*role) {
			return nil, model.BadInput("role", "an API key's role cannot exceed your own")
		}
		keyRole = *role
	}
	lifetime := DefaultAPIKeyLifetime
	if expiresIn != nil {
		lifetime = time.Duration(*expiresIn) * time.Second
		if lifetime < MinAPIKeyLifetime || lifetime > MaxAPIKeyLifetime {
			return nil, model.BadInput("expiresIn", "expiresIn must be from 60 seconds to 366 days")
		}
	}
	now := s.clock()
	secret := newAPIKeySecret()
	key := &model.APIKey{
		ID: uuid.Must(uuid.NewV7()).String(), UserID: p.User.ID, Name: name, Prefix: secret[:apiKeyDisplayLength],
		SecretHash: token.HashRefreshToken(secret), Role: keyRole, AAL: p.Session.AAL, CreatedAt: now, ExpiresAt: now.Add(lifetime),
	}
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		// The cap is checked where it is enforced: the owner's row is locked (Postgres; SQLite
		// runs one writing transaction at a time), so concurrent creations of one user, on any
		// instance, count and insert in turn and none can count before another's insert.
		owner, err := tx.LockUser(ctx, p.User.ID)
		if err != nil {
			return err
		}
		live, err := tx.CountLiveAPIKeys(ctx, p.User.ID, now)
		if err != nil {
			return err
		}
		if live >= MaxAPIKeysPerUser {
			return model.BadInput("name", "too many API keys; revoke one first")
		}
		if err := tx.CreateAPIKey(ctx, key); err != nil {
			return err
		}
		// A key is a way in that outlives every session: the owner hears of each new one.
		if err := s.queueSecurityNotice(ctx, tx, owner, mailer.APIKeyCreated, "A new API key named "+strconv.Quote(name)+" was created."); err != nil {
			return err
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeAPIKeyCreated, p.User.ID, p.User.ID, p.Session.ID, name))
	})
	if err != nil {
		return nil, s.check(ctx, "CreateAPIKey", err)
	}
	return &model.APIKeySecret{Secret: secret, APIKey: key}, nil
}

// APIKeys lists the caller's live keys.
func (s *Service) APIKeys(ctx context.Context) ([]*model.APIKey, error) {
	p, err := s.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := s.db.LiveAPIKeys(ctx, p.User.ID, s.clock())
	return keys, s.check(ctx, "APIKeys", err)
}

// RevokeAPIKey revokes one of the caller's keys.
func (s *Service) RevokeAPIKey(ctx context.Context, id string) (bool, error) {
	p, err := s.Authenticate(ctx)
	if err != nil {
		return false, err
	}
	if err := validateID(id); err != nil {
		return false, err
	}
	actor, session := actorOf(ctx)
	var ok bool
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		name, err := tx.APIKeyName(ctx, p.User.ID, id)
		if err != nil {
			return err
		}
		if ok, err = tx.RevokeAPIKey(ctx, p.User.ID, id, s.clock()); err != nil || !ok {
			return err
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeAPIKeyRevoked, actor, p.User.ID, session, name))
	})
	if err == nil && !ok {
		return false, model.NotFound("no live API key of yours with this id")
	}
	return ok, s.check(ctx, "RevokeAPIKey", err)
}

// loadKeyPrincipal authenticates a request made with an API key.
func (s *Service) loadKeyPrincipal(ctx context.Context, secret string) (*Principal, error) {
	key, user, err := s.db.APIKeyPrincipal(ctx, token.HashRefreshToken(secret))
	now := s.clock()
	switch {
	case err != nil:
		if isNotFound(err) {
			return nil, model.Unauthenticated(model.AuthErrorReasonInvalidToken)
		}
		return nil, s.check(ctx, "Authenticate", err)
	case user.Disabled:
		return nil, model.Forbidden(model.AuthErrorReasonAccountDisabled)
	case key.RevokedAt != nil:
		return nil, model.Unauthenticated(model.AuthErrorReasonSessionRevoked)
	case !now.Before(key.ExpiresAt):
		return nil, model.Unauthenticated(model.AuthErrorReasonTokenExpired)
	}
	if key.LastUsedAt == nil || now.Sub(*key.LastUsedAt) >= touchInterval {
		go func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := s.db.TouchAPIKey(ctx, key.ID, now); err != nil {
				s.log.WarnContext(ctx, "could not record API key use", "err", err)
			}
		}()
	}
	return &Principal{User: user, APIKey: key, Role: user.Role.Lower(key.Role)}, nil
}
