package store

import (
	"context"
	"time"

	"gqlauth/model"
)

// Second factors (§12): a session's level, TOTP secrets, recovery codes, passkeys, and the count
// of a user's factors that the principal query reads.

// SetSessionAuth records that session id (re)authenticated at now: its level becomes aal (callers
// only ever raise it) and its methods amr.
func (db *DB) SetSessionAuth(ctx context.Context, id string, aal model.AuthLevel, amr string, now time.Time) error {
	return wrap(db.Transact(ctx, func(tx *Tx) error {
		_, err := tx.idb.NewUpdate().Model((*model.Session)(nil)).
			Set("aal = ?", aal).Set("amr = ?", amr).Set("auth_time = ?", now).
			Where("id = ?", id).Exec(ctx)
		return err
	}), "SetSessionAuth")
}

// RecountFactors sets the user's factor count (users.mfa_factors) from the factor tables and
// returns it. Every factor change calls it in its own transaction, after locking the user's row
// (LockUser) before writing: the count is then read by a statement that began after every other
// change of the user's factors committed, so concurrent changes on any instance never leave a
// stale count.
func (db *DB) RecountFactors(ctx context.Context, userID string) (int, error) {
	err := db.Transact(ctx, func(tx *Tx) error {
		_, err := tx.idb.NewUpdate().Model((*model.User)(nil)).
			Set(`mfa_factors = (SELECT count(*) FROM totp_factors WHERE user_id = ? AND confirmed_at IS NOT NULL)
			+ (SELECT count(*) FROM webauthn_credentials WHERE user_id = ?)`, userID, userID).
			Where("id = ?", userID).Exec(ctx)
		return err
	})
	if err != nil {
		return 0, wrap(err, "RecountFactors")
	}
	var n int
	err = db.idb.NewSelect().Model((*model.User)(nil)).Column("mfa_factors").Where("id = ?", userID).Scan(ctx, &n)
	return n, wrap(err, "RecountFactors")
}

// TOTPFactor is a user's TOTP secret, sealed, pending until ConfirmedAt is set. LastStep is the
// latest RFC 6238 time step accepted for the user.
type TOTPFactor struct {
	UserID      string     `bun:"user_id,pk"`
	Secret      []byte     `bun:"secret"`
	CreatedAt   time.Time  `bun:"created_at"`
	ConfirmedAt *time.Time `bun:"confirmed_at"`
	LastStep    int64      `bun:"last_step"`
	// SessionID is the session that started a pending enrolment (nil for older ones).
	SessionID *string `bun:"session_id"`
}

func (db *DB) totp() string { return "totp_factors AS totp_factor" }

// TOTPFactorOf returns the user's TOTP factor, pending or confirmed.
func (db *DB) TOTPFactorOf(ctx context.Context, userID string) (*TOTPFactor, error) {
	f := new(TOTPFactor)
	err := db.idb.NewSelect().Model(f).ModelTableExpr(db.totp()).Where("user_id = ?", userID).Scan(ctx)
	return f, wrap(err, "TOTPFactorOf")
}

// PutPendingTOTP stores f as the user's pending TOTP secret, replacing a pending one. It does not
// touch a confirmed one (and reports false then).
func (db *DB) PutPendingTOTP(ctx context.Context, f *TOTPFactor) (bool, error) {
	_, err := db.idb.NewDelete().TableExpr("totp_factors").
		Where("user_id = ?", f.UserID).Where("confirmed_at IS NULL").Exec(ctx)
	if err != nil {
		return false, wrap(err, "PutPendingTOTP")
	}
	exists, err := db.idb.NewSelect().TableExpr("totp_factors").Where("user_id = ?", f.UserID).Exists(ctx)
	if err != nil || exists {
		return false, wrap(err, "PutPendingTOTP")
	}
	_, err = db.idb.NewInsert().Model(f).ModelTableExpr("totp_factors").Exec(ctx)
	return err == nil, wrap(err, "PutPendingTOTP")
}

