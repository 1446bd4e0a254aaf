package token

import (
	"context"
	"errors"
	"time"

	"gqlauth/model"
	"gqlauth/store"
)

// Rotation and revocation. Every change holds the keys' lock (store.DB.WithKeyLock), so that
// instances take turns, and records its audit event in the same transaction (record).

// Rotate creates a key that is published at once and signs after the publish delay. record
// writes the audit event in the same transaction.
func (r *KeyRing) Rotate(ctx context.Context, record func(tx *store.Tx, kid string) error) (*model.SigningKey, error) {
	var row *model.SigningKey
	err := r.db.WithKeyLock(ctx, func(tx *store.Tx) (err error) {
		row, err = r.addNext(ctx, tx, r.clock(), record)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := r.Reload(ctx); err != nil {
		return nil, err
	}
	row.State = model.SigningKeyStateNext
	return row, nil
}

// RotateIfDue rotates when the current key has signed for the rotation period and no newer key
// is waiting. Instances take turns on the lock, so one rotation happens, not one per instance.
func (r *KeyRing) RotateIfDue(ctx context.Context, record func(tx *store.Tx, kid string) error) error {
	if r.rotation <= 0 {
		return nil
	}
	return r.db.WithKeyLock(ctx, func(tx *store.Tx) error {
		keys, err := tx.SigningKeys(ctx)
		if err != nil {
			return err
		}
		now := r.clock()
		st := states(keys, now)
		var current *model.SigningKey
		for _, k := range keys {
			switch st[k.Kid] {
			case model.SigningKeyStateNext:
				return nil // a rotation is under way
			case model.SigningKeyStateCurrent:
				current = k
			}
		}
		if current == nil || now.Before(current.ActivatesAt.Add(r.rotation)) {
			return nil
		}
		_, err = r.addNext(ctx, tx, now, record)
		return err
	})
}

// addNext stores a new key that signs after the publish delay, and records it, on tx.
func (r *KeyRing) addNext(ctx context.Context, tx *store.Tx, now time.Time, record func(tx *store.Tx, kid string) error) (*model.SigningKey, error) {
	row, err := r.generate(now, now.Add(r.publishDelay))
	if err != nil {
		return nil, err
	}
	if err := tx.InsertSigningKey(ctx, row); err != nil {
		return nil, err
	}
	return row, record(tx, row.Kid)
}

// ErrOnlySigningKey refuses to revoke the one key that can sign.
var ErrOnlySigningKey = errors.New("only signing key")

// Revoke revokes key kid. Revoking the current key promotes the newest NEXT key at once; with
// none, it is ErrOnlySigningKey. It reports whether kid was a live key.
func (r *KeyRing) Revoke(ctx context.Context, kid string, record func(tx *store.Tx) error) (bool, error) {
	found := false
	err := r.db.WithKeyLock(ctx, func(tx *store.Tx) error {
		keys, err := tx.SigningKeys(ctx)
		if err != nil {
			return err
		}
		now := r.clock()
		st := states(keys, now)
		var next *model.SigningKey
		for _, k := range keys {
			found = found || k.Kid == kid
			if st[k.Kid] == model.SigningKeyStateNext {
				next = k // the newest, as keys are ordered by activation
			}
		}
		if !found {
			return nil
		}
		if st[kid] == model.SigningKeyStateCurrent {
			if next == nil {
				return ErrOnlySigningKey
			}
			if err := tx.ActivateSigningKey(ctx, next.Kid, now); err != nil {
				return err
			}
		}
		if _, err := tx.RevokeSigningKey(ctx, kid, now); err != nil {
			return err
		}
		return record(tx)
	})
	if err != nil || !found {
		return false, err
	}
	return true, r.Reload(ctx)
}
