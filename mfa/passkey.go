// The passkey ceremonies (WebAuthn Level 3 through github.com/go-webauthn/webauthn): the options a
// browser gets, the checks of what it answers, the relying party's configuration. Nothing here is
// stored: the caller keeps each ceremony's session data between begin and finish (server-side, so
// that any instance finishes it) and the passkeys. go-webauthn's packages import net/http (for
// their Finish* helpers, which take a request); this file uses only the ones that take bytes.

package mfa

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"gqlauth/model"
)

// ChallengeTTL is how long a begun ceremony may be finished.
const ChallengeTTL = 5 * time.Minute

// ErrPasskeyInvalid is wrapped into every refusal of a browser's answer: it did not parse, or it
// failed a check (challenge, origin, RP ID, flags, signature, counter, owner). Its text is safe to
// log; callers show clients nothing of it beyond that it failed.
var ErrPasskeyInvalid = errors.New("passkey response refused")

// ErrPasskeyExcluded is returned by FinishRegistration for a credential the user has already
// registered.
var ErrPasskeyExcluded = errors.New("passkey already registered")

// PasskeyConfig is the relying party: who the authenticator signs for and where browsers may run
// the ceremonies.
type PasskeyConfig struct {
	// RPID is the relying party ID: a domain (never an IP address) that every origin is, or is a
	// subdomain of. Passkeys are bound to it for life: changing it orphans every registered one.
	RPID string
	// Origins are the exact origins (scheme://host[:port]) whose pages may run the ceremonies.
	Origins []string
	// DisplayName is the name authenticators show for the relying party.
	DisplayName string
	// Logger receives the reason of each refused answer (never shown to clients); nil: slog.Default().
	Logger *slog.Logger
}

// ValidateRPID reports why id cannot be a relying party ID (nil when it can): browsers accept only
// a domain, which must not be an IP address.
func ValidateRPID(id string) error {
	switch {
	case id == "":
		return errors.New("must not be empty")
	case net.ParseIP(strings.Trim(id, "[]")) != nil:
		return fmt.Errorf("%q is an IP address; WebAuthn needs a domain name (use localhost for local development)", id)
	case id != strings.ToLower(id) || strings.HasSuffix(id, "."):
		return fmt.Errorf("%q must be a lower-case domain name without a trailing dot, such as example.com", id)
	}
	if err := protocol.ValidateRPID(id); err != nil {
		return fmt.Errorf("%q is not a domain name such as example.com (%v)", id, err)
	}
	return nil
}

// ValidateOrigin reports why origin cannot run ceremonies for rpID (nil when it can): it must be
// an exact origin (no path, query or fragment) whose host is rpID or a subdomain of it, over
// https — or http on localhost, the only insecure context browsers allow WebAuthn in.
func ValidateOrigin(rpID, origin string) error {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q is not an exact origin such as https://auth.example.com", origin)
	}
	host := u.Hostname()
	if strings.Trim(host, "abcdefghijklmnopqrstuvwxyz0123456789-.") != "" {
		return fmt.Errorf("%q is not an exact origin such as https://auth.example.com (a lower-case host name, no wildcards)", origin)
	}
	local := host == "localhost" || strings.HasSuffix(host, ".localhost")
	if u.Scheme != "https" && !(u.Scheme == "http" && local) {
		return fmt.Errorf("%q: browsers run WebAuthn only on https:// origins (and http://localhost)", origin)
	}
	if host != rpID && !strings.HasSuffix(host, "."+rpID) {
		return fmt.Errorf("%q: its host is neither the RP ID %q nor a subdomain of it", origin, rpID)
	}
	return nil
}

