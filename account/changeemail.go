package account

import (
	"context"
	"strings"

	"gqlauth/mailer"
	"gqlauth/model"
	"gqlauth/store"
)

// ChangeEmail starts a change of the caller's address to newEmail: a verification link goes to
// the new address (voiding an earlier pending change) and, when the current address is verified,
// a notice goes to it; nothing else changes until the link is used (VerifyEmail). In order:
//
//   - a malformed newEmail is BAD_USER_INPUT, whatever the accounts;
//   - an account with a password needs it: missing is BAD_USER_INPUT on currentPassword, wrong is
//     UNAUTHENTICATED / INVALID_CREDENTIALS (and counts toward the failed-password limits), so a
//     stolen access token alone can neither change the address nor learn which addresses are
//     taken;
//   - the account's own address, or one another account holds, is BAD_USER_INPUT on newEmail;
//   - over the per-address limit of the new address, TOO_MANY_REQUESTS; nothing is written.
func (s *Service) ChangeEmail(ctx context.Context, newEmail string, currentPassword *string) (bool, error) {
	p, err := s.RequireSession(ctx) // recent authentication: @recentAuth on the field
	if err != nil {
		return false, err
	}
	if err := s.LimitClient(ctx); err != nil {
		return false, err
	}
	if err := validAddress("newEmail", newEmail); err != nil {
		return false, err
	}
	u := p.User
	if u.PasswordHash != "" {
		if currentPassword == nil || *currentPassword == "" {
			return false, model.BadInput("currentPassword", "the current password is required")
		}
		counted, err := s.countAttempt(ctx, u.Username)
		if err != nil {
			return false, err
		}
		ok, err := s.passwords.Match(ctx, u.PasswordHash, NormalizePassword(*currentPassword))
		if err != nil {
			return false, s.check(ctx, "ChangeEmail", err)
		}
		if !ok {
			s.attemptFailed(ctx, u.Username, counted)
			s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeSignInFailed, u.ID, u.ID, p.Session.ID, "wrong password for changeEmail"))
			return false, model.Unauthenticated(model.AuthErrorReasonInvalidCredentials)
		}
	}
	if u.Email != nil && strings.EqualFold(*u.Email, newEmail) {
		return false, model.BadInput("newEmail", "this is the account's address already")
	}
	switch other, err := s.db.UserByEmail(ctx, newEmail); {
	case err == nil && other.ID != u.ID:
		return false, model.BadInput("newEmail", "email is already in use")
	case err != nil && !isNotFound(err):
		return false, s.check(ctx, "ChangeEmail", err)
	}
	if err := s.limitMail(ctx, mailer.VerifyEmail, newEmail); err != nil {
		return false, err
	}
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		if err := s.mailLink(ctx, tx, mailer.VerifyEmail, purposeChangeEmail, u.ID, newEmail, s.verifyTTL()); err != nil {
			return err
		}
		return s.queueSecurityNotice(ctx, tx, u, mailer.EmailChanged,
			"A change of the account's address to "+newEmail+" was asked for; it takes effect when the link mailed there is used.")
	})
	return err == nil, s.check(ctx, "ChangeEmail", err)
}
