package graph_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gqlauth/mfa/softauthn"
	"gqlauth/store/storetest"
)

// Passkeys (§12) through GraphQL over HTTP, with a software authenticator (mfa/softauthn) in the
// role of the browser and the device: registration, passwordless sign-in, step-up, removal, and
// every way a response can be wrong.

type passkeyChallenge struct {
	ChallengeID string          `json:"challengeId"`
	Options     json.RawMessage `json:"options"`
}

type passkey struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	CreatedAt  string  `json:"createdAt"`
	LastUsedAt *string `json:"lastUsedAt"`
}

// begin calls one of the begin…Passkey… mutations (field) with token ("" for none).
func (s *server) begin(t testing.TB, token, field string) passkeyChallenge {
	t.Helper()
	var c passkeyChallenge
	s.query(t, token, `mutation { `+field+` { challengeId options } }`, nil).field(t, field, &c)
	return c
}

func (s *server) finishRegistration(t testing.TB, token, challengeID, name string, credential json.RawMessage) response {
	t.Helper()
	return s.do(t, call{Token: token, Query: `mutation($c: ID!, $n: String!, $k: JSON!) { finishPasskeyRegistration(challengeId: $c, name: $n, credential: $k) { id name createdAt lastUsedAt } }`,
		Variables: map[string]any{"c": challengeID, "n": name, "k": credential}})
}

// addPasskey registers a passkey named name on auth for the caller of token.
func (s *server) addPasskey(t testing.TB, token string, auth *softauthn.Authenticator, name string, opts ...softauthn.Option) passkey {
	t.Helper()
	c := s.begin(t, token, "beginPasskeyRegistration")
	cred, _, err := auth.Create(c.Options, opts...)
	if err != nil {
		t.Fatal(err)
	}
	r := s.finishRegistration(t, token, c.ChallengeID, name, cred)
	if len(r.Errors) > 0 {
		t.Fatalf("finishPasskeyRegistration: %+v", r.Errors)
	}
	var k passkey
	r.field(t, "finishPasskeyRegistration", &k)
	return k
}

func (s *server) finishSignIn(t testing.TB, challengeID string, credential json.RawMessage) response {
	t.Helper()
	return s.do(t, call{Query: `mutation($c: ID!, $k: JSON!) { finishPasskeySignIn(challengeId: $c, credential: $k) { ` + mfaPayloadFields + ` } }`,
		Variables: map[string]any{"c": challengeID, "k": credential}})
}

