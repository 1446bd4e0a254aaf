package account

import (
	"cmp"
	"context"
	"errors"
	"time"

	"gqlauth/mailer"
	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/token"
)

// The purposes of mailed tokens (each also a link's type and the message's kind).
const (
	purposeVerifyEmail   = string(mailer.VerifyEmail)
	purposeResetPassword = string(mailer.ResetPassword)
)

// MailConfig is what the flows that mail need.
type MailConfig struct {
	// Mailer queues the messages; nil: nothing is queued (the flows still work).
	Mailer *mailer.Mailer
	// LinkURL is the base of mailed links (EMAIL_LINK_URL): a link is
	// <LinkURL>#type=<purpose>&token=<token>.
	LinkURL string
	// VerifyTTL is how long a verification link works (EMAIL_VERIFY_TTL, default 24 h).
	VerifyTTL time.Duration
	// ResetTTL is how long a password reset link works (PASSWORD_RESET_TTL, default 30 min).
	ResetTTL time.Duration
	// ResetFloor is the least time requestPasswordReset takes, known address or not (default
	// 250 ms; see RequestPasswordReset).
	ResetFloor time.Duration
}

// SendEmailVerification mails a verification link to the caller's address. The token is stored
// only as its keyed hash, voids the caller's older verification links, and its message is queued
// in the same transaction. An address already verified gets nothing (true all the same).
func (s *Service) SendEmailVerification(ctx context.Context) (bool, error) {
	p, err := s.RequireSession(ctx)
	if err != nil {
		return false, err
	}
	if p.User.Email == nil {
		return false, model.BadInput("email", "the account has no email address; set one first")
	}
	if p.User.EmailVerifiedAt != nil {
		return true, nil
	}
	if err := s.LimitClient(ctx); err != nil {
		return false, err
	}
	address := *p.User.Email
	if err := s.limitAddress(ctx, address); err != nil {
		return false, err
	}
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		return s.mailLink(ctx, tx, mailer.VerifyEmail, p.User.ID, address, cmp.Or(s.cfg.Mail.VerifyTTL, 24*time.Hour))
	})
	if errors.Is(err, mailer.ErrInvalid) {
		return false, model.BadInput("email", "the account's address cannot receive mail; change it")
	}
	return err == nil, s.check(ctx, "SendEmailVerification", err)
}

// VerifyEmail uses a verification link's token: once, before it expires, for the address it was
// mailed to. Anything else (unknown, used, voided, expired, malformed, of another purpose, for an
// address the account no longer has) is UNAUTHENTICATED / INVALID_CODE.
func (s *Service) VerifyEmail(ctx context.Context, secret string) (bool, error) {
	if err := s.LimitClient(ctx); err != nil {
		return false, err
	}
	if !token.IsMailToken(secret) {
		return false, model.Unauthenticated(model.AuthErrorReasonInvalidCode)
	}
	now := s.clock()
	err := s.db.Transact(ctx, func(tx *store.Tx) error {
		t, err := s.useMailLink(ctx, tx, purposeVerifyEmail, secret, now)
		if err != nil {
			return err
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeEmailVerified, t.UserID, t.UserID, "", ""))
	})
	return err == nil, s.check(ctx, "VerifyEmail", err)
}

// mailLink queues, in tx, a message of kind (whose name is the token's purpose and the link's
// type) to address with a link <LinkURL>#type=<kind>&token=<token> valid for ttl, and stores the
// token only as its keyed hash, voiding the account's older tokens of that purpose.
func (s *Service) mailLink(ctx context.Context, tx *store.Tx, kind mailer.Kind, userID, address string, ttl time.Duration) error {
	purpose, secret, now := string(kind), token.NewMailToken(), s.clock()
	msg := mailer.Message{Kind: kind, To: address, ExpiresIn: ttl, Link: s.cfg.Mail.LinkURL + "#type=" + purpose + "&token=" + secret}
	if err := s.enqueue(ctx, tx, msg); err != nil {
		return err
	}
	return tx.ReplaceMailToken(ctx, &store.MailToken{
		Hash: s.tokens.HashMailToken(purpose, secret), UserID: userID, Purpose: purpose,
		Email: address, CreatedAt: now, ExpiresAt: now.Add(ttl),
	})
}

// enqueue queues msg in tx (nothing without a mailer).
func (s *Service) enqueue(ctx context.Context, tx *store.Tx, msg mailer.Message) error {
	if m := s.cfg.Mail.Mailer; m != nil {
		return m.Enqueue(ctx, tx.SQLTx(), msg)
	}
	return nil
}

// takeMailToken uses up the token of purpose whose secret is secret (of the shape IsMailToken
// checks): unknown, used, voided or expired at now is UNAUTHENTICATED / INVALID_CODE.
func (s *Service) takeMailToken(ctx context.Context, tx *store.Tx, purpose, secret string, now time.Time) (*store.MailToken, error) {
	invalid := model.Unauthenticated(model.AuthErrorReasonInvalidCode)
	t, err := tx.TakeMailToken(ctx, purpose, s.tokens.HashMailToken(purpose, secret))
	if isNotFound(err) {
		return nil, invalid
	}
	if err != nil {
		return nil, err
	}
	if !now.Before(t.ExpiresAt) {
		return nil, invalid
	}
	return t, nil
}

// useMailLink uses up a mailed link's token (takeMailToken) and marks the address it was sent to
// verified, the link being the proof; an account that no longer has that address is
// UNAUTHENTICATED / INVALID_CODE.
func (s *Service) useMailLink(ctx context.Context, tx *store.Tx, purpose, secret string, now time.Time) (*store.MailToken, error) {
	t, err := s.takeMailToken(ctx, tx, purpose, secret, now)
	if err != nil {
		return nil, err
	}
	ok, err := tx.SetEmailVerified(ctx, t.UserID, t.Email, now)
	if err != nil || !ok {
		return nil, cmpErr(err, model.Unauthenticated(model.AuthErrorReasonInvalidCode))
	}
	return t, nil
}

// cmpErr is err, or fallback when err is nil.
func cmpErr(err error, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}

// SweepMailTokens deletes mailed tokens that have expired, in bounded batches.
func (s *Service) SweepMailTokens(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := s.db.DeleteExpiredMailTokens(ctx, s.clock(), 1000)
		total += n
		if err != nil || n < 1000 {
			return total, err
		}
	}
}
