package store

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"gqlauth/model"
)

// WebAuthnChallenge is a begun passkey ceremony (§12): the library's session data, kept
// server-side until the ceremony is finished or expires.
type WebAuthnChallenge struct {
	bun.BaseModel `bun:"table:webauthn_challenges"`

	ID          string    `bun:"id,pk"`
	Kind        string    `bun:"kind"`         // registration, sign_in, verification
	UserID      *string   `bun:"user_id"`      // nil for a sign-in
	SessionID   *string   `bun:"session_id"`   // the session that began it; nil for a sign-in
	SessionData string    `bun:"session_data"` // go-webauthn's SessionData, JSON
	CreatedAt   time.Time `bun:"created_at"`
	ExpiresAt   time.Time `bun:"expires_at"`
}

// PutWebAuthnChallenge stores a begun ceremony.
func (db *DB) PutWebAuthnChallenge(ctx context.Context, c *WebAuthnChallenge) error {
	_, err := db.idb.NewInsert().Model(c).Exec(ctx)
	return wrap(err, "PutWebAuthnChallenge")
}

// TakeWebAuthnChallenge deletes the ceremony id of kind and returns it: of several concurrent
// takers, on any instance, exactly one gets it (ErrNotFound for the others, and for an unknown
// id). Whether it has expired, and whether the taker may finish it, is for the caller to judge.
func (db *DB) TakeWebAuthnChallenge(ctx context.Context, kind, id string) (*WebAuthnChallenge, error) {
	c := new(WebAuthnChallenge)
	if err := db.take(ctx, "TakeWebAuthnChallenge", c, "id = ? AND kind = ?", id, kind); err != nil {
		return nil, err
	}
	return c, nil
}

// DeleteExpiredWebAuthnChallenges deletes up to limit ceremonies that expired before before.
func (db *DB) DeleteExpiredWebAuthnChallenges(ctx context.Context, before time.Time, limit int) (int, error) {
	n, err := db.deleteExpired(ctx, (*WebAuthnChallenge)(nil), "id", before, limit)
	return n, wrap(err, "DeleteExpiredWebAuthnChallenges")
}

// PasskeyByCredentialID returns the passkey, of any user, whose WebAuthn credential id is id.
func (db *DB) PasskeyByCredentialID(ctx context.Context, id []byte) (*model.Passkey, error) {
	k := new(model.Passkey)
	err := db.idb.NewSelect().Model(k).ModelTableExpr(db.passkeys()).Where("credential_id = ?", id).Scan(ctx)
	return k, wrap(err, "PasskeyByCredentialID")
}

// UsePasskey stores what an assertion changed in k (its counter, flags and lastUsedAt) if its
// stored counter is still oldCount, and reports whether it was: of two assertions racing with one
// counter value, on any instance, only one is stored.
func (db *DB) UsePasskey(ctx context.Context, k *model.Passkey, oldCount int64) (bool, error) {
	res, err := db.idb.NewUpdate().TableExpr("webauthn_credentials").
		Set("sign_count = ?", k.SignCount).Set("clone_warning = ?", k.CloneWarning).
		Set("user_present = ?", k.UserPresent).Set("user_verified = ?", k.UserVerified).
		Set("backup_state = ?", k.BackupState).Set("last_used_at = ?", k.LastUsedAt).
		Where("id = ?", k.ID).Where("sign_count = ?", oldCount).Exec(ctx)
	if err != nil {
		return false, wrap(err, "UsePasskey")
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}
