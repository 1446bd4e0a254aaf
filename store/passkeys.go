package store

import (
	"context"
	"time"

	"github.com/uptrace/bun"
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