// Validate checks the whole configuration (see ValidateRPID and ValidateOrigin).
func (c PasskeyConfig) Validate() error {
	if err := ValidateRPID(c.RPID); err != nil {
		return fmt.Errorf("RP ID: %w", err)
	}
	if len(c.Origins) == 0 {
		return errors.New("origins: at least one is needed")
	}
	for _, o := range c.Origins {
		if err := ValidateOrigin(c.RPID, o); err != nil {
			return fmt.Errorf("origins: %w", err)
		}
	}
	return nil
}

// Passkeys runs the WebAuthn ceremonies of one relying party.
type Passkeys struct {
	wa  *webauthn.WebAuthn
	log *slog.Logger
}

// NewPasskeys returns the ceremonies of the relying party cfg describes.
func NewPasskeys(cfg PasskeyConfig) (*Passkeys, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	name := cfg.DisplayName
	if name == "" {
		name = cfg.RPID
	}
	origins := make([]string, len(cfg.Origins))
	for i, o := range cfg.Origins {
		origins[i] = strings.TrimSuffix(o, "/")
	}
	timeout := webauthn.TimeoutConfig{Timeout: ChallengeTTL, TimeoutUVD: ChallengeTTL}
	wa, err := webauthn.New(&webauthn.Config{
		RPID:          cfg.RPID,
		RPDisplayName: name,
		RPOrigins:     origins,
		// A passkey: discoverable (sign-in without a username) and verifying the user (PIN or
		// biometrics), so that it is two factors in one.
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey:        protocol.ResidentKeyRequirementRequired,
			RequireResidentKey: protocol.ResidentKeyRequired(),
			UserVerification:   protocol.VerificationRequired,
		},
		AttestationPreference: protocol.PreferNoAttestation,
		Timeouts:              webauthn.TimeoutsConfig{Login: timeout, Registration: timeout},
	})
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Passkeys{wa: wa, log: log}, nil
}

// PasskeyUser is an account as a ceremony sees it.
type PasskeyUser struct {
	ID          string // the account's id; its bytes are the WebAuthn user handle
	Name        string // shown by the authenticator: the username
	Credentials []*model.Passkey
}

// credential is the library's record of k.
func credential(k *model.Passkey) webauthn.Credential {
	c := webauthn.Credential{
		ID: k.CredentialID, PublicKey: k.PublicKey, AttestationType: k.AttestationType,
		Flags:         webauthn.CredentialFlags{UserPresent: k.UserPresent, UserVerified: k.UserVerified, BackupEligible: k.BackupEligible, BackupState: k.BackupState},
		Authenticator: webauthn.Authenticator{AAGUID: k.AAGUID, SignCount: uint32(k.SignCount), Attachment: protocol.AuthenticatorAttachment(k.Attachment)},
	}
	for _, t := range strings.Fields(k.Transports) {
		c.Transport = append(c.Transport, protocol.AuthenticatorTransport(t))
	}
	return c
}

// record writes what the library's c says into k (the fields of the credential, not its id,
// owner, name or times).
func record(k *model.Passkey, c *webauthn.Credential) {
	transports := make([]string, len(c.Transport))
	for i, t := range c.Transport {
		transports[i] = string(t)
	}
	k.CredentialID, k.PublicKey, k.AttestationType = c.ID, c.PublicKey, c.AttestationType
	k.Transports, k.AAGUID, k.SignCount = strings.Join(transports, " "), c.Authenticator.AAGUID, int64(c.Authenticator.SignCount)
	k.CloneWarning, k.Attachment = c.Authenticator.CloneWarning, string(c.Authenticator.Attachment)
	k.UserPresent, k.UserVerified = c.Flags.UserPresent, c.Flags.UserVerified
	k.BackupEligible, k.BackupState = c.Flags.BackupEligible, c.Flags.BackupState
}

// UsedPasskey is what an assertion changes in a stored credential: the caller writes Passkey
// only if the stored counter is still OldSignCount (compare-and-set), so that two assertions
// racing with one counter value cannot both pass.
type UsedPasskey struct {
	Passkey      *model.Passkey // a copy of the stored passkey, brought up to date
	OldSignCount int64
}

