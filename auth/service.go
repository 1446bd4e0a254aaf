package auth

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"

	"gqlauth/model"
	"gqlauth/store"
)

// Service holds the rules of authentication: sign-in, sessions, refresh rotation, roles.
// Resolvers call it; it calls the store.
type Service struct {
	db        *store.DB
	tokens    *Tokens
	passwords *Passwords
	cfg       ServiceConfig
	now       func() time.Time
	log       *slog.Logger
	feed      *Feed
	signIns   *signIns // nil: no providers
}

// ServiceConfig configures a Service.
type ServiceConfig struct {
	RefreshTTL    time.Duration    // absolute lifetime of a session
	ReuseInterval time.Duration    // grace window in which a retired refresh token still works
	SignupEnabled bool             // whether Register works
	Now           func() time.Time // nil means time.Now
	Logger        *slog.Logger     // nil means slog.Default()
	Limits        Limits
	// RefreshCookie also sets the refresh token as an HttpOnly cookie on sign-in and refresh, and
	// lets refresh read it from there; CookieSecure marks that cookie Secure (HTTPS only).
	RefreshCookie bool
	CookieSecure  bool
	// Origins are the other origins (CORS_ALLOWED_ORIGINS) whose requests may use the refresh
	// cookie, besides the server's own; see cookieRequest.
	Origins []string
	// AuditRetention is how long audit events are kept; 0 keeps them for ever.
	AuditRetention time.Duration
	// OIDC configures sign-in through OpenID Connect providers; none by default.
	OIDC OIDCConfig
}

// NewService returns a Service.
func NewService(db *store.DB, tokens *Tokens, passwords *Passwords, cfg ServiceConfig) *Service {
	s := &Service{db: db, tokens: tokens, passwords: passwords, cfg: cfg, now: cfg.Now, log: cfg.Logger, feed: newFeed()}
	if db != nil {
		db.AddEventSink(s.feed.publish)
	}
	if tokens != nil && tokens.keys != nil {
		// A key change on any instance reaches this one at once where events travel between
		// instances (Postgres); the periodic reload remains the bound everywhere else. Once
		// reloaded, sockets verify their tokens again (a revoked key closes them).
		reload := func() {
			if err := tokens.keys.Reload(context.Background()); err != nil {
				s.log.Warn("signing keys could not be reloaded", "err", err)
				return
			}
			s.feed.keysChanged()
		}
		s.feed.Watch(func(e *model.AuditEvent) {
			if e.Type == model.AuditEventTypeSigningKeyRotated || e.Type == model.AuditEventTypeSigningKeyRevoked {
				go reload()
			}
		})
		s.feed.OnResync(func() { go reload() }) // a key change may be among the missed events
	}
	if s.now == nil {
		s.now = time.Now
	}
	if len(cfg.OIDC.Providers) > 0 {
		s.signIns = newSignIns(cfg.OIDC, s.now)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s
}

// clock is the current time as the databases store it: UTC, to the microsecond, so that a value
// returned right after a write equals the value read back later.
func (s *Service) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// internal logs err with its operation and returns the opaque error clients see.
func (s *Service) internal(ctx context.Context, op string, err error) error {
	s.log.ErrorContext(ctx, "internal error", "op", op, "err", err)
	return model.Internal()
}

// Register creates a USER account and signs it in, in one transaction.
func (s *Service) Register(ctx context.Context, username, password string, email *string) (*model.AuthPayload, error) {
	if !s.cfg.SignupEnabled {
		return nil, &model.Error{Code: model.ErrorCodeForbidden, Message: "sign-up is disabled on this server"}
	}
	if err := s.limitClient(ctx); err != nil {
		return nil, err
	}
	u, err := s.newUser(ctx, username, password, email, model.RoleUser)
	if err != nil {
		return nil, err
	}
	var payload *model.AuthPayload
	err = s.db.Transact(ctx, func(tx *store.DB) error {
		if err := tx.CreateUser(ctx, u); err != nil {
			return err
		}
		payload, err = s.startSession(ctx, tx, u, model.AuditEventTypeSignUp, "")
		return err
	})
	return payload, s.check(ctx, "Register", err)
}

// CreateUser creates an account with any role (for admins).
func (s *Service) CreateUser(ctx context.Context, username, password string, email *string, role model.Role) (*model.User, error) {
	u, err := s.newUser(ctx, username, password, email, role)
	if err != nil {
		return nil, err
	}
	actor, session := actorOf(ctx)
	err = s.db.Transact(ctx, func(tx *store.DB) error {
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
	if err := s.limitClient(ctx); err != nil {
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
	if !ok || !validText(pw) {
		s.attemptFailed(ctx, username, counted)
		if u.ID == "" {
			s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeSignInFailed, "", "", "", "unknown username "+strconv.Quote(truncate(username, 64))))
		} else {
			s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeSignInFailed, "", u.ID, "", "wrong password"))
		}
		return nil, model.Unauthenticated(model.AuthErrorReasonInvalidCredentials)
	}
	s.forgetFailures(ctx, username)
	if u.Disabled {
		s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeSignInFailed, "", u.ID, "", "account disabled"))
		return nil, model.Forbidden(model.AuthErrorReasonAccountDisabled)
	}
	if s.passwords.NeedsRehash(u.PasswordHash) {
		if hash, err := s.passwords.Hash(ctx, pw); err == nil {
			if err := s.db.SetPasswordHash(ctx, u.ID, hash); err != nil {
				s.log.WarnContext(ctx, "rehash failed", "err", err)
			}
		}
	}
	var payload *model.AuthPayload
	err = s.db.Transact(ctx, func(tx *store.DB) error {
		payload, err = s.startSession(ctx, tx, u, model.AuditEventTypeSignIn, "")
		return err
	})
	return payload, s.check(ctx, "Login", err)
}

