package account

import (
	"context"
	"errors"
	"strconv"

	"github.com/google/uuid"

	"gqlauth/mailer"
	"gqlauth/model"
	"gqlauth/store"
)

// Accounts: sign-up, password sign-in, password change, and the admin's side (list, create,
// role, disable).

// Register creates a USER account and signs it in, in one transaction.
func (s *Service) Register(ctx context.Context, username, password string, email *string) (*model.AuthPayload, error) {
	if !s.cfg.SignupEnabled {
		return nil, &model.Error{Code: model.ErrorCodeForbidden, Message: "sign-up is disabled on this server"}
	}
	if err := s.LimitClient(ctx); err != nil {
		return nil, err
	}
	if s.cfg.Mail.VerificationRequired && (email == nil || *email == "") {
		return nil, model.BadInput("email", "an email address is required: this server verifies it before the first sign-in")
	}
	u, err := s.newUser(ctx, username, password, email, model.RoleUser)
	if err != nil {
		return nil, err
	}
	if s.cfg.Mail.VerificationRequired {
		return nil, s.registerUnverified(ctx, u)
	}
	var payload *model.AuthPayload
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		if err := tx.CreateUser(ctx, u); err != nil {
			return err
		}
		payload, err = s.startSession(ctx, tx, u, model.AuditEventTypeSignUp, "", model.AMRPassword)
		return err
	})
	return payload, s.check(ctx, "Register", err)
}

// registerUnverified creates u (EMAIL_VERIFICATION_REQUIRED), records SIGN_UP, mails a
// verification link (within the per-address limit) and answers FORBIDDEN / EMAIL_NOT_VERIFIED
// instead of signing in.
func (s *Service) registerUnverified(ctx context.Context, u *model.User) error {
	if err := validAddress("email", *u.Email); err != nil {
		return err
	}
	mail := s.limitMail(ctx, mailer.VerifyEmail, *u.Email) == nil
	err := s.db.Transact(ctx, func(tx *store.Tx) error {
		if err := tx.CreateUser(ctx, u); err != nil {
			return err
		}
		if err := tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeSignUp, u.ID, u.ID, "", "address not verified yet")); err != nil {
			return err
		}
		if !mail {
			return nil
		}
		return s.mailLink(ctx, tx, mailer.VerifyEmail, purposeVerifyEmail, u.ID, *u.Email, s.verifyTTL())
	})
	if err != nil {
		return s.check(ctx, "Register", err)
	}
	return model.Forbidden(model.AuthErrorReasonEmailNotVerified)
}

// refuseUnverified is the refusal of a sign-in, after the password check, to an account whose
// address is not verified while EMAIL_VERIFICATION_REQUIRED: a fresh link is mailed (within the
// per-address limit) and the answer is FORBIDDEN / EMAIL_NOT_VERIFIED. Nil when u may sign in
// (verification not required, no address, or a verified one).
func (s *Service) refuseUnverified(ctx context.Context, u *model.User) error {
	if !s.cfg.Mail.VerificationRequired || u.Email == nil || u.EmailVerifiedAt != nil {
		return nil
	}
	s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeSignInFailed, "", u.ID, "", "email address not verified"))
	if s.limitMail(ctx, mailer.VerifyEmail, *u.Email) == nil {
		err := s.db.Transact(ctx, func(tx *store.Tx) error {
			return s.mailLink(ctx, tx, mailer.VerifyEmail, purposeVerifyEmail, u.ID, *u.Email, s.verifyTTL())
		})
		if err != nil {
			_ = s.check(ctx, "refuseUnverified", err) // logged; the refusal stands
		}
	}
	return model.Forbidden(model.AuthErrorReasonEmailNotVerified)
}

// CreateUser creates an account with any role (for admins).
func (s *Service) CreateUser(ctx context.Context, username, password string, email *string, role model.Role) (*model.User, error) {
	u, err := s.newUser(ctx, username, password, email, role)
	if err != nil {
		return nil, err
	}
	actor, session := actorOf(ctx)
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		if err := tx.CreateUser(ctx, u); err != nil {
			return err
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeUserCreated, actor, u.ID, session, string(role)))
	})
	return u, s.check(ctx, "CreateUser", err)
}

// newUser validates the input of a new account and hashes its password.
func (s *Service) newUser(ctx context.Context, username, password string, email *string, role model.Role) (*model.User, error) {
	if err := ValidateUsername(username); err != nil {
		return nil, err
	}
	pw := NormalizePassword(password)
	if err := ValidatePassword("password", pw); err != nil {
		return nil, err
	}
	email, err := NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	hash, err := s.passwords.Hash(ctx, pw)
	if err != nil {
		return nil, s.check(ctx, "Hash", err)
	}
	return &model.User{
		ID: uuid.Must(uuid.NewV7()).String(), Username: username, Email: email, Role: role,
		PasswordHash: hash, CreatedAt: s.clock(),
	}, nil
}

