package token

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"gqlauth/model"
	"gqlauth/store"
)

// The asymmetric algorithms JWT_ALG may name, with their golang-jwt signing methods.
var asymmetric = map[string]jwt.SigningMethod{
	"ES256": jwt.SigningMethodES256,
	"EdDSA": jwt.SigningMethodEdDSA,
	"RS256": jwt.SigningMethodRS256,
}

// IsAsymmetric reports whether alg is one of the asymmetric JWT_ALG values.
func IsAsymmetric(alg string) bool { _, ok := asymmetric[alg]; return ok }

// KeyRing keeps the asymmetric keys that sign access tokens. They live in the database, their
// private parts encrypted with AES-256-GCM under a key derived from JWT_SECRET (HKDF-SHA256), so
// that every instance signs and verifies with the same keys and a database dump alone cannot mint
// tokens. Each instance holds a snapshot of the keys and reloads it periodically and after every
// change it makes, so every instance follows a rotation or revocation within the reload interval.
//
// A key's life, by the clock: NEXT (published, not signing) from its creation until activatesAt;
// CURRENT while it is the newest active key; RETIRED once a newer key is active, still published
// and verifying until the last token it can have signed has expired; then gone from the key set.
type KeyRing struct {
	db           *store.DB
	alg          string
	sealer       *Sealer
	publishDelay time.Duration
	rotation     time.Duration
	tokenTTL     time.Duration
	now          func() time.Time
	log          *slog.Logger

	snap   atomic.Pointer[[]*ringKey] // non-revoked keys, oldest activation first
	mu     sync.Mutex                 // serializes reloads
	parsed map[string]*ringKey        // decrypted keys by kid, kept across reloads
}

// KeyRingConfig configures a KeyRing.
type KeyRingConfig struct {
	Alg          string // ES256, EdDSA or RS256
	Secret       []byte // JWT_SECRET: the key-encryption key is derived from it
	PublishDelay time.Duration
	Rotation     time.Duration // 0: never rotate on a schedule
	TokenTTL     time.Duration // access-token lifetime
	Now          func() time.Time
	Logger       *slog.Logger
}

type ringKey struct {
	kid, alg    string
	method      jwt.SigningMethod
	public      crypto.PublicKey
	private     crypto.Signer
	createdAt   time.Time
	activatesAt time.Time
	// publishedUntil is when the last token this key can sign expires: the activation of the
	// next newer key plus the token lifetime; zero while no newer key exists.
	publishedUntil time.Time
}

// NewKeyRing loads the signing keys, creating the first one of cfg.Alg if no key of that
// algorithm can sign (also when two instances start at once on an empty database: they take
// turns on a lock, and the second finds the first's key).
func NewKeyRing(ctx context.Context, db *store.DB, cfg KeyRingConfig) (*KeyRing, error) {
	if !IsAsymmetric(cfg.Alg) {
		return nil, fmt.Errorf("JWT_ALG: %q is not ES256, EdDSA or RS256", cfg.Alg)
	}
	sealer, err := NewSealer(cfg.Secret, "gqlauth signing-key encryption v1")
	if err != nil {
		return nil, err
	}
	r := &KeyRing{
		db: db, alg: cfg.Alg, sealer: sealer, publishDelay: cfg.PublishDelay, rotation: cfg.Rotation,
		tokenTTL: cfg.TokenTTL, now: cfg.Now, log: cfg.Logger, parsed: map[string]*ringKey{},
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	err = db.WithKeyLock(ctx, func(tx *store.Tx) error {
		keys, err := tx.SigningKeys(ctx)
		if err != nil {
			return err
		}
		now := r.clock()
		for _, k := range keys {
			if k.Alg == cfg.Alg && (states(keys, now)[k.Kid] != model.SigningKeyStateRetired) {
				return nil // a key of this algorithm signs now or will
			}
		}
		row, err := r.generate(now, now)
		if err != nil {
			return err
		}
		return tx.InsertSigningKey(ctx, row)
	})
	if err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	if err := r.Reload(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *KeyRing) clock() time.Time { return r.now().UTC().Truncate(time.Microsecond) }

// ReloadInterval is how often Run reloads the keys: every instance sees a change within it.
func (r *KeyRing) ReloadInterval() time.Duration {
	return min(max(r.publishDelay/2, time.Second), 30*time.Second)
}

// Run reloads the keys every ReloadInterval and rotates on the schedule, until ctx ends.
func (r *KeyRing) Run(ctx context.Context, scheduledRotation func(ctx context.Context) error) {
	tick := time.NewTicker(r.ReloadInterval())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := scheduledRotation(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("scheduled signing-key rotation failed", "err", err)
		}
		if err := r.Reload(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("signing keys could not be reloaded; keeping the ones loaded before", "err", err)
		}
	}
}

// Reload reads the keys from the database. A key whose private part cannot be decrypted means
// JWT_SECRET differs from the one the key was stored with.
func (r *KeyRing) Reload(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	rows, err := r.db.SigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	keys := make([]*ringKey, 0, len(rows))
	for _, row := range rows {
		k, ok := r.parsed[row.Kid]
		if !ok {
			if k, err = r.parse(row); err != nil {
				return err
			}
			r.parsed[row.Kid] = k
		}
		c := *k
		c.activatesAt = row.ActivatesAt // a revocation may have moved it
		keys = append(keys, &c)
	}
	for i := range len(keys) - 1 {
		keys[i].publishedUntil = keys[i+1].activatesAt.Add(r.tokenTTL + leeway)
	}
	r.snap.Store(&keys)
	return nil
}

func (r *KeyRing) parse(row *model.SigningKey) (*ringKey, error) {
	method, ok := asymmetric[row.Alg]
	if !ok {
		return nil, fmt.Errorf("signing key %s: unknown algorithm %q", row.Kid, row.Alg)
	}
	der, err := r.sealer.Open(row.PrivateKey, []byte(row.Kid))
	if err != nil {
		return nil, fmt.Errorf("JWT_SECRET: it cannot decrypt signing key %s stored in the database: it is not the JWT_SECRET the key was stored with", row.Kid)
	}
	private, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", row.Kid, err)
	}
	signer, ok := private.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("signing key %s: not a signing key", row.Kid)
	}
	return &ringKey{kid: row.Kid, alg: row.Alg, method: method, public: signer.Public(), private: signer,
		createdAt: row.CreatedAt, activatesAt: row.ActivatesAt}, nil
}

