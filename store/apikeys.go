package store

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"gqlauth/model"
)

// CreateAPIKey inserts k.
func (db *DB) CreateAPIKey(ctx context.Context, k *model.APIKey) error {
	_, err := db.idb.NewInsert().Model(k).Exec(ctx)
	return wrap(err, "CreateAPIKey")
}

type apiKeyWithUser struct {
	model.APIKey `bun:",extend"`
	User         *model.User `bun:"rel:belongs-to,join:user_id=id"`
}

// APIKeyPrincipal loads the key with the given secret hash and its owner in one query: the whole
// database cost of authenticating a request made with an API key.
func (db *DB) APIKeyPrincipal(ctx context.Context, secretHash string) (*model.APIKey, *model.User, error) {
	if c := db.cacheFor(ctx); c != nil {
		return db.cachedKeyPrincipal(ctx, c, secretHash, func() (*model.APIKey, *model.User, error) {
			return db.apiKeyPrincipal(ctx, secretHash)
		})
	}
	return db.apiKeyPrincipal(ctx, secretHash)
}

func (db *DB) apiKeyPrincipal(ctx context.Context, secretHash string) (*model.APIKey, *model.User, error) {
	var row apiKeyWithUser
	err := db.apiKeyPrincipalQuery(&row, secretHash).Scan(ctx)
	if err != nil {
		return nil, nil, wrap(err, "APIKeyPrincipal")
	}
	return &row.APIKey, row.User, nil
}

// apiKeyPrincipalQuery selects the key with the secret hash, with its owner, into row.
func (db *DB) apiKeyPrincipalQuery(row *apiKeyWithUser, secretHash string) *bun.SelectQuery {
	return db.idb.NewSelect().Model(row).ModelTableExpr("api_keys AS api_key").Relation("User").
		Where("api_key.secret_hash = ?", secretHash)
}

// LiveAPIKeys returns the user's keys that are neither revoked nor expired, newest first.
func (db *DB) LiveAPIKeys(ctx context.Context, userID string, now time.Time) ([]*model.APIKey, error) {
	keys := []*model.APIKey{}
	err := db.idb.NewSelect().Model(&keys).
		Where("user_id = ?", userID).Where("revoked_at IS NULL").Where("expires_at > ?", now).
		Order("created_at DESC", "id DESC").Scan(ctx)
	return keys, wrap(err, "LiveAPIKeys")
}

// CountLiveAPIKeys counts the user's keys that are neither revoked nor expired. Called in a
// transaction that holds the user's row lock (LockUser), the count stays true until the
// transaction ends: the creations of one user take turns.
func (db *DB) CountLiveAPIKeys(ctx context.Context, userID string, now time.Time) (int, error) {
	n, err := db.idb.NewSelect().Model((*model.APIKey)(nil)).
		Where("user_id = ?", userID).Where("revoked_at IS NULL").Where("expires_at > ?", now).Count(ctx)
	return int(n), wrap(err, "CountLiveAPIKeys")
}

// DeleteDeadAPIKeys deletes up to limit keys that expired or were revoked before before, and
// returns how many it deleted. Bounded, so that a sweep never holds locks for long.
func (db *DB) DeleteDeadAPIKeys(ctx context.Context, before time.Time, limit int) (int, error) {
	if noRows(limit) {
		return 0, nil
	}
	var n int64
	err := db.Transact(ctx, func(tx *Tx) error {
		dead := tx.idb.NewSelect().Model((*model.APIKey)(nil)).Column("id").
			Where("expires_at < ? OR revoked_at < ?", before, before).Limit(int64(limit))
		res, err := tx.idb.NewDelete().Model((*model.APIKey)(nil)).Where("id IN (?)", dead).Exec(ctx)
		if err == nil {
			n, _ = res.RowsAffected()
		}
		return err
	})
	return int(n), wrap(err, "DeleteDeadAPIKeys")
}

// RevokeAPIKey revokes the user's key id and reports whether there was such a live key.
func (db *DB) RevokeAPIKey(ctx context.Context, userID, id string, now time.Time) (bool, error) {
	var n int64
	err := db.Transact(ctx, func(tx *Tx) error {
		res, err := tx.idb.NewUpdate().Model((*model.APIKey)(nil)).Set("revoked_at = ?", now).
			Where("id = ?", id).Where("user_id = ?", userID).Where("revoked_at IS NULL").Exec(ctx)
		if err == nil {
			n, _ = res.RowsAffected()
		}
		return err
	})
	return n > 0, wrap(err, "RevokeAPIKey")
}

// RevokeAllAPIKeys revokes every live key of the user.
func (db *DB) RevokeAllAPIKeys(ctx context.Context, userID string, now time.Time) error {
	err := db.Transact(ctx, func(tx *Tx) error {
		_, err := tx.idb.NewUpdate().Model((*model.APIKey)(nil)).Set("revoked_at = ?", now).
			Where("user_id = ?", userID).Where("revoked_at IS NULL").Exec(ctx)
		return err
	})
	return wrap(err, "RevokeAllAPIKeys")
}

// TouchAPIKey records that the key was used at now.
func (db *DB) TouchAPIKey(ctx context.Context, id string, now time.Time) error {
	err := db.Transact(ctx, func(tx *Tx) error {
		_, err := tx.idb.NewUpdate().Model((*model.APIKey)(nil)).Set("last_used_at = ?", now).Where("id = ?", id).Exec(ctx)
		return err
	})
	return wrap(err, "TouchAPIKey")
}