// startSession creates a session for u, records how it began (detail: through which provider, if
// any), and returns its first token pair. db must be a transaction.
func (s *Service) startSession(ctx context.Context, db *store.DB, u *model.User, how model.AuditEventType, detail string) (*model.AuthPayload, error) {
	now := s.clock()
	id := uuid.Must(uuid.NewV7()).String()
	refresh := NewRefreshToken(id)
	sess := &model.Session{
		ID: id, UserID: u.ID, RefreshHash: HashRefreshToken(refresh),
		CreatedAt: now, LastUsedAt: now, ExpiresAt: now.Add(s.cfg.RefreshTTL),
	}
	if ua := UserAgent(ctx); ua != "" {
		sess.UserAgent = &ua
	}
	if ra := fromContext(ctx); ra != nil && ra.clientID != "" {
		sess.ClientID = &ra.clientID
	}
	if err := db.CreateSession(ctx, sess); err != nil {
		return nil, err
	}
	if err := db.RecordEvent(ctx, s.event(ctx, how, u.ID, u.ID, sess.ID, detail)); err != nil {
		return nil, err
	}
	s.setRefreshCookie(ctx, refresh, sess.ExpiresAt)
	return s.payload(ctx, u, sess, refresh)
}

// payload issues a token pair for u's session sess. Every AuthPayload is made here: from now on,
// the fields below the mutation that asked for it resolve for u (see issue). The access token
// expires no later than the session does, and expiresIn says when.
func (s *Service) payload(ctx context.Context, u *model.User, sess *model.Session, refresh string) (*model.AuthPayload, error) {
	access, err := s.tokens.IssueUntil(u, sess.ID, sess.ExpiresAt)
	if err != nil {
		return nil, err
	}
	expiresIn := int(s.tokens.TTL().Seconds())
	if left := sess.ExpiresAt.Sub(s.clock()); left < s.tokens.TTL() {
		expiresIn = max(int(left.Seconds()), 0)
	}
	current := *sess
	current.Current = true
	issue(ctx, &Principal{User: u, Session: &current, Role: u.Role})
	return &model.AuthPayload{
		AccessToken: access, TokenType: "Bearer", ExpiresIn: expiresIn,
		RefreshToken: refresh, User: u,
	}, nil
}

