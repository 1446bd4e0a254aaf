package account

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/google/uuid"

	"gqlauth/mailer"
	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/token"
)

// Sign-in codes: six digits mailed to an address (requestSignInCode), which sign in to the
// account with that address, or sign up a new one (signInWithCode).

// RequestSignInCode asks for a six-digit sign-in code for address email and answers true for
// every well-formed address (requestMail says how that tells a caller nothing). The mail's sender
// resolves the request (resolveSignInCode).
func (s *Service) RequestSignInCode(ctx context.Context, email string) (bool, error) {
	return s.requestMail(ctx, mailer.RequestSignInCode, email)
}

// resolveSignInCode is the sender's side of RequestSignInCode: an address with an account, or
// any address while sign-up is enabled, gets a new code (replacing the address's older one),
// stored only as its keyed hash. An address with no account on a server without sign-up gets a
// row all the same, with a hash no code has, and no mail: a wrong code then costs the same writes
// for every address (signInWithCode's time tells nothing). An address over the cap of wrong codes
// (store.MaxCodeFailures) gets nothing: the request still answered true.
func (s *Service) resolveSignInCode(ctx context.Context, req mailer.Request, complete func(*sql.Tx) error) error {
	to, send := req.To, true
	switch u, err := s.db.UserByEmail(ctx, req.To); {
	case err == nil:
		to = *u.Email
	case !isNotFound(err):
		return err
	case !s.cfg.SignupEnabled:
		send = false
	}
	code, now, ttl := newSignInCode(), s.clock(), s.codeTTL()
	hash := s.hashSignInCode(to, code)
	if !send {
		hash = "unusable:" + token.NewMailToken() // no code's hash: HMACs are hex
	}
	return s.db.Transact(ctx, func(tx *store.Tx) error {
		err := tx.ReplaceSignInCode(ctx, &store.SignInCode{
			EmailKey: strings.ToLower(to), Email: to, CodeHash: hash, CreatedAt: now, ExpiresAt: now.Add(ttl),
		}, now)
		switch {
		case errors.Is(err, store.ErrCodesBlocked):
			send = false
		case err != nil:
			return err
		}
		if send {
			if err := s.enqueue(ctx, tx, mailer.Message{Kind: mailer.SignInCode, To: to, Code: code, ExpiresIn: ttl}); err != nil {
				return err
			}
		}
		return complete(tx.SQLTx())
	})
}

func (s *Service) codeTTL() time.Duration { return cmp.Or(s.cfg.Mail.CodeTTL, 10*time.Minute) }

// newSignInCode is six random decimal digits.
func newSignInCode() string {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return fmt.Sprintf("%06d", n.Int64())
}

// hashSignInCode is how a code is stored: an HMAC under the server's mail-token key of the
// purpose, the address (lower-cased) and the code, so a dump of the database gives nothing away,
// not even by trying all million codes, and a code matches only its own address.
func (s *Service) hashSignInCode(address, code string) string {
	return s.tokens.HashMailToken(purposeSignInCode, strings.ToLower(address)+"\x00"+code)
}

// isSignInCode reports whether code has a code's shape: six ASCII digits.
func isSignInCode(code string) bool {
	return len(code) == 6 && strings.Trim(code, "0123456789") == ""
}

