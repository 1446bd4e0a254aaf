// Package model holds the domain types shared by the GraphQL schema (gqlgen autobinds to them)
// and the database (Bun maps them by their tags), the one Error type clients see, and the rules of
// storable text (text.go). Enums and GraphQL-only types are generated into models_gen.go from
// schema.graphqls. It must not import any package of ours, nor need Bun or gqlgen to be read.
package model

import "time"

// User is an account. Bun maps it to the users table.
type User struct {
	ID           string    `bun:"id,pk"`
	Username     string    `bun:"username"`
	Email        *string   `bun:"email"`
	Role         Role      `bun:"role"`
	Disabled     bool      `bun:"disabled"`
	PasswordHash string    `bun:"password_hash"`
	CreatedAt    time.Time `bun:"created_at"`
	// EmailVerifiedAt is when this server verified Email (a mailed link or code); nil until then,
	// also for an address a provider said it had verified. Linking by email trusts only these.
	// Not in the schema: gqlgen's autobind ignores struct fields the schema does not name.
	EmailVerifiedAt *time.Time `bun:"email_verified_at,nullzero"`
	// MFAFactors counts the user's active second factors (a confirmed TOTP, each passkey). The
	// store keeps it in the transaction of every factor change (store.Tx.RecountFactors), so the
	// principal query reads "has a second factor" from the row it loads anyway, with no second
	// query and no join on the factor tables.
	MFAFactors int `bun:"mfa_factors"`
}

// EmailVerified reports whether this server verified the account's address (User.emailVerified).
func (u *User) EmailVerified() bool { return u.EmailVerifiedAt != nil }

// Session is one sign-in: it lives from login until it expires or is revoked, across any number of
// refreshes. Only hashes of refresh tokens are kept.
type Session struct {
	ID     string `bun:"id,pk"`
	UserID string `bun:"user_id"`
	// RefreshHash is the hash of the one refresh token that may be exchanged now.
	RefreshHash string `bun:"refresh_hash"`
	// PreviousHash and RotatedAt remember the token retired by the last refresh, so that a retry
	// within the reuse interval can be told apart from a replay.
	PreviousHash *string    `bun:"previous_hash"`
	RotatedAt    *time.Time `bun:"rotated_at"`
	// Generation counts the rotations: the current refresh token is the Generation-th successor
	// of the first, so any retired token is at most Generation steps behind it.
	Generation int        `bun:"generation"`
	CreatedAt  time.Time  `bun:"created_at"`
	LastUsedAt time.Time  `bun:"last_used_at"`
	ExpiresAt  time.Time  `bun:"expires_at"`
	RevokedAt  *time.Time `bun:"revoked_at"`
	UserAgent  *string    `bun:"user_agent"`
	ClientID   *string    `bun:"client_id"`
	// AAL is the session's assurance level; it only rises (AAL1 → AAL2).
	AAL AuthLevel `bun:"aal"`
	// AMR lists the RFC 8176 methods the session used, space-separated ("pwd otp mfa").
	AMR string `bun:"amr"`
	// AuthTime is when the session last signed in, stepped up or reauthenticated.
	AuthTime time.Time `bun:"auth_time"`

	// Current is true for the session of the request that loaded it; it is not stored.
	Current bool `bun:"-"`
}

// Live reports whether the session can still be used at now.
func (s *Session) Live(now time.Time) bool {
	return s.RevokedAt == nil && now.Before(s.ExpiresAt)
}

// rank orders roles from lowest to highest.
var rank = map[Role]int{RoleUser: 1, RoleAdmin: 2}

// Satisfies reports whether a holder of r passes a check that requires required.
func (r Role) Satisfies(required Role) bool {
	return rank[r] >= rank[required] && rank[r] > 0
}

// APIKey is a personal access token. Only the hash of its secret is kept.
type APIKey struct {
	ID         string `bun:"id,pk"`
	UserID     string `bun:"user_id"`
	Name       string `bun:"name"`
	Prefix     string `bun:"prefix"`
	SecretHash string `bun:"secret_hash"`
	Role       Role   `bun:"role"`
	// AAL is the level of the session that minted the key: the highest it acts at.
	AAL        AuthLevel  `bun:"aal"`
	CreatedAt  time.Time  `bun:"created_at"`
	LastUsedAt *time.Time `bun:"last_used_at"`
	ExpiresAt  time.Time  `bun:"expires_at"`
	RevokedAt  *time.Time `bun:"revoked_at"`
}

// Live reports whether the key can still be used at now.
func (k *APIKey) Live(now time.Time) bool {
	return k.RevokedAt == nil && now.Before(k.ExpiresAt)
}

// Lower returns the lower of two roles.
func (r Role) Lower(other Role) Role {
	if rank[other] < rank[r] {
		return other
	}
	return r
}
