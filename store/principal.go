package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"

	"gqlauth/model"
)

// principalQuery loads what authenticating a request needs: the session's liveness, its
// assurance level, methods and last authentication, the whole user with the count of its second
// factors (users.mfa_factors, kept in every factor change's transaction), and whether the
// token's signing key is still unrevoked, in one query. It is the one query every guarded request
// runs, so it bypasses Bun's formatting and runs as a prepared statement with parameters: parsed
// and planned once per connection instead of once per request.
//
// The signing key is checked here, not only against this instance's key ring, because the ring
// follows a revocation made on another instance only once its reload ends; the database knows at
// once (issue #25). A LEFT JOIN on the key's primary key, not a subquery: one more index probe.
// With HS256 (kid "") no row matches and the column is ignored.
const principalQuery = `SELECT s.expires_at, s.revoked_at, s.aal, s.amr, COALESCE(s.auth_time, s.created_at),
	u.id, u.username, u.email, u.role, u.disabled, u.password_hash, u.created_at, u.email_verified_at, u.mfa_factors,
	k.kid IS NOT NULL
FROM sessions s JOIN users u ON u.id = s.user_id
LEFT JOIN signing_keys k ON k.kid = ? AND k.revoked_at IS NULL
WHERE s.id = ? AND s.user_id = ?`

// principalArgs orders the principal query's arguments as its placeholders appear.
func principalArgs(sessionID, userID, kid string) []any { return []any{kid, sessionID, userID} }

// ErrSigningKeyRevoked is Principal's answer for a token whose signing key is revoked (or was
// never stored): the token is unusable, as token verification would say once the ring reloads.
var ErrSigningKeyRevoked = errors.New("store: the token's signing key is revoked")

// hotStatements holds the prepared statements, prepared on first use (the tables must exist).
type hotStatements struct {
	mu        sync.Mutex
	principal *sql.Stmt
	channel   string // the NOTIFY channel of audit events (Postgres)
}

func (h *hotStatements) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.principal != nil {
		h.principal.Close()
	}
}

// principalStmt is the prepared principal query of SQLite (Postgres runs it on hotPool).
func (db *DB) principalStmt(ctx context.Context) (*sql.Stmt, error) {
	db.hot.mu.Lock()
	defer db.hot.mu.Unlock()
	if db.hot.principal == nil {
		stmt, err := db.root.DB.PrepareContext(ctx, principalQuery)
		if err != nil {
			return nil, err
		}
		db.hot.principal = stmt
	}
	return db.hot.principal, nil
}

// Principal loads a session and its user in one query: the whole database cost of authenticating
// a request. Whether the session is live and the user enabled is for the caller to judge. It runs
// on the pool, never inside a transaction. It checks no signing key: TokenPrincipal does.
func (db *DB) Principal(ctx context.Context, sessionID, userID string) (*model.Session, *model.User, error) {
	return db.TokenPrincipal(ctx, sessionID, userID, "")
}

// TokenPrincipal is Principal for an access token signed by key kid ("" with HS256): in the same
// one query, the key must be stored and not revoked, else ErrSigningKeyRevoked.
func (db *DB) TokenPrincipal(ctx context.Context, sessionID, userID, kid string) (*model.Session, *model.User, error) {
	if c := db.cacheFor(ctx); c != nil {
		return db.cachedPrincipal(ctx, c, sessionID, userID, kid, func() (*model.Session, *model.User, error) {
			return db.principalPG(ctx, sessionID, userID, kid)
		})
	}
	if db.hotPool != nil {
		return db.principalPG(ctx, sessionID, userID, kid)
	}
	stmt, err := db.principalStmt(ctx)
	if err != nil {
		return nil, nil, wrap(err, "Principal")
	}
	args := principalArgs(sessionID, userID, kid)
	ctx, event := db.beforeQuery(ctx, principalQuery, args...)
	var (
		sess              = &model.Session{ID: sessionID, UserID: userID}
		u                 = new(model.User)
		revokedAt         sql.NullTime
		email             sql.NullString
		expires, userTime any
		verifiedAt        any
		authTime          any
		keyLive           bool
	)
	err = stmt.QueryRowContext(ctx, args...).Scan(&expires, &revokedAt, &sess.AAL, &sess.AMR, &authTime,
		&u.ID, &u.Username, &email, &u.Role, &u.Disabled, &u.PasswordHash, &userTime, &verifiedAt, &u.MFAFactors, &keyLive)
	if err == nil {
		sess.ExpiresAt, err = asTime(expires)
	}
	if err == nil {
		sess.AuthTime, err = asTime(authTime)
	}
	if err == nil {
		u.CreatedAt, err = asTime(userTime)
	}
	if err == nil && verifiedAt != nil {
		var at time.Time
		at, err = asTime(verifiedAt)
		u.EmailVerifiedAt = &at
	}
	db.afterQuery(ctx, event, err)
	if err != nil {
		return nil, nil, wrap(err, "Principal")
	}
	if kid != "" && !keyLive {
		return nil, nil, ErrSigningKeyRevoked
	}
	if revokedAt.Valid {
		sess.RevokedAt = &revokedAt.Time
	}
	if email.Valid {
		u.Email = &email.String
	}
	return sess, u, nil
}