// SignInWithCode signs in with a mailed code, and returns the same AuthPayload as Login (the same
// session path: startSession). The code works once, before it expires, for the address it was
// mailed to, and dies after five wrong tries (each counted in one statement, so concurrent wrong
// tries all count); of concurrent right tries exactly one signs in. A code that is not six digits
// is INVALID_CODE and counts nothing; a malformed address is BAD_USER_INPUT.
//
// The address's account is signed in to (a disabled one is refused like Login); the code proved
// the mailbox, so an address that was not verified becomes verified and the account is claimed
// (claimAccount: whoever registered the address without owning it keeps nothing). An
// address with no account creates a USER account with that address, verified, when sign-up is
// enabled (SIGN_UP and SIGN_IN, detail "with a mailed code"); otherwise INVALID_CODE.
func (s *Service) SignInWithCode(ctx context.Context, email, code string) (*model.AuthPayload, error) {
	if err := s.LimitClient(ctx); err != nil {
		return nil, err
	}
	if err := validAddress("email", email); err != nil {
		return nil, err
	}
	invalid := model.Unauthenticated(model.AuthErrorReasonInvalidCode)
	if !isSignInCode(code) {
		return nil, invalid
	}
	const how = "with a mailed code"
	now := s.clock()
	var (
		payload *model.AuthPayload
		outcome error // a refusal that must not roll back the count of a wrong try
		failed  *model.AuditEvent
	)
	err := s.db.Transact(ctx, func(tx *store.Tx) error {
		c, err := tx.TakeSignInCode(ctx, strings.ToLower(email), s.hashSignInCode(email, code), now)
		if isNotFound(err) {
			outcome = invalid
			return nil
		} else if err != nil {
			return err
		}
		u, err := tx.UserByEmail(ctx, c.Email)
		switch {
		case isNotFound(err) && !s.cfg.SignupEnabled:
			outcome = invalid
			return nil
		case isNotFound(err):
			u = &model.User{ID: uuid.Must(uuid.NewV7()).String(), Role: model.RoleUser, Email: &c.Email, EmailVerifiedAt: &now, CreatedAt: now}
			local, _, _ := strings.Cut(c.Email, "@")
			if u.Username, err = freeUsername(ctx, tx, usernameFrom(&model.IdentityClaims{Email: c.Email, PreferredUsername: local})); err != nil {
				return err
			}
			if err := tx.CreateUser(ctx, u); err != nil {
				return err
			}
			if err := tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeSignUp, u.ID, u.ID, "", how)); err != nil {
				return err
			}
		case err != nil:
			return err
		case u.Disabled:
			failed = s.event(ctx, model.AuditEventTypeSignInFailed, "", u.ID, "", "account disabled")
			outcome = model.Forbidden(model.AuthErrorReasonAccountDisabled)
			return nil // the code stays used up
		case u.EmailVerifiedAt == nil:
			if _, err := tx.SetEmailVerified(ctx, u.ID, c.Email, now); err != nil {
				return err
			}
			if err := s.claimAccount(ctx, tx, u.ID, true, now); err != nil {
				return err
			}
			u.EmailVerifiedAt, u.PasswordHash = &now, ""
		}
		// A mailed code is a one-time password (RFC 8176 "otp"); the session still starts at AAL1, so a
		// code never skips a second factor.
		payload, err = s.startSession(ctx, tx, u, model.AuditEventTypeSignIn, how, model.AMROTP)
		return err
	})
	if err != nil {
		return nil, s.check(ctx, "SignInWithCode", err)
	}
	if failed != nil {
		s.recordAlone(ctx, failed)
	}
	if outcome == invalid {
		s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeSignInFailed, "", "", "", "wrong, used or expired sign-in code"))
	}
	return payload, outcome
}

// claimAccount is what proving an address that was not verified before does to its account (a
// sign-in code, or a reset link): whoever registered the address without owning it must keep
// nothing. In tx, every session and every API key is revoked and every mailed token voided (a
// pending change of address above all), and, for a code sign-in (clearPassword), the password is
// removed: the owner sets one with setPassword or a reset. Second factors stay: a mailbox alone
// never removes one (an admin's resetUserMfa does, README).
func (s *Service) claimAccount(ctx context.Context, tx *store.Tx, userID string, clearPassword bool, now time.Time) error {
	if _, err := tx.RevokeSessions(ctx, userID, "", store.RevokeAll, now); err != nil {
		return err
	}
	if err := tx.RevokeAllAPIKeys(ctx, userID, now); err != nil {
		return err
	}
	// A provider identity the squatter linked would be a way back in, like a key or a password.
	if _, err := tx.DeleteIdentitiesOf(ctx, userID); err != nil {
		return err
	}
	if clearPassword {
		return tx.SetPasswordHash(ctx, userID, "")
	}
	return nil
}
