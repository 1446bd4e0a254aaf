package account

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"

	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/token"
)

// Sessions: how one starts, refresh rotation with reuse detection, the caller of each request
// (one query, memoized), logout and the sweep of dead sessions.

// startSession creates a session for u, records how it began (detail: through which provider, if
// any), and returns its first token pair, in the transaction db. method is the RFC 8176 amr
// value of the one factor it began with (model.AMRPassword, model.AMRFederated, …): a session
// starts at AAL1, and for a user with a second factor the payload says mfaRequired.
func (s *Service) startSession(ctx context.Context, db *store.Tx, u *model.User, how model.AuditEventType, detail, method string) (*model.AuthPayload, error) {
	return s.startSessionAt(ctx, db, u, how, detail, model.AuthLevelAal1, method)
}

// startSessionAt is startSession for a sign-in that proved level aal with methods (a passkey
// sign-in starts at AAL2).
func (s *Service) startSessionAt(ctx context.Context, db *store.Tx, u *model.User, how model.AuditEventType, detail string, aal model.AuthLevel, methods ...string) (*model.AuthPayload, error) {
	now := s.clock()
	id := uuid.Must(uuid.NewV7()).String()
	refresh := token.NewRefreshToken(id)
	sess := &model.Session{
		ID: id, UserID: u.ID, RefreshHash: token.HashRefreshToken(refresh),
		CreatedAt: now, LastUsedAt: now, ExpiresAt: now.Add(s.cfg.RefreshTTL),
		AAL: aal, AMR: model.WithMethods("", methods...), AuthTime: now,
	}
	if ua := UserAgent(ctx); ua != "" {
		sess.UserAgent = &ua
	}
	if ra := fromContext(ctx); ra != nil && ra.ClientID != "" {
		sess.ClientID = &ra.ClientID
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
	if sess.AAL == "" {
		sess.AAL = model.AuthLevelAal1
	}
	access, err := s.tokens.IssueFor(u, token.Grant{SessionID: sess.ID, NotAfter: sess.ExpiresAt, AAL: sess.AAL.Claim(), AMR: sess.Methods()})
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
		Aal: sess.AAL, MfaRequired: u.HasSecondFactor() && !sess.AAL.Satisfies(model.AuthLevelAal2),
	}, nil
}

