package account

import (
	"cmp"
	"context"
	"errors"
	"strconv"
	"strings"
	"unicode"

	"gqlauth/mailer"
	"gqlauth/mfa"
	"gqlauth/model"
	"gqlauth/store"
)

// The second factors' flows (§12): TOTP enrolment and use, recovery codes, the second step of a
// sign-in, reauthentication, and an admin's reset. The codes' arithmetic is package mfa's; what
// was accepted is remembered by the store, in the transaction that acts on it.

// errRefused rolls back a transaction whose conditional write found the code taken (a replay, or
// a concurrent request that won): the caller answers INVALID_CODE.
var errRefused = errors.New("account: code refused")

func invalidCode() error { return model.Unauthenticated(model.AuthErrorReasonInvalidCode) }

// MFAStatus shows u's second factors to u themself or to an admin; anyone else is refused with
// FORBIDDEN INSUFFICIENT_ROLE.
func (s *Service) MFAStatus(ctx context.Context, u *model.User) (*model.MfaStatus, error) {
	p, err := s.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if p.User.ID != u.ID && !p.Role.Satisfies(model.RoleAdmin) {
		return nil, model.InsufficientRole(model.RoleAdmin)
	}
	status := &model.MfaStatus{}
	f, err := s.db.TOTPFactorOf(ctx, u.ID)
	switch {
	case err == nil:
		status.Totp = f.ConfirmedAt != nil
	case !isNotFound(err):
		return nil, s.check(ctx, "MFAStatus", err)
	}
	if status.Passkeys, err = s.db.Passkeys(ctx, u.ID); err != nil {
		return nil, s.check(ctx, "MFAStatus", err)
	}
	status.RecoveryCodesLeft, err = s.db.RecoveryCodesLeft(ctx, u.ID)
	return status, s.check(ctx, "MFAStatus", err)
}

// totpAD binds a sealed TOTP secret to its user.
func totpAD(userID string) []byte { return []byte("totp\x00" + userID) }

// EnrollTotp starts a TOTP enrolment for the caller: a new secret, stored sealed and pending
// until ConfirmTotp, bound to the caller's session (only it confirms the secret). It replaces a
// pending enrolment of the same session, or of a session that has ended; one that another live
// session of the user started is refused (pendingElsewhere). It needs a recent authentication;
// TOTP already active is refused (remove it first).
func (s *Service) EnrollTotp(ctx context.Context) (*model.TotpEnrollment, error) {
	p, err := s.RequireSession(ctx) // @recentAuth checked the recent authentication
	if err != nil {
		return nil, err
	}
	if err := s.LimitClient(ctx); err != nil {
		return nil, err
	}
	secret, uri, err := mfa.NewTOTP(cmp.Or(s.cfg.MFA.Issuer, "gqlauth"), p.User.Username)
	if err != nil {
		return nil, s.check(ctx, "EnrollTotp", err)
	}
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		if _, err := s.lockFactors(ctx, tx, p); err != nil {
			return err
		}
		if err := s.pendingElsewhere(ctx, tx, p); err != nil {
			return err
		}
		ok, err := tx.PutPendingTOTP(ctx, &store.TOTPFactor{
			UserID: p.User.ID, Secret: s.tokens.FactorSealer().Seal([]byte(secret), totpAD(p.User.ID)), CreatedAt: s.clock(),
			SessionID: &p.Session.ID,
		})
		if err == nil && !ok {
			return &model.Error{Code: model.ErrorCodeBadUserInput, Message: "TOTP is already active; remove it first"}
		}
		return err
	})
	if err != nil {
		return nil, s.check(ctx, "EnrollTotp", err)
	}
	return &model.TotpEnrollment{Secret: secret, URI: uri}, nil
}

// totpStep finds the time step of code for the user's TOTP factor (confirmed or pending as
// wanted) later than the last accepted one, or reports that there is none.
func (s *Service) totpStep(ctx context.Context, userID, code string, confirmed bool) (int64, bool, error) {
	_, step, ok, err := s.totpMatch(ctx, userID, code, confirmed)
	return step, ok, err
}

// totpMatch is totpStep that also returns the factor the code was checked against (nil when it
// did not match), for a compare-and-set on its secret (ConfirmTotp).
func (s *Service) totpMatch(ctx context.Context, userID, code string, confirmed bool) (*store.TOTPFactor, int64, bool, error) {
	if !mfa.IsTOTPCode(code) {
		return nil, 0, false, nil
	}
	f, err := s.db.TOTPFactorOf(ctx, userID)
	if isNotFound(err) || (err == nil && (f.ConfirmedAt != nil) != confirmed) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	secret, err := s.tokens.FactorSealer().Open(f.Secret, totpAD(userID))
	if err != nil {
		return nil, 0, false, err
	}
	step, ok := mfa.MatchTOTP(string(secret), code, s.now(), f.LastStep)
	if !ok {
		return nil, 0, false, nil
	}
	return f, step, true, nil
}

