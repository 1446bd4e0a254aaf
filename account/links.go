package account

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"

	"gqlauth/mailer"
	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/token"
)

// ValidChallenge reports whether s looks like an S256 PKCE challenge: 32 bytes in base64url.
func ValidChallenge(s string) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == sha256.Size && len(s) == 43
}

// S256 is the PKCE S256 challenge of a verifier (RFC 7636 §4.2).
func S256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// CompleteIdentityLink redeems the one-time code a link's callback redirected back with: the
// identity it carries is linked to the caller's account if the caller's session is the one that
// called linkIdentityStart and codeVerifier is the verifier of the challenge it passed. A code
// works once: every refusal (another session, even of the same user; another verifier; too
// late; a sign-in code) uses it up and looks the same.
func (s *Service) CompleteIdentityLink(ctx context.Context, code, codeVerifier string) (*model.Identity, error) {
	p, err := s.RequireSession(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.LimitClient(ctx); err != nil {
		return nil, err
	}
	invalid := model.Unauthenticated(model.AuthErrorReasonInvalidCredentials)
	if code == "" || len(code) > 128 {
		return nil, invalid
	}
	// Taken in a transaction of its own, so that the code is used up whatever follows.
	c, err := s.db.TakeAuthCode(ctx, token.HashSecret(code))
	if errors.Is(err, store.ErrNotFound) {
		return nil, invalid
	} else if err != nil {
		return nil, s.check(ctx, "CompleteIdentityLink", err)
	}
	now := s.clock()
	if !c.IsLink() || c.Subject == nil || !now.Before(c.ExpiresAt) ||
		!token.Equal(*c.LinkSessionID, p.Session.ID) || c.UserID != p.User.ID ||
		len(codeVerifier) < 43 || len(codeVerifier) > 128 || !token.Equal(S256(codeVerifier), c.CodeChallenge) {
		return nil, invalid
	}
	var identity *model.Identity
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		// The lock makes a logout of this session and the link take turns.
		sess, user, err := tx.LockSession(ctx, p.Session.ID)
		switch {
		case errors.Is(err, store.ErrNotFound) || (err == nil && !sess.Live(now)):
			return model.Unauthenticated(model.AuthErrorReasonSessionRevoked)
		case err != nil:
			return err
		case user.Disabled:
			return model.Forbidden(model.AuthErrorReasonAccountDisabled)
		}
		existing, err := linkCheck(ctx, tx.DB, c.Provider, *c.Subject, user.ID)
		switch {
		case errors.Is(err, errLinkedElsewhere) || errors.Is(err, errProviderLinked):
			return model.BadInput("code", err.Error())
		case err != nil:
			return err
		case existing != nil:
			identity = existing // linked already: nothing to do
			return nil
		}
		identity = &model.Identity{Provider: c.Provider, Subject: *c.Subject, UserID: user.ID, Email: c.Email, LinkedAt: now}
		if err := tx.CreateIdentity(ctx, identity); err != nil {
			return err
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeIdentityLinked, user.ID, user.ID, sess.ID, c.Provider))
	})
	if errors.Is(err, store.ErrIdentityTaken) {
		// Another link of the identity, or of this provider to this account, won a race.
		return nil, model.BadInput("code", "the identity was linked to another account, or this account got another identity of this provider, a moment ago")
	}
	if err != nil {
		return nil, s.check(ctx, "CompleteIdentityLink", err)
	}
	return identity, nil
}

// ExchangeAuthCode redeems a one-time code from a provider sign-in for a session, if codeVerifier
// is the verifier of the challenge the flow started with. A code works once: a wrong verifier
// uses it up too, and so does a link code, which it refuses.
func (s *Service) ExchangeAuthCode(ctx context.Context, code, codeVerifier string) (*model.AuthPayload, error) {
	if err := s.LimitClient(ctx); err != nil {
		return nil, err
	}
	if code == "" || len(code) > 128 {
		return nil, model.Unauthenticated(model.AuthErrorReasonInvalidCredentials)
	}
	var payload *model.AuthPayload
	var outcome error
	err := s.db.Transact(ctx, func(tx *store.Tx) error {
		c, err := tx.TakeAuthCode(ctx, token.HashSecret(code))
		if errors.Is(err, store.ErrNotFound) {
			outcome = model.Unauthenticated(model.AuthErrorReasonInvalidCredentials)
			return nil
		} else if err != nil {
			return err
		}
		// A malformed verifier is a wrong one: it uses the code up too (an app that finds a code
		// it did not ask for sends an empty one to kill it). A link code never signs in, not even
		// its own user: it is completeIdentityLink's.
		if c.IsLink() || !s.clock().Before(c.ExpiresAt) ||
			len(codeVerifier) < 43 || len(codeVerifier) > 128 || !token.Equal(S256(codeVerifier), c.CodeChallenge) {
			outcome = model.Unauthenticated(model.AuthErrorReasonInvalidCredentials)
			return nil // the code stays used up
		}
		user, err := tx.UserByID(ctx, c.UserID)
		if err != nil {
			return err
		}
		if user.Disabled {
			outcome = model.Forbidden(model.AuthErrorReasonAccountDisabled)
			return nil
		}
		payload, err = s.startSession(ctx, tx, user, model.AuditEventTypeSignIn, "via "+c.Provider, model.AMRFederated)
		return err
	})
	if err != nil {
		return nil, s.check(ctx, "ExchangeAuthCode", err)
	}
	return payload, outcome
}