// principalQueryPG is principalQuery in Postgres's placeholders ($1 session, $2 user, $3 kid).
var principalQueryPG = numberPlaceholders(principalQuery, "$3", "$1", "$2")

// numberPlaceholders replaces the query's ? placeholders, in order, with names.
func numberPlaceholders(query string, names ...string) string {
	for _, name := range names {
		query = strings.Replace(query, "?", name, 1)
	}
	return query
}

// principalPG is Principal on pgx's own pool, which prepares the query once per connection.
func (db *DB) principalPG(ctx context.Context, sessionID, userID, kid string) (*model.Session, *model.User, error) {
	ctx, event := db.beforeQuery(ctx, principalQueryPG, sessionID, userID, kid)
	sess := &model.Session{ID: sessionID, UserID: userID}
	u := new(model.User)
	var role, aal string
	var keyLive bool
	err := db.hotPool.QueryRow(ctx, principalQueryPG, sessionID, userID, kid).
		Scan(&sess.ExpiresAt, &sess.RevokedAt, &aal, &sess.AMR, &sess.AuthTime,
			&u.ID, &u.Username, &u.Email, &role, &u.Disabled, &u.PasswordHash, &u.CreatedAt, &u.EmailVerifiedAt, &u.MFAFactors, &keyLive)
	db.afterQuery(ctx, event, err)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, ErrNotFound
	}
	if err != nil {
		return nil, nil, wrap(err, "Principal")
	}
	if kid != "" && !keyLive {
		return nil, nil, ErrSigningKeyRevoked
	}
	u.Role, sess.AAL = model.Role(role), model.AuthLevel(aal)
	return sess, u, nil
}

// asTime reads a timestamp as either driver returns it: pgx gives a time.Time; modernc's SQLite
// driver gives a time.Time for TIMESTAMP columns it can parse, and the text otherwise.
func asTime(v any) (time.Time, error) {
	switch t := v.(type) {
	case time.Time:
		return t, nil
	case string:
		return time.Parse("2006-01-02 15:04:05.999999-07:00", t)
	case []byte:
		return time.Parse("2006-01-02 15:04:05.999999-07:00", string(t))
	}
	return time.Time{}, fmt.Errorf("unexpected timestamp of type %T", v)
}

// beforeQuery and afterQuery run the query hooks around a query that does not go through Bun, so
// that whatever watches Bun's queries (the tests' query counter) sees it too.
func (db *DB) beforeQuery(ctx context.Context, query string, args ...any) (context.Context, *bun.QueryEvent) {
	if len(*db.hooks) == 0 {
		return ctx, nil
	}
	event := &bun.QueryEvent{DB: db.root, Query: query, QueryArgs: args, StartTime: time.Now()}
	for _, h := range *db.hooks {
		ctx = h.BeforeQuery(ctx, event)
	}
	return ctx, event
}

func (db *DB) afterQuery(ctx context.Context, event *bun.QueryEvent, err error) {
	if event == nil {
		return
	}
	event.Err = err
	for _, h := range *db.hooks {
		h.AfterQuery(ctx, event)
	}
}
