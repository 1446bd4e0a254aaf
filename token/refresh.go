package token

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"strings"

	"github.com/google/uuid"
)

// Refresh tokens are "<session id>.<secret>". The session id lets the server find the session by
// its primary key and, above all, recognise a token retired many rotations ago: every successor
// is derived from its predecessor (see Successor), so a retired token is exactly one from which
// the session's current token can be reached by deriving forward. Nothing per rotation is stored.

// NewRefreshToken returns the first refresh token of a session: its id and 256 random bits.
func NewRefreshToken(sessionID string) string { return sessionID + "." + Random(32) }

// MaxRefreshTokenLength bounds the refresh tokens that are looked at at all; real ones are 80 bytes.
const MaxRefreshTokenLength = 200

// RefreshTokenSession returns the session id a refresh token names. It is "" for a token from
// before session ids were part of the format (found by its hash instead), and ok is false for a
// token that cannot be one of ours, which is then refused without a query.
func RefreshTokenSession(token string) (sessionID string, ok bool) {
	if token == "" || len(token) > MaxRefreshTokenLength {
		return "", false
	}
	sid, secret, found := strings.Cut(token, ".")
	if !found {
		return "", isBase64URL(token)
	}
	if _, err := uuid.Parse(sid); err != nil || len(sid) != 36 || !isBase64URL(secret) {
		return "", false
	}
	return sid, true
}

func isBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return s != ""
}

// Successor is the refresh token that replaces token when it is exchanged. It is derived, not
// random, so that a retry of the same exchange within the reuse interval gets the same successor
// without any token being stored in plaintext, and so that any retired token of a session leads
// to its current one (see Descends); without the server key it cannot be predicted.
func (t *Tokens) Successor(sessionID, token string) string {
	return sessionID + "." + base64.RawURLEncoding.EncodeToString(mac(t.successorKey, token))
}

// Descends reports whether the token hashed as currentHash is reached from token within at most
// steps successors, that is, whether token is a retired ancestor of the current one. It costs one
// HMAC and one SHA-256 per step, and runs only for a token that is neither current nor previous.
func (t *Tokens) Descends(sessionID, token, currentHash string, steps int) bool {
	want, err := hex.DecodeString(currentHash)
	if err != nil {
		return false
	}
	// Successor and HashRefreshToken, step after step, without allocating per step.
	m := hmac.New(sha256.New, t.successorKey)
	prefix := len(sessionID) + 1
	next := make([]byte, prefix+base64.RawURLEncoding.EncodedLen(sha256.Size))
	copy(next, sessionID+".")
	prev := []byte(token)
	var sum [sha256.Size]byte
	for range steps {
		m.Reset()
		m.Write(prev)
		base64.RawURLEncoding.Encode(next[prefix:], m.Sum(sum[:0]))
		if h := sha256.Sum256(next); subtle.ConstantTimeCompare(h[:], want) == 1 {
			return true
		}
		prev = append(prev[:0], next...)
	}
	return false
}

// HashRefreshToken is the form in which a refresh token is stored. A plain SHA-256 suffices (no
// salt or stretching): the token has 256 random bits, so there is nothing to guess.
func HashRefreshToken(token string) string { return HashSecret(token) }

// sha256Hex is how every opaque secret is stored: a hash, so that a copy of the database does not
// hold anything that can be presented. The secrets are 256-bit random values; no salt is needed.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func mac(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// Random returns n random bytes, base64url-encoded: the secrets of refresh tokens, API keys and
// sign-in flows.
func Random(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand panics instead)
	return base64.RawURLEncoding.EncodeToString(b)
}

// NewSecret returns a random HS256 key for the embedded database, base64url-encoded.
func NewSecret() string { return Random(32) }

// Equal compares two secrets in constant time.
func Equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// MailTokenLength is the length of a mailed token: 32 random bytes (256 bits), base64url.
const MailTokenLength = 43

// NewMailToken returns the secret of a mailed link (an address verification, a password reset).
func NewMailToken() string { return Random(32) }

// IsMailToken reports whether s has the shape of a mailed token, so that anything else is refused
// without a query.
func IsMailToken(s string) bool { return len(s) == MailTokenLength && isBase64URL(s) }

// HashMailToken is the form in which a mailed token (or code) of purpose is stored: an HMAC under
// a key derived from the server secret, so that a copy of the database gives nothing away, not
// even a six-digit code by trying all of them. The purpose is part of the MAC: a token of one
// purpose never matches a row of another.
func (t *Tokens) HashMailToken(purpose, secret string) string {
	return hexMAC(t.mailKey, purpose+"\x00"+secret)
}

// hexMAC is the HMAC-SHA256 of msg under key, in hex.
func hexMAC(key []byte, msg string) string { return hex.EncodeToString(mac(key, msg)) }
