package account

import (
	"cmp"
	"context"
	"database/sql"
	"time"

	"gqlauth/mailer"
	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/token"
)

// RequestPasswordReset asks for a reset link for the account with address email, if there is
// one, and answers true for every well-formed address (requestMail says how that tells a caller
// nothing). The mail's sender resolves the request (resolveReset): for a known address, the token
// (stored only as its keyed hash, voiding the account's older reset links), the message to the
// account's own address and a PASSWORD_RESET_REQUESTED event are written in one transaction. That
// event is for admins: securityEvents never shows it.
func (s *Service) RequestPasswordReset(ctx context.Context, email string) (bool, error) {
	return s.requestMail(ctx, mailer.RequestPasswordReset, email)
}

// resolveReset is the sender's side of RequestPasswordReset.
func (s *Service) resolveReset(ctx context.Context, req mailer.Request, complete func(*sql.Tx) error) error {
	u, err := s.db.UserByEmail(ctx, req.To)
	if isNotFound(err) {
		return nil // nothing to mail; the job completes
	}
	if err != nil {
		return err
	}
	return s.db.Transact(ctx, func(tx *store.Tx) error {
		if err := s.mailLink(ctx, tx, mailer.ResetPassword, purposeResetPassword, u.ID, *u.Email, cmp.Or(s.cfg.Mail.ResetTTL, 30*time.Minute)); err != nil {
			return err
		}
		e := s.event(ctx, model.AuditEventTypePasswordResetRequested, "", u.ID, "", "")
		e.IP, e.UserAgent = optional(model.Truncate(req.IP, 64)), optional(req.UserAgent)
		if err := tx.RecordEvent(ctx, e); err != nil {
			return err
		}
		return complete(tx.SQLTx())
	})
}

// ResetPassword sets a new password from a reset link's token, in one transaction: the token is
// used up, the password replaced, every session of the account revoked and every other mailed
// token voided, the address the link was sent to marked verified (when it was not verified
// before, the account is claimed: claimAccount), a notice queued to it and a PASSWORD_RESET event recorded. A refused
// new password is BAD_USER_INPUT and leaves the token usable; an unknown, used, voided, expired or
// malformed token, one of another purpose, or one for an address the account no longer has is
// UNAUTHENTICATED / INVALID_CODE. A second factor still applies at the next sign-in.
func (s *Service) ResetPassword(ctx context.Context, secret, newPassword string) (bool, error) {
	if err := s.LimitClient(ctx); err != nil {
		return false, err
	}
	if !token.IsMailToken(secret) {
		return false, model.Unauthenticated(model.AuthErrorReasonInvalidCode)
	}
	pw := NormalizePassword(newPassword)
	if err := ValidatePassword("newPassword", pw); err != nil {
		return false, err
	}
	hash, err := s.passwords.Hash(ctx, pw)
	if err != nil {
		return false, s.check(ctx, "ResetPassword", err)
	}
	now := s.clock()
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		t, err := s.takeMailToken(ctx, tx, purposeResetPassword, secret, now)
		if err != nil {
			return err
		}
		u, err := tx.UserByID(ctx, t.UserID)
		if err != nil {
			return err
		}
		if err := s.verifyMailedAddress(ctx, tx, t, now); err != nil {
			return err
		}
		if err := tx.SetPasswordHash(ctx, t.UserID, hash); err != nil {
			return err
		}
		// Every session ends and every other mailed token dies (RevokeAll); an address proved
		// here for the first time also claims the account (its API keys die too).
		if u.EmailVerifiedAt == nil {
			err = s.claimAccount(ctx, tx, t.UserID, false, now)
		} else {
			_, err = tx.RevokeSessions(ctx, t.UserID, "", store.RevokeAll, now)
		}
		if err != nil {
			return err
		}
		if err := s.enqueue(ctx, tx, mailer.Message{Kind: mailer.PasswordChanged, To: t.Email, Detail: "It was reset with a link mailed to this address, and every session was signed out."}); err != nil {
			return err
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypePasswordReset, t.UserID, t.UserID, "", "every session revoked"))
	})
	return err == nil, s.check(ctx, "ResetPassword", err)
}
