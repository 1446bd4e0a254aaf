// Package token issues and verifies access tokens (JWTs), derives refresh tokens, and keeps the
// signing key ring and its JWKS content. It knows nothing of sessions, of what a user may do, or
// of HTTP: account decides who gets a token, the edge (web) serves the key set.
package token

import (
	"crypto/sha256"
	"errors"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"

	"gqlauth/model"
)

// AccessTokenType is the JWT "typ" header of access tokens (RFC 9068), which sets them apart from
// any other JWT signed with the same key.
const AccessTokenType = "at+jwt"

// Claims are the claims of an access token.
type Claims struct {
	jwt.RegisteredClaims
	SessionID string     `json:"sid"`
	Role      model.Role `json:"role"`
	// AMR (RFC 8176) and AAL ("aal1", "aal2") say how the session authenticated, for information:
	// the server reads the level from the session row, never from the token.
	AMR []string `json:"amr,omitempty"`
	AAL string   `json:"aal,omitempty"`
	// KeyID is the kid of the signing key that signed the token ("" with HS256), from its
	// header, not a claim. The principal query checks it against the database, so that a key
	// revoked on another instance is refused before this instance's key ring has reloaded.
	KeyID string `json:"-"`
}

// Grant is what an access token is issued for: a session (its id, its absolute expiry or zero,
// and how it authenticated).
type Grant struct {
	SessionID string
	NotAfter  time.Time
	AAL       string
	AMR       []string
}

// Tokens issues and verifies access tokens, and makes and hashes refresh tokens.
type Tokens struct {
	key           []byte
	successorKey  []byte
	mailKey       []byte
	recoveryKey   []byte
	factorSealer  *Sealer
	issuer        string
	audience      string
	ttl           time.Duration
	now           func() time.Time
	parser        *jwt.Parser
	signingMethod jwt.SigningMethod
	// keys, when set, sign and verify instead of key (an asymmetric JWT_ALG).
	keys *KeyRing
	// verified remembers tokens that passed verification, until they expire, by their SHA-256. A
	// client sends the same access token on every request for its whole lifetime, and full
	// verification (base64, JSON, HMAC) is most of the middleware's cost; a hit needs the exact
	// same string, signature included, so it proves as much as a new verification would.
	verified *lru.Cache[[sha256.Size]byte, verifiedToken]
}

// verifiedToken is an entry of the verified-token cache: the claims, and the key that signed
// them, which must still verify on every hit (it may have been revoked since).
type verifiedToken struct {
	claims *Claims
	kid    string
}

// verifiedCacheSize bounds the verified-token cache (about 300 bytes an entry, so 20 MB at most):
// beyond it, the least recently used tokens are verified in full again. It is sized for the
// access tokens alive at once in a large deployment — every session refreshes at most once per
// ACCESS_TOKEN_TTL — since a cache smaller than the working set misses on every request when
// clients take turns (measured: 8192 entries and 10,000 active sessions cost `me` a quarter of its
// throughput; bench -scale).
const verifiedCacheSize = 65536

// TokenConfig configures Tokens.
type TokenConfig struct {
	Secret   []byte // HS256 key, at least 32 bytes
	Issuer   string
	Audience string
	TTL      time.Duration
	Now      func() time.Time // nil means time.Now
	// Keys signs and verifies with asymmetric keys; nil means HS256 with Secret. Secret is still
	// needed: refresh-token successors are derived from it.
	Keys *KeyRing
}

// leeway is the clock skew tolerated between instances on exp, nbf and iat.
const leeway = 5 * time.Second

