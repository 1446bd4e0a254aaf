package model

import (
	"strings"
	"time"
)

// The second factors of §12: the assurance level of a session, its authentication methods, and
// the stored factors.

// RFC 8176 authentication method references the server writes into a session's amr.
const (
	AMRPassword = "pwd"  // a password
	AMROTP      = "otp"  // a TOTP code
	AMRRecovery = "kba"  // a recovery code (knowledge of a secret handed out once)
	AMRHardware = "hwk"  // a passkey bound to hardware
	AMRSoftware = "swk"  // a synced passkey
	AMRUser     = "user" // user verification by the authenticator (a passkey's PIN or biometric)
	AMRMFA      = "mfa"  // more than one factor
	// AMRFederated is a sign-in through an OpenID Connect provider. Not in RFC 8176's registry;
	// the name providers such as Microsoft Entra ID write for the same thing.
	AMRFederated = "fed"
)

// Rank orders levels: AAL2 passes every check of AAL1.
func (l AuthLevel) Rank() int {
	switch l {
	case AuthLevelAal1:
		return 1
	case AuthLevelAal2:
		return 2
	}
	return 0
}

// Satisfies reports whether a session at l passes a check that requires required.
func (l AuthLevel) Satisfies(required AuthLevel) bool {
	return l.Rank() >= required.Rank() && l.Rank() > 0
}

// Claim is the level as access tokens and introspection write it: "aal1" or "aal2".
func (l AuthLevel) Claim() string { return strings.ToLower(string(l)) }

// Methods returns the session's amr as a list (stored space-separated).
func (s *Session) Methods() []string { return strings.Fields(s.AMR) }

// WithMethods returns the amr list amr with the methods added (each once, in order), as stored.
func WithMethods(amr string, methods ...string) string {
	list := strings.Fields(amr)
	for _, m := range methods {
		found := false
		for _, have := range list {
			found = found || have == m
		}
		if !found {
			list = append(list, m)
		}
	}
	return strings.Join(list, " ")
}

// AuthenticatedAt is when the session last signed in or stepped up: what REAUTH_WINDOW measures.
func (s *Session) AuthenticatedAt() time.Time {
	if s.AuthTime.IsZero() {
		return s.CreatedAt
	}
	return s.AuthTime
}

// HasSecondFactor reports whether the user has any second factor (TOTP or a passkey).
func (u *User) HasSecondFactor() bool { return u.MFAFactors > 0 }

// Passkey is a registered WebAuthn credential. Bun maps it to the webauthn_credentials table
// (store names the table); what go-webauthn's webauthn.Credential needs is kept beside the
// fields the schema shows.
type Passkey struct {
	ID         string     `bun:"id,pk"`
	UserID     string     `bun:"user_id"`
	Name       string     `bun:"name"`
	CreatedAt  time.Time  `bun:"created_at"`
	LastUsedAt *time.Time `bun:"last_used_at"`

	CredentialID    []byte `bun:"credential_id"` // webauthn.Credential.ID, unique
	PublicKey       []byte `bun:"public_key"`    // COSE key
	AttestationType string `bun:"attestation_type"`
	// Transports are the authenticator's transports, space-separated (usb nfc ble internal hybrid).
	Transports     string `bun:"transports"`
	AAGUID         []byte `bun:"aaguid"`
	SignCount      int64  `bun:"sign_count"` // a uint32 counter
	CloneWarning   bool   `bun:"clone_warning"`
	Attachment     string `bun:"attachment"`
	UserPresent    bool   `bun:"user_present"`
	UserVerified   bool   `bun:"user_verified"`
	BackupEligible bool   `bun:"backup_eligible"`
	BackupState    bool   `bun:"backup_state"`
}