// ConfirmTotp activates the caller's pending TOTP factor with a code from it — exactly the
// secret the code was checked against, and only when the caller's session started the
// enrolment and is still live (lockFactors, ConfirmPendingTOTP) — and returns ten
// recovery codes (shown once) when the caller had none left, else none. The first factor of the
// user raises this session to AAL2 and revokes the others (FactorAdded). A wrong code is
// INVALID_CODE and counts toward RATE_LIMIT_USER_FAILURES.
func (s *Service) ConfirmTotp(ctx context.Context, code string) ([]string, error) {
	p, err := s.RequireSession(ctx) // @recentAuth checked the recent authentication
	if err != nil {
		return nil, err
	}
	counted, err := s.codeAttempt(ctx, p)
	if err != nil {
		return nil, err
	}
	f, step, ok, err := s.totpMatch(ctx, p.User.ID, code, false)
	if err != nil {
		return nil, s.check(ctx, "ConfirmTotp", err)
	}
	if !ok {
		return nil, s.codeFailed(ctx, p, counted, "totp confirmation: wrong code")
	}
	var codes []string
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		// The user's row first: factor changes of one user take turns (RecountFactors).
		u, err := s.lockFactors(ctx, tx, p)
		if err != nil {
			return err
		}
		// Replaced, removed or confirmed since the code was checked, or begun by another
		// session: refused like a code taken meanwhile.
		if ok, err := tx.ConfirmPendingTOTP(ctx, u.ID, p.Session.ID, f.Secret, step, s.clock()); err != nil || !ok {
			return cmpErr(err, errRefused)
		}
		if codes, err = s.recoveryCodesIfNone(ctx, tx, u.ID); err != nil {
			return err
		}
		_, err = s.FactorAdded(ctx, tx, p, model.AMROTP, "totp")
		return err
	})
	if err := s.codeSettled(ctx, p, counted, "ConfirmTotp", err); err != nil {
		return nil, err
	}
	if codes == nil {
		codes = []string{}
	}
	return codes, nil
}

// recoveryCodesIfNone gives the user new recovery codes, in tx, when they have no unused one,
// and returns them (nil when they had some). A first factor (TOTP or passkey) calls it.
func (s *Service) recoveryCodesIfNone(ctx context.Context, tx *store.Tx, userID string) ([]string, error) {
	left, err := tx.RecoveryCodesLeft(ctx, userID)
	if err != nil || left > 0 {
		return nil, err
	}
	return s.newRecoveryCodes(ctx, tx, userID)
}

// newRecoveryCodes replaces the user's recovery codes, in tx, with new ones, stored only as keyed
// hashes, and returns them as shown to the user.
//
// Why not bcrypt: a code has 60 random bits, so no table of guesses covers it and a hash need not
// be slow; the HMAC under a server key also leaves a database dump without the key useless. A
// slow hash would make each verification cost up to ten bcrypt checks.
func (s *Service) newRecoveryCodes(ctx context.Context, tx *store.Tx, userID string) ([]string, error) {
	codes := mfa.NewRecoveryCodes()
	hashes := make([]string, len(codes))
	for i, c := range codes {
		normal, _ := mfa.NormalRecoveryCode(c)
		hashes[i] = s.tokens.HashRecoveryCode(userID, normal)
	}
	return codes, tx.ReplaceRecoveryCodes(ctx, userID, hashes, s.clock())
}