// webUser adapts a PasskeyUser to the library.
type webUser struct {
	u     PasskeyUser
	creds []webauthn.Credential
}

func newWebUser(u PasskeyUser) *webUser {
	w := &webUser{u: u}
	for _, k := range u.Credentials {
		w.creds = append(w.creds, credential(k))
	}
	return w
}

func (w *webUser) WebAuthnID() []byte                         { return []byte(w.u.ID) }
func (w *webUser) WebAuthnName() string                       { return w.u.Name }
func (w *webUser) WebAuthnDisplayName() string                { return w.u.Name }
func (w *webUser) WebAuthnCredentials() []webauthn.Credential { return w.creds }

// Ceremony is a begun ceremony: Options go to the browser, Session stays on the server until the
// ceremony is finished or expires.
type Ceremony struct {
	// Options is PublicKeyCredentialCreationOptionsJSON or PublicKeyCredentialRequestOptionsJSON:
	// what PublicKeyCredential.parseCreationOptionsFromJSON / parseRequestOptionsFromJSON take
	// (the content of the publicKey member, binary values as base64url strings).
	Options json.RawMessage
	// Session is the library's session data (JSON), opaque to the caller.
	Session []byte
}

// BeginRegistration starts registering a new passkey for u; the user's passkeys are excluded, so
// one authenticator is not registered twice.
func (p *Passkeys) BeginRegistration(u PasskeyUser) (*Ceremony, error) {
	w := newWebUser(u)
	exclude := make([]protocol.CredentialDescriptor, len(w.creds))
	for i, c := range w.creds {
		exclude[i] = c.Descriptor()
	}
	creation, session, err := p.wa.BeginRegistration(w, webauthn.WithExclusions(exclude))
	if err != nil {
		return nil, err
	}
	return ceremony(creation.Response, session)
}

// BeginSignIn starts a sign-in with a discoverable passkey: no user is named, the authenticator
// offers the passkeys it holds for the relying party.
func (p *Passkeys) BeginSignIn() (*Ceremony, error) {
	assertion, session, err := p.wa.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return nil, err
	}
	return ceremony(assertion.Response, session)
}

// BeginVerification starts a step-up of u with one of u's passkeys. Without passkeys it fails with
// ErrNoPasskey.
func (p *Passkeys) BeginVerification(u PasskeyUser) (*Ceremony, error) {
	if len(u.Credentials) == 0 {
		return nil, ErrNoPasskey
	}
	assertion, session, err := p.wa.BeginLogin(newWebUser(u), webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return nil, err
	}
	return ceremony(assertion.Response, session)
}

// ErrNoPasskey is returned by BeginVerification for a user without passkeys.
var ErrNoPasskey = errors.New("the user has no passkey")

func ceremony(options any, session *webauthn.SessionData) (*Ceremony, error) {
	o, err := json.Marshal(options)
	if err != nil {
		return nil, err
	}
	s, err := json.Marshal(session)
	if err != nil {
		return nil, err
	}
	return &Ceremony{Options: o, Session: s}, nil
}

