package account

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"

	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/token"
)

// The sign-in rules of OpenID Connect providers: what an identity a provider vouched for signs in
// to (its account, an account it may join, or a new one), and the checks of a link. They take the
// provider's claims as plain values; the relying party (oidc) obtains them, and the edge's
// callback (web) hands them over.

// AuthCodeTTL is the lifetime of the one-time code of a finished sign-in or link: from the
// provider's callback to exchangeAuthCode or completeIdentityLink.
const AuthCodeTTL = 60 * time.Second

// SignInRefusal is a provider callback that must fail: the RFC 6749 error code the SPA gets
// (access_denied, account_exists, temporarily_unavailable, server_error), and what the audit log
// and server log say about it.
type SignInRefusal struct {
	Code   string
	Detail string
	UserID string // the account of the identity itself: its owner sees the refusal
	// Concerns is an account the refusal is about that the browser at the callback need not
	// belong to (the starter of a link, an account holding the same email). The event names it
	// for admins only: its owner would otherwise see a stranger's IP and user agent, and learn
	// from a link URL sent to someone whether their provider account is known here.
	Concerns string
}

func (e *SignInRefusal) Error() string { return e.Code + ": " + e.Detail }

func refuse(code, detail string) *SignInRefusal { return &SignInRefusal{Code: code, Detail: detail} }

// RecordSignInRefusal logs a refused provider callback and, unless the failure is the server's or
// the provider's availability, records it as SIGN_IN_FAILED.
func (s *Service) RecordSignInRefusal(ctx context.Context, provider string, r *SignInRefusal) {
	s.log.InfoContext(ctx, "provider sign-in refused", "provider", provider, "error", r.Code, "detail", r.Detail)
	if r.Code != "temporarily_unavailable" && r.Code != "server_error" {
		detail := provider + ": " + r.Detail
		if r.Concerns != "" {
			detail = provider + " (account " + r.Concerns + "): " + r.Detail
		}
		s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeSignInFailed, "", r.UserID, "", detail))
	}
}

// IdentityCode finishes a provider callback whose claims the relying party verified: for a
// sign-in, a one-time code for the identity's account (found, joined or created); for a link, a
// one-time code bound to the session that started it. A refusal is a *SignInRefusal.
func (s *Service) IdentityCode(ctx context.Context, provider string, flow *model.SignInFlow, claims *model.IdentityClaims) (string, error) {
	if flow.LinkUserID != nil {
		return s.linkCode(ctx, provider, flow, claims)
	}
	return s.signInIdentity(ctx, provider, flow, claims)
}

// signInIdentity finds or creates the user of an identity and returns a one-time code for them.
func (s *Service) signInIdentity(ctx context.Context, provider string, flow *model.SignInFlow, claims *model.IdentityClaims) (string, error) {
	now := s.clock()
	code := token.Random(32)
	// A refusal is returned from the transaction, so that nothing it wrote stays.
	err := s.db.Transact(ctx, func(tx *store.Tx) error {
		var user *model.User
		identity, err := tx.IdentityBySubject(ctx, provider, claims.Subject)
		switch {
		case err == nil:
			if user, err = tx.UserByID(ctx, identity.UserID); err != nil {
				return err
			}
		case errors.Is(err, store.ErrNotFound):
			if user, err = s.newIdentity(ctx, tx, provider, claims, now); err != nil {
				return err
			}
		default:
			return err
		}
		if user.Disabled {
			return &SignInRefusal{Code: "access_denied", Detail: "account disabled", UserID: user.ID}
		}
		return tx.CreateAuthCode(ctx, &model.AuthCode{
			CodeHash: token.HashSecret(code), UserID: user.ID, Provider: provider, CodeChallenge: flow.CodeChallenge,
			CreatedAt: now, ExpiresAt: now.Add(AuthCodeTTL),
		})
	})
	if errors.Is(err, store.ErrIdentityTaken) {
		// Another callback linked the same identity (or took the username or email) at the same
		// moment; the second attempt sees its result.
		return "", refuse("temporarily_unavailable", "a concurrent sign-in of the same identity; try again")
	}
	if err != nil {
		return "", err
	}
	return code, nil
}

// newIdentity decides what an identity seen for the first time signs in to: an account whose
// email it shares, only when so configured, the provider says the email is verified and this
// server verified the account's address; otherwise a new account, unless an account has that
// email. It runs in the transaction db.
func (s *Service) newIdentity(ctx context.Context, db *store.Tx, provider string, claims *model.IdentityClaims, now time.Time) (*model.User, error) {
	identity := &model.Identity{Provider: provider, Subject: claims.Subject, LinkedAt: now}
	if claims.Email != "" {
		identity.Email = &claims.Email
		existing, err := db.UserByEmail(ctx, claims.Email)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return nil, err
		case !s.cfg.LinkVerifiedEmail || !claims.EmailVerified:
			return nil, &SignInRefusal{Code: "account_exists", Detail: "an account with this email exists; sign in to it and link the provider", Concerns: existing.ID}
		case existing.EmailVerifiedAt == nil:
			// Anyone may register an address they do not own; the provider's word that its user
			// owns it says nothing about who registered it here. Joining the two would hand the
			// provider's user to whoever typed the address first.
			return nil, &SignInRefusal{Code: "account_exists", Detail: "an account with this email exists and its address is not verified; sign in to it and link the provider", Concerns: existing.ID}
		default:
			identity.UserID = existing.ID
			if err := db.CreateIdentity(ctx, identity); err != nil {
				return nil, err
			}
			return existing, db.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeIdentityLinked, existing.ID, existing.ID, "", provider+" (verified email)"))
		}
	}
	if !s.cfg.SignupEnabled {
		return nil, refuse("access_denied", "sign-up is disabled and the identity is linked to no account")
	}
	user := &model.User{ID: uuid.Must(uuid.NewV7()).String(), Role: model.RoleUser, CreatedAt: now}
	if claims.Email != "" && claims.EmailVerified {
		// An unverified address is not given to the account: it could be someone else's, who
		// would then find it taken.
		user.Email = &claims.Email
	}
	var err error
	if user.Username, err = freeUsername(ctx, db, usernameFrom(claims)); err != nil {
		return nil, err
	}
	if err := db.CreateUser(ctx, user); err != nil {
		var merr *model.Error
		if errors.As(err, &merr) { // the username or email was taken a moment ago
			return nil, store.ErrIdentityTaken
		}
		return nil, err
	}
	identity.UserID = user.ID
	if err := db.CreateIdentity(ctx, identity); err != nil {
		return nil, err
	}
	if err := db.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeSignUp, user.ID, user.ID, "", "via "+provider)); err != nil {
		return nil, err
	}
	return user, db.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeIdentityLinked, user.ID, user.ID, "", provider))
}

