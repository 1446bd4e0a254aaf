package store

import (
	"context"
	"time"

	"github.com/uptrace/bun"
)

// MailToken is a mailed token or code, stored only as its keyed hash (token.HashMailToken).
type MailToken struct {
	bun.BaseModel `bun:"table:mail_tokens"`

	Hash      string    `bun:"token_hash,pk"`
	UserID    string    `bun:"user_id"`
	Purpose   string    `bun:"purpose"`
	Email     string    `bun:"email"` // the address it was mailed to
	CreatedAt time.Time `bun:"created_at"`
	ExpiresAt time.Time `bun:"expires_at"`
}

// ReplaceMailToken stores t and deletes the account's other tokens of the same purpose: a newer
// token voids the older ones.
func (db *DB) ReplaceMailToken(ctx context.Context, t *MailToken) error {
	_, err := db.idb.NewDelete().Model((*MailToken)(nil)).Where("user_id = ?", t.UserID).Where("purpose = ?", t.Purpose).Exec(ctx)
	if err != nil {
		return wrap(err, "ReplaceMailToken")
	}
	_, err = db.idb.NewInsert().Model(t).Exec(ctx)
	return wrap(err, "ReplaceMailToken")
}

// TakeMailToken deletes the token of purpose whose hash is hash and returns it: of several
// concurrent takers, exactly one gets it (ErrNotFound for the others, and for an unknown token).
// Whether it has expired is for the caller to judge.
func (db *DB) TakeMailToken(ctx context.Context, purpose, hash string) (*MailToken, error) {
	t := new(MailToken)
	err := db.idb.NewSelect().Model(t).Where("token_hash = ?", hash).Where("purpose = ?", purpose).Scan(ctx)
	if err != nil {
		return nil, wrap(err, "TakeMailToken")
	}
	res, err := db.idb.NewDelete().Model((*MailToken)(nil)).Where("token_hash = ?", hash).Exec(ctx)
	if err != nil {
		return nil, wrap(err, "TakeMailToken")
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return nil, ErrNotFound
	}
	return t, nil
}

// SetEmailVerified marks the address of user id verified at now, if it still is email (ignoring
// case), and reports whether it was.
func (db *DB) SetEmailVerified(ctx context.Context, id, email string, now time.Time) (bool, error) {
	var n int64
	err := db.Transact(ctx, func(tx *Tx) error {
		res, err := tx.idb.NewUpdate().Table("users").Set("email_verified_at = ?", now).
			Where("id = ?", id).Where("lower(email) = lower(?)", email).Exec(ctx)
		if err == nil {
			n, _ = res.RowsAffected()
		}
		return err
	})
	return n == 1, wrap(err, "SetEmailVerified")
}

// DeleteExpiredMailTokens deletes up to limit tokens that expired before before.
func (db *DB) DeleteExpiredMailTokens(ctx context.Context, before time.Time, limit int) (int, error) {
	if noRows(limit) {
		return 0, nil
	}
	sub := db.idb.NewSelect().Model((*MailToken)(nil)).Column("token_hash").Where("expires_at < ?", before).Limit(int64(limit))
	res, err := db.idb.NewDelete().Model((*MailToken)(nil)).Where("token_hash IN (?)", sub).Exec(ctx)
	if err != nil {
		return 0, wrap(err, "DeleteExpiredMailTokens")
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}
