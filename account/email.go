package account

import (
	"context"
	"errors"
	"time"

	"gqlauth/mailer"
	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/token"
)

// purposeVerifyEmail is the purpose of an address verification's token (and the link's type).
const purposeVerifyEmail = "verify_email"

// MailConfig is what the flows that mail need.
type MailConfig struct {
	// Mailer queues the messages; nil: nothing is queued (the flows still work).
	Mailer *mailer.Mailer
	// LinkURL is the base of mailed links (EMAIL_LINK_URL): a link is
	// <LinkURL>#type=<purpose>&token=<token>.
	LinkURL string
	// VerifyTTL is how long a verification link works (EMAIL_VERIFY_TTL, default 24 h).
	VerifyTTL time.Duration
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
	ttl := s.cfg.Mail.VerifyTTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	secret, now := token.NewMailToken(), s.clock()
	msg := mailer.Message{
		Kind: mailer.VerifyEmail, To: address, ExpiresIn: ttl,
		Link: s.cfg.Mail.LinkURL + "#type=" + purposeVerifyEmail + "&token=" + secret,
	}
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		if m := s.cfg.Mail.Mailer; m != nil {
			if err := m.Enqueue(ctx, tx.SQLTx(), msg); err != nil {
				return err
			}
		}
		return tx.ReplaceMailToken(ctx, &store.MailToken{
			Hash: s.tokens.HashMailToken(purposeVerifyEmail, secret), UserID: p.User.ID, Purpose: purposeVerifyEmail,
			Email: address, CreatedAt: now, ExpiresAt: now.Add(ttl),
		})
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
	invalid := model.Unauthenticated(model.AuthErrorReasonInvalidCode)
	now := s.clock()
	err := s.db.Transact(ctx, func(tx *store.Tx) error {
		t, err := tx.TakeMailToken(ctx, purposeVerifyEmail, s.tokens.HashMailToken(purposeVerifyEmail, secret))
		if isNotFound(err) {
			return invalid
		}
		if err != nil {
			return err
		}
		if !now.Before(t.ExpiresAt) {
			return invalid
		}
		ok, err := tx.SetEmailVerified(ctx, t.UserID, t.Email, now)
		if err != nil || !ok {
			return cmpErr(err, invalid)
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeEmailVerified, t.UserID, t.UserID, "", ""))
	})
	return err == nil, s.check(ctx, "VerifyEmail", err)
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
