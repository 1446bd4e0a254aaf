package account

import (
	"context"
	"slices"
	"time"

	"gqlauth/mfa"
	"gqlauth/model"
	"gqlauth/store"
)

// Assurance levels (§12): what a guard requires of a session, how a session's level rises, and
// the recent-authentication rule. The level lives on the session row and is read by the one
// principal query with the role; tokens carry it for information only.

// MFAConfig configures the second factors.
type MFAConfig struct {
	// RequiredRoles must have a second factor (MFA_REQUIRED_ROLES): until they enrol one, only
	// enrolment and the aal: AAL1 fields work for them.
	RequiredRoles []model.Role
	// ReauthWindow is how recent a session's last sign-in or step-up must be for the operations
	// that mint a credential or change how the account signs in (REAUTH_WINDOW, default 10m).
	ReauthWindow time.Duration
	// Issuer names the server in otpauth:// URIs (APP_NAME; "gqlauth" when empty).
	Issuer string
	// Passkeys runs the WebAuthn ceremonies of the relying party (WEBAUTHN_RP_ID,
	// WEBAUTHN_ORIGINS); nil: the passkey operations fail as misconfigured.
	Passkeys *mfa.Passkeys
}

// DefaultReauthWindow is REAUTH_WINDOW's default.
const DefaultReauthWindow = 10 * time.Minute

func (s *Service) reauthWindow() time.Duration {
	if s.cfg.MFA.ReauthWindow > 0 {
		return s.cfg.MFA.ReauthWindow
	}
	return DefaultReauthWindow
}

// Guard is what a guarded field requires: a role, and a level (nil: the user's own level).
// Enrolment marks a field that enrols a factor (@enrollsFactor): a user with none yet passes it
// at AAL1 even when their role needs a second factor. Recent marks a field that needs a recent
// authentication (@recentAuth, the one source of that rule): a session that signed in, stepped
// up or reauthenticated within REAUTH_WINDOW; an API key never passes it.
type Guard struct {
	Role      model.Role
	AAL       *model.AuthLevel
	Enrolment bool
	Recent    bool
}

// Authorize authenticates the caller and checks that their role, as stored now, is at least
// required, at the user's own level (the rule of @auth without aal).
func (s *Service) Authorize(ctx context.Context, required model.Role) (*Principal, error) {
	return s.Guard(ctx, Guard{Role: required})
}

// Guard authenticates the caller and applies g (the @auth directive; every socket operation
// goes through it too).
func (s *Service) Guard(ctx context.Context, g Guard) (*Principal, error) {
	p, err := s.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	return p, s.allows(p, g)
}

// allows applies g to p: the role first (a user below it learns nothing about levels), then
// the level.
func (s *Service) allows(p *Principal, g Guard) error {
	if !p.Role.Satisfies(g.Role) {
		return model.InsufficientRole(g.Role)
	}
	if p.Session == nil && g.AAL != nil && *g.AAL == model.AuthLevelAal2 {
		// Step-up fields need a person at a session; an API key never steps up.
		return errNeedsSession()
	}
	required := s.requiredLevel(p.User, g)
	if !p.Level().Satisfies(required) {
		return model.MFARequired(required)
	}
	if g.Recent {
		return s.requireRecent(p)
	}
	return nil
}

// requiredLevel is the level g requires of u's session.
func (s *Service) requiredLevel(u *model.User, g Guard) model.AuthLevel {
	switch {
	case g.AAL != nil:
		return *g.AAL
	case g.Enrolment && !u.HasSecondFactor():
		return model.AuthLevelAal1
	}
	return s.OwnLevel(u)
}

// OwnLevel is the level u's sessions need for the fields of @auth without aal: AAL2 once u has a
// second factor or u's role needs one (MFA_REQUIRED_ROLES), AAL1 before.
func (s *Service) OwnLevel(u *model.User) model.AuthLevel {
	if u.HasSecondFactor() || slices.Contains(s.cfg.MFA.RequiredRoles, u.Role) {
		return model.AuthLevelAal2
	}
	return model.AuthLevelAal1
}

// Level is the assurance level of the request: its session's. A request with an API key acts at
// the lower of the level of the session that minted the key and its owner's factor level (AAL2
// only while the owner has a second factor): a key minted at AAL1 — before the owner's first
// factor, perhaps with a stolen password — never acts at AAL2. A key never passes a step-up
// (aal: AAL2) field, which needs a session.
func (p *Principal) Level() model.AuthLevel {
	if p.Session != nil {
		return p.Session.AAL
	}
	if p.APIKey != nil && p.APIKey.AAL == model.AuthLevelAal2 && p.User.HasSecondFactor() {
		return model.AuthLevelAal2
	}
	return model.AuthLevelAal1
}

// requireRecent refuses, with FORBIDDEN / REAUTHENTICATION_REQUIRED, a session that has not
// signed in, stepped up or reauthenticated within REAUTH_WINDOW; an API key is refused as for
// any operation that needs a session.
func (s *Service) requireRecent(p *Principal) error {
	if p.Session == nil {
		return errNeedsSession()
	}
	if s.clock().Sub(p.Session.AuthenticatedAt()) > s.reauthWindow() {
		return model.Forbidden(model.AuthErrorReasonReauthenticationRequired)
	}
	return nil
}

