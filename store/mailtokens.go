package store

import (
	"context"
	"database/sql"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"gqlauth/model"
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
	if err := db.take(ctx, "TakeMailToken", t, "token_hash = ? AND purpose = ?", hash, purpose); err != nil {
		return nil, err
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
	n, err := db.deleteExpired(ctx, (*MailToken)(nil), "token_hash", before, limit)
	return n, wrap(err, "DeleteExpiredMailTokens")
}

// LiveMailToken returns the account's token of purpose that is live at now (ErrNotFound when
// there is none): for a pending change of address, the address it was mailed to.
func (db *DB) LiveMailToken(ctx context.Context, userID, purpose string, now time.Time) (*MailToken, error) {
	t := new(MailToken)
	err := db.idb.NewSelect().Model(t).Where("user_id = ?", userID).Where("purpose = ?", purpose).
		Where("expires_at > ?", now).Order("created_at DESC").Limit(1).Scan(ctx)
	return t, wrap(err, "LiveMailToken")
}

// ChangeEmail sets the address of user id to email, verified at now. An address another account
// holds (ignoring case) is a BAD_USER_INPUT *model.Error on newEmail: the unique index decides,
// so an account that took the address a moment ago wins and nothing is written here.
func (db *DB) ChangeEmail(ctx context.Context, id, email string, now time.Time) error {
	var res sql.Result
	err := db.Transact(ctx, func(tx *Tx) (err error) {
		res, err = tx.idb.NewUpdate().Table("users").Set("email = ?", email).Set("email_verified_at = ?", now).
			Where("id = ?", id).Exec(ctx)
		return err
	})
	if index := uniqueViolation(err); strings.Contains(index, "users_email") {
		return model.BadInput("newEmail", "another account took this address in the meantime")
	}
	if err != nil {
		return wrap(err, "ChangeEmail")
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrNotFound
	}
	return nil
}

// SignInCode is a mailed six-digit sign-in code, stored only as its keyed hash.
type SignInCode struct {
	bun.BaseModel `bun:"table:sign_in_codes"`

	EmailKey  string    `bun:"email_key,pk"` // the address, lower-cased
	Email     string    `bun:"email"`        // the address as it was mailed to
	CodeHash  string    `bun:"code_hash"`
	Tries     int       `bun:"tries"`
	CreatedAt time.Time `bun:"created_at"`
	ExpiresAt time.Time `bun:"expires_at"`
}

// MaxCodeTries is how many wrong codes kill a sign-in code.
const MaxCodeTries = 5

// ReplaceSignInCode stores c, replacing the address's older code (a newer code voids it).
func (db *DB) ReplaceSignInCode(ctx context.Context, c *SignInCode) error {
	if _, err := db.idb.NewDelete().Model((*SignInCode)(nil)).Where("email_key = ?", c.EmailKey).Exec(ctx); err != nil {
		return wrap(err, "ReplaceSignInCode")
	}
	_, err := db.idb.NewInsert().Model(c).Exec(ctx)
	return wrap(err, "ReplaceSignInCode")
}

// TakeSignInCode deletes and returns the address's code if its hash is hash, it has been tried
// wrongly fewer than MaxCodeTries times and it is live at now: of concurrent takers, exactly one
// gets it. Otherwise it counts one wrong try against the address's code, if there is one (one
// statement, so that concurrent wrong tries all count), and returns ErrNotFound.
func (db *DB) TakeSignInCode(ctx context.Context, emailKey, hash string, now time.Time) (*SignInCode, error) {
	c := new(SignInCode)
	err := db.idb.NewSelect().Model(c).Where("email_key = ?", emailKey).Scan(ctx)
	if err != nil {
		return nil, wrap(err, "TakeSignInCode")
	}
	if c.CodeHash == hash {
		res, err := db.idb.NewDelete().Model((*SignInCode)(nil)).Where("email_key = ?", emailKey).
			Where("code_hash = ?", hash).Where("tries < ?", MaxCodeTries).Where("expires_at > ?", now).Exec(ctx)
		if err != nil {
			return nil, wrap(err, "TakeSignInCode")
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return c, nil
		}
		return nil, ErrNotFound
	}
	_, err = db.idb.NewUpdate().Model((*SignInCode)(nil)).Set("tries = tries + 1").Where("email_key = ?", emailKey).Exec(ctx)
	if err != nil {
		return nil, wrap(err, "TakeSignInCode")
	}
	return nil, ErrNotFound
}

// DeleteExpiredSignInCodes deletes up to limit codes that expired before before, or that were
// tried wrongly MaxCodeTries times.
func (db *DB) DeleteExpiredSignInCodes(ctx context.Context, before time.Time, limit int) (int, error) {
	if noRows(limit) {
		return 0, nil
	}
	sub := db.idb.NewSelect().Model((*SignInCode)(nil)).Column("email_key").
		WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			return q.Where("expires_at < ?", before).WhereOr("tries >= ?", MaxCodeTries)
		}).Limit(int64(limit))
	res, err := db.idb.NewDelete().Model((*SignInCode)(nil)).Where("email_key IN (?)", sub).Exec(ctx)
	if err != nil {
		return 0, wrap(err, "DeleteExpiredSignInCodes")
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}
