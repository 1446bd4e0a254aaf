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

// RequestPasswordReset mails a reset link to the account with address email, if there is one,
// and answers true for every well-formed address, known or not, so that it tells a caller nothing
// about which addresses have accounts:
//
//   - a malformed address (not a plain address, over 254 bytes, CR, LF, NUL or any control
//     character) is BAD_USER_INPUT whatever the accounts, and nothing is counted or written;
//   - the per-IP limit of credential operations and the per-address limit are counted for every
//     well-formed address; over the per-address limit the answer is still true and nothing is
//     queued;
//   - the answer is given no sooner than ResetFloor after the request began (a whole multiple of
//     it, should the work take longer), so the lookup, the token, the queued message and the
//     audit event of a known address take, as the caller sees it, the time an unknown address
//     takes; a failure after the lookup is logged and answered true as well.
//
// For a known address, the token (stored only as its keyed hash, voiding the account's older
// reset links), the message to the account's own address and a PASSWORD_RESET_REQUESTED event
// are written in one transaction. That event is for admins: securityEvents never shows it.
func (s *Service) RequestPasswordReset(ctx context.Context, email string) (bool, error) {
	if err := s.LimitClient(ctx); err != nil {
		return false, err
	}
	address, err := NormalizeEmail(&email)
	if err != nil || address == nil || *address != email || mailer.ValidAddress(email) != nil {
		return false, model.BadInput("email", "email is not a valid address")
	}
	defer evenOut(ctx, time.Now(), cmp.Or(s.cfg.Mail.ResetFloor, 250*time.Millisecond))
	if err := s.limitAddress(ctx, email); err != nil {
		if e := (*model.Error)(nil); errors.As(err, &e) && e.Code == model.ErrorCodeTooManyRequests {
			return true, nil
		}
		return false, err
	}
	u, err := s.db.UserByEmail(ctx, email)
	if isNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, s.check(ctx, "RequestPasswordReset", err)
	}
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		if err := s.mailLink(ctx, tx, mailer.ResetPassword, u.ID, *u.Email, cmp.Or(s.cfg.Mail.ResetTTL, 30*time.Minute)); err != nil {
			return err
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypePasswordResetRequested, "", u.ID, "", ""))
	})
	if err != nil {
		_ = s.check(ctx, "RequestPasswordReset", err) // logged; the answer must not differ
	}
	return true, nil
}

// evenOut waits until the time since start is the first whole multiple of floor (at least
// floor), or until ctx ends.
func evenOut(ctx context.Context, start time.Time, floor time.Duration) {
	elapsed := time.Since(start)
	t := time.NewTimer((elapsed/floor+1)*floor - elapsed)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// ResetPassword sets a new password from a reset link's token, in one transaction: the token is
// used up, the password replaced, every session of the account revoked, the address the link was
// sent to marked verified, a notice queued to it and a PASSWORD_RESET event recorded. A refused
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
		t, err := s.useMailLink(ctx, tx, purposeResetPassword, secret, now)
		if err != nil {
			return err
		}
		if err := tx.SetPasswordHash(ctx, t.UserID, hash); err != nil {
			return err
		}
		if _, err := tx.RevokeSessions(ctx, t.UserID, "", store.RevokeAll, now); err != nil {
			return err
		}
		if err := s.enqueue(ctx, tx, mailer.Message{Kind: mailer.PasswordChanged, To: t.Email, Detail: "It was reset with a link mailed to this address, and every session was signed out."}); err != nil {
			return err
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypePasswordReset, t.UserID, t.UserID, "", "every session revoked"))
	})
	return err == nil, s.check(ctx, "ResetPassword", err)
}