// RequireRecentSession authenticates the caller and refuses an API key or a session whose last
// authentication is older than REAUTH_WINDOW. The GraphQL fields get this rule from @recentAuth
// (Guard.Recent); this is for callers outside the schema's guard.
func (s *Service) RequireRecentSession(ctx context.Context) (*Principal, error) {
	p, err := s.RequireSession(ctx)
	if err != nil {
		return nil, err
	}
	return p, s.requireRecent(p)
}

// StepUp raises the session of p to AAL2 in tx, adding method (an RFC 8176 amr value) and "mfa"
// to its methods and renewing its recent authentication, and returns a fresh token pair for it:
// the refresh token is replaced (a new chain; the old token is refused from now on) and the
// access token carries the new aal and amr. verifyMfa calls it, and a passkey step-up does.
// It locks the session row, so it takes turns with a concurrent refresh.
func (s *Service) StepUp(ctx context.Context, tx *store.Tx, p *Principal, method string) (*model.AuthPayload, error) {
	return s.reauthenticated(ctx, tx, p, model.AuthLevelAal2, method, model.AMRMFA)
}

// reauthenticated records that p's session authenticated again with methods, at level aal (it
// never lowers the level), and returns a fresh token pair for it (see StepUp).
func (s *Service) reauthenticated(ctx context.Context, tx *store.Tx, p *Principal, aal model.AuthLevel, methods ...string) (*model.AuthPayload, error) {
	sess, user, err := tx.LockSession(ctx, p.Session.ID)
	if err != nil {
		return nil, err
	}
	now := s.clock()
	if !sess.Live(now) {
		return nil, model.Unauthenticated(model.AuthErrorReasonSessionRevoked)
	}
	if sess.AAL.Satisfies(aal) {
		aal = sess.AAL
	}
	sess.AAL, sess.AMR, sess.AuthTime = aal, model.WithMethods(sess.AMR, methods...), now
	if err := tx.SetSessionAuth(ctx, sess.ID, sess.AAL, sess.AMR, now); err != nil {
		return nil, err
	}
	refresh, err := s.newRefreshChain(ctx, tx, sess, now)
	if err != nil {
		return nil, err
	}
	return s.payload(ctx, user, sess, refresh)
}

// FactorAdded finishes, in tx, the enrolment of a second factor whose row the caller has just
// written (a confirmed TOTP, a registered passkey), for the caller p: the user's factor count is
// brought up to date; on the user's first factor, p's session is raised to AAL2 (method added to
// its amr) and every other session of the user is revoked, which a stolen password may have
// opened, and every API key of the user; MFA_ENROLLED is recorded (detail names the factor) and a notice is mailed to the
// verified address. The caller must have locked the user's row (tx.LockUser) before writing the
// factor, and must have written exactly one. It reports whether this was the first factor.
func (s *Service) FactorAdded(ctx context.Context, tx *store.Tx, p *Principal, method, detail string) (first bool, err error) {
	n, err := tx.RecountFactors(ctx, p.User.ID)
	if err != nil {
		return false, err
	}
	first = n == 1 // the caller added one factor under the user's lock: there was none before
	if first {
		now := s.clock()
		amr := model.WithMethods(p.Session.AMR, method, model.AMRMFA)
		if err := tx.SetSessionAuth(ctx, p.Session.ID, model.AuthLevelAal2, amr, now); err != nil {
			return false, err
		}
		if _, err := tx.RevokeSessions(ctx, p.User.ID, p.Session.ID, store.RevokeOthers, now); err != nil {
			return false, err
		}
		// The user's API keys too: a stolen password may have minted them, and they were minted
		// at AAL1 (a key this session makes from now on is at AAL2).
		if err := tx.RevokeAllAPIKeys(ctx, p.User.ID, now); err != nil {
			return false, err
		}
		detail += "; first factor: other sessions and API keys revoked"
	}
	if err := tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeMfaEnrolled, p.User.ID, p.User.ID, p.Session.ID, detail)); err != nil {
		return false, err
	}
	return first, s.mfaNotice(ctx, tx, p.User, "A second factor was added: "+detail+".")
}

// FactorRemoved finishes, in tx, the removal of a factor whose row the caller has just deleted:
// the count is brought up to date, MFA_REMOVED recorded and a notice mailed. The last factor of a
// user whose role needs one (MFA_REQUIRED_ROLES) is refused (BAD_USER_INPUT), which undoes the
// removal. When the user has no factor left, their recovery codes are deleted too (they would be
// a second factor of nothing).
func (s *Service) FactorRemoved(ctx context.Context, tx *store.Tx, p *Principal, detail string) error {
	n, err := tx.RecountFactors(ctx, p.User.ID)
	if err != nil {
		return err
	}
	if n == 0 && slices.Contains(s.cfg.MFA.RequiredRoles, p.User.Role) {
		// The caller rolls the removal back: the role cannot go without a second factor.
		return model.BadInput("id", "your role needs a second factor: add another before removing the last one")
	}
	if n == 0 {
		if err := tx.DeleteRecoveryCodes(ctx, p.User.ID); err != nil {
			return err
		}
		detail += "; no factor left"
	}
	if err := tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeMfaRemoved, p.User.ID, p.User.ID, p.Session.ID, detail)); err != nil {
		return err
	}
	return s.mfaNotice(ctx, tx, p.User, "A second factor was removed: "+detail+".")
}