// passkeySignIn runs a whole passkey sign-in with auth (its first passkey for the RP), bent by opts.
func (s *server) passkeySignIn(t testing.TB, auth *softauthn.Authenticator, opts ...softauthn.Option) response {
	t.Helper()
	c := s.begin(t, "", "beginPasskeySignIn")
	cred, err := auth.Get(c.Options, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s.finishSignIn(t, c.ChallengeID, cred)
}

func (s *server) finishVerification(t testing.TB, token, challengeID string, credential json.RawMessage) response {
	t.Helper()
	return s.do(t, call{Token: token, Query: `mutation($c: ID!, $k: JSON!) { finishPasskeyVerification(challengeId: $c, credential: $k) { ` + mfaPayloadFields + ` } }`,
		Variables: map[string]any{"c": challengeID, "k": credential}})
}

// passkeyStepUp runs a whole step-up of token's session with auth, bent by opts.
func (s *server) passkeyStepUp(t testing.TB, token string, auth *softauthn.Authenticator, opts ...softauthn.Option) response {
	t.Helper()
	c := s.begin(t, token, "beginPasskeyVerification")
	cred, err := auth.Get(c.Options, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s.finishVerification(t, token, c.ChallengeID, cred)
}

// atAAL2 decodes field's payload and checks that it is at AAL2 with nothing more to do.
func atAAL2(t testing.TB, r response, field string) mfaPayload {
	t.Helper()
	if len(r.Errors) > 0 {
		t.Fatalf("%s: %+v", field, r.Errors)
	}
	var p mfaPayload
	r.field(t, field, &p)
	if p.AAL != "AAL2" || p.MfaRequired {
		t.Fatalf("%s: aal %s, mfaRequired %v; want AAL2 and false", field, p.AAL, p.MfaRequired)
	}
	return p
}

func (s *server) passkeys(t testing.TB, token string) []passkey {
	t.Helper()
	var me struct {
		MFA struct {
			Passkeys []passkey `json:"passkeys"`
		} `json:"mfa"`
	}
	s.query(t, token, `{ me { mfa { passkeys { id name createdAt lastUsedAt } } } }`, nil).field(t, "me", &me)
	return me.MFA.Passkeys
}

// eventDetails are the details of the events of type typ, oldest first.
func (s *server) eventDetails(t testing.TB, typ string) []string {
	t.Helper()
	rows, err := s.DB.DumpTable(context.Background(), "audit_events")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		if r["type"] == typ {
			out = append(out, r["detail"])
		}
	}
	return out
}

// withPasskey registers ann with a password and a passkey named "laptop", the account's first
// factor; the registering session is then at AAL2.
func withPasskey(t *testing.T, s *server, opts ...softauthn.Option) (mfaPayload, *softauthn.Authenticator) {
	t.Helper()
	ann := s.register(t, "ann", password)
	auth := softauthn.New(passkeyOrigin)
	s.addPasskey(t, ann.AccessToken, auth, "laptop", opts...)
	return mfaPayload{tokens: ann}, auth
}

// bobWithPasskey registers bob with a password and a passkey, and returns his authenticator.
func bobWithPasskey(t *testing.T, s *server) *softauthn.Authenticator {
	t.Helper()
	bob := s.register(t, "bob", password)
	auth := softauthn.New(passkeyOrigin)
	s.addPasskey(t, bob.AccessToken, auth, "bob's")
	return auth
}

func TestPasskey_RegisterSignOutSignInWithoutPassword(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		auth := softauthn.New(passkeyOrigin)
		k := s.addPasskey(t, ann.AccessToken, auth, "laptop")
		if k.Name != "laptop" || k.LastUsedAt != nil || k.ID == "" {
			t.Fatalf("registered %+v", k)
		}
		s.query(t, ann.AccessToken, `mutation { logout }`, nil)

		p := atAAL2(t, s.passkeySignIn(t, auth), "finishPasskeySignIn")
		if p.User.ID != ann.User.ID {
			t.Fatalf("signed in as %+v, want ann", p.User)
		}
		claims := parseUnverified(t, p.AccessToken)
		if amr := toStrings(claims["amr"]); !slices.Equal(amr, []string{"hwk", "user", "mfa"}) || claims["aal"] != "aal2" {
			t.Fatalf("token amr %v aal %v; want [hwk user mfa] aal2", amr, claims["aal"])
		}
		s.query(t, p.AccessToken, `mutation { regenerateRecoveryCodes }`, nil) // aal: AAL2
		keys := s.passkeys(t, p.AccessToken)
		if len(keys) != 1 || keys[0].LastUsedAt == nil {
			t.Fatalf("passkeys after the sign-in: %+v, want lastUsedAt set", keys)
		}
		if got := s.eventDetails(t, "SIGN_IN"); !slices.Contains(got, "passkey laptop") {
			t.Fatalf("SIGN_IN details %q, want one of a passkey sign-in", got)
		}
		// The session refreshes at its level.
		var again mfaPayload
		s.refresh(t, p.RefreshToken).field(t, "refresh", &again)
		if parseUnverified(t, again.AccessToken)["aal"] != "aal2" {
			t.Fatal("the refreshed token lost the level")
		}
	})
}

func TestPasskey_ASyncedPasskeyIsASoftwareKey(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		_, auth := withPasskey(t, s, softauthn.WithBackupEligible())
		p := atAAL2(t, s.passkeySignIn(t, auth), "finishPasskeySignIn")
		if amr := toStrings(parseUnverified(t, p.AccessToken)["amr"]); !slices.Equal(amr, []string{"swk", "user", "mfa"}) {
			t.Fatalf("amr %v, want [swk user mfa]", amr)
		}
	})
}

