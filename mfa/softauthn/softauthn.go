// Package softauthn is a software WebAuthn authenticator and client for tests: it answers the
// options of navigator.credentials.create() and get() (the JSON forms a server sends) with the
// JSON a browser's credential.toJSON() gives, signing with ES256 keys it keeps in memory and
// attesting with the "none" format. Knobs bend one thing at a time (the origin, the RP ID, the
// challenge, the flags, the counter, the user handle) so that tests can show that a server refuses
// each. It must not be used outside tests: its keys are not protected in any way.
package softauthn

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"

	"github.com/fxamacker/cbor/v2"
)

// Authenticator flags (WebAuthn §6.1).
const (
	flagUP = 1 << 0
	flagUV = 1 << 2
	flagBE = 1 << 3
	flagBS = 1 << 4
	flagAT = 1 << 6
)

// coseAlgES256 is the COSE algorithm identifier of ECDSA with P-256 and SHA-256.
const coseAlgES256 = -7

// ErrExcluded is what Create answers when the options exclude a credential this authenticator
// already holds for the RP (a browser's InvalidStateError).
var ErrExcluded = errors.New("softauthn: the authenticator already holds an excluded credential")

// ErrNoCredential is what Get answers when it holds no credential the options allow.
var ErrNoCredential = errors.New("softauthn: no credential for this request")

// Authenticator is one platform authenticator in one browser: the origin the browser reports and
// the credentials the authenticator holds. It is safe for concurrent use.
type Authenticator struct {
	origin string
	mu     sync.Mutex
	creds  []*Credential
}

// Credential is a credential the authenticator created.
type Credential struct {
	ID         []byte
	UserHandle []byte
	RPID       string
	key        *ecdsa.PrivateKey
	mu         sync.Mutex
	counter    uint32
	alwaysZero bool
	synced     bool
}

// backupFlags are the BE and BS flags of a synced credential.
func (c *Credential) backupFlags() byte {
	if c.synced {
		return flagBE | flagBS
	}
	return 0
}

// Counter is the signature counter the credential reported last.
func (c *Credential) Counter() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counter
}

// New returns an authenticator in a browser at origin (e.g. "http://localhost:8080").
func New(origin string) *Authenticator { return &Authenticator{origin: origin} }

// Credentials returns the credentials the authenticator holds, oldest first.
func (a *Authenticator) Credentials() []*Credential {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*Credential(nil), a.creds...)
}

// Option bends one thing of a response, for tests of what a server refuses.
type Option func(*tweaks)

type tweaks struct {
	origin     *string
	rpID       *string
	challenge  []byte
	ceremony   string
	noUV, noUP bool
	counter    *uint32
	userHandle []byte
	alwaysZero bool
	synced     bool
	credID     []byte
}

// WithOrigin makes the client report origin instead of the browser's own.
func WithOrigin(origin string) Option { return func(t *tweaks) { t.origin = &origin } }

// WithRPID makes the authenticator hash rpID into the authenticator data instead of the options'.
func WithRPID(rpID string) Option { return func(t *tweaks) { t.rpID = &rpID } }

// WithChallenge makes the client sign challenge instead of the options' one.
func WithChallenge(challenge []byte) Option { return func(t *tweaks) { t.challenge = challenge } }

// WithCeremonyType makes the client data's type typ ("webauthn.create" / "webauthn.get").
func WithCeremonyType(typ string) Option { return func(t *tweaks) { t.ceremony = typ } }

// WithoutUserVerification clears the UV flag: the user was present but not verified.
func WithoutUserVerification() Option { return func(t *tweaks) { t.noUV = true } }

// WithoutUserPresence clears the UP flag.
func WithoutUserPresence() Option { return func(t *tweaks) { t.noUP = true } }

// WithCounter makes the assertion report counter (and the credential remember it), e.g. a value
// lower than the last one, as a cloned authenticator would.
func WithCounter(counter uint32) Option { return func(t *tweaks) { t.counter = &counter } }

// WithUserHandle makes the assertion claim handle as its user handle.
func WithUserHandle(handle []byte) Option { return func(t *tweaks) { t.userHandle = handle } }

// WithAlwaysZeroCounter, given to Create, makes a credential whose counter is always 0, as many
// platform authenticators (synced passkeys) report.
func WithAlwaysZeroCounter() Option { return func(t *tweaks) { t.alwaysZero = true } }

// WithBackupEligible, given to Create, makes a synced passkey: every response marks it backup
// eligible and backed up (the BE and BS flags), as a password manager's or a platform's synced
// passkeys are.
func WithBackupEligible() Option { return func(t *tweaks) { t.synced = true } }

// WithCredentialID, given to Create, makes the new credential claim id (with a key of its own):
// a client registering a credential id that is someone else's.
func WithCredentialID(id []byte) Option { return func(t *tweaks) { t.credID = id } }

