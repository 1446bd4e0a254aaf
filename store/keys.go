package store

import (
	"context"
	"time"

	"gqlauth/model"
)

// SigningKeys returns every signing key that has not been revoked, oldest activation first.
func (db *DB) SigningKeys(ctx context.Context) ([]*model.SigningKey, error) {
	keys := []*model.SigningKey{}
	err := db.idb.NewSelect().Model(&keys).Where("revoked_at IS NULL").Order("activates_at ASC", "created_at ASC").Scan(ctx)
	return keys, wrap(err, "SigningKeys")
}

// WithKeyLock runs fn in a transaction that holds the signing keys' lock, so that instances
// deciding at once whether to create or rotate a key take turns and only one of them does.
// (SQLite's write lock, taken when the transaction begins, already serializes them.)
func (db *DB) WithKeyLock(ctx context.Context, fn func(tx *Tx) error) error {
	return db.Transact(ctx, func(tx *Tx) error {
		if tx.pg {
			if _, err := tx.idb.ExecContext(ctx, "SELECT pg_advisory_xact_lock(hashtext('gqlauth.keys.' || current_schema()))"); err != nil {
				return wrap(err, "WithKeyLock")
			}
		}
		return fn(tx)
	})
}

// InsertSigningKey stores k.
func (db *DB) InsertSigningKey(ctx context.Context, k *model.SigningKey) error {
	_, err := db.idb.NewInsert().Model(k).Exec(ctx)
	return wrap(err, "InsertSigningKey")
}

// RevokeSigningKey revokes the key kid and reports whether it was live. Like every write to a
// table the principal query reads, it runs on a *Tx: the transaction returns only once every
// instance caching principals has dropped what it read with that key (docs/principal-cache.md).
func (db *DB) RevokeSigningKey(ctx context.Context, kid string, now time.Time) (bool, error) {
	var n int64
	err := db.Transact(ctx, func(tx *Tx) error {
		res, err := tx.idb.NewUpdate().Model((*model.SigningKey)(nil)).Set("revoked_at = ?", now).
			Where("kid = ?", kid).Where("revoked_at IS NULL").Exec(ctx)
		if err == nil {
			n, _ = res.RowsAffected()
		}
		return err
	})
	if err != nil {
		return false, wrap(err, "RevokeSigningKey")
	}
	return n > 0, nil
}

// ActivateSigningKey moves the activation of key kid to at (on a *Tx, as RevokeSigningKey).
func (db *DB) ActivateSigningKey(ctx context.Context, kid string, at time.Time) error {
	err := db.Transact(ctx, func(tx *Tx) error {
		_, err := tx.idb.NewUpdate().Model((*model.SigningKey)(nil)).Set("activates_at = ?", at).Where("kid = ?", kid).Exec(ctx)
		return err
	})
	return wrap(err, "ActivateSigningKey")
}