func TestPasskey_FirstPasskeyRaisesTheSessionAndRevokesTheOthers(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		other := s.loginMFA(t, "ann")
		s.addPasskey(t, ann.AccessToken, softauthn.New(passkeyOrigin), "laptop")

		s.me(t, other.AccessToken).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		s.query(t, ann.AccessToken, `mutation { regenerateRecoveryCodes }`, nil) // the registering session is at AAL2
		if got := s.eventDetails(t, "MFA_ENROLLED"); len(got) != 1 || !strings.HasPrefix(got[0], "passkey laptop") {
			t.Fatalf("MFA_ENROLLED details %q", got)
		}
		// A password alone no longer opens the account.
		s.do(t, call{Query: `{ sessions { id } }`, Token: s.loginMFA(t, "ann").AccessToken}).wantError(t, "FORBIDDEN", "MFA_REQUIRED")
	})
}

func TestPasskey_StepUpRaisesAPasswordSession(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		_, auth := withPasskey(t, s)
		first := s.loginMFA(t, "ann")
		if first.AAL != "AAL1" || !first.MfaRequired {
			t.Fatalf("password sign-in: aal %s, mfaRequired %v", first.AAL, first.MfaRequired)
		}
		s.Clock.Advance(11 * time.Minute) // past REAUTH_WINDOW: the step-up renews it
		p := atAAL2(t, s.passkeyStepUp(t, first.AccessToken, auth), "finishPasskeyVerification")
		if amr := toStrings(parseUnverified(t, p.AccessToken)["amr"]); !slices.Equal(amr, []string{"pwd", "hwk", "user", "mfa"}) {
			t.Fatalf("amr after the step-up %v, want [pwd hwk user mfa]", amr)
		}
		s.query(t, p.AccessToken, `{ sessions { id } }`, nil)
		s.query(t, p.AccessToken, `mutation { regenerateRecoveryCodes }`, nil) // needs a recent authentication
		if got := s.eventDetails(t, "MFA_VERIFIED"); !slices.Equal(got, []string{"passkey laptop"}) {
			t.Fatalf("MFA_VERIFIED details %q", got)
		}
	})
}

func TestPasskey_StepUpOptionsListTheUsersPasskeys(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann, _ := withPasskey(t, s)
		c := s.begin(t, ann.AccessToken, "beginPasskeyVerification")
		var o struct {
			Challenge        string `json:"challenge"`
			RPID             string `json:"rpId"`
			UserVerification string `json:"userVerification"`
			AllowCredentials []struct{ ID, Type string }
		}
		if err := json.Unmarshal(c.Options, &o); err != nil {
			t.Fatal(err)
		}
		if o.RPID != "localhost" || o.UserVerification != "required" || len(o.Challenge) < 22 ||
			len(o.AllowCredentials) != 1 || o.AllowCredentials[0].Type != "public-key" {
			t.Fatalf("options %s", c.Options)
		}
	})
}

