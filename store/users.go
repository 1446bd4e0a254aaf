package store

import (
	"context"
	"strings"
	"time"

	"gqlauth/model"
)

// CreateUser inserts u. A username or email that is already taken, ignoring case, is a
// BAD_USER_INPUT *model.Error naming the field, also when two registrations race: the unique
// index decides, not an earlier read.
func (db *DB) CreateUser(ctx context.Context, u *model.User) error {
	_, err := db.idb.NewInsert().Model(u).Exec(ctx)
	switch index := uniqueViolation(err); {
	case strings.Contains(index, "users_username"):
		return model.BadInput("username", "username is already taken")
	case strings.Contains(index, "users_email"):
		return model.BadInput("email", "email is already in use")
	}
	return wrap(err, "CreateUser")
}

// UserByUsername finds a user by username, ignoring case.
func (db *DB) UserByUsername(ctx context.Context, username string) (*model.User, error) {
	u := new(model.User)
	err := db.idb.NewSelect().Model(u).Where("lower(username) = lower(?)", username).Limit(1).Scan(ctx)
	return u, wrap(err, "UserByUsername")
}

// UserByID finds a user by id.
func (db *DB) UserByID(ctx context.Context, id string) (*model.User, error) {
	u := new(model.User)
	err := db.idb.NewSelect().Model(u).Where("id = ?", id).Scan(ctx)
	return u, wrap(err, "UserByID")
}

// ListUsers returns users oldest first.
func (db *DB) ListUsers(ctx context.Context, limit, offset int) ([]*model.User, error) {
	users := []*model.User{}
	if noRows(limit) {
		return users, nil
	}
	err := db.idb.NewSelect().Model(&users).Order("created_at ASC", "id ASC").Limit(int64(limit)).Offset(int64(offset)).Scan(ctx)
	return users, wrap(err, "ListUsers")
}

// SetUserRole changes a user's role and returns the updated user.
func (db *DB) SetUserRole(ctx context.Context, id string, role model.Role) (*model.User, error) {
	return db.updateUser(ctx, "SetUserRole", id, "role = ?", role)
}

// SetUserDisabled disables or enables a user. Disabling also revokes every session and API key of
// the user in the same transaction; enabling revives none of them.
func (db *DB) SetUserDisabled(ctx context.Context, id string, disabled bool, now time.Time) (*model.User, error) {
	var u *model.User
	err := db.Transact(ctx, func(tx *Tx) error {
		var err error
		if u, err = tx.updateUser(ctx, "SetUserDisabled", id, "disabled = ?", disabled); err != nil {
			return err
		}
		if !disabled {
			return nil
		}
		if _, err = tx.RevokeSessions(ctx, id, "", RevokeAll, now); err != nil {
			return err
		}
		return tx.RevokeAllAPIKeys(ctx, id, now)
	})
	return u, err
}

// SetPasswordHash replaces a user's password hash.
func (db *DB) SetPasswordHash(ctx context.Context, id, hash string) error {
	_, err := db.updateUser(ctx, "SetPasswordHash", id, "password_hash = ?", hash)
	return err
}

func (db *DB) updateUser(ctx context.Context, op, id, set string, value any) (*model.User, error) {
	var u *model.User
	err := db.Transact(ctx, func(tx *Tx) error {
		res, err := tx.idb.NewUpdate().Model((*model.User)(nil)).Set(set, value).Where("id = ?", id).Exec(ctx)
		if err != nil {
			return wrap(err, op)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		u, err = tx.UserByID(ctx, id)
		return err
	})
	return u, err
}

// Setting returns the value stored under name.
func (db *DB) Setting(ctx context.Context, name string) (string, error) {
	var value string
	err := db.idb.NewRaw("SELECT value FROM settings WHERE name = ?", name).Scan(ctx, &value)
	return value, wrap(err, "Setting")
}

// SettingOrInit returns the value stored under name, storing value first if there is none. When
// several instances race, all of them get the value of the first.
func (db *DB) SettingOrInit(ctx context.Context, name, value string) (string, error) {
	_, err := db.idb.NewRaw("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", name, value).Exec(ctx)
	if err != nil {
		return "", wrap(err, "SettingOrInit")
	}
	return db.Setting(ctx, name)
}

// CountUsers counts all users.
func (db *DB) CountUsers(ctx context.Context) (int, error) {
	n, err := db.idb.NewSelect().Model((*model.User)(nil)).Count(ctx)
	return int(n), wrap(err, "CountUsers")
}
