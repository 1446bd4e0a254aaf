package store

import (
	"context"
	"errors"
	"time"

	"github.com/uptrace/bun"

	"gqlauth/model"
)

// ErrIdentityTaken is returned by CreateIdentity when the identity is linked already, or when the
// user has an identity of that provider already.
var ErrIdentityTaken = errors.New("store: identity already linked")

// CreateIdentity links an identity to its user. The unique keys decide races: a second link of
// one identity, or of a second identity of one provider to one user, is ErrIdentityTaken.
func (db *DB) CreateIdentity(ctx context.Context, id *model.Identity) error {
	_, err := db.idb.NewInsert().Model(id).Exec(ctx)
	if uniqueViolation(err) != "" {
		return ErrIdentityTaken
	}
	return wrap(err, "CreateIdentity")
}

// IdentityBySubject finds the identity a provider knows by subject.
func (db *DB) IdentityBySubject(ctx context.Context, provider, subject string) (*model.Identity, error) {
	id := new(model.Identity)
	err := db.idb.NewSelect().Model(id).Where("provider = ? AND subject = ?", provider, subject).Scan(ctx)
	return id, wrap(err, "IdentityBySubject")
}

// IdentitiesOf lists a user's identities, oldest link first.
func (db *DB) IdentitiesOf(ctx context.Context, userID string) ([]*model.Identity, error) {
	ids := []*model.Identity{}
	err := db.idb.NewSelect().Model(&ids).Where("user_id = ?", userID).Order("linked_at ASC", "provider ASC").Scan(ctx)
	return ids, wrap(err, "IdentitiesOf")
}

// IdentitiesOfUsers lists the identities of each of userIDs, oldest link first, in one query
// (a user without identities has none in the map).
func (db *DB) IdentitiesOfUsers(ctx context.Context, userIDs []string) (map[string][]*model.Identity, error) {
	ids := []*model.Identity{}
	err := db.idb.NewSelect().Model(&ids).Where("user_id IN (?)", bun.In(userIDs)).
		Order("user_id ASC", "linked_at ASC", "provider ASC").Scan(ctx)
	if err != nil {
		return nil, wrap(err, "IdentitiesOfUsers")
	}
	byUser := make(map[string][]*model.Identity, len(userIDs))
	for _, id := range ids {
		byUser[id.UserID] = append(byUser[id.UserID], id)
	}
	return byUser, nil
}

// DeleteIdentity unlinks the user's identity of provider; ErrNotFound if there is none.
func (db *DB) DeleteIdentity(ctx context.Context, userID, provider string) error {
	res, err := db.idb.NewDelete().Model((*model.Identity)(nil)).Where("user_id = ? AND provider = ?", userID, provider).Exec(ctx)
	if err != nil {
		return wrap(err, "DeleteIdentity")
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteIdentitiesOf unlinks every provider identity of the user and returns how many it
// unlinked (claiming an account: whoever registered it may have linked their own provider).
func (db *DB) DeleteIdentitiesOf(ctx context.Context, userID string) (int, error) {
	var n int64
	err := db.Transact(ctx, func(tx *Tx) error {
		res, err := tx.idb.NewDelete().Model((*model.Identity)(nil)).Where("user_id = ?", userID).Exec(ctx)
		if err == nil {
			n, _ = res.RowsAffected()
		}
		return err
	})
	return int(n), wrap(err, "DeleteIdentitiesOf")
}

// LockUser reads a user and, on Postgres, locks its row until the transaction ends, so that
// changes that check the user's ways of signing in take turns.
func (db *DB) LockUser(ctx context.Context, id string) (*model.User, error) {
	u := new(model.User)
	err := db.forUpdate(db.idb.NewSelect().Model(u).Where("id = ?", id), "user").Scan(ctx)
	return u, wrap(err, "LockUser")
}

// UserByEmail finds a user by email, ignoring case.
func (db *DB) UserByEmail(ctx context.Context, email string) (*model.User, error) {
	u := new(model.User)
	err := db.idb.NewSelect().Model(u).Where("lower(email) = lower(?)", email).Limit(1).Scan(ctx)
	return u, wrap(err, "UserByEmail")
}

// SetFirstPassword gives a user without a password this one; ErrNotFound if the user has a
// password already (or does not exist). One statement, so two at once cannot both succeed.
func (db *DB) SetFirstPassword(ctx context.Context, id, hash string) error {
	return db.Transact(ctx, func(tx *Tx) error {
		res, err := tx.idb.NewUpdate().Model((*model.User)(nil)).Set("password_hash = ?", hash).
			Where("id = ? AND password_hash = ''", id).Exec(ctx)
		if err != nil {
			return wrap(err, "SetFirstPassword")
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// CreateSignInFlow stores a flow between its start and its callback.
func (db *DB) CreateSignInFlow(ctx context.Context, f *model.SignInFlow) error {
	_, err := db.idb.NewInsert().Model(f).Exec(ctx)
	return wrap(err, "CreateSignInFlow")
}

// TakeSignInFlow deletes and returns the flow whose state hashes to stateHash: a state works
// once, whichever instance sees it. ErrNotFound if there is none (never stored, used, or swept).
func (db *DB) TakeSignInFlow(ctx context.Context, stateHash string) (*model.SignInFlow, error) {
	f := new(model.SignInFlow)
	err := db.take(ctx, "TakeSignInFlow", f, "state_hash = ?", stateHash)
	return f, err
}

// CreateAuthCode stores a one-time code.
func (db *DB) CreateAuthCode(ctx context.Context, c *model.AuthCode) error {
	_, err := db.idb.NewInsert().Model(c).Exec(ctx)
	return wrap(err, "CreateAuthCode")
}

// TakeAuthCode deletes and returns the code whose hash is codeHash; ErrNotFound if there is none.
func (db *DB) TakeAuthCode(ctx context.Context, codeHash string) (*model.AuthCode, error) {
	c := new(model.AuthCode)
	err := db.take(ctx, "TakeAuthCode", c, "code_hash = ?", codeHash)
	return c, err
}

// take reads one row into model and deletes it, in one transaction; only the caller whose delete
// removed the row gets it, so two concurrent takes of one row never both succeed.
func (db *DB) take(ctx context.Context, op string, model any, where string, args ...any) error {
	return db.Transact(ctx, func(tx *Tx) error {
		if err := tx.idb.NewSelect().Model(model).Where(where, args...).Scan(ctx); err != nil {
			return wrap(err, op)
		}
		res, err := tx.idb.NewDelete().Model(model).Where(where, args...).Exec(ctx)
		if err != nil {
			return wrap(err, op)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// DeleteExpiredSignIns deletes flows and codes that expired before t, up to limit rows of each,
// and returns how many it deleted.
func (db *DB) DeleteExpiredSignIns(ctx context.Context, t time.Time, limit int) (int, error) {
	flows, err := db.deleteExpired(ctx, (*model.SignInFlow)(nil), "state_hash", t, limit)
	if err != nil {
		return 0, wrap(err, "DeleteExpiredSignIns")
	}
	codes, err := db.deleteExpired(ctx, (*model.AuthCode)(nil), "code_hash", t, limit)
	return flows + codes, wrap(err, "DeleteExpiredSignIns")
}