// newRefreshChain replaces the session's refresh token with a new one, not derived from the
// current one (a step-up starts a new chain: the token from before it is refused from now on,
// and presented after REFRESH_REUSE_INTERVAL it counts as reuse), and returns it.
func (s *Service) newRefreshChain(ctx context.Context, tx *store.Tx, sess *model.Session, now time.Time) (string, error) {
	refresh := token.NewRefreshToken(sess.ID)
	if err := tx.RotateRefreshToken(ctx, sess, token.HashRefreshToken(refresh), now); err != nil {
		return "", err
	}
	s.setRefreshCookie(ctx, refresh, sess.ExpiresAt)
	return refresh, nil
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
func (s *Service) Refresh(ctx context.Context, refresh string) (*model.AuthPayload, error) {
	if err := s.LimitClient(ctx); err != nil {
		return nil, err
	}
	fromCookie := false
	if cookie := s.presentedCookie(ctx); refresh == "" && cookie != "" {
		refresh, fromCookie = cookie, true
	}
	sessionID, ok := token.RefreshTokenSession(refresh)
	if !ok {
		return nil, s.refusedRefresh(ctx, fromCookie, model.Unauthenticated(model.AuthErrorReasonInvalidRefreshToken))
	}
	presented := token.HashRefreshToken(refresh)

	// A token that names its session is told from a forgery before anything waits for the
	// session's row (tokenOfSession), and concurrent ones on this instance then wait their turn
	// here, holding no connection. Under the lock, a token that was the session's current,
	// previous or an ancestor of its current one is still one of them, or retired since.
	ofTheSession := false
	if sessionID != "" {
		var err error
		if ofTheSession, err = s.tokenOfSession(ctx, sessionID, refresh, presented); err != nil {
			return nil, s.check(ctx, "Refresh", err)
		}
		if !ofTheSession {
			return nil, s.refusedRefresh(ctx, fromCookie, model.Unauthenticated(model.AuthErrorReasonInvalidRefreshToken))
		}
		release, err := s.refreshTurns.take(ctx, sessionID)
		if err != nil {
			return nil, s.check(ctx, "Refresh", err)
		}
		defer release()
	}
	now := s.clock()

	var (
		sess      *model.Session
		user      *model.User
		successor string
		outcome   error // a refusal that must not roll back what the transaction wrote
	)
	err := s.db.Transact(ctx, func(tx *store.Tx) error {
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
		previous := sess.PreviousHash != nil && token.Equal(*sess.PreviousHash, presented)
		current := token.Equal(sess.RefreshHash, presented)
		retired := previous || (!current && ofTheSession)
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
			successor = s.tokens.Successor(sess.ID, refresh)
			return tx.RotateRefreshToken(ctx, sess, token.HashRefreshToken(successor), now)
		case previous && sess.RotatedAt != nil && now.Sub(*sess.RotatedAt) <= s.cfg.ReuseInterval:
			// A retry within the grace window: the same successor, nothing to write. (A session
			// rotated by an older release may hold a successor of the older form; such a retry
			// is refused rather than forking the chain.)
			successor = s.tokens.Successor(sess.ID, refresh)
			if !token.Equal(token.HashRefreshToken(successor), sess.RefreshHash) {
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
		return nil, s.refusedRefresh(ctx, fromCookie, outcome)
	}
	s.setRefreshCookie(ctx, successor, sess.ExpiresAt)
	payload, err := s.payload(ctx, user, sess, successor)
	return payload, s.check(ctx, "Refresh", err)
}

// tokenOfSession says whether refresh (hashed: presented) is the current or previous token of
// the session, or an ancestor of its current one; a session that does not exist has none. It
// reads the session without a lock and walks the chain (Descends, up to MaxRefreshGenerations
// steps) outside any transaction: queued on the row lock, each forged refresh held a pooled
// connection, and the walk ran under the lock, so a flood of them on one's own session filled
// the pool (attacker review of DATABASE_MAX_CONNS). The walks, no longer one at a time per
// session, run on at most half the cores (chainWalks), so that a flood of forgeries cannot take
// the CPU every other request needs (second review); a current or previous token never walks.
func (s *Service) tokenOfSession(ctx context.Context, sessionID, refresh, presented string) (bool, error) {
	sess, _, err := s.db.SessionForRefresh(ctx, sessionID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if token.Equal(sess.RefreshHash, presented) || (sess.PreviousHash != nil && token.Equal(*sess.PreviousHash, presented)) {
		return true, nil
	}
	select {
	case s.chainWalks <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-s.chainWalks }()
	return s.tokens.Descends(sess.ID, refresh, sess.RefreshHash, min(sess.Generation, MaxRefreshGenerations)), nil
}

// refusedRefresh returns a refresh's refusal, clearing the refresh cookie it came from: it will
// never work again.
func (s *Service) refusedRefresh(ctx context.Context, fromCookie bool, refusal error) error {
	if fromCookie {
		s.clearRefreshCookie(ctx)
	}
	return refusal
}

// turns lets one caller at a time go on per key (a session id), and the others wait in memory
// for their turn, each until its context ends.
type turns struct {
	mu sync.Mutex
	m  map[string]*turn
}

type turn struct {
	token   chan struct{} // holds a value while someone has the turn
	waiting int           // callers holding or waiting for it; the entry goes at 0
}

// take waits for key's turn, and returns the function that gives it back.
func (t *turns) take(ctx context.Context, key string) (release func(), err error) {
	t.mu.Lock()
	if t.m == nil {
		t.m = map[string]*turn{}
	}
	e := t.m[key]
	if e == nil {
		e = &turn{token: make(chan struct{}, 1)}
		t.m[key] = e
	}
	e.waiting++
	t.mu.Unlock()
	leave := func() {
		t.mu.Lock()
		if e.waiting--; e.waiting == 0 {
			delete(t.m, key)
		}
		t.mu.Unlock()
	}
	select {
	case e.token <- struct{}{}:
		return func() { <-e.token; leave() }, nil
	case <-ctx.Done():
		leave()
		return nil, ctx.Err()
	}
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
		ra.noteLoadFailure(ra.err)
	})
	return ra.principal, ra.err
}

// loadPrincipal loads the session and user of a verified token, and checks in the same query that
// its signing key is not revoked: this instance's key ring learns of a revocation made on another
// instance only when its reload ends, the database at once (issue #25). A revoked key's token is
// refused as verification refuses it once the ring has reloaded: INVALID_TOKEN.
func (s *Service) loadPrincipal(ctx context.Context, claims *token.Claims) (*Principal, error) {
	sess, user, err := s.db.TokenPrincipal(ctx, claims.SessionID, claims.Subject, claims.KeyID)
	switch {
	case errors.Is(err, store.ErrSigningKeyRevoked):
		return nil, model.Unauthenticated(model.AuthErrorReasonInvalidToken)
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

// Logout revokes the caller's sessions that scope names.
func (s *Service) Logout(ctx context.Context, scope model.LogoutScope) (bool, error) {
	p, err := s.RequireSession(ctx)
	if err != nil {
		return false, err
	}
	revoke := map[model.LogoutScope]store.RevokeScope{
		model.LogoutScopeCurrent: store.RevokeOne,
		model.LogoutScopeOthers:  store.RevokeOthers,
		model.LogoutScopeAll:     store.RevokeAll,
	}[scope]
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
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
