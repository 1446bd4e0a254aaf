package graph_test

import (
	"slices"
	"testing"
	"time"

	"github.com/pquerna/otp"

	"gqlauth/mfa"
	"gqlauth/store/storetest"
)

// Second factors (§12) through the API: levels, TOTP, recovery codes, recent authentication.

const password = "correct horse battery"

// mfaPayload is an AuthPayload with the fields of §12.
type mfaPayload struct {
	tokens
	AAL         string `json:"aal"`
	MfaRequired bool   `json:"mfaRequired"`
}

const mfaPayloadFields = payloadFields + ` aal mfaRequired`

// totpCode is the code of secret at the time step of at.
func totpCode(t testing.TB, secret string, at time.Time) string {
	t.Helper()
	code, err := mfa.CodeAt(secret, mfa.Step(at), otp.DigitsSix, otp.AlgorithmSHA1)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// enrolTotp enrols and confirms TOTP for the session of token, and returns the secret and the
// recovery codes confirmTotp handed out. The clock moves on one time step, so that the step
// the confirmation used is behind it.
func (s *server) enrolTotp(t testing.TB, token string) (secret string, codes []string) {
	t.Helper()
	var e struct{ Secret, URI string }
	s.query(t, token, `mutation { enrollTotp { secret uri } }`, nil).field(t, "enrollTotp", &e)
	s.query(t, token, `mutation($c: String!) { confirmTotp(code: $c) }`, map[string]any{"c": totpCode(t, e.Secret, s.Clock.Now())}).
		field(t, "confirmTotp", &codes)
	s.Clock.Advance(mfa.Period * time.Second)
	return e.Secret, codes
}

// loginMFA signs in with the password and returns the payload with its level.
func (s *server) loginMFA(t testing.TB, username string) mfaPayload {
	t.Helper()
	var p mfaPayload
	s.query(t, "", `mutation($u: String!, $p: String!) { login(username: $u, password: $p) { `+mfaPayloadFields+` } }`,
		map[string]any{"u": username, "p": password}).field(t, "login", &p)
	return p
}

// verifyMfa sends the second step with code.
func (s *server) verifyMfa(t testing.TB, token, code string) response {
	t.Helper()
	return s.do(t, call{Query: `mutation($c: String!) { verifyMfa(code: $c) { ` + mfaPayloadFields + ` } }`,
		Variables: map[string]any{"c": code}, Token: token})
}

// stepUp signs in with the password and the current TOTP code, and returns the AAL2 payload.
func (s *server) stepUp(t testing.TB, username, secret string) mfaPayload {
	t.Helper()
	first := s.loginMFA(t, username)
	var p mfaPayload
	r := s.verifyMfa(t, first.AccessToken, totpCode(t, secret, s.Clock.Now()))
	if len(r.Errors) > 0 {
		t.Fatalf("verifyMfa: %+v", r.Errors)
	}
	r.field(t, "verifyMfa", &p)
	s.Clock.Advance(mfa.Period * time.Second) // the step is used: the next sign-in needs the next one
	return p
}

func TestMFA_SignInWithoutAFactorIsAAL1AndNeedsNoSecondStep(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		s.register(t, "ann", password)
		p := s.loginMFA(t, "ann")
		if p.AAL != "AAL1" || p.MfaRequired {
			t.Fatalf("aal %s, mfaRequired %v: want AAL1 and false", p.AAL, p.MfaRequired)
		}
		claims := parseUnverified(t, p.AccessToken)
		if claims["aal"] != "aal1" || !slices.Equal(toStrings(claims["amr"]), []string{"pwd"}) {
			t.Fatalf("claims aal %v amr %v, want aal1 [pwd]", claims["aal"], claims["amr"])
		}
		s.query(t, p.AccessToken, `{ sessions { id } }`, nil) // its own level: AAL1 is enough
	})
}

func toStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func TestMFA_PasswordAloneNeverOpensAnAccountWithAFactor(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		secret, _ := s.enrolTotp(t, ann.AccessToken)

		first := s.loginMFA(t, "ann")
		if first.AAL != "AAL1" || !first.MfaRequired {
			t.Fatalf("login: aal %s, mfaRequired %v; want AAL1 and true", first.AAL, first.MfaRequired)
		}
		// One factor: me and logout work, nothing else does.
		s.query(t, first.AccessToken, `{ me { username } }`, nil)
		e := s.do(t, call{Query: `{ sessions { id } }`, Token: first.AccessToken}).wantError(t, "FORBIDDEN", "MFA_REQUIRED")
		if e.Extensions.RequiredAal != "AAL2" {
			t.Fatalf("requiredAal %q, want AAL2", e.Extensions.RequiredAal)
		}

		var second mfaPayload
		r := s.verifyMfa(t, first.AccessToken, totpCode(t, secret, s.Clock.Now()))
		r.field(t, "verifyMfa", &second)
		if second.AAL != "AAL2" || second.MfaRequired {
			t.Fatalf("verifyMfa: aal %s, mfaRequired %v; want AAL2 and false", second.AAL, second.MfaRequired)
		}
		claims := parseUnverified(t, second.AccessToken)
		if claims["aal"] != "aal2" || !slices.Equal(toStrings(claims["amr"]), []string{"pwd", "otp", "mfa"}) {
			t.Fatalf("claims aal %v amr %v, want aal2 [pwd otp mfa]", claims["aal"], claims["amr"])
		}
		if claims["sid"] != parseUnverified(t, first.AccessToken)["sid"] {
			t.Fatal("verifyMfa changed the session")
		}
		// The level is the session's: the access token from before the step-up works now too.
		s.query(t, second.AccessToken, `{ sessions { id } }`, nil)
		s.query(t, first.AccessToken, `{ sessions { id } }`, nil)

		// refresh keeps the level.
		var refreshed mfaPayload
		s.do(t, call{Query: `mutation($r: String) { refresh(refreshToken: $r) { ` + mfaPayloadFields + ` } }`,
			Variables: map[string]any{"r": second.RefreshToken}}).field(t, "refresh", &refreshed)
		if refreshed.AAL != "AAL2" || parseUnverified(t, refreshed.AccessToken)["aal"] != "aal2" {
			t.Fatalf("refresh: aal %s, want AAL2", refreshed.AAL)
		}
		// The refresh token from before the step-up starts no AAL2 chain.
		s.refresh(t, first.RefreshToken).wantError(t, "UNAUTHENTICATED", "INVALID_REFRESH_TOKEN")
	})
}

func TestMFA_FirstEnrolmentRaisesTheSessionAndRevokesTheOthers(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		other := s.login(t, "ann", password) // a session a stolen password may have opened
		_, codes := s.enrolTotp(t, ann.AccessToken)
		if len(codes) != 10 {
			t.Fatalf("confirmTotp returned %d recovery codes, want 10", len(codes))
		}
		s.query(t, ann.AccessToken, `{ sessions { id } }`, nil) // raised to AAL2: it passes
		s.me(t, other.AccessToken).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		if n := s.countEvents(t, "MFA_ENROLLED"); n != 1 {
			t.Fatalf("%d MFA_ENROLLED events, want 1", n)
		}
	})
}

func TestMFA_StatusShowsFactorsToTheUserAndAdminsOnly(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		admin := s.signedInAdmin(t)
		ann := s.register(t, "ann", password)
		s.enrolTotp(t, ann.AccessToken)
		type status struct {
			Totp              bool  `json:"totp"`
			Passkeys          []any `json:"passkeys"`
			RecoveryCodesLeft int   `json:"recoveryCodesLeft"`
		}
		var me struct{ Mfa status }
		s.query(t, ann.AccessToken, `{ me { mfa { totp passkeys { id } recoveryCodesLeft } } }`, nil).field(t, "me", &me)
		if !me.Mfa.Totp || me.Mfa.RecoveryCodesLeft != 10 || len(me.Mfa.Passkeys) != 0 {
			t.Fatalf("mfa: %+v", me.Mfa)
		}
		var users []struct {
			Username string
			Mfa      status
		}
		s.query(t, admin.AccessToken, `{ users { username mfa { totp recoveryCodesLeft } } }`, nil).field(t, "users", &users)
		for _, u := range users {
			if u.Username == "ann" && !u.Mfa.Totp {
				t.Fatalf("an admin sees ann's mfa as %+v", u.Mfa)
			}
		}
	})
}

func TestMFA_ProviderSignInOfAUserWithAFactorNeedsTheSecondStep(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-k", "katherine", "k@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)))
		exchange := func() mfaPayload {
			back, verifier := s.providerSignIn(t, p, "katherine")
			var out mfaPayload
			s.query(t, "", `mutation($c: String!, $v: String!) { exchangeAuthCode(code: $c, codeVerifier: $v) { `+mfaPayloadFields+` } }`,
				map[string]any{"c": back.Query().Get("code"), "v": verifier}).field(t, "exchangeAuthCode", &out)
			return out
		}
		first := exchange()
		if first.MfaRequired || !slices.Equal(toStrings(parseUnverified(t, first.AccessToken)["amr"]), []string{"fed"}) {
			t.Fatalf("first sign-in: mfaRequired %v, amr %v", first.MfaRequired, parseUnverified(t, first.AccessToken)["amr"])
		}
		secret, _ := s.enrolTotp(t, first.AccessToken)
		again := exchange()
		if again.AAL != "AAL1" || !again.MfaRequired {
			t.Fatalf("with a factor: aal %s, mfaRequired %v", again.AAL, again.MfaRequired)
		}
		s.do(t, call{Query: `{ sessions { id } }`, Token: again.AccessToken}).wantError(t, "FORBIDDEN", "MFA_REQUIRED")
		var up mfaPayload
		s.verifyMfa(t, again.AccessToken, totpCode(t, secret, s.Clock.Now())).field(t, "verifyMfa", &up)
		if !slices.Equal(toStrings(parseUnverified(t, up.AccessToken)["amr"]), []string{"fed", "otp", "mfa"}) {
			t.Fatalf("amr after the step-up: %v", parseUnverified(t, up.AccessToken)["amr"])
		}
	})
}