func TestPasskey_Removal(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann, auth := withPasskey(t, s)
		phone := s.addPasskey(t, ann.AccessToken, softauthn.New(passkeyOrigin), "phone")
		bob := s.register(t, "bob", password)
		bobKey := s.addPasskey(t, bob.AccessToken, softauthn.New(passkeyOrigin), "bob's")
		remove := func(token, id string) response {
			return s.do(t, call{Token: token, Query: `mutation($id: ID!) { removePasskey(id: $id) }`, Variables: map[string]any{"id": id}})
		}

		remove(ann.AccessToken, bobKey.ID).wantError(t, "NOT_FOUND", "")
		remove(ann.AccessToken, "not-an-id").wantError(t, "BAD_USER_INPUT", "")
		wantTrue(t, remove(ann.AccessToken, phone.ID), "removePasskey")
		remove(ann.AccessToken, phone.ID).wantError(t, "NOT_FOUND", "")
		if keys := s.passkeys(t, ann.AccessToken); len(keys) != 1 || keys[0].Name != "laptop" {
			t.Fatalf("passkeys left: %+v", keys)
		}
		if got := s.eventDetails(t, "MFA_REMOVED"); !slices.Equal(got, []string{"passkey phone"}) {
			t.Fatalf("MFA_REMOVED details %q", got)
		}
		if n := len(s.passkeys(t, bob.AccessToken)); n != 1 {
			t.Fatalf("bob has %d passkeys, want his 1", n)
		}

		// Removal needs a recent authentication.
		s.Clock.Advance(11 * time.Minute)
		laptop := s.passkeys(t, ann.AccessToken)[0]
		remove(ann.AccessToken, laptop.ID).wantError(t, "FORBIDDEN", "REAUTHENTICATION_REQUIRED")
		fresh := atAAL2(t, s.passkeyStepUp(t, ann.AccessToken, auth), "finishPasskeyVerification")
		wantTrue(t, remove(fresh.AccessToken, laptop.ID), "removePasskey")

		// The last factor gone, a password alone opens the account again, and the passkey does not.
		s.query(t, s.loginMFA(t, "ann").AccessToken, `{ sessions { id } }`, nil)
		s.passkeySignIn(t, auth).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
	})
}

func TestPasskey_RegistrationNeedsARecentAuthentication(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		c := s.begin(t, ann.AccessToken, "beginPasskeyRegistration")
		s.Clock.Advance(11 * time.Minute)
		s.do(t, call{Token: ann.AccessToken, Query: `mutation { beginPasskeyRegistration { challengeId } }`}).wantError(t, "FORBIDDEN", "REAUTHENTICATION_REQUIRED")
		cred, _, err := softauthn.New(passkeyOrigin).Create(c.Options)
		if err != nil {
			t.Fatal(err)
		}
		s.finishRegistration(t, ann.AccessToken, c.ChallengeID, "laptop", cred).wantError(t, "FORBIDDEN", "REAUTHENTICATION_REQUIRED")
	})
}

func TestPasskey_RegistrationNameIsChecked(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		auth := softauthn.New(passkeyOrigin)
		c := s.begin(t, ann.AccessToken, "beginPasskeyRegistration")
		cred, _, err := auth.Create(c.Options)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"", "   ", strings.Repeat("k", 65), "lap\ntop", "lap\x00top", "tab\there"} {
			e := s.finishRegistration(t, ann.AccessToken, c.ChallengeID, name, cred).wantError(t, "BAD_USER_INPUT", "")
			if e.Extensions.Field != "name" {
				t.Fatalf("name %q: field %q, want name", name, e.Extensions.Field)
			}
		}
		// A refused name does not use the ceremony up.
		r := s.finishRegistration(t, ann.AccessToken, c.ChallengeID, "  "+strings.Repeat("ü", 64)+" ", cred)
		var k passkey
		r.field(t, "finishPasskeyRegistration", &k)
		if k.Name != strings.Repeat("ü", 64) {
			t.Fatalf("name %q, want 64 ü, trimmed", k.Name)
		}
	})
}

func TestPasskey_SignInRefusals(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		_, auth := withPasskey(t, s)
		bobAuth := bobWithPasskey(t, s)
		annID := string(auth.Credentials()[0].UserHandle)

		for _, tc := range []struct {
			name string
			auth *softauthn.Authenticator
			opts []softauthn.Option
		}{
			{"WrongOrigin", auth, []softauthn.Option{softauthn.WithOrigin("https://evil.example")}},
			{"WrongRPID", auth, []softauthn.Option{softauthn.WithRPID("evil.example")}},
			{"UserNotVerified", auth, []softauthn.Option{softauthn.WithoutUserVerification()}},
			{"CounterWentBack", auth, []softauthn.Option{softauthn.WithCounter(0)}},
			{"AnotherUsersCredentialClaimingAnn", bobAuth, []softauthn.Option{softauthn.WithUserHandle([]byte(annID))}},
			{"OtherChallenge", auth, []softauthn.Option{softauthn.WithChallenge([]byte("a challenge the server never made"))}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				sessions := s.count(t, "sessions")
				e := s.passkeySignIn(t, tc.auth, tc.opts...).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
				if strings.Contains(strings.ToLower(e.Message), "origin") || strings.Contains(strings.ToLower(e.Message), "counter") {
					t.Fatalf("the message %q says why", e.Message)
				}
				if n := s.count(t, "sessions"); n != sessions {
					t.Fatalf("a refused sign-in created a session (%d → %d)", sessions, n)
				}
			})
		}
		if got := s.eventDetails(t, "SIGN_IN_FAILED"); len(got) != 6 {
			t.Fatalf("SIGN_IN_FAILED details %q, want 6", got)
		}
		// Nothing bent, it works: the refusals above were for what they bent.
		atAAL2(t, s.passkeySignIn(t, auth), "finishPasskeySignIn")
	})
}

