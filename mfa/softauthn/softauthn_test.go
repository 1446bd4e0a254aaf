package softauthn_test

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"

	"github.com/go-webauthn/webauthn/protocol"

	"gqlauth/mfa/softauthn"
)

const creation = `{"rp":{"name":"t","id":"localhost"},"user":{"name":"ann","displayName":"ann","id":"dTE"},
	"challenge":"Y2hhbGxlbmdlLW9mLTMyLWJ5dGVzLWZvci10ZXN0cw","pubKeyCredParams":[{"type":"public-key","alg":-7}]}`

const request = `{"challenge":"c2Vjb25kLWNoYWxsZW5nZS1vZi0zMi1ieXRlcyEh","rpId":"localhost"}`

func TestCreate_GivesARegistrationResponseThatParses(t *testing.T) {
	a := softauthn.New("http://localhost:8080")
	resp, cred, err := a.Create([]byte(creation))
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(resp)
	if err != nil {
		t.Fatalf("the library cannot parse %s: %v", resp, err)
	}
	cd := parsed.Response.CollectedClientData
	if cd.Type != "webauthn.create" || cd.Origin != "http://localhost:8080" || cd.Challenge != "Y2hhbGxlbmdlLW9mLTMyLWJ5dGVzLWZvci10ZXN0cw" {
		t.Fatalf("client data %+v", cd)
	}
	ad := parsed.Response.AttestationObject.AuthData
	rpHash := sha256.Sum256([]byte("localhost"))
	if string(ad.RPIDHash) != string(rpHash[:]) || !ad.Flags.HasUserPresent() || !ad.Flags.HasUserVerified() || ad.Counter != 1 ||
		string(ad.AttData.CredentialID) != string(cred.ID) || parsed.Response.AttestationObject.Format != "none" {
		t.Fatalf("authenticator data %+v", ad)
	}
	if string(cred.UserHandle) != "u1" || cred.RPID != "localhost" {
		t.Fatalf("credential %+v", cred)
	}
}

func TestGet_SignsAuthenticatorDataAndClientDataHash(t *testing.T) {
	a := softauthn.New("http://localhost:8080")
	reg, _, err := a.Create([]byte(creation))
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Response struct{ PublicKey string } `json:"response"`
	}
	json.Unmarshal(reg, &r)
	spki, _ := base64.RawURLEncoding.DecodeString(r.Response.PublicKey)
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		t.Fatal(err)
	}

	resp, err := a.Get([]byte(request), nil)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(resp)
	if err != nil {
		t.Fatalf("the library cannot parse %s: %v", resp, err)
	}
	cdHash := sha256.Sum256(parsed.Raw.AssertionResponse.ClientDataJSON)
	digest := sha256.Sum256(append(append([]byte(nil), parsed.Raw.AssertionResponse.AuthenticatorData...), cdHash[:]...))
	if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], parsed.Response.Signature) {
		t.Fatal("the signature does not verify under the registered key")
	}
	if got := parsed.Response.AuthenticatorData.Counter; got != 2 {
		t.Fatalf("counter: got %d, want 2 (one more than at registration)", got)
	}
	if string(parsed.Response.UserHandle) != "u1" || parsed.Response.CollectedClientData.Type != "webauthn.get" {
		t.Fatalf("assertion %+v", parsed.Response)
	}
}

func TestOptions_BendWhatTheySay(t *testing.T) {
	a := softauthn.New("http://localhost:8080")
	if _, _, err := a.Create([]byte(creation)); err != nil {
		t.Fatal(err)
	}
	resp, err := a.Get([]byte(request), nil, softauthn.WithOrigin("https://evil.example"), softauthn.WithRPID("evil.example"),
		softauthn.WithoutUserVerification(), softauthn.WithCounter(0), softauthn.WithUserHandle([]byte("u2")))
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(resp)
	if err != nil {
		t.Fatal(err)
	}
	evil := sha256.Sum256([]byte("evil.example"))
	ad := parsed.Response.AuthenticatorData
	if parsed.Response.CollectedClientData.Origin != "https://evil.example" || string(ad.RPIDHash) != string(evil[:]) ||
		ad.Flags.HasUserVerified() || !ad.Flags.HasUserPresent() || ad.Counter != 0 || string(parsed.Response.UserHandle) != "u2" {
		t.Fatalf("bent assertion %+v / %+v", parsed.Response.CollectedClientData, ad)
	}
}

func TestGet_WithoutACredentialForTheRP(t *testing.T) {
	a := softauthn.New("http://localhost:8080")
	if _, err := a.Get([]byte(request), nil); !errors.Is(err, softauthn.ErrNoCredential) {
		t.Fatalf("got %v, want ErrNoCredential", err)
	}
}