// generate makes a key of the ring's algorithm that activates at activatesAt, and returns it as
// it is stored.
func (r *KeyRing) generate(now, activatesAt time.Time) (*model.SigningKey, error) {
	var (
		private crypto.Signer
		err     error
	)
	switch r.alg {
	case "ES256":
		private, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "EdDSA":
		_, private, err = ed25519.GenerateKey(rand.Reader)
	case "RS256":
		private, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(private)
	if err != nil {
		return nil, err
	}
	public, err := x509.MarshalPKIXPublicKey(private.Public())
	if err != nil {
		return nil, err
	}
	kid := thumbprint(private.Public())
	return &model.SigningKey{
		Kid: kid, Alg: r.alg, PublicKey: public, PrivateKey: r.sealer.Seal(der, []byte(kid)),
		CreatedAt: now, ActivatesAt: activatesAt,
	}, nil
}

// states works out the state of each key at now. keys must be ordered by activation.
func states(keys []*model.SigningKey, now time.Time) map[string]model.SigningKeyState {
	out := make(map[string]model.SigningKeyState, len(keys))
	current := ""
	for _, k := range keys {
		if k.ActivatesAt.After(now) {
			out[k.Kid] = model.SigningKeyStateNext
			continue
		}
		if current != "" {
			out[current] = model.SigningKeyStateRetired
		}
		out[k.Kid], current = model.SigningKeyStateCurrent, k.Kid
	}
	return out
}

// at returns the keys of the snapshot with their state at now, and when each retired key was
// retired: oldest activation first.
func (r *KeyRing) at(now time.Time) []*model.SigningKey {
	snap := r.snap.Load()
	if snap == nil {
		return nil
	}
	rows := make([]*model.SigningKey, len(*snap))
	for i, k := range *snap {
		rows[i] = &model.SigningKey{Kid: k.kid, Alg: k.alg, CreatedAt: k.createdAt, ActivatesAt: k.activatesAt}
	}
	st := states(rows, now)
	var lastActive *model.SigningKey
	for _, row := range rows {
		row.State = st[row.Kid]
		if row.State == model.SigningKeyStateNext {
			continue
		}
		if lastActive != nil {
			at := row.ActivatesAt
			lastActive.RetiredAt = &at
		}
		lastActive = row
	}
	return rows
}

// Keys lists the published keys at now, newest first: those verifier still accepts.
func (r *KeyRing) Keys() []*model.SigningKey {
	var out []*model.SigningKey
	for _, row := range slices.Backward(r.at(r.clock())) {
		if r.verifier(row.Kid) != nil {
			out = append(out, row)
		}
	}
	return out
}

// signer is the CURRENT key: the one activated last.
func (r *KeyRing) signer() (*ringKey, error) {
	now := r.now()
	for _, k := range slices.Backward(*r.snap.Load()) {
		if !k.activatesAt.After(now) {
			return k, nil
		}
	}
	return nil, errors.New("no signing key is current")
}

// verifier returns the published key kid, or nil. It runs on every request (the verified-token
// cache asks it too), so it allocates nothing.
func (r *KeyRing) verifier(kid string) *ringKey {
	for _, k := range *r.snap.Load() {
		if k.kid == kid {
			if !k.publishedUntil.IsZero() && !r.now().Before(k.publishedUntil) {
				return nil
			}
			return k
		}
	}
	return nil
}

func (r *KeyRing) key(kid string) *ringKey {
	for _, k := range *r.snap.Load() {
		if k.kid == kid {
			return k
		}
	}
	return nil
}