// FinishRegistration checks the browser's RegistrationResponseJSON against the ceremony begun for
// u and returns the passkey to store (the caller gives it an id, an owner, a name and times).
func (p *Passkeys) FinishRegistration(u PasskeyUser, session, response []byte) (*model.Passkey, error) {
	s, w, err := prepare(session, u)
	if err != nil {
		return nil, err
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(response)
	if err != nil {
		return nil, p.refuse("registration", err)
	}
	for _, c := range w.creds {
		if bytes.Equal(c.ID, parsed.RawID) {
			return nil, ErrPasskeyExcluded
		}
	}
	cred, err := p.wa.CreateCredential(w, *s, parsed)
	if err != nil {
		return nil, p.refuse("registration", err)
	}
	k := new(model.Passkey)
	record(k, cred)
	return k, nil
}

// Assertion is a browser's parsed AuthenticationResponseJSON: the caller looks up the credential
// it names before the checks.
type Assertion struct {
	parsed *protocol.ParsedCredentialAssertionData
}

// ParseAssertion parses an AuthenticationResponseJSON.
func (p *Passkeys) ParseAssertion(response []byte) (*Assertion, error) {
	parsed, err := protocol.ParseCredentialRequestResponseBytes(response)
	if err != nil {
		return nil, p.refuse("assertion", err)
	}
	return &Assertion{parsed}, nil
}

// CredentialID is the id of the credential the assertion claims to be made with.
func (a *Assertion) CredentialID() []byte { return a.parsed.RawID }

// FinishSignIn checks a discoverable sign-in's assertion against the ceremony (session) and
// against owner, the account that holds the credential the assertion names (the caller looked it
// up by CredentialID). The user handle the authenticator returns must be owner's.
func (p *Passkeys) FinishSignIn(session []byte, a *Assertion, owner PasskeyUser) (*UsedPasskey, error) {
	s, w, err := prepare(session, owner)
	if err != nil {
		return nil, err
	}
	_, cred, err := p.wa.ValidatePasskeyLogin(func(rawID, userHandle []byte) (webauthn.User, error) {
		if !bytes.Equal(userHandle, w.WebAuthnID()) {
			return nil, errors.New("the user handle is not the credential owner's")
		}
		return w, nil
	}, *s, a.parsed)
	return p.used(w, cred, err)
}

// FinishVerification checks a step-up's assertion against the ceremony begun for u.
func (p *Passkeys) FinishVerification(u PasskeyUser, session []byte, a *Assertion) (*UsedPasskey, error) {
	s, w, err := prepare(session, u)
	if err != nil {
		return nil, err
	}
	cred, err := p.wa.ValidateLogin(w, *s, a.parsed)
	return p.used(w, cred, err)
}

// used turns a validated assertion into the change to store, refusing a signature counter that
// did not go forward (a cloned authenticator, WebAuthn §6.1.1) — except when both the stored and
// the new counter are 0, as authenticators without a counter (most synced passkeys) report.
func (p *Passkeys) used(w *webUser, cred *webauthn.Credential, err error) (*UsedPasskey, error) {
	if err != nil {
		return nil, p.refuse("assertion", err)
	}
	if cred.Authenticator.CloneWarning {
		return nil, p.refuse("assertion", errors.New("the signature counter did not increase (a cloned authenticator?)"))
	}
	for i, c := range w.creds {
		if !bytes.Equal(c.ID, cred.ID) {
			continue
		}
		k := *w.u.Credentials[i]
		record(&k, cred)
		return &UsedPasskey{Passkey: &k, OldSignCount: int64(c.Authenticator.SignCount)}, nil
	}
	return nil, p.refuse("assertion", errors.New("the credential is not the user's"))
}

// prepare decodes a ceremony's stored session data and adapts u to the library.
func prepare(session []byte, u PasskeyUser) (*webauthn.SessionData, *webUser, error) {
	s := new(webauthn.SessionData)
	if err := json.Unmarshal(session, s); err != nil {
		return nil, nil, fmt.Errorf("passkey session data: %w", err)
	}
	return s, newWebUser(u), nil
}

// refuse logs why a browser's answer was refused (the library's details, for operators) and
// returns ErrPasskeyInvalid, whose text is all a client may learn.
func (p *Passkeys) refuse(ceremony string, err error) error {
	var perr *protocol.Error
	if errors.As(err, &perr) {
		p.log.Info("passkey refused", "ceremony", ceremony, "type", perr.Type, "reason", perr.Details, "info", perr.DevInfo)
	} else {
		p.log.Info("passkey refused", "ceremony", ceremony, "reason", err.Error())
	}
	return fmt.Errorf("%w: %s", ErrPasskeyInvalid, ceremony)
}
