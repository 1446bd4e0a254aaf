package model

import "time"

// Identity is an account at an OpenID Connect provider linked to a user: the provider's name (as
// configured) and its stable subject identifier. A user has at most one identity per provider.
type Identity struct {
	Provider string    `bun:"provider,pk"`
	Subject  string    `bun:"subject,pk"`
	UserID   string    `bun:"user_id"`
	Email    *string   `bun:"email"`
	LinkedAt time.Time `bun:"linked_at"`
}

// IdentityClaims are what a provider asserts about one of its users, from the ID token and, where
// it lacks them, the UserInfo response: the relying party (oidc) reads them, the sign-in rules
// (account) decide from them what the identity signs in to.
type IdentityClaims struct {
	Subject           string
	Email             string // "" when absent or unusable
	EmailVerified     bool
	PreferredUsername string
	Nickname          string
	Name              string
}

// SignInFlow is a sign-in or link through a provider between its start and its callback. Only a
// hash of its state is stored; the state itself travels through the browser.
type SignInFlow struct {
	StateHash     string    `bun:"state_hash,pk"`
	Provider      string    `bun:"provider"`
	Nonce         string    `bun:"nonce"`
	Verifier      string    `bun:"verifier"`       // PKCE towards the provider
	RedirectTo    string    `bun:"redirect_to"`    // an allowed SPA URL
	CodeChallenge string    `bun:"code_challenge"` // the SPA's S256 challenge
	LinkUserID    *string   `bun:"link_user_id"`   // set: a link for this user instead of a sign-in
	LinkSessionID *string   `bun:"link_session_id"`
	CreatedAt     time.Time `bun:"created_at"`
	ExpiresAt     time.Time `bun:"expires_at"`
}

// AuthCode is the one-time code a finished sign-in or link hands the SPA, redeemable once, before
// it expires, with the verifier of CodeChallenge. Only its hash is stored.
//
// A sign-in code (LinkSessionID nil) is redeemed by exchangeAuthCode and signs in UserID. A link
// code (LinkSessionID set) is redeemed by completeIdentityLink, only from that session of UserID,
// and links the identity (Provider, Subject) to UserID. Each redeemer refuses the other kind.
type AuthCode struct {
	CodeHash      string    `bun:"code_hash,pk"`
	UserID        string    `bun:"user_id"`
	Provider      string    `bun:"provider"`
	CodeChallenge string    `bun:"code_challenge"`
	LinkSessionID *string   `bun:"link_session_id"`
	Subject       *string   `bun:"subject"` // link codes: the identity's subject at the provider
	Email         *string   `bun:"email"`   // link codes: the email the provider gave, verified or not
	CreatedAt     time.Time `bun:"created_at"`
	ExpiresAt     time.Time `bun:"expires_at"`
}

// IsLink reports whether c is a link code rather than a sign-in code.
func (c *AuthCode) IsLink() bool { return c.LinkSessionID != nil }