func TestPasskey_AChallengeWorksOnceAndForFiveMinutes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		_, auth := withPasskey(t, s, softauthn.WithAlwaysZeroCounter())

		c := s.begin(t, "", "beginPasskeySignIn")
		cred, err := auth.Get(c.Options, nil)
		if err != nil {
			t.Fatal(err)
		}
		atAAL2(t, s.finishSignIn(t, c.ChallengeID, cred), "finishPasskeySignIn")
		s.finishSignIn(t, c.ChallengeID, cred).wantError(t, "UNAUTHENTICATED", "INVALID_CODE") // replayed

		late := s.begin(t, "", "beginPasskeySignIn")
		cred, err = auth.Get(late.Options, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Clock.Advance(5*time.Minute + time.Second)
		s.finishSignIn(t, late.ChallengeID, cred).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")

		for _, id := range []string{"", "not-a-uuid", "0193a0c4-0000-7000-8000-000000000000"} {
			s.finishSignIn(t, id, cred).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		}
		// A response that is not a credential at all uses the ceremony up too.
		junk := s.begin(t, "", "beginPasskeySignIn")
		for _, bad := range []string{`{}`, `[]`, `"x"`, `{"id":"AA","rawId":"AA","type":"public-key","response":{"clientDataJSON":"e30"}}`} {
			s.finishSignIn(t, junk.ChallengeID, json.RawMessage(bad)).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		}
	})
}

func TestPasskey_AlwaysZeroCounterSignsInAgainAndAgain(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		_, auth := withPasskey(t, s, softauthn.WithAlwaysZeroCounter())
		for range 3 {
			atAAL2(t, s.passkeySignIn(t, auth), "finishPasskeySignIn")
		}
	})
}

func TestPasskey_ConcurrentAssertionsWithOneCounterOnlyOnePasses(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		a, b := twoInstances(t, kind)
		_, auth := withPasskey(t, a)
		const n = 6
		creds := make([]json.RawMessage, n)
		ids := make([]string, n)
		for i := range n {
			c := a.begin(t, "", "beginPasskeySignIn")
			cred, err := auth.Get(c.Options, nil, softauthn.WithCounter(7)) // a clone: one counter value
			if err != nil {
				t.Fatal(err)
			}
			creds[i], ids[i] = cred, c.ChallengeID
		}
		var next atomic.Int64
		rs := inParallel(n, func() response {
			k := int(next.Add(1) - 1)
			srv := a
			if k%2 == 1 {
				srv = b
			}
			return srv.finishSignIn(t, ids[k], creds[k])
		})
		ok := 0
		for _, r := range rs {
			if len(r.Errors) == 0 {
				ok++
			} else if r.Errors[0].Extensions.Reason != "INVALID_CODE" {
				t.Fatalf("a losing assertion: %+v, want INVALID_CODE", r.Errors)
			}
		}
		if ok != 1 {
			t.Fatalf("%d of %d assertions with one counter value passed, want 1", ok, n)
		}
	})
}

