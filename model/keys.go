package model

import "time"

// SigningKey is an asymmetric key that signs access tokens. Bun maps it to the signing_keys
// table; the private key is stored encrypted (see token.KeyRing), the public key as PKIX DER.
type SigningKey struct {
	Kid         string     `bun:"kid,pk"`
	Alg         string     `bun:"alg"`
	PublicKey   []byte     `bun:"public_key"`
	PrivateKey  []byte     `bun:"private_key"` // AES-GCM: nonce || ciphertext of the PKCS #8 DER
	CreatedAt   time.Time  `bun:"created_at"`
	ActivatesAt time.Time  `bun:"activates_at"`
	RevokedAt   *time.Time `bun:"revoked_at"`

	// State and RetiredAt are worked out from the other keys at one instant; not stored.
	State     SigningKeyState `bun:"-"`
	RetiredAt *time.Time      `bun:"-"`
}