// Login checks a username and password and starts a session. Unknown usernames, malformed
// usernames and wrong passwords fail alike and take about as long. A hash made at another bcrypt
// cost is replaced by one at the configured cost. Rate limits apply before any password is checked,
// and the attempt is counted before it is decided (countAttempt).
func (s *Service) Login(ctx context.Context, username, password string) (*model.AuthPayload, error) {
	return s.login(ctx, username, password, false)
}

// PasswordGrant is Login for the OAuth token endpoint's password grant, which has no second
// step: a user with a second factor (or whose role needs one) is refused with FORBIDDEN /
// MFA_REQUIRED after the password check, and no session is started.
func (s *Service) PasswordGrant(ctx context.Context, username, password string) (*model.AuthPayload, error) {
	return s.login(ctx, username, password, true)
}

func (s *Service) login(ctx context.Context, username, password string, oneStep bool) (*model.AuthPayload, error) {
	if err := s.LimitClient(ctx); err != nil {
		return nil, err
	}
	counted, err := s.countAttempt(ctx, username)
	if err != nil {
		return nil, err
	}
	pw := NormalizePassword(password)
	// A name that breaks the username rule belongs to no one: it is not looked up (it could hold
	// bytes the database refuses, or fold onto another name under the database's case rules), and
	// fails exactly like an unknown one.
	u := &model.User{}
	if ValidateUsername(username) == nil {
		found, err := s.db.UserByUsername(ctx, username)
		switch {
		case err == nil:
			u = found
		case !errors.Is(err, store.ErrNotFound):
			return nil, s.check(ctx, "Login", err)
		}
	}
	ok, err := s.passwords.Match(ctx, u.PasswordHash, pw)
	if err != nil {
		return nil, s.check(ctx, "Login", err)
	}
	if !ok || !model.ValidText(pw) {
		s.attemptFailed(ctx, username, counted)
		if u.ID == "" {
			s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeSignInFailed, "", "", "", "unknown username "+strconv.Quote(model.Truncate(username, 64))))
		} else {
			s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeSignInFailed, "", u.ID, "", "wrong password"))
		}
		return nil, model.Unauthenticated(model.AuthErrorReasonInvalidCredentials)
	}
	// The password is the whole sign-in only for a user without a second factor; for one with,
	// the client becomes known at the second step (codeSettled).
	s.forgetFailures(ctx, username, !u.HasSecondFactor())
	if u.Disabled {
		s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeSignInFailed, "", u.ID, "", "account disabled"))
		return nil, model.Forbidden(model.AuthErrorReasonAccountDisabled)
	}
	if err := s.refuseUnverified(ctx, u); err != nil {
		return nil, err
	}
	if oneStep && s.OwnLevel(u) != model.AuthLevelAal1 {
		s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeSignInFailed, "", u.ID, "", "password grant: a second factor is required"))
		return nil, model.MFARequired(model.AuthLevelAal2)
	}
	if s.passwords.NeedsRehash(u.PasswordHash) {
		if hash, err := s.passwords.Hash(ctx, pw); err == nil {
			if err := s.db.SetPasswordHash(ctx, u.ID, hash); err != nil {
				s.log.WarnContext(ctx, "rehash failed", "err", err)
			}
		}
	}
	var payload *model.AuthPayload
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		payload, err = s.startSession(ctx, tx, u, model.AuditEventTypeSignIn, "", model.AMRPassword)
		return err
	})
	return payload, s.check(ctx, "Login", err)
}

// ChangePassword replaces the caller's password after checking the current one, and revokes every
// other session of the caller and voids every mailed token of theirs in the same transaction. A wrong current password is BAD_USER_INPUT
// on currentPassword rather than UNAUTHENTICATED, so that clients do not mistake it for a dead
// session and sign the user out.
func (s *Service) ChangePassword(ctx context.Context, current, next string) (bool, error) {
	p, err := s.RequireSession(ctx)
	if err != nil {
		return false, err
	}
	if err := s.LimitClient(ctx); err != nil {
		return false, err
	}
	nextPw := NormalizePassword(next)
	if err := ValidatePassword("newPassword", nextPw); err != nil {
		return false, err
	}
	counted, err := s.countAttempt(ctx, p.User.Username)
	if err != nil {
		return false, err
	}
	ok, err := s.passwords.Match(ctx, p.User.PasswordHash, NormalizePassword(current))
	if err != nil {
		return false, s.check(ctx, "ChangePassword", err)
	}
	if !ok {
		s.attemptFailed(ctx, p.User.Username, counted)
		return false, model.BadInput("currentPassword", "current password is incorrect")
	}
	hash, err := s.passwords.Hash(ctx, nextPw)
	if err != nil {
		return false, s.check(ctx, "ChangePassword", err)
	}
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		if err := tx.SetPasswordHash(ctx, p.User.ID, hash); err != nil {
			return err
		}
		if err := tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypePasswordChanged, p.User.ID, p.User.ID, p.Session.ID, "other sessions revoked")); err != nil {
			return err
		}
		if err := s.queueSecurityNotice(ctx, tx, p.User, mailer.PasswordChanged, "It was changed while signed in, and every other session was signed out."); err != nil {
			return err
		}
		// A credential reset: every mailed token dies too (a pending change of address a thief
		// started with the old password above all).
		if err := tx.VoidMailTokens(ctx, p.User.ID); err != nil {
			return err
		}
		_, err := tx.RevokeSessions(ctx, p.User.ID, p.Session.ID, store.RevokeOthers, s.clock())
		return err
	})
	return err == nil, s.check(ctx, "ChangePassword", err)
}