func TestPasskey_ACeremonyBegunOnOneInstanceIsFinishedOnAnother(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		a, b := twoInstances(t, kind)
		ann := a.register(t, "ann", password)
		auth := softauthn.New(passkeyOrigin)

		c := a.begin(t, ann.AccessToken, "beginPasskeyRegistration")
		cred, _, err := auth.Create(c.Options)
		if err != nil {
			t.Fatal(err)
		}
		var k passkey
		b.finishRegistration(t, ann.AccessToken, c.ChallengeID, "laptop", cred).field(t, "finishPasskeyRegistration", &k)

		s := b.begin(t, "", "beginPasskeySignIn")
		assertion, err := auth.Get(s.Options, nil)
		if err != nil {
			t.Fatal(err)
		}
		atAAL2(t, a.finishSignIn(t, s.ChallengeID, assertion), "finishPasskeySignIn")

		first := b.loginMFA(t, "ann")
		v := a.begin(t, first.AccessToken, "beginPasskeyVerification")
		assertion, err = auth.Get(v.Options, nil)
		if err != nil {
			t.Fatal(err)
		}
		atAAL2(t, b.finishVerification(t, first.AccessToken, v.ChallengeID, assertion), "finishPasskeyVerification")
	})
}

func TestPasskey_AChallengeIsOnlyForTheSessionThatBeganIt(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann, auth := withPasskey(t, s)
		bob := s.register(t, "bob", password)

		// A step-up begun by one of ann's sessions, finished by another of hers.
		first, second := s.loginMFA(t, "ann"), s.loginMFA(t, "ann")
		v := s.begin(t, first.AccessToken, "beginPasskeyVerification")
		assertion, err := auth.Get(v.Options, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.finishVerification(t, second.AccessToken, v.ChallengeID, assertion).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		s.finishVerification(t, first.AccessToken, v.ChallengeID, assertion).wantError(t, "UNAUTHENTICATED", "INVALID_CODE") // used up

		// A registration begun by ann, finished by bob.
		r := s.begin(t, ann.AccessToken, "beginPasskeyRegistration")
		cred, _, err := softauthn.New(passkeyOrigin).Create(r.Options)
		if err != nil {
			t.Fatal(err)
		}
		s.finishRegistration(t, bob.AccessToken, r.ChallengeID, "mine now", cred).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		if n := len(s.passkeys(t, bob.AccessToken)); n != 0 {
			t.Fatalf("bob got %d passkeys", n)
		}

		// A sign-in ceremony is not a step-up one.
		si := s.begin(t, "", "beginPasskeySignIn")
		assertion, err = auth.Get(si.Options, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.finishVerification(t, first.AccessToken, si.ChallengeID, assertion).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
	})
}

func TestPasskey_StepUpRefusals(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		_, auth := withPasskey(t, s)
		bobAuth := bobWithPasskey(t, s)

		for _, tc := range []struct {
			name string
			get  func(options json.RawMessage) (json.RawMessage, error)
		}{
			{"WrongOrigin", func(o json.RawMessage) (json.RawMessage, error) {
				return auth.Get(o, nil, softauthn.WithOrigin("https://evil.example"))
			}},
			{"WrongRPID", func(o json.RawMessage) (json.RawMessage, error) {
				return auth.Get(o, nil, softauthn.WithRPID("evil.example"))
			}},
			{"UserNotVerified", func(o json.RawMessage) (json.RawMessage, error) {
				return auth.Get(o, nil, softauthn.WithoutUserVerification())
			}},
			{"CounterWentBack", func(o json.RawMessage) (json.RawMessage, error) { return auth.Get(o, nil, softauthn.WithCounter(0)) }},
			{"AnotherUsersCredential", func(o json.RawMessage) (json.RawMessage, error) {
				return bobAuth.Get(o, bobAuth.Credentials()[0])
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				first := s.loginMFA(t, "ann")
				c := s.begin(t, first.AccessToken, "beginPasskeyVerification")
				cred, err := tc.get(c.Options)
				if err != nil {
					t.Fatal(err)
				}
				s.finishVerification(t, first.AccessToken, c.ChallengeID, cred).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
				s.do(t, call{Query: `{ sessions { id } }`, Token: first.AccessToken}).wantError(t, "FORBIDDEN", "MFA_REQUIRED")
			})
		}
		if got := s.eventDetails(t, "MFA_FAILED"); len(got) != 5 {
			t.Fatalf("MFA_FAILED details %q, want 5", got)
		}
	})
}