// creationOptions is the part of PublicKeyCredentialCreationOptionsJSON the authenticator reads.
type creationOptions struct {
	Challenge string `json:"challenge"`
	RP        struct {
		ID string `json:"id"`
	} `json:"rp"`
	User struct {
		ID string `json:"id"`
	} `json:"user"`
	PubKeyCredParams []struct {
		Alg int `json:"alg"`
	} `json:"pubKeyCredParams"`
	ExcludeCredentials []struct {
		ID string `json:"id"`
	} `json:"excludeCredentials"`
}

// requestOptions is the part of PublicKeyCredentialRequestOptionsJSON the authenticator reads.
type requestOptions struct {
	Challenge        string `json:"challenge"`
	RPID             string `json:"rpId"`
	AllowCredentials []struct {
		ID string `json:"id"`
	} `json:"allowCredentials"`
}

// Create answers navigator.credentials.create({publicKey: options}) — options is the JSON the
// server sent (PublicKeyCredentialCreationOptionsJSON) — with the new credential's
// RegistrationResponseJSON, and keeps the credential. The answer is a json.RawMessage, so that
// it stays a JSON object inside the variables of a request.
func (a *Authenticator) Create(options []byte, opts ...Option) (json.RawMessage, *Credential, error) {
	t := apply(opts)
	var o creationOptions
	if err := json.Unmarshal(options, &o); err != nil {
		return nil, nil, fmt.Errorf("softauthn: creation options: %w", err)
	}
	challenge, err := b64(o.Challenge)
	if err != nil || len(challenge) == 0 {
		return nil, nil, fmt.Errorf("softauthn: creation options: bad challenge %q", o.Challenge)
	}
	userHandle, err := b64(o.User.ID)
	if err != nil || len(userHandle) == 0 {
		return nil, nil, fmt.Errorf("softauthn: creation options: bad user.id %q", o.User.ID)
	}
	es256 := false
	for _, p := range o.PubKeyCredParams {
		es256 = es256 || p.Alg == coseAlgES256
	}
	if !es256 {
		return nil, nil, errors.New("softauthn: creation options do not allow ES256")
	}
	rpID, err := a.rpID(o.RP.ID)
	if err != nil {
		return nil, nil, err
	}
	for _, ex := range o.ExcludeCredentials {
		id, _ := b64(ex.ID)
		if c := a.find(rpID, id); c != nil {
			return nil, nil, ErrExcluded
		}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	cred := &Credential{ID: make([]byte, 32), UserHandle: userHandle, RPID: rpID, key: key, alwaysZero: t.alwaysZero, synced: t.synced}
	rand.Read(cred.ID)
	if t.credID != nil {
		cred.ID = t.credID
	}
	if !t.alwaysZero {
		cred.counter = 1
	}
	if t.counter != nil {
		cred.counter = *t.counter
	}

	clientData := a.clientData(t, "webauthn.create", challenge)
	coseKey, err := encodeCOSEKey(&key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	authData := authenticatorData(t, rpID, flagAT|cred.backupFlags(), cred.counter)
	authData = append(authData, make([]byte, 16)...) // AAGUID: none (all zero), as with "none" attestation
	authData = binary.BigEndian.AppendUint16(authData, uint16(len(cred.ID)))
	authData = append(authData, cred.ID...)
	authData = append(authData, coseKey...)
	attObj, err := ctap2.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": authData})
	if err != nil {
		return nil, nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	resp, err := credentialJSON(cred.ID, map[string]any{
		"clientDataJSON":     enc(clientData),
		"attestationObject":  enc(attObj),
		"authenticatorData":  enc(authData),
		"transports":         []string{"internal"},
		"publicKey":          enc(spki),
		"publicKeyAlgorithm": coseAlgES256,
	})
	if err != nil {
		return nil, nil, err
	}
	a.mu.Lock()
	a.creds = append(a.creds, cred)
	a.mu.Unlock()
	return resp, cred, nil
}

// Get answers navigator.credentials.get({publicKey: options}) with an AuthenticationResponseJSON.
// cred is the credential to sign with; nil picks one as a browser would: the first the options
// allow, or, with no allow list (a discoverable sign-in), the first held for the RP. A credential
// given explicitly is used even if the options do not allow it (a lying client).
func (a *Authenticator) Get(options []byte, cred *Credential, opts ...Option) (json.RawMessage, error) {
	t := apply(opts)
	var o requestOptions
	if err := json.Unmarshal(options, &o); err != nil {
		return nil, fmt.Errorf("softauthn: request options: %w", err)
	}
	challenge, err := b64(o.Challenge)
	if err != nil || len(challenge) == 0 {
		return nil, fmt.Errorf("softauthn: request options: bad challenge %q", o.Challenge)
	}
	rpID, err := a.rpID(o.RPID)
	if err != nil {
		return nil, err
	}
	if cred == nil {
		if len(o.AllowCredentials) == 0 {
			cred = a.find(rpID, nil)
		}
		for _, allowed := range o.AllowCredentials {
			id, _ := b64(allowed.ID)
			if cred = a.find(rpID, id); cred != nil {
				break
			}
		}
		if cred == nil {
			return nil, ErrNoCredential
		}
	}

	cred.mu.Lock()
	switch {
	case t.counter != nil:
		cred.counter = *t.counter
	case !cred.alwaysZero:
		cred.counter++
	}
	counter := cred.counter
	cred.mu.Unlock()

	clientData := a.clientData(t, "webauthn.get", challenge)
	authData := authenticatorData(t, rpID, cred.backupFlags(), counter)
	hash := sha256.Sum256(clientData)
	digest := sha256.Sum256(append(append([]byte(nil), authData...), hash[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, cred.key, digest[:])
	if err != nil {
		return nil, err
	}
	handle := cred.UserHandle
	if t.userHandle != nil {
		handle = t.userHandle
	}
	return credentialJSON(cred.ID, map[string]any{
		"clientDataJSON":    enc(clientData),
		"authenticatorData": enc(authData),
		"signature":         enc(sig),
		"userHandle":        enc(handle),
	})
}

// credentialJSON is a PublicKeyCredential's toJSON() with the given response member.
func credentialJSON(id []byte, response map[string]any) (json.RawMessage, error) {
	return json.Marshal(map[string]any{
		"id":                      enc(id),
		"rawId":                   enc(id),
		"type":                    "public-key",
		"authenticatorAttachment": "platform",
		"clientExtensionResults":  map[string]any{},
		"response":                response,
	})
}

// rpID is the RP ID the options name, or (as a browser does) the origin's host when they name none.
func (a *Authenticator) rpID(fromOptions string) (string, error) {
	if fromOptions != "" {
		return fromOptions, nil
	}
	u, err := url.Parse(a.origin)
	if err != nil || u.Hostname() == "" {
		return "", fmt.Errorf("softauthn: origin %q has no host", a.origin)
	}
	return u.Hostname(), nil
}

// find returns the credential held for rpID with the given id (nil id: the first for rpID).
func (a *Authenticator) find(rpID string, id []byte) *Credential {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.creds {
		if c.RPID == rpID && (id == nil || bytes.Equal(c.ID, id)) {
			return c
		}
	}
	return nil
}

// clientData is the CollectedClientData the browser serializes (WebAuthn §5.8.1).
func (a *Authenticator) clientData(t tweaks, ceremony string, challenge []byte) []byte {
	origin := a.origin
	if t.origin != nil {
		origin = *t.origin
	}
	if t.challenge != nil {
		challenge = t.challenge
	}
	if t.ceremony != "" {
		ceremony = t.ceremony
	}
	data, _ := json.Marshal(struct {
		Type        string `json:"type"`
		Challenge   string `json:"challenge"`
		Origin      string `json:"origin"`
		CrossOrigin bool   `json:"crossOrigin"`
	}{ceremony, enc(challenge), origin, false})
	return data
}

// authenticatorData is rpIdHash ‖ flags ‖ signCount (WebAuthn §6.1), before any attested data.
func authenticatorData(t tweaks, rpID string, extraFlags byte, counter uint32) []byte {
	if t.rpID != nil {
		rpID = *t.rpID
	}
	hash := sha256.Sum256([]byte(rpID))
	flags := byte(flagUP|flagUV) | extraFlags
	if t.noUV {
		flags &^= flagUV
	}
	if t.noUP {
		flags &^= flagUP
	}
	data := append([]byte(nil), hash[:]...)
	data = append(data, flags)
	return binary.BigEndian.AppendUint32(data, counter)
}

// ctap2 encodes CBOR the way authenticators do (CTAP2 canonical: sorted keys, shortest forms).
var ctap2, _ = cbor.CTAP2EncOptions().EncMode()

// encodeCOSEKey encodes an EC2 P-256 public key as a COSE_Key (RFC 9053).
func encodeCOSEKey(pub *ecdsa.PublicKey) ([]byte, error) {
	raw, err := pub.Bytes() // 0x04 ‖ X ‖ Y
	if err != nil {
		return nil, err
	}
	return ctap2.Marshal(map[int]any{
		1:  2,            // kty: EC2
		3:  coseAlgES256, // alg: ES256
		-1: 1,            // crv: P-256
		-2: raw[1:33],    // x
		-3: raw[33:65],   // y
	})
}

func apply(opts []Option) tweaks {
	var t tweaks
	for _, o := range opts {
		o(&t)
	}
	return t
}

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func b64(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