// ListUsers returns a page of users, oldest first. limit is capped at MaxPageSize; a limit of 0
// asks for no users and gets none (the store never turns it into "no limit").
func (s *Service) ListUsers(ctx context.Context, limit, offset int) ([]*model.User, error) {
	switch {
	case limit < 0:
		return nil, model.BadInput("limit", "limit must not be negative")
	case offset < 0:
		return nil, model.BadInput("offset", "offset must not be negative")
	}
	users, err := s.db.ListUsers(ctx, min(limit, MaxPageSize), offset)
	showUsers(ctx, users...)
	return users, s.check(ctx, "ListUsers", err)
}

// MaxPageSize caps the limit of ListUsers.
const MaxPageSize = 100

// User returns the user with id, for a field of a type of your own that points at a user (an
// order's placedBy, say; README, "Add your own field"). The caller sees themself, and an ADMIN
// sees anyone; anyone else is refused with FORBIDDEN INSUFFICIENT_ROLE, so a field that shows
// other people's accounts is an admin's whatever guard it carries. nil: there is no such user.
func (s *Service) User(ctx context.Context, id string) (*model.User, error) {
	p, err := s.Authenticate(ctx)
	switch {
	case err != nil:
		return nil, err
	case p.User.ID == id:
		return p.User, nil
	case !p.Role.Satisfies(model.RoleAdmin):
		return nil, model.InsufficientRole(model.RoleAdmin)
	case validateID(id) != nil:
		return nil, nil
	}
	u, err := s.db.UserByID(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, s.check(ctx, "User", err)
	}
	showUsers(ctx, u)
	return u, nil
}

// SetUserRole changes a user's role; it applies from the user's next request.
func (s *Service) SetUserRole(ctx context.Context, id string, role model.Role) (*model.User, error) {
	if err := validateID(id); err != nil {
		return nil, err
	}
	actor, session := actorOf(ctx)
	var u *model.User
	err := s.db.Transact(ctx, func(tx *store.Tx) error {
		var err error
		if u, err = tx.SetUserRole(ctx, id, role); err != nil {
			return err
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeRoleChanged, actor, id, session, string(role)))
	})
	return u, s.check(ctx, "SetUserRole", err)
}

// SetUserDisabled disables a user and revokes all their sessions, or enables them again (their old
// sessions stay revoked).
func (s *Service) SetUserDisabled(ctx context.Context, id string, disabled bool) (*model.User, error) {
	if err := validateID(id); err != nil {
		return nil, err
	}
	actor, session := actorOf(ctx)
	typ := model.AuditEventTypeUserEnabled
	if disabled {
		typ = model.AuditEventTypeUserDisabled
	}
	var u *model.User
	err := s.db.Transact(ctx, func(tx *store.Tx) error {
		var err error
		if u, err = tx.SetUserDisabled(ctx, id, disabled, s.clock()); err != nil {
			return err
		}
		return tx.RecordEvent(ctx, s.event(ctx, typ, actor, id, session, ""))
	})
	return u, s.check(ctx, "SetUserDisabled", err)
}

// EnsureAdmin creates an ADMIN with these credentials unless the username exists already (an
// existing user is left untouched). It reports whether it created one.
func (s *Service) EnsureAdmin(ctx context.Context, username, password string) (bool, error) {
	if _, err := s.db.UserByUsername(ctx, username); err == nil {
		return false, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	u, err := s.newUser(ctx, username, password, nil, model.RoleAdmin)
	if err != nil {
		return false, err
	}
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		if err := tx.CreateUser(ctx, u); err != nil {
			return err
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeUserCreated, "", u.ID, "", "ADMIN (ADMIN_USERNAME at start)"))
	})
	var merr *model.Error
	if errors.As(err, &merr) && merr.Field == "username" {
		return false, nil // another instance created it first
	}
	return err == nil, err
}
