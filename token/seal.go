package token

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
)

// Sealer encrypts secrets the server keeps at rest (signing keys' private parts, TOTP secrets)
// with AES-256-GCM under a key derived from JWT_SECRET by HKDF-SHA256 with a label of its own, so
// that a dump of the database gives none of them away. A sealed value is a random nonce followed
// by the ciphertext, bound to additional data (the row's id) so that a value copied into another
// row does not open. (The mailer seals its job arguments the same way; it imports nothing of
// ours, so it keeps its own few lines.)
type Sealer struct{ aead cipher.AEAD }

// NewSealer derives a sealer from secret for one purpose (label).
func NewSealer(secret []byte, label string) (*Sealer, error) {
	key, err := hkdf.Key(sha256.New, secret, nil, label, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plain, bound to ad.
func (s *Sealer) Seal(plain, ad []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	return s.aead.Seal(nonce, nonce, plain, ad)
}

// ErrSealed is the error of a sealed value that does not open: corrupt, bound to other data, or
// sealed under another secret.
var ErrSealed = errors.New("token: a sealed value does not open")

// Open decrypts a value Seal returned for the same ad.
func (s *Sealer) Open(sealed, ad []byte) ([]byte, error) {
	size := s.aead.NonceSize()
	if len(sealed) < size {
		return nil, ErrSealed
	}
	plain, err := s.aead.Open(nil, sealed[:size], sealed[size:], ad)
	if err != nil {
		return nil, ErrSealed
	}
	return plain, nil
}

// FactorSealer seals the second factors' secrets (TOTP) under the server's secret.
func (t *Tokens) FactorSealer() *Sealer { return t.factorSealer }

// HashRecoveryCode is the keyed hash (HMAC-SHA256 under a key derived from JWT_SECRET) under
// which a user's recovery code is stored: a dump of the database alone gives no code away.
func (t *Tokens) HashRecoveryCode(userID, code string) string {
	return hexMAC(t.recoveryKey, userID+"\x00"+code)
}