// Refresh exchanges a refresh token for a new pair in one transaction that holds the session's
// row lock, so concurrent exchanges of one session take turns:
//   - the current token is retired and its successor becomes current;
//   - the token retired last, presented again within the reuse interval, gets the same successor
//     again (a retried request, or two tabs refreshing at once, stay on one chain);
//   - any other retired token of the session, or the last one after the interval, is a replay:
//     the whole session is revoked (the user's other sessions are not).
//
// A token that names a session but is not one of its tokens is merely invalid: knowing a
// session's id must not let anyone revoke it. A session's lifetime is absolute: refreshing never
// moves expiresAt.
func (s *Service) Refresh(ctx context.Context, token string) (*model.AuthPayload, error) {
	if err := s.limitClient(ctx); err != nil {
		return nil, err
	}
	fromCookie := false
	if cookie := s.presentedCookie(ctx); token == "" && cookie != "" {
		token, fromCookie = cookie, true
	}
	sessionID, ok := RefreshTokenSession(token)
	if !ok {
		if fromCookie {
			s.clearRefreshCookie(ctx)
		}
		return nil, model.Unauthenticated(model.AuthErrorReasonInvalidRefreshToken)
	}
	presented := HashRefreshToken(token)
	now := s.clock()

	var (
		sess      *model.Session
		user      *model.User
		successor string
		outcome   error // a refusal that must not roll back what the transaction wrote
	)
	err := s.db.Transact(ctx, func(tx *store.DB) error {
		var err error
		if sessionID != "" {
			sess, user, err = tx.LockSession(ctx, sessionID)
		} else {
			sess, user, err = tx.SessionByRefreshHash(ctx, presented)
		}
		if errors.Is(err, store.ErrNotFound) {
			outcome = model.Unauthenticated(model.AuthErrorReasonInvalidRefreshToken)
			return nil
		} else if err != nil {
			return err
		}
		previous := sess.PreviousHash != nil && equalTokens(*sess.PreviousHash, presented)
		current := equalTokens(sess.RefreshHash, presented)
		retired := previous || (!current && sessionID != "" &&
			s.tokens.Descends(sess.ID, token, sess.RefreshHash, min(sess.Generation, MaxRefreshGenerations)))
		switch {
		case !current && !retired:
			outcome = model.Unauthenticated(model.AuthErrorReasonInvalidRefreshToken)
		case user.Disabled:
			outcome = model.Forbidden(model.AuthErrorReasonAccountDisabled)
		case !sess.Live(now):
			outcome = model.Unauthenticated(model.AuthErrorReasonInvalidRefreshToken)
		case current && sess.Generation >= MaxRefreshGenerations:
			outcome = model.Unauthenticated(model.AuthErrorReasonInvalidRefreshToken)
		case current:
			successor = s.tokens.Successor(sess.ID, token)
			return tx.RotateRefreshToken(ctx, sess, HashRefreshToken(successor), now)
		case previous && sess.RotatedAt != nil && now.Sub(*sess.RotatedAt) <= s.cfg.ReuseInterval:
			// A retry within the grace window: the same successor, nothing to write. (A session
			// rotated by an older release may hold a successor of the older form; such a retry
			// is refused rather than forking the chain.)
			successor = s.tokens.Successor(sess.ID, token)
			if !equalTokens(HashRefreshToken(successor), sess.RefreshHash) {
				outcome = model.Unauthenticated(model.AuthErrorReasonInvalidRefreshToken)
			}
		default:
			s.log.WarnContext(ctx, "refresh token reused; session revoked", "session", sess.ID, "user", user.ID)
			outcome = model.Unauthenticated(model.AuthErrorReasonRefreshTokenReused)
			if _, err := tx.RevokeSessions(ctx, user.ID, sess.ID, store.RevokeOne, now); err != nil {
				return err
			}
			return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeRefreshTokenReused, "", user.ID, sess.ID, "session revoked"))
		}
		return nil
	})
	if err != nil {
		return nil, s.check(ctx, "Refresh", err)
	}
	if outcome != nil {
		if fromCookie {
			s.clearRefreshCookie(ctx) // it will never work again
		}
		return nil, outcome
	}
	s.setRefreshCookie(ctx, successor, sess.ExpiresAt)
	payload, err := s.payload(ctx, user, sess, successor)
	return payload, s.check(ctx, "Refresh", err)
}