// NewTokens returns Tokens for cfg.
func NewTokens(cfg TokenConfig) (*Tokens, error) {
	if len(cfg.Secret) < 32 {
		return nil, errors.New("JWT secret must be at least 32 bytes")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	t := &Tokens{
		key:           cfg.Secret,
		successorKey:  mac(cfg.Secret, "gqlauth refresh-token successor"),
		mailKey:       mac(cfg.Secret, "gqlauth mailed token v1"),
		recoveryKey:   mac(cfg.Secret, "gqlauth recovery code v1"),
		issuer:        cfg.Issuer,
		audience:      cfg.Audience,
		ttl:           cfg.TTL,
		now:           now,
		signingMethod: jwt.SigningMethodHS256,
		keys:          cfg.Keys,
	}
	var err error
	if t.factorSealer, err = NewSealer(cfg.Secret, "gqlauth second-factor secret v1"); err != nil {
		return nil, err
	}
	t.verified, _ = lru.New[[sha256.Size]byte, verifiedToken](verifiedCacheSize)
	methods := []string{t.signingMethod.Alg()}
	if t.keys != nil {
		// Never HS256 here: an HMAC "signed" with a public key's bytes must not verify.
		methods = []string{"ES256", "EdDSA", "RS256"}
	}
	t.parser = jwt.NewParser(
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(now),
	)
	return t, nil
}

// Keys is the key ring that signs, or nil with HS256.
func (t *Tokens) Keys() *KeyRing { return t.keys }

// TTL is the lifetime of access tokens.
func (t *Tokens) TTL() time.Duration { return t.ttl }

// Issue signs an access token for user in session sessionID.
func (t *Tokens) Issue(user *model.User, sessionID string) (string, error) {
	return t.IssueUntil(user, sessionID, time.Time{})
}

// IssueUntil signs an access token for user in session sessionID that expires after the TTL or
// at notAfter, whichever comes first (zero notAfter: the TTL alone). The server passes the
// session's absolute expiry, so that no token — and no socket living on one, and no verifier that
// reads only exp — outlives its session. exp is written in whole seconds, rounded down, so it is
// never after notAfter.
func (t *Tokens) IssueUntil(user *model.User, sessionID string, notAfter time.Time) (string, error) {
	return t.IssueFor(user, Grant{SessionID: sessionID, NotAfter: notAfter})
}

// IssueFor signs an access token for user as IssueUntil does, with the grant's amr and aal claims.
func (t *Tokens) IssueFor(user *model.User, g Grant) (string, error) {
	sessionID, notAfter := g.SessionID, g.NotAfter
	now := t.now()
	exp := now.Add(t.ttl)
	if !notAfter.IsZero() && notAfter.Before(exp) {
		exp = notAfter
	}
	claims := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    t.issuer,
			Subject:   user.ID,
			Audience:  jwt.ClaimStrings{t.audience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        uuid.NewString(),
		},
		SessionID: sessionID,
		Role:      user.Role,
		AMR:       g.AMR,
		AAL:       g.AAL,
	}
	if t.keys != nil {
		k, err := t.keys.signer()
		if err != nil {
			return "", err
		}
		tok := jwt.NewWithClaims(k.method, claims)
		tok.Header["typ"], tok.Header["kid"] = AccessTokenType, k.kid
		return tok.SignedString(k.private)
	}
	tok := jwt.NewWithClaims(t.signingMethod, claims)
	tok.Header["typ"] = AccessTokenType
	return tok.SignedString(t.key)
}

// Verify checks an access token and returns its claims, or the reason it is unusable
// (INVALID_TOKEN or TOKEN_EXPIRED). The algorithm is pinned, and typ, exp, iss, aud, sub and sid
// are required.
//
// The returned claims may be shared between requests: callers must not modify them.
func (t *Tokens) Verify(token string) (*Claims, model.AuthErrorReason) {
	key := sha256.Sum256([]byte(token))
	if hit, ok := t.verified.Get(key); ok {
		switch {
		case hit.kid != "" && t.keys.verifier(hit.kid) == nil: // revoked, or past its time
			t.verified.Remove(key)
			return nil, model.AuthErrorReasonInvalidToken
		case !t.now().Before(hit.claims.ExpiresAt.Add(leeway)):
			t.verified.Remove(key)
			return nil, model.AuthErrorReasonTokenExpired
		}
		return hit.claims, ""
	}
	claims, kid, reason := t.verify(token)
	if reason != "" {
		return nil, reason
	}
	t.verified.Add(key, verifiedToken{claims: claims, kid: kid})
	return claims, ""
}

// verify checks a token in full, without the cache, and returns its claims and key id.
func (t *Tokens) verify(token string) (*Claims, string, model.AuthErrorReason) {
	claims := new(Claims)
	parsed, err := t.parser.ParseWithClaims(token, claims, t.keyFor)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired) && !errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return nil, "", model.AuthErrorReasonTokenExpired
	case err != nil, claims.Subject == "", claims.SessionID == "":
		return nil, "", model.AuthErrorReasonInvalidToken
	}
	kid := ""
	if t.keys != nil {
		kid, _ = parsed.Header["kid"].(string)
	}
	claims.KeyID = kid
	return claims, kid, ""
}

func (t *Tokens) keyFor(tok *jwt.Token) (any, error) {
	if typ, _ := tok.Header["typ"].(string); !strings.EqualFold(typ, AccessTokenType) {
		return nil, errors.New("not an access token")
	}
	if t.keys == nil {
		return t.key, nil
	}
	// The key is chosen by kid, and the token must use that key's own algorithm.
	kid, _ := tok.Header["kid"].(string)
	k := t.keys.verifier(kid)
	if k == nil || tok.Method.Alg() != k.alg {
		return nil, errors.New("unknown key or algorithm")
	}
	return k.public, nil
}