// UnlinkIdentity removes the caller's identity of provider, unless the account would be left
// with no way to sign in (no password and no other identity).
func (s *Service) UnlinkIdentity(ctx context.Context, provider string) (bool, error) {
	p, err := s.RequireSession(ctx)
	if err != nil {
		return false, err
	}
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		// The lock makes two unlinks of one account take turns, so that they cannot each leave
		// the other's identity as the last way in and then both remove theirs.
		user, err := tx.LockUser(ctx, p.User.ID)
		if err != nil {
			return err
		}
		if err := tx.DeleteIdentity(ctx, user.ID, provider); errors.Is(err, store.ErrNotFound) {
			return model.BadInput("provider", "no identity of this provider is linked to your account")
		} else if err != nil {
			return err
		}
		left, err := tx.IdentitiesOf(ctx, user.ID)
		if err != nil {
			return err
		}
		if len(left) == 0 && user.PasswordHash == "" {
			return model.BadInput("provider", "this is your only way to sign in; set a password or link another provider first")
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeIdentityUnlinked, user.ID, user.ID, p.Session.ID, provider))
	})
	return err == nil, s.check(ctx, "UnlinkIdentity", err)
}

// SetPassword gives an account created through a provider its first password. It needs a recent
// authentication (REAUTH_WINDOW): a stolen access token alone must not add a way to sign in.
func (s *Service) SetPassword(ctx context.Context, newPassword string) (bool, error) {
	p, err := s.RequireSession(ctx) // @recentAuth checked the recent authentication
	if err != nil {
		return false, err
	}
	pw := NormalizePassword(newPassword)
	if err := ValidatePassword("newPassword", pw); err != nil {
		return false, err
	}
	if p.User.PasswordHash != "" {
		return false, model.BadInput("newPassword", "the account has a password already; use changePassword")
	}
	hash, err := s.passwords.Hash(ctx, pw)
	if err != nil {
		return false, s.check(ctx, "SetPassword", err)
	}
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		if err := tx.SetFirstPassword(ctx, p.User.ID, hash); errors.Is(err, store.ErrNotFound) {
			return model.BadInput("newPassword", "the account has a password already; use changePassword")
		} else if err != nil {
			return err
		}
		if err := tx.VoidMailTokens(ctx, p.User.ID); err != nil { // a credential reset
			return err
		}
		if err := s.queueSecurityNotice(ctx, tx, p.User, mailer.PasswordChanged, "A first password was set for the account, which signed in only through a provider before."); err != nil {
			return err
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypePasswordChanged, p.User.ID, p.User.ID, p.Session.ID, "first password set"))
	})
	return err == nil, s.check(ctx, "SetPassword", err)
}

// Identities lists a user's linked identities: for the user themself and for admins; anyone else
// gets an empty list. Within a response, the identities of all its users are loaded together
// (see identityBatch).
func (s *Service) Identities(ctx context.Context, userID string) ([]*model.Identity, error) {
	p, err := s.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	admin := p.Role.Satisfies(model.RoleAdmin)
	if p.User.ID != userID && !admin {
		return []*model.Identity{}, nil
	}
	var ids []*model.Identity
	if sc := scopeFrom(ctx); sc != nil {
		ids, err = sc.identities.load(ctx, s.db, userID, admin)
	} else {
		ids, err = s.db.IdentitiesOf(ctx, userID)
	}
	return ids, s.check(ctx, "Identities", err)
}

// SweepSignIns deletes flows and one-time codes that have expired.
func (s *Service) SweepSignIns(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := s.db.DeleteExpiredSignIns(ctx, s.clock(), 1000)
		total += n
		if err != nil || n < 1000 {
			return total, err
		}
	}
}
