package store

import (
	"context"
	"time"

	"gqlauth/model"
)

// CreateSession inserts s. A session without a level starts at AAL1, authenticated when it was
// created.
func (db *DB) CreateSession(ctx context.Context, s *model.Session) error {
	if s.AAL == "" {
		s.AAL = model.AuthLevelAal1
	}
	if s.AuthTime.IsZero() {
		s.AuthTime = s.CreatedAt
	}
	_, err := db.idb.NewInsert().Model(s).Exec(ctx)
	return wrap(err, "CreateSession")
}

// sessionWithUser is one row of sessions joined to its user.
type sessionWithUser struct {
	model.Session `bun:",extend"`
	User          *model.User `bun:"rel:belongs-to,join:user_id=id"`
}

// LockSession finds a session by id, with its user, and locks the session row until the
// transaction ends, so that concurrent refreshes of one session take turns.
func (db *DB) LockSession(ctx context.Context, id string) (*model.Session, *model.User, error) {
	return db.sessionWithUser(ctx, "LockSession", true, "session.id = ?", id)
}

// SessionForRefresh is LockSession without the lock, outside any transaction: what a refresh
// reads to tell a token of the session from a forged one before it queues for the row.
func (db *DB) SessionForRefresh(ctx context.Context, id string) (*model.Session, *model.User, error) {
	return db.sessionWithUser(ctx, "SessionForRefresh", false, "session.id = ?", id)
}

// SessionByRefreshHash is LockSession for refresh tokens from before they named their session:
// it finds the session whose current or previous refresh token has the given hash.
func (db *DB) SessionByRefreshHash(ctx context.Context, hash string) (*model.Session, *model.User, error) {
	return db.sessionWithUser(ctx, "SessionByRefreshHash", true, "session.refresh_hash = ? OR session.previous_hash = ?", hash, hash)
}

func (db *DB) sessionWithUser(ctx context.Context, op string, lock bool, where string, args ...any) (*model.Session, *model.User, error) {
	var row sessionWithUser
	q := db.idb.NewSelect().Model(&row).ModelTableExpr("sessions AS session").Relation("User").
		Where(where, args...).Limit(1)
	if lock {
		q = db.forUpdate(q, "session")
	}
	if err := q.Scan(ctx); err != nil {
		return nil, nil, wrap(err, op)
	}
	return &row.Session, row.User, nil
}

// RotateRefreshToken retires the session's current refresh token in favour of the one hashed as
// next, remembering the retired one and when it was retired, and counting the rotation.
func (db *DB) RotateRefreshToken(ctx context.Context, s *model.Session, next string, now time.Time) error {
	retired := s.RefreshHash
	err := db.Transact(ctx, func(tx *Tx) error {
		_, err := tx.idb.NewUpdate().Model((*model.Session)(nil)).
			Set("previous_hash = ?", retired).Set("refresh_hash = ?", next).
			Set("rotated_at = ?", now).Set("last_used_at = ?", now).Set("generation = generation + 1").
			Where("id = ?", s.ID).Exec(ctx)
		return err
	})
	if err != nil {
		return wrap(err, "RotateRefreshToken")
	}
	s.PreviousHash, s.RefreshHash, s.RotatedAt, s.LastUsedAt = &retired, next, &now, now
	s.Generation++
	return nil
}

// Which sessions of a user RevokeSessions ends.
type RevokeScope int

const (
	RevokeOne    RevokeScope = iota // only the named session
	RevokeOthers                    // all but the named session
	RevokeAll                       // all of them
)

// RevokeSessions revokes live sessions of userID, relative to sessionID as scope says, and
// returns how many it revoked. RevokeAll is a credential reset (a password reset, logout ALL, a
// disabled account, an admin's MFA reset, a claimed account): in the same transaction it voids
// every live mailed token of the user too (VoidMailTokens), so that a link mailed before the
// remedy, a thief's pending change of address above all, dies with the sessions.
func (db *DB) RevokeSessions(ctx context.Context, userID, sessionID string, scope RevokeScope, now time.Time) (int, error) {
	var n int64
	err := db.Transact(ctx, func(tx *Tx) error {
		if scope == RevokeAll {
			if err := tx.VoidMailTokens(ctx, userID); err != nil {
				return err
			}
		}
		q := tx.idb.NewUpdate().Model((*model.Session)(nil)).Set("revoked_at = ?", now).
			Where("user_id = ?", userID).Where("revoked_at IS NULL")
		switch scope {
		case RevokeOne:
			q = q.Where("id = ?", sessionID)
		case RevokeOthers:
			q = q.Where("id <> ?", sessionID)
		}
		res, err := q.Exec(ctx)
		if err == nil {
			n, _ = res.RowsAffected()
		}
		return err
	})
	return int(n), wrap(err, "RevokeSessions")
}

// LiveSessions returns the user's sessions that are neither revoked nor expired, newest first.
func (db *DB) LiveSessions(ctx context.Context, userID string, now time.Time) ([]*model.Session, error) {
	sessions := []*model.Session{}
	err := db.idb.NewSelect().Model(&sessions).
		Where("user_id = ?", userID).Where("revoked_at IS NULL").Where("expires_at > ?", now).
		Order("created_at DESC", "id DESC").Scan(ctx)
	return sessions, wrap(err, "LiveSessions")
}

// DeleteDeadSessions deletes up to limit sessions that expired before expiredBefore or were
// revoked before revokedBefore, and returns how many it deleted. Bounded, so that a sweep never
// holds locks for long.
func (db *DB) DeleteDeadSessions(ctx context.Context, expiredBefore, revokedBefore time.Time, limit int) (int, error) {
	if noRows(limit) {
		return 0, nil
	}
	var n int64
	err := db.Transact(ctx, func(tx *Tx) error {
		dead := tx.idb.NewSelect().Model((*model.Session)(nil)).Column("id").
			Where("expires_at < ? OR revoked_at < ?", expiredBefore, revokedBefore).Limit(int64(limit))
		res, err := tx.idb.NewDelete().Model((*model.Session)(nil)).Where("id IN (?)", dead).Exec(ctx)
		if err == nil {
			n, _ = res.RowsAffected()
		}
		return err
	})
	return int(n), wrap(err, "DeleteDeadSessions")
}