func TestPasskey_ADisabledUserIsRefused(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann, auth := withPasskey(t, s)
		admin := s.signedInAdmin(t)
		s.setDisabled(t, admin.AccessToken, ann.User.ID, true)
		s.passkeySignIn(t, auth).wantError(t, "FORBIDDEN", "ACCOUNT_DISABLED")
		s.setDisabled(t, admin.AccessToken, ann.User.ID, false)
		atAAL2(t, s.passkeySignIn(t, auth), "finishPasskeySignIn")
	})
}

func TestPasskey_ACredentialIDIsRegisteredOnce(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann, auth := withPasskey(t, s)
		c := s.begin(t, ann.AccessToken, "beginPasskeyRegistration")
		var o struct {
			ExcludeCredentials []struct{ ID string } `json:"excludeCredentials"`
		}
		if err := json.Unmarshal(c.Options, &o); err != nil || len(o.ExcludeCredentials) != 1 {
			t.Fatalf("options %s: want the registered passkey excluded", c.Options)
		}
		if _, _, err := auth.Create(c.Options); err == nil {
			t.Fatal("the authenticator registered itself twice despite the exclusion")
		}

		// bob's client claims ann's credential id for a key of its own: refused, whoever asks.
		annCredential := auth.Credentials()[0].ID
		bob := s.register(t, "bob", password)
		for _, who := range []tokens{bob, ann.tokens} {
			r := s.begin(t, who.AccessToken, "beginPasskeyRegistration")
			cred, _, err := softauthn.New(passkeyOrigin).Create(r.Options, softauthn.WithCredentialID(annCredential))
			if err != nil {
				t.Fatal(err)
			}
			s.finishRegistration(t, who.AccessToken, r.ChallengeID, "stolen", cred).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		}
		if n := len(s.passkeys(t, bob.AccessToken)); n != 0 {
			t.Fatalf("bob has %d passkeys", n)
		}
		atAAL2(t, s.passkeySignIn(t, auth), "finishPasskeySignIn") // ann's passkey still signs her in
	})
}

func TestPasskey_AddingAndRemovingIsMailed(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		wantTrue(t, s.sendVerification(t, ann.AccessToken), "sendEmailVerification")
		wantTrue(t, s.verifyEmail(t, tokenIn(t, smtp.waitFor(t, 1)[0])), "verifyEmail")
		k := s.addPasskey(t, ann.AccessToken, softauthn.New(passkeyOrigin), "laptop")
		wantTrue(t, s.do(t, call{Token: ann.AccessToken, Query: `mutation($id: ID!) { removePasskey(id: $id) }`, Variables: map[string]any{"id": k.ID}}), "removePasskey")
		msgs := smtp.waitFor(t, 3)[1:]
		for _, want := range []string{"A second factor was added: passkey laptop", "A second factor was removed: passkey laptop"} {
			if !slices.ContainsFunc(msgs, func(m mailed) bool { return strings.Contains(m.Text, want) }) {
				t.Errorf("no notice says %q", want)
			}
		}
	})
}

func TestPasskey_ExpiredCeremoniesAreSwept(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		s.begin(t, "", "beginPasskeySignIn")
		s.Clock.Advance(4 * time.Minute)
		live := s.begin(t, "", "beginPasskeySignIn")
		s.Clock.Advance(2 * time.Minute) // the first is 6 minutes old, the second 2
		if n, err := s.Service.SweepPasskeyChallenges(context.Background()); err != nil || n != 1 {
			t.Fatalf("swept %d, %v; want the 1 expired ceremony", n, err)
		}
		rows, err := s.DB.DumpTable(context.Background(), "webauthn_challenges")
		if err != nil || len(rows) != 1 || rows[0]["id"] != live.ChallengeID {
			t.Fatalf("left %v, %v; want the live one", rows, err)
		}
	})
}
