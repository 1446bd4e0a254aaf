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
	// A change of address: mailed as a verify_email link to the new address, stored under its
	// own purpose so that only such a link ever replaces an account's address.
	purposeChangeEmail = "change_email"
	purposeSignInCode  = string(mailer.SignInCode)
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
	// CodeTTL is how long a sign-in code works (SIGN_IN_CODE_TTL, default 10 min).
	CodeTTL time.Duration
	// VerificationRequired refuses sign-in to an account whose address is not verified
	// (EMAIL_VERIFICATION_REQUIRED), and makes register need an address.
	VerificationRequired bool
}

// SendEmailVerification mails a verification link to the caller's address, or, while a change
// of address is pending (changeEmail), to the new address. The token is stored only as its keyed
// hash, voids the caller's older links of that kind, and its message is queued in the same
// transaction. An address already verified, with no change pending, gets nothing (true all the
// same).
func (s *Service) SendEmailVerification(ctx context.Context) (bool, error) {
	p, err := s.RequireSession(ctx)
	if err != nil {
		return false, err
	}
	purpose, address := purposeVerifyEmail, ""
	pending, err := s.db.LiveMailToken(ctx, p.User.ID, purposeChangeEmail, s.clock())
	switch {
	case err == nil:
		purpose, address = purposeChangeEmail, pending.Email
	case !isNotFound(err):
		return false, s.check(ctx, "SendEmailVerification", err)
	case p.User.Email == nil:
		return false, model.BadInput("email", "the account has no email address; set one first")
	case p.User.EmailVerifiedAt != nil:
		return true, nil
	default:
		address = *p.User.Email
	}
	if err := s.LimitClient(ctx); err != nil {
		return false, err
	}
	if err := s.limitMail(ctx, mailer.VerifyEmail, address); err != nil {
		return false, err
	}
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		return s.mailLink(ctx, tx, mailer.VerifyEmail, purpose, p.User.ID, address, s.verifyTTL())
	})
	if errors.Is(err, mailer.ErrInvalid) {
		return false, model.BadInput("email", "the account's address cannot receive mail; change it")
	}
	return err == nil, s.check(ctx, "SendEmailVerification", err)
}

func (s *Service) verifyTTL() time.Duration { return cmp.Or(s.cfg.Mail.VerifyTTL, 24*time.Hour) }

// VerifyEmail uses a verification link's token: once, before it expires, for the address it was
// mailed to. A link of a change of address (changeEmail) makes that address the account's,
// verified, and records EMAIL_CHANGED; should another account have taken the address meanwhile,
// that is BAD_USER_INPUT and nothing is written. Anything else (unknown, used, voided, expired,
// malformed, of another purpose, for an address the account no longer has) is UNAUTHENTICATED /
// INVALID_CODE.
func (s *Service) VerifyEmail(ctx context.Context, secret string) (bool, error) {
	if err := s.LimitClient(ctx); err != nil {
		return false, err
	}
	if !token.IsMailToken(secret) {
		return false, model.Unauthenticated(model.AuthErrorReasonInvalidCode)
	}
	now := s.clock()
	err := s.db.Transact(ctx, func(tx *store.Tx) error {
		t, err := s.takeMailToken(ctx, tx, purposeChangeEmail, secret, now)
		if err == nil {
			before, err := tx.UserByID(ctx, t.UserID)
			if err != nil {
				return err
			}
			if err := tx.ChangeEmail(ctx, t.UserID, t.Email, now); err != nil {
				return err
			}
			// The old address (when verified) hears of it: if this was not its owner, they act now.
			if err := s.queueSecurityNotice(ctx, tx, before, mailer.EmailChanged, "The account's address was changed to "+t.Email+"; mail goes there from now on."); err != nil {
				return err
			}
			return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeEmailChanged, t.UserID, t.UserID, "", "verified with a link mailed to the new address"))
		}
		if t, err = s.useMailLink(ctx, tx, purposeVerifyEmail, secret, now); err != nil {
			return err
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeEmailVerified, t.UserID, t.UserID, "", ""))
	})
	return err == nil, s.check(ctx, "VerifyEmail", err)
}

// mailLink queues, in tx, a message of kind (whose name is the link's type) to address with a
// link <LinkURL>#type=<kind>&token=<token> valid for ttl, and stores the token only as its keyed
// hash under purpose, voiding the account's older tokens of that purpose.
func (s *Service) mailLink(ctx context.Context, tx *store.Tx, kind mailer.Kind, purpose, userID, address string, ttl time.Duration) error {
	secret, now := token.NewMailToken(), s.clock()
	msg := mailer.Message{Kind: kind, To: address, ExpiresIn: ttl, Link: s.cfg.Mail.LinkURL + "#type=" + string(kind) + "&token=" + secret}
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
	return t, s.verifyMailedAddress(ctx, tx, t, now)
}

// verifyMailedAddress marks the address t was mailed to verified, the token being the proof; an
// account that no longer has that address is UNAUTHENTICATED / INVALID_CODE.
func (s *Service) verifyMailedAddress(ctx context.Context, tx *store.Tx, t *store.MailToken, now time.Time) error {
	ok, err := tx.SetEmailVerified(ctx, t.UserID, t.Email, now)
	if err != nil || !ok {
		return cmpErr(err, model.Unauthenticated(model.AuthErrorReasonInvalidCode))
	}
	return nil
}

// cmpErr is err, or fallback when err is nil.
func cmpErr(err error, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}

// SweepMailTokens deletes mailed tokens and sign-in codes that have expired (codes also once
// dead of wrong tries; a code row is kept while its address's wrong tries still count toward
// store.MaxCodeFailures), in bounded batches.
func (s *Service) SweepMailTokens(ctx context.Context) (int, error) {
	total := 0
	for _, sweep := range []func(context.Context, time.Time, int) (int, error){s.db.DeleteExpiredMailTokens, s.db.DeleteExpiredSignInCodes} {
		for {
			n, err := sweep(ctx, s.clock(), 1000)
			total += n
			if err != nil {
				return total, err
			}
			if n < 1000 {
				break
			}
		}
	}
	return total, nil
}

// queueSecurityNotice queues, in tx, a security notice of kind (mailer.PasswordChanged,
// EmailChanged, MFAChanged: each a "security notice" with its own sentence and "if this wasn't
// you…") to u's address, when this server verified it; what says in a few words what changed,
// and the notice adds when. An account without a verified address gets nothing: mail to an
// address nobody proved is theirs could tell a stranger about the account.
func (s *Service) queueSecurityNotice(ctx context.Context, tx *store.Tx, u *model.User, kind mailer.Kind, what string) error {
	if u.Email == nil || u.EmailVerifiedAt == nil {
		return nil
	}
	return s.enqueue(ctx, tx, mailer.Message{Kind: kind, To: *u.Email, Detail: noticeDetail(what, s.clock())})
}

// noticeDetail is a notice's line: what changed, and when (UTC).
func noticeDetail(what string, at time.Time) string {
	return model.Truncate(what, 170) + " (" + at.UTC().Format("2 Jan 2006 15:04 UTC") + ")"
}