// VerifyMfa is the second step of a sign-in: a TOTP code (whose time step was never accepted
// before for the user) or an unused recovery code raises the caller's session to AAL2 and
// returns fresh tokens (StepUp). Anything else is INVALID_CODE, recorded as MFA_FAILED, and counts
// toward RATE_LIMIT_USER_FAILURES and RATE_LIMIT_SECOND_FACTOR_FAILURES; of concurrent requests with one code, on any instance, exactly
// one succeeds (the store moves the last step forward, or marks the recovery code used, with a
// conditional update).
func (s *Service) VerifyMfa(ctx context.Context, code string) (*model.AuthPayload, error) {
	p, err := s.RequireSession(ctx)
	if err != nil {
		return nil, err
	}
	counted, err := s.codeAttempt(ctx, p)
	if err != nil {
		return nil, err
	}
	if !p.User.HasSecondFactor() {
		return nil, s.codeFailed(ctx, p, counted, "no second factor to verify")
	}
	now := s.clock()
	var (
		payload *model.AuthPayload
		left    int
		use     func(tx *store.Tx) (bool, error)
		method  string
	)
	if mfa.IsTOTPCode(code) {
		step, ok, err := s.totpStep(ctx, p.User.ID, code, true)
		if err != nil {
			return nil, s.check(ctx, "VerifyMfa", err)
		}
		if !ok {
			return nil, s.codeFailed(ctx, p, counted, "totp: wrong code")
		}
		method = model.AMROTP
		use = func(tx *store.Tx) (bool, error) { return tx.AcceptTOTPStep(ctx, p.User.ID, step) }
	} else if normal, ok := mfa.NormalRecoveryCode(code); ok {
		method = model.AMRRecovery
		use = func(tx *store.Tx) (bool, error) {
			return tx.UseRecoveryCode(ctx, p.User.ID, s.tokens.HashRecoveryCode(p.User.ID, normal), now)
		}
	} else {
		return nil, s.codeFailed(ctx, p, counted, "malformed code")
	}
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		if ok, err := use(tx); err != nil || !ok {
			return cmpErr(err, errRefused)
		}
		detail := "totp"
		if method == model.AMRRecovery {
			var err error
			if left, err = tx.RecoveryCodesLeft(ctx, p.User.ID); err != nil {
				return err
			}
			detail = "recovery code"
			if err := tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeRecoveryCodeUsed, p.User.ID, p.User.ID, p.Session.ID, strconv.Itoa(left)+" left")); err != nil {
				return err
			}
			if err := s.mfaNotice(ctx, tx, p.User, "A recovery code was used to sign in; "+strconv.Itoa(left)+" left."); err != nil {
				return err
			}
		}
		if err := tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeMfaVerified, p.User.ID, p.User.ID, p.Session.ID, detail)); err != nil {
			return err
		}
		var err error
		payload, err = s.StepUp(ctx, tx, p, method)
		return err
	})
	if err := s.codeSettled(ctx, p, counted, "VerifyMfa", err); err != nil {
		return nil, err
	}
	return payload, nil
}

// codeAttempt counts a second-factor code (or a reauthentication's password) of p's user from
// this client against the limits of failed sign-ins (RATE_LIMIT_PER_IP, RATE_LIMIT_USER_FAILURES):
// the same counters as password sign-ins, counted before the code is checked (countAttempt); and
// against the ceiling of the user's second-factor failures from all clients
// (RATE_LIMIT_SECOND_FACTOR_FAILURES, countSecondFactor), which no client is exempt from.
func (s *Service) codeAttempt(ctx context.Context, p *Principal) (attempt, error) {
	if err := s.LimitClient(ctx); err != nil {
		return attempt{}, err
	}
	a, err := s.countAttempt(ctx, p.User.Username)
	if err != nil {
		return a, err
	}
	a.second, err = s.countSecondFactor(ctx, p.User)
	return a, err
}

// codeAttemptFailed records the failure of the counted code attempt a under every limit.
func (s *Service) codeAttemptFailed(ctx context.Context, p *Principal, a attempt) {
	s.attemptFailed(ctx, p.User.Username, a)
	s.secondFactorFailed(ctx, p, a.second)
}

// codeFailed records a refused code (MFA_FAILED, detail says why) and its attempt's failure, and
// returns INVALID_CODE.
func (s *Service) codeFailed(ctx context.Context, p *Principal, a attempt, detail string) error {
	s.codeAttemptFailed(ctx, p, a)
	s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeMfaFailed, p.User.ID, p.User.ID, p.Session.ID, detail))
	return invalidCode()
}

// codeSettled answers the transaction of an accepted code: taken meanwhile (errRefused: a
// replay, or a concurrent request with the same code won) it is a failed attempt; done, the
// sign-in is at the user's full level: the client's failures of the user and the user's
// second-factor failures are forgotten, and the client becomes known to the user.
func (s *Service) codeSettled(ctx context.Context, p *Principal, counted attempt, op string, err error) error {
	switch {
	case errors.Is(err, errRefused):
		return s.codeFailed(ctx, p, counted, "code already used")
	case err != nil:
		return s.check(ctx, op, err)
	}
	s.forgetFailures(ctx, p.User.Username, true)
	s.forgetSecondFactorFailures(ctx, p.User)
	return nil
}

// RemoveTotp removes the caller's TOTP factor (pending or active). It needs a recent
// authentication; the directive requires AAL2.
func (s *Service) RemoveTotp(ctx context.Context) (bool, error) {
	p, err := s.RequireSession(ctx) // @recentAuth checked the recent authentication
	if err != nil {
		return false, err
	}
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		if _, err := s.lockFactors(ctx, tx, p); err != nil {
			return err
		}
		active, err := tx.DeleteTOTP(ctx, p.User.ID)
		if err != nil {
			return err
		}
		if !active {
			return model.NotFound("TOTP is not active")
		}
		return s.FactorRemoved(ctx, tx, p, "totp")
	})
	return err == nil, s.check(ctx, "RemoveTotp", err)
}