// AcceptTOTPStep moves the user's accepted time step of a confirmed factor forward to step, in one
// conditional update: it reports false when the step is not later than the last accepted one — a
// replay, here or on another instance, or a concurrent request that took the step first — or
// when there is no confirmed factor. (A pending factor is confirmed by ConfirmPendingTOTP.)
func (db *DB) AcceptTOTPStep(ctx context.Context, userID string, step int64) (bool, error) {
	q := db.idb.NewUpdate().TableExpr("totp_factors").Set("last_step = ?", step).
		Where("user_id = ?", userID).Where("last_step < ?", step).Where("confirmed_at IS NOT NULL")
	res, err := q.Exec(ctx)
	if err != nil {
		return false, wrap(err, "AcceptTOTPStep")
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// ConfirmPendingTOTP confirms the user's pending TOTP factor at step, by a compare-and-set on
// exactly the secret the code was checked against and the session that started the enrolment:
// it reports false when the pending secret was replaced or removed meanwhile, was started by
// another session, is already confirmed, or step is not later than the last accepted one.
func (db *DB) ConfirmPendingTOTP(ctx context.Context, userID, sessionID string, secret []byte, step int64, now time.Time) (bool, error) {
	res, err := db.idb.NewUpdate().TableExpr("totp_factors").Set("last_step = ?", step).Set("confirmed_at = ?", now).
		Where("user_id = ?", userID).Where("confirmed_at IS NULL").Where("last_step < ?", step).
		Where("secret = ?", secret).Where("session_id = ?", sessionID).Exec(ctx)
	if err != nil {
		return false, wrap(err, "ConfirmPendingTOTP")
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// DeleteTOTP removes the user's TOTP factor, pending or confirmed, and reports whether a
// confirmed one was removed.
func (db *DB) DeleteTOTP(ctx context.Context, userID string) (bool, error) {
	var confirmed []string
	err := db.idb.NewSelect().TableExpr("totp_factors").Column("user_id").
		Where("user_id = ?", userID).Where("confirmed_at IS NOT NULL").Scan(ctx, &confirmed)
	if err != nil {
		return false, wrap(err, "DeleteTOTP")
	}
	_, err = db.idb.NewDelete().TableExpr("totp_factors").Where("user_id = ?", userID).Exec(ctx)
	return len(confirmed) > 0, wrap(err, "DeleteTOTP")
}

// ReplaceRecoveryCodes deletes the user's recovery codes, used or not, and stores hashes as the
// new ones.
func (db *DB) ReplaceRecoveryCodes(ctx context.Context, userID string, hashes []string, now time.Time) error {
	if err := db.DeleteRecoveryCodes(ctx, userID); err != nil {
		return err
	}
	type row struct {
		UserID    string    `bun:"user_id"`
		CodeHash  string    `bun:"code_hash"`
		CreatedAt time.Time `bun:"created_at"`
	}
	rows := make([]row, len(hashes))
	for i, h := range hashes {
		rows[i] = row{UserID: userID, CodeHash: h, CreatedAt: now}
	}
	if len(rows) == 0 {
		return nil
	}
	_, err := db.idb.NewInsert().Model(&rows).ModelTableExpr("recovery_codes").Exec(ctx)
	return wrap(err, "ReplaceRecoveryCodes")
}

// DeleteRecoveryCodes deletes every recovery code of the user.
func (db *DB) DeleteRecoveryCodes(ctx context.Context, userID string) error {
	_, err := db.idb.NewDelete().TableExpr("recovery_codes").Where("user_id = ?", userID).Exec(ctx)
	return wrap(err, "DeleteRecoveryCodes")
}

// UseRecoveryCode marks the user's unused code with hash used, in one conditional update, and
// reports whether it did: of concurrent uses of one code, on any instance, exactly one does.
func (db *DB) UseRecoveryCode(ctx context.Context, userID, hash string, now time.Time) (bool, error) {
	res, err := db.idb.NewUpdate().TableExpr("recovery_codes").Set("used_at = ?", now).
		Where("user_id = ?", userID).Where("code_hash = ?", hash).Where("used_at IS NULL").Exec(ctx)
	if err != nil {
		return false, wrap(err, "UseRecoveryCode")
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// RecoveryCodesLeft counts the user's unused recovery codes.
func (db *DB) RecoveryCodesLeft(ctx context.Context, userID string) (int, error) {
	n, err := db.idb.NewSelect().TableExpr("recovery_codes").
		Where("user_id = ?", userID).Where("used_at IS NULL").Count(ctx)
	return int(n), wrap(err, "RecoveryCodesLeft")
}

func (db *DB) passkeys() string { return "webauthn_credentials AS passkey" }

// CreatePasskey stores a registered passkey and reports false, storing nothing, when its
// credential id is registered already (to any account: two registrations of one id at once both
// pass a prior check, and the unique index decides). The caller recounts the user's factors
// (RecountFactors) in the same transaction.
func (db *DB) CreatePasskey(ctx context.Context, p *model.Passkey) (bool, error) {
	res, err := db.idb.NewInsert().Model(p).ModelTableExpr("webauthn_credentials").
		On("CONFLICT (credential_id) DO NOTHING").Exec(ctx)
	if err != nil {
		return false, wrap(err, "CreatePasskey")
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// Passkeys returns the user's passkeys, oldest first.
func (db *DB) Passkeys(ctx context.Context, userID string) ([]*model.Passkey, error) {
	keys := []*model.Passkey{}
	err := db.idb.NewSelect().Model(&keys).ModelTableExpr(db.passkeys()).
		Where("user_id = ?", userID).Order("created_at", "id").Scan(ctx)
	return keys, wrap(err, "Passkeys")
}

// DeletePasskey deletes the user's passkey id and reports whether there was one. The caller
// recounts the user's factors in the same transaction.
func (db *DB) DeletePasskey(ctx context.Context, userID, id string) (bool, error) {
	res, err := db.idb.NewDelete().TableExpr("webauthn_credentials").
		Where("user_id = ?", userID).Where("id = ?", id).Exec(ctx)
	if err != nil {
		return false, wrap(err, "DeletePasskey")
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// DeleteFactors deletes every second factor and recovery code of the user and reports how many
// factors there were (an admin's reset). The caller recounts in the same transaction.
func (db *DB) DeleteFactors(ctx context.Context, userID string) (int, error) {
	totp, err := db.DeleteTOTP(ctx, userID)
	if err != nil {
		return 0, err
	}
	res, err := db.idb.NewDelete().TableExpr("webauthn_credentials").Where("user_id = ?", userID).Exec(ctx)
	if err != nil {
		return 0, wrap(err, "DeleteFactors")
	}
	n, _ := res.RowsAffected()
	if totp {
		n++
	}
	return int(n), db.DeleteRecoveryCodes(ctx, userID)
}