// MaxRefreshGenerations bounds how often one session may be refreshed, and so the work of
// recognising a replayed token (one HMAC and one hash per rotation since it was retired, about a
// microsecond each). At the default lifetimes a session needs under 3,000 refreshes; one that
// reaches the bound must sign in again.
const MaxRefreshGenerations = 100_000

// Authenticate returns the caller of the request in ctx: a verified access token whose session is
// live and whose user is enabled. The session and user are loaded with one query, once per request.
// Below a mutation that has just signed someone in, the caller is that user, on the session the
// mutation started (see issue).
func (s *Service) Authenticate(ctx context.Context) (*Principal, error) {
	ra := fromContext(ctx)
	if p := issuedTo(ctx, ra); p != nil {
		return p, nil
	}
	if ra == nil {
		return nil, model.Unauthenticated(model.AuthErrorReasonMissingToken)
	}
	if ra.socket {
		ra = s.renew(ra) // what a socket learned at connection_init is never reused
	}
	if ra.reason != "" {
		return nil, model.Unauthenticated(ra.reason)
	}
	ra.once.Do(func() {
		if ra.apiKey != "" {
			ra.principal, ra.err = s.loadKeyPrincipal(ctx, ra.apiKey)
		} else {
			ra.principal, ra.err = s.loadPrincipal(ctx, ra.claims)
		}
	})
	return ra.principal, ra.err
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

func (s *Service) loadPrincipal(ctx context.Context, claims *Claims) (*Principal, error) {
	sess, user, err := s.db.Principal(ctx, claims.SessionID, claims.Subject)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, model.Unauthenticated(model.AuthErrorReasonSessionRevoked)
	case err != nil:
		return nil, s.check(ctx, "Authenticate", err)
	case user.Disabled:
		return nil, model.Forbidden(model.AuthErrorReasonAccountDisabled)
	case !sess.Live(s.clock()):
		return nil, model.Unauthenticated(model.AuthErrorReasonSessionRevoked)
	}
	sess.Current = true
	return &Principal{User: user, Session: sess, Role: user.Role}, nil
}

// Authorize authenticates the caller and checks that their role, as stored now, is at least required.
func (s *Service) Authorize(ctx context.Context, required model.Role) (*Principal, error) {
	p, err := s.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if !p.Role.Satisfies(required) {
		return nil, model.InsufficientRole(required)
	}
	return p, nil
}

// Logout revokes the caller's sessions that scope names.
func (s *Service) Logout(ctx context.Context, scope model.LogoutScope) (bool, error) {
	p, err := s.requireSession(ctx)
	if err != nil {
		return false, err
	}
	revoke := map[model.LogoutScope]store.RevokeScope{
		model.LogoutScopeCurrent: store.RevokeOne,
		model.LogoutScopeOthers:  store.RevokeOthers,
		model.LogoutScopeAll:     store.RevokeAll,
	}[scope]
	err = s.db.Transact(ctx, func(tx *store.DB) error {
		if _, err := tx.RevokeSessions(ctx, p.User.ID, p.Session.ID, revoke, s.clock()); err != nil {
			return err
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeSignOut, p.User.ID, p.User.ID, p.Session.ID, string(scope)))
	})
	if err == nil && scope != model.LogoutScopeOthers {
		s.clearRefreshCookie(ctx)
	}
	return err == nil, s.check(ctx, "Logout", err)
}