// RegenerateRecoveryCodes replaces the caller's recovery codes with ten new ones, shown once. It
// needs a recent authentication and a second factor (the directive requires AAL2).
func (s *Service) RegenerateRecoveryCodes(ctx context.Context) ([]string, error) {
	p, err := s.RequireSession(ctx) // @recentAuth checked the recent authentication
	if err != nil {
		return nil, err
	}
	var codes []string
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		if _, err := s.lockFactors(ctx, tx, p); err != nil {
			return err
		}
		if codes, err = s.newRecoveryCodes(ctx, tx, p.User.ID); err != nil {
			return err
		}
		if err := tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeRecoveryCodesRegenerated, p.User.ID, p.User.ID, p.Session.ID, "")); err != nil {
			return err
		}
		return s.mfaNotice(ctx, tx, p.User, "New recovery codes were made; the old ones no longer work.")
	})
	return codes, s.check(ctx, "RegenerateRecoveryCodes", err)
}

// Reauthenticate renews the caller's recent authentication (REAUTH_WINDOW) with their password,
// without changing the session's level, and returns fresh tokens. A wrong password is
// INVALID_CREDENTIALS, recorded as MFA_FAILED, and counts toward RATE_LIMIT_USER_FAILURES and
// RATE_LIMIT_SECOND_FACTOR_FAILURES.
func (s *Service) Reauthenticate(ctx context.Context, password string) (*model.AuthPayload, error) {
	p, err := s.RequireSession(ctx)
	if err != nil {
		return nil, err
	}
	counted, err := s.codeAttempt(ctx, p)
	if err != nil {
		return nil, err
	}
	pw := NormalizePassword(password)
	ok, err := s.passwords.Match(ctx, p.User.PasswordHash, pw)
	if err != nil {
		return nil, s.check(ctx, "Reauthenticate", err)
	}
	if !ok || !model.ValidText(pw) {
		s.codeAttemptFailed(ctx, p, counted)
		s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeMfaFailed, p.User.ID, p.User.ID, p.Session.ID, "reauthentication: wrong password"))
		return nil, model.Unauthenticated(model.AuthErrorReasonInvalidCredentials)
	}
	// A password is not a second factor: it clears no second-factor failure, and makes the
	// client known only to a user without a second factor.
	s.forgetFailures(ctx, p.User.Username, !p.User.HasSecondFactor())
	var payload *model.AuthPayload
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		if err := tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeMfaVerified, p.User.ID, p.User.ID, p.Session.ID, "reauthenticated with password")); err != nil {
			return err
		}
		var err error
		payload, err = s.reauthenticated(ctx, tx, p, model.AuthLevelAal1, model.AMRPassword)
		return err
	})
	return payload, s.check(ctx, "Reauthenticate", err)
}

// ResetUserMfa removes every second factor and recovery code of user id (an admin's help for a
// user who lost them) and revokes every session and API key of the user: whoever holds one may be the reason
// for the reset, and the user signs in again with their password and enrols anew. MFA_RESET is
// recorded and a notice mailed.
func (s *Service) ResetUserMfa(ctx context.Context, id string) (*model.User, error) {
	if err := validateID(id); err != nil {
		return nil, err
	}
	actor, session := actorOf(ctx)
	var u *model.User
	err := s.db.Transact(ctx, func(tx *store.Tx) error {
		var err error
		if u, err = tx.LockUser(ctx, id); err != nil {
			return err
		}
		n, err := tx.DeleteFactors(ctx, id)
		if err != nil {
			return err
		}
		if u.MFAFactors, err = tx.RecountFactors(ctx, id); err != nil {
			return err
		}
		if _, err := tx.RevokeSessions(ctx, id, "", store.RevokeAll, s.clock()); err != nil {
			return err
		}
		if err := tx.RevokeAllAPIKeys(ctx, id, s.clock()); err != nil {
			return err
		}
		if err := tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeMfaReset, actor, id, session, strconv.Itoa(n)+" factors removed; every session and API key revoked")); err != nil {
			return err
		}
		return s.mfaNotice(ctx, tx, u, "An administrator removed every second factor and recovery code of your account and signed it out everywhere.")
	})
	return u, s.check(ctx, "ResetUserMfa", err)
}

// mfaNotice queues, in tx, a notice of a factor change to u's verified address (none without
// one: an unverified address may not be the owner's).
func (s *Service) mfaNotice(ctx context.Context, tx *store.Tx, u *model.User, detail string) error {
	if u.Email == nil || u.EmailVerifiedAt == nil {
		return nil
	}
	detail = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, detail)
	return s.enqueue(ctx, tx, mailer.Message{Kind: mailer.MFAChanged, To: *u.Email, Detail: model.Truncate(detail, 200)})
}
