package store

import (
	"context"
	"database/sql"
	"errors"
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

// ReplaceMailToken stores t in place of the account's token of the same purpose: a newer token
// voids the older. One statement on the unique key (user_id, purpose), so that concurrent
// replacements, on any instance, take turns and leave exactly one token.
func (db *DB) ReplaceMailToken(ctx context.Context, t *MailToken) error {
	_, err := db.idb.NewInsert().Model(t).
		On("CONFLICT (user_id, purpose) DO UPDATE").
		Set("token_hash = EXCLUDED.token_hash").Set("email = EXCLUDED.email").
		Set("created_at = EXCLUDED.created_at").Set("expires_at = EXCLUDED.expires_at").Exec(ctx)
	return wrap(err, "ReplaceMailToken")
}

// VoidMailTokens deletes every mailed token of the user, of every purpose (a credential reset:
// RevokeSessions with RevokeAll calls it; so do a password change and a first password).
func (db *DB) VoidMailTokens(ctx context.Context, userID string) error {
	_, err := db.idb.NewDelete().Model((*MailToken)(nil)).Where("user_id = ?", userID).Exec(ctx)
	return wrap(err, "VoidMailTokens")
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

// SignInCode is a mailed six-digit sign-in code, stored only as its keyed hash. An address with
// no account on a server without sign-up gets a row too, with a hash no code has, so that a wrong
// code costs the same writes for every address (account.resolveSignInCode).
type SignInCode struct {
	bun.BaseModel `bun:"table:sign_in_codes"`

	EmailKey  string    `bun:"email_key,pk"` // the address, lower-cased
	Email     string    `bun:"email"`        // the address as it was mailed to
	CodeHash  string    `bun:"code_hash"`    // empty once used
	Tries     int       `bun:"tries"`        // wrong tries of this code
	CreatedAt time.Time `bun:"created_at"`
	ExpiresAt time.Time `bun:"expires_at"`
	// Failures counts wrong tries of all the address's codes in the window that began at
	// FailuresSince (MaxCodeFailures per CodeFailureWindow); a new code keeps them.
	Failures      int        `bun:"failures"`
	FailuresSince *time.Time `bun:"failures_since"`
}

// MaxCodeTries is how many wrong codes kill a sign-in code.
const MaxCodeTries = 5

// MaxCodeFailures is how many wrong codes, across all of an address's codes, stop sign-in with a
// code for that address until CodeFailureWindow has passed since the first of them: without it,
// each new code would bring MaxCodeTries fresh guesses, for ever. 10 a day is a chance of 1 in
// 100,000 a day (about 1 in 270 a year) for a guesser, and more than an owner mistyping needs.
const (
	MaxCodeFailures   = 10
	CodeFailureWindow = 24 * time.Hour
)

// ErrCodesBlocked is ReplaceSignInCode's answer for an address over MaxCodeFailures.
var ErrCodesBlocked = errors.New("store: too many wrong sign-in codes for this address")

// codeFailuresCounting is the condition "the failure window is still open at ?".
const codeFailuresCounting = "failures_since IS NOT NULL AND failures_since > ?"

// ReplaceSignInCode stores c in place of the address's code (a newer code voids the older; the
// count of failures stays), in one statement on the key, so that concurrent requests take turns.
// An address over MaxCodeFailures keeps its row unchanged and gets ErrCodesBlocked.
func (db *DB) ReplaceSignInCode(ctx context.Context, c *SignInCode, now time.Time) error {
	res, err := db.idb.NewInsert().Model(c).
		On("CONFLICT (email_key) DO UPDATE").
		Set("email = EXCLUDED.email").Set("code_hash = EXCLUDED.code_hash").Set("tries = 0").
		Set("created_at = EXCLUDED.created_at").Set("expires_at = EXCLUDED.expires_at").
		// Qualified: in DO UPDATE, a bare column could also be EXCLUDED's.
		Where("NOT (?TableAlias.failures >= ? AND ?TableAlias.failures_since IS NOT NULL AND ?TableAlias.failures_since > ?)",
			MaxCodeFailures, now.Add(-CodeFailureWindow)).
		Exec(ctx)
	if err != nil {
		return wrap(err, "ReplaceSignInCode")
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrCodesBlocked
	}
	return nil
}

// TakeSignInCode uses up the address's code and returns it if its hash is hash, it has been tried
// wrongly fewer than MaxCodeTries times, it is live at now and the address is under
// MaxCodeFailures: of concurrent takers, exactly one gets it. An address over MaxCodeFailures is
// ErrNotFound without any comparison. Otherwise a wrong code counts one try against the code and
// one failure against the address (one statement, so that concurrent wrong tries all count), and
// is ErrNotFound.
func (db *DB) TakeSignInCode(ctx context.Context, emailKey, hash string, now time.Time) (*SignInCode, error) {
	c := new(SignInCode)
	err := db.idb.NewSelect().Model(c).Where("email_key = ?", emailKey).Scan(ctx)
	if err != nil {
		return nil, wrap(err, "TakeSignInCode")
	}
	since := now.Add(-CodeFailureWindow)
	if c.Failures >= MaxCodeFailures && c.FailuresSince != nil && c.FailuresSince.After(since) {
		return nil, ErrNotFound
	}
	under := "NOT (failures >= ? AND " + codeFailuresCounting + ")"
	if c.CodeHash != "" && c.CodeHash == hash {
		res, err := db.idb.NewUpdate().Model((*SignInCode)(nil)).Set("code_hash = ''").Where("email_key = ?", emailKey).
			Where("code_hash = ?", hash).Where("tries < ?", MaxCodeTries).Where("expires_at > ?", now).
			Where(under, MaxCodeFailures, since).Exec(ctx)
		if err != nil {
			return nil, wrap(err, "TakeSignInCode")
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return c, nil
		}
		return nil, ErrNotFound
	}
	_, err = db.idb.NewUpdate().Model((*SignInCode)(nil)).Set("tries = tries + 1").
		Set("failures = CASE WHEN "+codeFailuresCounting+" THEN failures + 1 ELSE 1 END", since).
		Set("failures_since = CASE WHEN "+codeFailuresCounting+" THEN failures_since ELSE ? END", since, now).
		Where("email_key = ?", emailKey).Exec(ctx)
	if err != nil {
		return nil, wrap(err, "TakeSignInCode")
	}
	return nil, ErrNotFound
}

// DeleteExpiredSignInCodes deletes up to limit codes that expired before before, or that were
// tried wrongly MaxCodeTries times, unless their address's failures still count (the row keeps
// them until CodeFailureWindow has passed).
func (db *DB) DeleteExpiredSignInCodes(ctx context.Context, before time.Time, limit int) (int, error) {
	if noRows(limit) {
		return 0, nil
	}
	sub := db.idb.NewSelect().Model((*SignInCode)(nil)).Column("email_key").
		WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			return q.Where("expires_at < ?", before).WhereOr("tries >= ?", MaxCodeTries)
		}).
		Where("NOT ("+codeFailuresCounting+")", before.Add(-CodeFailureWindow)).Limit(int64(limit))
	res, err := db.idb.NewDelete().Model((*SignInCode)(nil)).Where("email_key IN (?)", sub).Exec(ctx)
	if err != nil {
		return 0, wrap(err, "DeleteExpiredSignInCodes")
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}