// Sessions lists the caller's live sessions, newest first.
func (s *Service) Sessions(ctx context.Context) ([]*model.Session, error) {
	p, err := s.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	sessions, err := s.db.LiveSessions(ctx, p.User.ID, s.clock())
	for _, sess := range sessions {
		sess.Current = p.Session != nil && sess.ID == p.Session.ID
	}
	return sessions, s.check(ctx, "Sessions", err)
}

// ChangePassword replaces the caller's password after checking the current one, and revokes every
// other session of the caller in the same transaction. A wrong current password is BAD_USER_INPUT
// on currentPassword rather than UNAUTHENTICATED, so that clients do not mistake it for a dead
// session and sign the user out.
func (s *Service) ChangePassword(ctx context.Context, current, next string) (bool, error) {
	p, err := s.requireSession(ctx)
	if err != nil {
		return false, err
	}
	if err := s.limitClient(ctx); err != nil {
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
	err = s.db.Transact(ctx, func(tx *store.DB) error {
		if err := tx.SetPasswordHash(ctx, p.User.ID, hash); err != nil {
			return err
		}
		if err := tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypePasswordChanged, p.User.ID, p.User.ID, p.Session.ID, "other sessions revoked")); err != nil {
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

// SetUserRole changes a user's role; it applies from the user's next request.
func (s *Service) SetUserRole(ctx context.Context, id string, role model.Role) (*model.User, error) {
	if err := validateID(id); err != nil {
		return nil, err
	}
	actor, session := actorOf(ctx)
	var u *model.User
	err := s.db.Transact(ctx, func(tx *store.DB) error {
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
	err := s.db.Transact(ctx, func(tx *store.DB) error {
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
	err = s.db.Transact(ctx, func(tx *store.DB) error {
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

// SweepSessions deletes sessions that have expired, and revoked sessions a day after revocation,
// in bounded batches. It returns how many it deleted.
func (s *Service) SweepSessions(ctx context.Context) (int, error) {
	now := s.clock()
	total := 0
	for {
		n, err := s.db.DeleteDeadSessions(ctx, now, now.Add(-RevokedSessionRetention), 1000)
		total += n
		if err != nil || n < 1000 {
			return total, err
		}
	}
}

// RevokedSessionRetention is how long a revoked session is kept before the sweep deletes it.
const RevokedSessionRetention = 24 * time.Hour

// SweepAPIKeys deletes API keys that were revoked or expired more than DeadAPIKeyRetention ago,
// in bounded batches, and returns how many it deleted. Live keys are never touched; the audit log
// keeps the history of the deleted ones (API_KEY_CREATED, API_KEY_REVOKED).
func (s *Service) SweepAPIKeys(ctx context.Context) (int, error) {
	before := s.clock().Add(-DeadAPIKeyRetention)
	total := 0
	for {
		n, err := s.db.DeleteDeadAPIKeys(ctx, before, 1000)
		total += n
		if err != nil || n < 1000 {
			return total, err
		}
	}
}

// DeadAPIKeyRetention is how long a revoked or expired API key is kept before the sweep deletes
// it: long enough that a weekly job still using it is told why it fails (SESSION_REVOKED or
// TOKEN_EXPIRED, rather than INVALID_TOKEN for a key that never existed).
const DeadAPIKeyRetention = 7 * 24 * time.Hour

func validateID(id string) error {
	if _, err := uuid.Parse(id); err != nil {
		return model.BadInput("id", "id is malformed")
	}
	return nil
}

// check passes *model.Error through, maps store.ErrNotFound to NOT_FOUND, and turns anything else
// into an opaque internal error after logging it.
func (s *Service) check(ctx context.Context, op string, err error) error {
	var merr *model.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &merr):
		return merr
	case errors.Is(err, store.ErrNotFound):
		return model.NotFound("no user with this id")
	case errors.Is(err, store.ErrUnavailable):
		s.log.ErrorContext(ctx, "database unavailable", "op", op, "err", err)
		return model.Unavailable()
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		// The client went away; what failed after that (a rolled-back transaction, a closed
		// connection) is its consequence, not an error to log.
		return model.Internal()
	default:
		return s.internal(ctx, op, err)
	}
}
