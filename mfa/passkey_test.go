package mfa_test

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"gqlauth/mfa"
	"gqlauth/mfa/softauthn"
	"gqlauth/model"
)

const (
	testRPID   = "localhost"
	testOrigin = "http://localhost:8080"
)

func newPasskeys(t *testing.T) *mfa.Passkeys {
	t.Helper()
	p, err := mfa.NewPasskeys(mfa.PasskeyConfig{RPID: testRPID, Origins: []string{testOrigin}, DisplayName: "gqlauth test",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// account is a user with the passkeys registered for it, as a store would keep them.
type account struct {
	user mfa.PasskeyUser
	auth *softauthn.Authenticator
}

func (a *account) store(id string, k *model.Passkey) {
	k.ID = id
	a.user.Credentials = append(a.user.Credentials, k)
}

func (a *account) apply(u *mfa.UsedPasskey) {
	for i, c := range a.user.Credentials {
		if c.ID == u.Passkey.ID {
			a.user.Credentials[i] = u.Passkey
		}
	}
}

// register runs a whole registration for a new account named name with one passkey.
func register(t *testing.T, p *mfa.Passkeys, name string, opts ...softauthn.Option) *account {
	t.Helper()
	a := &account{user: mfa.PasskeyUser{ID: "id-of-" + name, Name: name}, auth: softauthn.New(testOrigin)}
	c, err := p.BeginRegistration(a.user)
	if err != nil {
		t.Fatal(err)
	}
	resp, _, err := a.auth.Create(c.Options, opts...)
	if err != nil {
		t.Fatal(err)
	}
	k, err := p.FinishRegistration(a.user, c.Session, resp)
	if err != nil {
		t.Fatalf("FinishRegistration: %v", err)
	}
	a.store(name+"-key", k)
	return a
}

// signIn runs a discoverable sign-in with a's authenticator; owners maps credential ids (as
// strings) to the accounts holding them, as the store's lookup would.
func signIn(t *testing.T, p *mfa.Passkeys, a *account, owners []*account, opts ...softauthn.Option) (*mfa.UsedPasskey, error) {
	t.Helper()
	c, err := p.BeginSignIn()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := a.auth.Get(c.Options, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return finishSignIn(t, p, c.Session, resp, owners)
}

func finishSignIn(t *testing.T, p *mfa.Passkeys, session, resp []byte, owners []*account) (*mfa.UsedPasskey, error) {
	t.Helper()
	as, err := p.ParseAssertion(resp)
	if err != nil {
		return nil, err
	}
	for _, o := range owners {
		for _, cred := range o.auth.Credentials() {
			if bytes.Equal(cred.ID, as.CredentialID()) {
				return p.FinishSignIn(session, as, o.user)
			}
		}
	}
	t.Fatal("no owner of the asserted credential")
	return nil, nil
}

func TestPasskey_RegisterSignInStepUp(t *testing.T) {
	p := newPasskeys(t)
	ann := register(t, p, "ann")
	if got := ann.user.Credentials[0].SignCount; got != 1 {
		t.Fatalf("sign count after registration: got %d, want 1", got)
	}

	used, err := signIn(t, p, ann, []*account{ann})
	if err != nil {
		t.Fatalf("sign-in: %v", err)
	}
	if used.Passkey.ID != "ann-key" || used.OldSignCount != 1 || used.Passkey.SignCount != 2 {
		t.Fatalf("sign-in used %+v, want ann-key from 1 to 2", used)
	}
	ann.apply(used)

	c, err := p.BeginVerification(ann.user)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(c.Options), `"allowCredentials"`) || !strings.Contains(string(c.Options), `"userVerification":"required"`) {
		t.Fatalf("step-up options %s: want the user's credentials and required user verification", c.Options)
	}
	resp, err := ann.auth.Get(c.Options, nil)
	if err != nil {
		t.Fatal(err)
	}
	as, err := p.ParseAssertion(resp)
	if err != nil {
		t.Fatal(err)
	}
	used, err = p.FinishVerification(ann.user, c.Session, as)
	if err != nil {
		t.Fatalf("step-up: %v", err)
	}
	if used.OldSignCount != 2 || used.Passkey.SignCount != 3 {
		t.Fatalf("step-up used %+v, want from 2 to 3", used)
	}
}

func TestPasskey_RegistrationOptionsAskForADiscoverableVerifiedPasskey(t *testing.T) {
	p := newPasskeys(t)
	c, err := p.BeginRegistration(mfa.PasskeyUser{ID: "u1", Name: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"rp":{"name":"gqlauth test","id":"localhost"}`, `"residentKey":"required"`, `"userVerification":"required"`,
		`"attestation":"none"`, `"user":{"name":"ann","displayName":"ann","id":"dTE"}`, `"alg":-7`, `"timeout":300000`} {
		if !strings.Contains(string(c.Options), want) {
			t.Errorf("options %s: want %s", c.Options, want)
		}
	}
	if strings.Contains(string(c.Options), `"publicKey"`) {
		t.Errorf("options %s: want the content of publicKey, not the wrapper", c.Options)
	}
}

// bend is one thing a response gets wrong.
type bend struct {
	name string
	opts []softauthn.Option
}

// bends are what every ceremony refuses: a response from another site, for another RP, to
// another challenge, or without the user present and verified.
func bends() []bend {
	return []bend{
		{"WrongOrigin", []softauthn.Option{softauthn.WithOrigin("https://evil.example")}},
		{"WrongRPID", []softauthn.Option{softauthn.WithRPID("evil.example")}},
		{"OtherChallenge", []softauthn.Option{softauthn.WithChallenge([]byte("another challenge of 32 bytes!!!"))}},
		{"UserNotVerified", []softauthn.Option{softauthn.WithoutUserVerification()}},
		{"UserNotPresent", []softauthn.Option{softauthn.WithoutUserPresence()}},
	}
}

func TestPasskey_RegistrationRefusals(t *testing.T) {
	p := newPasskeys(t)
	for _, tc := range append(bends(),
		bend{"SubdomainOriginNotConfigured", []softauthn.Option{softauthn.WithOrigin("http://app.localhost:8080")}},
		bend{"AssertionTypeInRegistration", []softauthn.Option{softauthn.WithCeremonyType("webauthn.get")}},
	) {
		t.Run(tc.name, func(t *testing.T) {
			u := mfa.PasskeyUser{ID: "u1", Name: "ann"}
			c, err := p.BeginRegistration(u)
			if err != nil {
				t.Fatal(err)
			}
			resp, _, err := softauthn.New(testOrigin).Create(c.Options, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.FinishRegistration(u, c.Session, resp)
			assertRefused(t, err)
		})
	}

	t.Run("SessionOfAnotherUser", func(t *testing.T) {
		c, err := p.BeginRegistration(mfa.PasskeyUser{ID: "u1", Name: "ann"})
		if err != nil {
			t.Fatal(err)
		}
		resp, _, err := softauthn.New(testOrigin).Create(c.Options)
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.FinishRegistration(mfa.PasskeyUser{ID: "u2", Name: "bob"}, c.Session, resp)
		assertRefused(t, err)
	})

	t.Run("Garbage", func(t *testing.T) {
		c, err := p.BeginRegistration(mfa.PasskeyUser{ID: "u1", Name: "ann"})
		if err != nil {
			t.Fatal(err)
		}
		for _, resp := range []string{``, `{}`, `null`, `{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{}}`, `[1,2]`} {
			_, err = p.FinishRegistration(mfa.PasskeyUser{ID: "u1", Name: "ann"}, c.Session, []byte(resp))
			assertRefused(t, err)
		}
	})

	t.Run("SameAuthenticatorTwice", func(t *testing.T) {
		ann := register(t, p, "ann")
		c, err := p.BeginRegistration(ann.user)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(c.Options), `"excludeCredentials":[{"type":"public-key","id":"`) {
			t.Fatalf("options %s: want the registered passkey excluded", c.Options)
		}
		if _, _, err := ann.auth.Create(c.Options); !errors.Is(err, softauthn.ErrExcluded) {
			t.Fatalf("the browser created a second credential on one authenticator: %v", err)
		}
	})
}

func TestPasskey_SignInRefusals(t *testing.T) {
	p := newPasskeys(t)
	for _, tc := range append(bends(),
		bend{"RegistrationTypeInAssertion", []softauthn.Option{softauthn.WithCeremonyType("webauthn.create")}},
		bend{"CounterWentBack", []softauthn.Option{softauthn.WithCounter(0)}},
		bend{"CounterRepeated", []softauthn.Option{softauthn.WithCounter(1)}},
		bend{"UserHandleOfAnotherUser", []softauthn.Option{softauthn.WithUserHandle([]byte("id-of-bob"))}},
	) {
		t.Run(tc.name, func(t *testing.T) {
			ann := register(t, p, "ann")
			_, err := signIn(t, p, ann, []*account{ann}, tc.opts...)
			assertRefused(t, err)
		})
	}

	t.Run("ReplayedResponse", func(t *testing.T) {
		ann := register(t, p, "ann")
		c, err := p.BeginSignIn()
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ann.auth.Get(c.Options, nil)
		if err != nil {
			t.Fatal(err)
		}
		used, err := finishSignIn(t, p, c.Session, resp, []*account{ann})
		if err != nil {
			t.Fatal(err)
		}
		ann.apply(used)
		// The same answer to a new ceremony: the challenge differs (and the counter did not move).
		c2, err := p.BeginSignIn()
		if err != nil {
			t.Fatal(err)
		}
		_, err = finishSignIn(t, p, c2.Session, resp, []*account{ann})
		assertRefused(t, err)
	})

	t.Run("AnotherUsersCredentialClaimingMyHandle", func(t *testing.T) {
		ann, bob := register(t, p, "ann"), register(t, p, "bob")
		// bob's authenticator signs, but claims to be ann: the credential's owner (bob) decides.
		_, err := signIn(t, p, bob, []*account{ann, bob}, softauthn.WithUserHandle([]byte(ann.user.ID)))
		assertRefused(t, err)
	})

	t.Run("SignedByAnotherKey", func(t *testing.T) {
		ann, mallory := register(t, p, "ann"), register(t, p, "mallory")
		c, err := p.BeginSignIn()
		if err != nil {
			t.Fatal(err)
		}
		resp, err := mallory.auth.Get(c.Options, nil)
		if err != nil {
			t.Fatal(err)
		}
		as, err := p.ParseAssertion(resp)
		if err != nil {
			t.Fatal(err)
		}
		// The store's lookup is fooled into ann's account holding mallory's credential id: the
		// signature does not verify under ann's key.
		forged := ann.user
		key := *ann.user.Credentials[0]
		key.CredentialID = as.CredentialID()
		forged.Credentials = []*model.Passkey{&key}
		forged.ID = "id-of-mallory"
		_, err = p.FinishSignIn(c.Session, as, forged)
		assertRefused(t, err)
	})

	t.Run("VerificationSessionUsedForSignIn", func(t *testing.T) {
		ann := register(t, p, "ann")
		c, err := p.BeginVerification(ann.user)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ann.auth.Get(c.Options, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = finishSignIn(t, p, c.Session, resp, []*account{ann})
		assertRefused(t, err)
	})
}

func TestPasskey_AlwaysZeroCounterIsAccepted(t *testing.T) {
	p := newPasskeys(t)
	ann := register(t, p, "ann", softauthn.WithAlwaysZeroCounter())
	for i := range 3 {
		used, err := signIn(t, p, ann, []*account{ann})
		if err != nil {
			t.Fatalf("sign-in %d: %v", i, err)
		}
		if used.OldSignCount != 0 || used.Passkey.SignCount != 0 {
			t.Fatalf("sign-in %d: %+v, want 0 to 0", i, used)
		}
		ann.apply(used)
	}
	// A counter that appears after zeros is a forward move too.
	used, err := signIn(t, p, ann, []*account{ann}, softauthn.WithCounter(7))
	if err != nil || used.Passkey.SignCount != 7 {
		t.Fatalf("counter 0 then 7: %+v, %v", used, err)
	}
	ann.apply(used)
	// And from there, back to 0 is a regression.
	_, err = signIn(t, p, ann, []*account{ann}, softauthn.WithCounter(0))
	assertRefused(t, err)
}

func TestPasskey_StepUpRefusals(t *testing.T) {
	p := newPasskeys(t)
	for _, tc := range append(bends(), bend{"CounterWentBack", []softauthn.Option{softauthn.WithCounter(0)}}) {
		t.Run(tc.name, func(t *testing.T) {
			ann := register(t, p, "ann")
			c, err := p.BeginVerification(ann.user)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := ann.auth.Get(c.Options, nil, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			as, err := p.ParseAssertion(resp)
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.FinishVerification(ann.user, c.Session, as)
			assertRefused(t, err)
		})
	}

	t.Run("AnotherUsersCredential", func(t *testing.T) {
		ann, bob := register(t, p, "ann"), register(t, p, "bob")
		c, err := p.BeginVerification(ann.user)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := bob.auth.Get(c.Options, bob.auth.Credentials()[0])
		if err != nil {
			t.Fatal(err)
		}
		as, err := p.ParseAssertion(resp)
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.FinishVerification(ann.user, c.Session, as)
		assertRefused(t, err)
		// Nor does bob's account finish a ceremony begun for ann.
		_, err = p.FinishVerification(bob.user, c.Session, as)
		assertRefused(t, err)
	})

	t.Run("NoPasskey", func(t *testing.T) {
		if _, err := p.BeginVerification(mfa.PasskeyUser{ID: "u9", Name: "zed"}); !errors.Is(err, mfa.ErrNoPasskey) {
			t.Fatalf("got %v, want ErrNoPasskey", err)
		}
	})
}

func TestPasskeyConfig_Validate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rpID    string
		origins []string
		wantErr string // "" = valid
	}{
		{"Localhost", "localhost", []string{"http://localhost:8080"}, ""},
		{"Domain", "example.com", []string{"https://example.com", "https://auth.example.com", "https://app.example.com:8443"}, ""},
		{"IPv4", "127.0.0.1", []string{"http://127.0.0.1:8080"}, "IP address"},
		{"IPv6", "::1", []string{"http://[::1]:8080"}, "IP address"},
		{"WithScheme", "https://example.com", []string{"https://example.com"}, "domain"},
		{"WithPort", "example.com:443", []string{"https://example.com"}, "domain"},
		{"UpperCase", "Example.com", []string{"https://example.com"}, "lower-case"},
		{"NoOrigins", "example.com", nil, "at least one"},
		{"OriginOfAnotherSite", "example.com", []string{"https://example.org"}, "neither"},
		{"OriginEndingLikeTheRPID", "example.com", []string{"https://badexample.com"}, "neither"},
		{"ParentOfTheRPID", "auth.example.com", []string{"https://example.com"}, "neither"},
		{"PlainHTTP", "example.com", []string{"http://example.com"}, "https"},
		{"WithPath", "example.com", []string{"https://example.com/app"}, "exact origin"},
		{"Wildcard", "example.com", []string{"https://*.example.com"}, "exact origin"},
		{"IPOrigin", "localhost", []string{"http://127.0.0.1:8080"}, "https"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := mfa.PasskeyConfig{RPID: tc.rpID, Origins: tc.origins}.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("got %v, want valid", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got %v, want an error about %q", err, tc.wantErr)
			}
		})
	}
}

// assertRefused checks that err is the one safe refusal, without the library's text.
func assertRefused(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, mfa.ErrPasskeyInvalid) {
		t.Fatalf("got %v, want ErrPasskeyInvalid", err)
	}
	if msg := err.Error(); msg != "passkey response refused: registration" && msg != "passkey response refused: assertion" {
		t.Fatalf("error text %q says more than that the response was refused", msg)
	}
}