// freeUsername is base, or base with a random suffix, whichever no account has yet (in db).
func freeUsername(ctx context.Context, db *store.Tx, base string) (string, error) {
	for attempt := 0; attempt <= 5; attempt++ {
		name := base
		if attempt > 0 {
			name = base[:min(len(base), 57)] + "-" + strings.ToLower(token.Random(4))[:6]
		}
		// A savepoint would be needed to retry inside the transaction after a failed insert on
		// Postgres; checking first and letting the unique index catch the rare race is simpler.
		if _, err := db.UserByUsername(ctx, name); errors.Is(err, store.ErrNotFound) {
			return name, nil
		} else if err != nil {
			return "", err
		}
	}
	return "", errors.New("no free username")
}

// usernameFrom derives a username from the provider's claims: the preferred username, nickname,
// the local part of the email, or the name, reduced to the characters usernames allow.
func usernameFrom(c *model.IdentityClaims) string {
	local, _, _ := strings.Cut(c.Email, "@")
	for _, candidate := range []string{c.PreferredUsername, c.Nickname, local, c.Name} {
		candidate, _, _ = strings.Cut(candidate, "@")
		var b strings.Builder
		for _, r := range candidate {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
				b.WriteRune(r)
			case r == ' ':
				b.WriteByte('.')
			}
		}
		name := strings.Trim(b.String(), ".-_")
		if len(name) > 48 {
			name = name[:48]
		}
		if ValidateUsername(name) == nil {
			return name
		}
	}
	return "user-" + strings.ToLower(token.Random(4))[:6]
}

// Reasons a link cannot be made, as the callback and completeIdentityLink report them.
var (
	errLinkedElsewhere = errors.New("the identity is linked to another account")
	errProviderLinked  = errors.New("the account has another identity of this provider; unlink it first")
)

// linkCheck reports whether the identity (provider, subject) can be linked to userID: the
// identity if it is linked to that user already, errLinkedElsewhere or errProviderLinked if it
// cannot be, or nil and nil.
func linkCheck(ctx context.Context, db *store.DB, provider, subject, userID string) (*model.Identity, error) {
	identity, err := db.IdentityBySubject(ctx, provider, subject)
	switch {
	case err == nil && identity.UserID == userID:
		return identity, nil
	case err == nil:
		return nil, errLinkedElsewhere
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	ids, err := db.IdentitiesOf(ctx, userID)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if id.Provider == provider {
			return nil, errProviderLinked
		}
	}
	return nil, nil
}

// linkCode finishes the callback of a link: it checks that the session that started the link is
// live and that the identity can be linked to its user, and returns a one-time code bound to that
// session and the flow's challenge. It links nothing. The browser that came back from the
// provider need not be the one that started the link: whoever started it can send the URL to
// someone else, whose browser (signed in at the provider as them) would come back here. Only the
// starting session, redeeming the code with its verifier (CompleteIdentityLink), makes the link;
// the code reaches only the browser that came back, so a stranger's identity never gets linked.
func (s *Service) linkCode(ctx context.Context, provider string, flow *model.SignInFlow, claims *model.IdentityClaims) (string, error) {
	now := s.clock()
	sess, user, err := s.db.LockSession(ctx, *flow.LinkSessionID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (user.ID != *flow.LinkUserID || !sess.Live(now) || user.Disabled)) {
		return "", &SignInRefusal{Code: "access_denied", Detail: "the session that started the link has ended", Concerns: *flow.LinkUserID}
	} else if err != nil {
		return "", err
	}
	if _, err := linkCheck(ctx, s.db, provider, claims.Subject, user.ID); errors.Is(err, errLinkedElsewhere) || errors.Is(err, errProviderLinked) {
		return "", &SignInRefusal{Code: "account_exists", Detail: err.Error(), Concerns: user.ID}
	} else if err != nil {
		return "", err
	}
	code := token.Random(32)
	c := &model.AuthCode{
		CodeHash: token.HashSecret(code), UserID: user.ID, Provider: provider, CodeChallenge: flow.CodeChallenge,
		LinkSessionID: &sess.ID, Subject: &claims.Subject, CreatedAt: now, ExpiresAt: now.Add(AuthCodeTTL),
	}
	if claims.Email != "" {
		c.Email = &claims.Email
	}
	if err := s.db.CreateAuthCode(ctx, c); err != nil {
		return "", err
	}
	return code, nil
}
