package graph_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"gqlauth/account"
	"gqlauth/oidc"
	"gqlauth/ratelimit"
	"gqlauth/store/storetest"
)

// Provider sign-in (CONTRACT §10) against zitadel/oidc's provider running in the test process.

// identities returns the caller's linked identities.
func (s *server) identities(t testing.TB, token string) []map[string]any {
	t.Helper()
	var me struct {
		Identities []map[string]any `json:"identities"`
	}
	s.query(t, token, `{ me { identities { provider subject email linkedAt } } }`, nil).field(t, "me", &me)
	return me.Identities
}

// eventTypes lists the type and detail of every audit event, oldest first, leaving out the
// events of the admin it signs in (once per server) to read them.
func (s *server) eventTypes(t testing.TB) []string {
	t.Helper()
	admin, err := s.DB.UserByUsername(context.Background(), "root")
	token := ""
	if err == nil {
		token = s.login(t, "root", "correct horse battery").AccessToken
	} else {
		token = s.signedInAdmin(t).AccessToken
		admin, _ = s.DB.UserByUsername(context.Background(), "root")
	}
	var out []string
	events := s.auditEvents(t, token, nil).events()
	for i := len(events) - 1; i >= 0; i-- {
		if e := events[i]; e.User != nil && e.User.ID == admin.ID {
			continue
		} else if deref(e.Detail) != "" {
			out = append(out, e.Type+" "+deref(e.Detail))
		} else {
			out = append(out, e.Type)
		}
	}
	return out
}

func TestSignIn_ProviderFlowCreatesAUserAndSignsIn(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-ada", "ada.lovelace@corp.example", "ada@corp.example", true))
		var logs strings.Builder
		var mu sync.Mutex
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)), withLogs(lockedWriter{&mu, &logs}))

		verifier, challenge := pkce()
		status, start, _ := get(t, s.startURL(spaURL, challenge))
		if status != http.StatusFound || !strings.HasPrefix(start, p.Issuer+"/") {
			t.Fatalf("start: %d → %q, want a redirect to the provider", status, start)
		}
		authReq, _ := url.Parse(start)
		q := authReq.Query()
		for name, want := range map[string]string{"client_id": providerClientID, "response_type": "code",
			"code_challenge_method": "S256", "redirect_uri": s.URL + "/auth/corp/callback"} {
			if q.Get(name) != want {
				t.Errorf("authorization request %s = %q, want %q", name, q.Get(name), want)
			}
		}
		for _, name := range []string{"state", "nonce", "code_challenge"} {
			if len(q.Get(name)) < 43 {
				t.Errorf("authorization request %s = %q, want a fresh random value", name, q.Get(name))
			}
		}
		if q.Get("code_challenge") == challenge {
			t.Error("the SPA's challenge was forwarded to the provider; the server must use its own PKCE pair")
		}

		providerRedirect := p.authorize(t, start, "ada.lovelace@corp.example")
		back := s.callback(t, providerRedirect)
		if len(back.Query()) != 1 || back.Query().Get("code") == "" {
			t.Fatalf("the SPA got %q, want only ?code=", back.RawQuery)
		}
		r := s.exchangeCode(t, back.Query().Get("code"), verifier)
		var pair tokens
		r.field(t, "exchangeAuthCode", &pair)
		if pair.User.Username != "ada.lovelace" || deref(pair.User.Email) != "ada@corp.example" {
			t.Errorf("new user: %+v, want username ada.lovelace and the verified email", pair.User)
		}
		ids := s.identities(t, pair.AccessToken)
		if len(ids) != 1 || ids[0]["provider"] != "corp" || ids[0]["subject"] != "sub-ada" || ids[0]["email"] != "ada@corp.example" {
			t.Errorf("identities: %v", ids)
		}
		if next := s.refresh(t, pair.RefreshToken); len(next.Errors) > 0 {
			t.Errorf("the session refreshes like any other: %+v", next.Errors)
		}

		// The same identity signs in to the same user, not to a new one.
		again := s.signInThrough(t, p, "ada.lovelace@corp.example")
		if again.User.ID != pair.User.ID {
			t.Errorf("second sign-in: user %s, want %s", again.User.ID, pair.User.ID)
		}
		// The account has no password: password login fails exactly like a wrong password.
		s.do(t, call{Query: `mutation { login(username: "ada.lovelace", password: "") { accessToken } }`}).
			wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		s.do(t, call{Query: `mutation { login(username: "ada.lovelace", password: "anything-at-all") { accessToken } }`}).
			wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")

		want := []string{"SIGN_UP via corp", "IDENTITY_LINKED corp", "SIGN_IN via corp", "SIGN_IN via corp"}
		if got := s.eventTypes(t); len(got) < 4 || strings.Join(got[:4], ",") != strings.Join(want, ",") {
			t.Errorf("audit: %v, want to begin with %v", got, want)
		}

		// Nothing secret travels in a URL or a log line.
		mu.Lock()
		logged := logs.String()
		mu.Unlock()
		for _, where := range []string{start, providerRedirect, back.String(), logged} {
			for _, secret := range []string{providerClientSecret, pair.AccessToken, pair.RefreshToken, verifier} {
				if strings.Contains(where, secret) {
					t.Errorf("a secret appears in %.80q", where)
				}
			}
		}
		// The provider's own code is in its redirect to us (it is single-use and useless without
		// our client secret and PKCE verifier); no JWT travels to the SPA or into the logs.
		for _, where := range []string{start, back.String(), logged} {
			if strings.Contains(where, "id_token") || strings.Contains(where, "eyJ") {
				t.Errorf("a token appears in %.80q", where)
			}
		}
	})
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func TestSignIn_StartRefusesUnlistedRedirectsAndBadChallenges(t *testing.T) {
	p := newProvider(t)
	s := newServer(t, storetest.SQLite, withOIDC(p.oidcConfig(nil)))
	_, challenge := pkce()
	before := s.snapshot(t)
	for _, c := range []struct {
		name   string
		target string
		status int
	}{
		{"unknown provider", s.URL + "/auth/nope/start?" + url.Values{"redirect_to": {spaURL}, "code_challenge": {challenge}}.Encode(), 404},
		{"no redirect_to", s.URL + "/auth/corp/start?code_challenge=" + challenge, 400},
		{"path appended", s.startURL(spaURL+"/../evil", challenge), 400},
		{"suffix", s.startURL(spaURL+"x", challenge), 400},
		{"query appended", s.startURL(spaURL+"?next=https://evil.example", challenge), 400},
		{"fragment", s.startURL(spaURL+"#x", challenge), 400},
		{"other scheme", s.startURL(strings.Replace(spaURL, "https:", "http:", 1), challenge), 400},
		{"upper case host", s.startURL(strings.Replace(spaURL, "app.example.com", "APP.example.com", 1), challenge), 400},
		{"user info", s.startURL(strings.Replace(spaURL, "https://", "https://app.example.com@", 1), challenge), 400},
		{"scheme-relative", s.startURL("//evil.example/signed-in", challenge), 400},
		{"other host", s.startURL("https://evil.example/signed-in", challenge), 400},
		{"listed twice", s.URL + "/auth/corp/start?" + url.Values{"redirect_to": {spaURL, "https://evil.example"}, "code_challenge": {challenge}}.Encode(), 400},
		{"no challenge", s.URL + "/auth/corp/start?redirect_to=" + url.QueryEscape(spaURL), 400},
		{"short challenge", s.startURL(spaURL, challenge[:42]), 400},
		{"plain method", s.startURL(spaURL, challenge) + "&code_challenge_method=plain", 400},
		{"challenge not base64url", s.startURL(spaURL, strings.Repeat("+", 43)), 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, loc, _ := get(t, c.target)
			if status != c.status || loc != "" {
				t.Errorf("got %d (Location %q), want %d and no redirect", status, loc, c.status)
			}
		})
	}
	if s.snapshot(t) != before {
		t.Error("a refused start stored something")
	}
	// The playground, the server's own page, is always a redirect target.
	if status, _, _ := get(t, s.startURL(s.URL+"/", challenge)); status != http.StatusFound {
		t.Errorf("start for the playground: %d", status)
	}
}

func TestSignIn_CallbackRefusesBadStateWithAPlainPage(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-1", "grace", "grace@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)))
		_, challenge := pkce()
		_, start, _ := get(t, s.startURL(spaURL, challenge))
		providerRedirect := p.authorize(t, start, "grace")
		u, _ := url.Parse(providerRedirect)
		code := u.Query().Get("code")

		check := func(t *testing.T, query url.Values) {
			t.Helper()
			status, loc, body := get(t, s.URL+"/auth/corp/callback?"+query.Encode())
			if status != http.StatusBadRequest || loc != "" || strings.Contains(body, "code") && strings.Contains(body, code) {
				t.Errorf("got %d (Location %q, body %q), want a plain 400", status, loc, body)
			}
		}
		t.Run("no state", func(t *testing.T) { check(t, url.Values{"code": {code}}) })
		t.Run("unknown state", func(t *testing.T) { check(t, url.Values{"code": {code}, "state": {"forged-state"}}) })
		if back := s.callback(t, providerRedirect); back.Query().Get("code") == "" {
			t.Fatalf("the genuine callback failed: %s", back.RawQuery)
		}
		t.Run("replayed callback", func(t *testing.T) { check(t, u.Query()) })

		t.Run("expired state", func(t *testing.T) {
			_, start, _ := get(t, s.startURL(spaURL, challenge))
			redirect := p.authorize(t, start, "grace")
			s.Clock.Advance(oidc.SignInFlowTTL + time.Second)
			r, _ := url.Parse(redirect)
			check(t, r.Query())
		})
	})
}

func TestSignIn_IDTokenChecksRefuseTheSignIn(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-eve", "eve", "eve@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)))
		for _, c := range []struct {
			name   string
			tamper *idTokenTamper
			nonce  string // replaces the nonce of the authorization request
			detail string // in the SIGN_IN_FAILED event
		}{
			{name: "nonce of another flow", nonce: "nonce-the-server-never-made-for-this-flow", detail: "nonce does not match"},
			{name: "audience", tamper: &idTokenTamper{claims: func(c map[string]any) { c["aud"] = []string{"another-client"} }}, detail: "audience"},
			{name: "several audiences without azp", tamper: &idTokenTamper{claims: func(c map[string]any) {
				c["aud"] = []string{providerClientID, "another-client"}
				delete(c, "azp")
			}}, detail: "azp"},
			{name: "several audiences, azp another client", tamper: &idTokenTamper{claims: func(c map[string]any) {
				c["aud"], c["azp"] = []string{providerClientID, "another-client"}, "another-client"
			}}, detail: "azp"},
			{name: "expired", tamper: &idTokenTamper{claims: func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() }}, detail: "expired"},
			{name: "issuer", tamper: &idTokenTamper{claims: func(c map[string]any) { c["iss"] = "https://evil.example" }}, detail: "different provider"},
			{name: "signature", tamper: &idTokenTamper{foreignKey: true}, detail: "signature"},
		} {
			t.Run(c.name, func(t *testing.T) {
				_, challenge := pkce()
				_, start, _ := get(t, s.startURL(spaURL, challenge))
				if c.nonce != "" {
					u, _ := url.Parse(start)
					q := u.Query()
					q.Set("nonce", c.nonce)
					u.RawQuery = q.Encode()
					start = u.String()
				}
				p.tamper.Store(c.tamper)
				defer p.tamper.Store(nil)
				back := s.callback(t, p.authorize(t, start, "eve"))
				if back.RawQuery != "error=access_denied" {
					t.Errorf("the SPA got %q, want error=access_denied", back.RawQuery)
				}
				events := s.eventTypes(t)
				if last := events[len(events)-1]; !strings.HasPrefix(last, "SIGN_IN_FAILED corp: ID token rejected") || !strings.Contains(last, c.detail) {
					t.Errorf("last event %q, want a SIGN_IN_FAILED naming %q", last, c.detail)
				}
			})
		}
		// The identity never got an account.
		if n, _ := s.DB.CountUsers(context.Background()); n != 1 { // the admin of eventTypes only
			t.Errorf("%d users, want only the admin", n)
		}
	})
}

func TestExchangeAuthCode_CodeWorksOnceWithItsVerifierWithinAMinute(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-k", "katherine", "k@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)))

		t.Run("replayed", func(t *testing.T) {
			back, verifier := s.providerSignIn(t, p, "katherine")
			code := back.Query().Get("code")
			if r := s.exchangeCode(t, code, verifier); len(r.Errors) > 0 {
				t.Fatal(r.Errors)
			}
			s.exchangeCode(t, code, verifier).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		})
		t.Run("wrong verifier uses the code up", func(t *testing.T) {
			back, verifier := s.providerSignIn(t, p, "katherine")
			other, _ := pkce()
			s.exchangeCode(t, back.Query().Get("code"), other).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
			s.exchangeCode(t, back.Query().Get("code"), verifier).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		})
		t.Run("the challenge itself is not a verifier", func(t *testing.T) {
			_, challenge := pkce()
			_, start, _ := get(t, s.startURL(spaURL, challenge))
			back := s.callback(t, p.authorize(t, start, "katherine"))
			s.exchangeCode(t, back.Query().Get("code"), challenge).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		})
		t.Run("expired", func(t *testing.T) {
			back, verifier := s.providerSignIn(t, p, "katherine")
			s.Clock.Advance(account.AuthCodeTTL + time.Second)
			s.exchangeCode(t, back.Query().Get("code"), verifier).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		})
		t.Run("two exchanges at once: one session", func(t *testing.T) {
			back, verifier := s.providerSignIn(t, p, "katherine")
			results := inParallel(8, func() response { return s.exchangeCode(t, back.Query().Get("code"), verifier) })
			ok := 0
			for _, r := range results {
				if len(r.Errors) == 0 {
					ok++
				} else {
					r.wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
				}
			}
			if ok != 1 {
				t.Errorf("%d exchanges succeeded, want exactly 1", ok)
			}
		})
		t.Run("OAuth2 client at /oauth/token", func(t *testing.T) {
			// golang.org/x/oauth2, unmodified, redeems the code with grant_type=authorization_code.
			back, verifier := s.providerSignIn(t, p, "katherine")
			cfg := oauth2.Config{ClientID: "spa", Endpoint: oauth2.Endpoint{TokenURL: s.URL + "/oauth/token", AuthStyle: oauth2.AuthStyleInParams}}
			tok, err := cfg.Exchange(context.Background(), back.Query().Get("code"), oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatal(err)
			}
			if r := s.me(t, tok.AccessToken); len(r.Errors) > 0 || tok.RefreshToken == "" {
				t.Errorf("token from /oauth/token: %+v, refresh %q", r.Errors, tok.RefreshToken)
			}
			_, err = cfg.Exchange(context.Background(), back.Query().Get("code"), oauth2.VerifierOption(verifier))
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
				t.Errorf("second exchange: %v, want invalid_grant", err)
			}
		})
	})
}

func TestSignIn_NoAutomaticLinkingByEmail(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		for _, c := range []struct {
			name            string
			linkOption      bool
			providerSays    bool // the provider asserts email_verified
			accountVerified bool // this server verified the account's address
			want            string
		}{
			{"default, both verified", false, true, true, "account_exists"},
			{"option on, provider email unverified", true, false, true, "account_exists"},
			// The attack: someone registered the victim's address here (nobody verified it); the
			// victim's first sign-in through the provider must not land in that account.
			{"option on, account address unverified", true, true, false, "account_exists"},
			{"option on, both verified", true, true, true, "linked"},
		} {
			t.Run(c.name, func(t *testing.T) {
				p := newProvider(t, providerUser("sub-v", "victim", "Owner@Example.com", c.providerSays))
				s := newServer(t, kind, withOIDC(p.oidcConfig(nil)), withLinkVerifiedEmail(c.linkOption))
				var owner tokens
				s.query(t, "", `mutation { register(username: "owner", password: "owner-password", email: "owner@example.com") { accessToken user { id } } }`, nil).
					field(t, "register", &owner)
				if c.accountVerified {
					// What the mail verification of the next issue will do.
					if err := s.DB.Exec(context.Background(), "UPDATE users SET email_verified_at = CURRENT_TIMESTAMP WHERE id = '"+owner.User.ID+"'"); err != nil {
						t.Fatal(err)
					}
				}
				before, identitiesBefore := s.snapshot(t), s.identityRows(t)
				back, verifier := s.providerSignIn(t, p, "victim")
				switch c.want {
				case "account_exists":
					if back.RawQuery != "error=account_exists" {
						t.Fatalf("the SPA got %q, want error=account_exists", back.RawQuery)
					}
					if ids := s.identities(t, owner.AccessToken); len(ids) != 0 {
						t.Errorf("the owner's account got identities %v", ids)
					}
					if s.snapshot(t) != before || s.identityRows(t) != identitiesBefore {
						t.Error("a refused sign-in wrote an account, a session or an identity")
					}
				case "linked":
					var got tokens
					s.exchangeCode(t, back.Query().Get("code"), verifier).field(t, "exchangeAuthCode", &got)
					if got.User.ID != owner.User.ID {
						t.Errorf("signed in to %s, want the owner %s", got.User.ID, owner.User.ID)
					}
					if ids := s.identities(t, owner.AccessToken); len(ids) != 1 || ids[0]["subject"] != "sub-v" {
						t.Errorf("the owner's identities: %v", ids)
					}
				}
			})
		}
	})
}

func TestSignIn_ProviderVerifiedEmailIsNotVerifiedByThisServer(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-e", "eve", "eve@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)), withLinkVerifiedEmail(true))
		pair := s.signInThrough(t, p, "eve")
		if deref(pair.User.Email) != "eve@corp.example" {
			t.Fatalf("email %v, want the provider's verified address on the new account", pair.User.Email)
		}
		var unverified bool
		if err := s.DB.QueryRow(context.Background(), "SELECT email_verified_at IS NULL FROM users WHERE id = '"+pair.User.ID+"'", &unverified); err != nil {
			t.Fatal(err)
		}
		if !unverified {
			t.Error("an account created through a provider has its address marked verified by this server")
		}
	})
}

func TestLinkIdentity_SignedInUserLinksAndUnlinksAProvider(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-l", "linus", "linus@corp.example", true), providerUser("sub-o", "other", "other@corp.example", true))
		var logs strings.Builder
		var mu sync.Mutex
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)), withLogs(lockedWriter{&mu, &logs}))
		linus := s.signedInUser(t, "linus")

		back, verifier := s.linkThrough(t, p, linus.AccessToken, "linus")
		code := linkCodeOf(t, back)
		if ids := s.identities(t, linus.AccessToken); len(ids) != 0 {
			t.Fatalf("the callback linked %v; only completeIdentityLink may", ids)
		}
		var linked map[string]any
		s.completeLink(t, linus.AccessToken, code, verifier).field(t, "completeIdentityLink", &linked)
		if linked["provider"] != "corp" || linked["subject"] != "sub-l" || linked["email"] != "linus@corp.example" || linked["linkedAt"] == nil {
			t.Errorf("completeIdentityLink returned %v", linked)
		}
		if ids := s.identities(t, linus.AccessToken); len(ids) != 1 || ids[0]["subject"] != "sub-l" {
			t.Fatalf("identities after linking: %v", ids)
		}
		s.completeLink(t, linus.AccessToken, code, verifier).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS") // replayed
		if got := s.signInThrough(t, p, "linus"); got.User.ID != linus.User.ID {
			t.Errorf("the linked identity signs in to %s, want %s", got.User.ID, linus.User.ID)
		}
		// The code is stored only as a hash and appears in no log line.
		mu.Lock()
		logged := logs.String()
		mu.Unlock()
		if strings.Contains(logged, code) {
			t.Error("the link code appears in the log")
		}

		// Linking the same identity again succeeds and changes nothing.
		before := s.identityRows(t)
		back, verifier = s.linkThrough(t, p, linus.AccessToken, "linus")
		s.completeLink(t, linus.AccessToken, linkCodeOf(t, back), verifier).field(t, "completeIdentityLink", &linked)
		if s.identityRows(t) != before || linked["subject"] != "sub-l" {
			t.Errorf("relinking changed the identities or returned %v", linked)
		}

		// An identity that belongs to another account is not moved.
		other := s.signInThrough(t, p, "other")
		if back, _ := s.linkThrough(t, p, linus.AccessToken, "other"); back.RawQuery != "error=account_exists" {
			t.Errorf("linking another account's identity: %q, want error=account_exists", back.RawQuery)
		}
		if ids := s.identities(t, other.AccessToken); len(ids) != 1 {
			t.Errorf("the other account lost its identity: %v", ids)
		}
		// The refusal happened in whichever browser came back from the provider, which need not be
		// the starter's: the starter's own events show nothing of it (no stranger's IP or user
		// agent, no "that person has an account here"); it is recorded for admins only.
		for _, e := range s.securityEvents(t, linus.AccessToken, nil).events() {
			if e.Type == "SIGN_IN_FAILED" {
				t.Errorf("the link starter sees a refusal caused by another browser: %+v", e)
			}
		}
		var n int
		if err := s.DB.QueryRow(context.Background(), `SELECT count(*) FROM audit_events WHERE type = 'SIGN_IN_FAILED' AND user_id IS NULL AND detail LIKE 'corp (account `+linus.User.ID+`)%'`, &n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("%d admin-only SIGN_IN_FAILED events naming the starter, want 1", n)
		}

		// Refusals of linkIdentityStart itself.
		_, challenge := pkce()
		for _, c := range []struct{ provider, redirect, challenge, field string }{
			{"nope", spaURL, challenge, "provider"},
			{"corp", "https://evil.example/", challenge, "redirectTo"},
			{"corp", spaURL, "short", "codeChallenge"},
		} {
			r := s.do(t, call{Token: linus.AccessToken, Query: `mutation($p: String!, $c: String!, $r: String!) { linkIdentityStart(provider: $p, redirectTo: $r, codeChallenge: $c) }`,
				Variables: map[string]any{"p": c.provider, "c": c.challenge, "r": c.redirect}})
			if e := r.wantError(t, "BAD_USER_INPUT", ""); e.Extensions.Field != c.field {
				t.Errorf("field %q, want %q", e.Extensions.Field, c.field)
			}
		}
		s.do(t, call{Query: `mutation($c: String!) { linkIdentityStart(provider: "corp", redirectTo: "` + spaURL + `", codeChallenge: $c) }`,
			Variables: map[string]any{"c": challenge}}).wantError(t, "UNAUTHENTICATED", "MISSING_TOKEN")

		// A link whose session ended before the callback gets no code.
		mary := s.signedInUser(t, "mary")
		authURL, _ := s.linkStart(t, p, mary.AccessToken)
		providerRedirect := p.authorize(t, authURL, "linus")
		s.query(t, mary.AccessToken, `mutation { logout }`, nil)
		if back := s.callback(t, providerRedirect); back.RawQuery != "error=access_denied" {
			t.Errorf("link after logout: %q, want error=access_denied", back.RawQuery)
		}

		// Linus has a password, so the identity can go.
		var unlinked bool
		s.query(t, linus.AccessToken, `mutation { unlinkIdentity(provider: "corp") }`, nil).field(t, "unlinkIdentity", &unlinked)
		if ids := s.identities(t, linus.AccessToken); !unlinked || len(ids) != 0 {
			t.Errorf("after unlinking: %v %v", unlinked, ids)
		}
		if e := s.do(t, call{Token: linus.AccessToken, Query: `mutation { unlinkIdentity(provider: "corp") }`}).wantError(t, "BAD_USER_INPUT", ""); e.Extensions.Field != "provider" {
			t.Errorf("unlinking twice: field %q", e.Extensions.Field)
		}
		events := strings.Join(s.eventTypes(t), ",")
		if strings.Count(events, "IDENTITY_LINKED corp") != 2 || !strings.Contains(events, "IDENTITY_UNLINKED corp") {
			// Linus's link and the other account's sign-up; the relink records nothing.
			t.Errorf("audit: %s", events)
		}
	})
}

// The attack of the security review (issue 21, item 3): Mallory starts a link and sends its URL
// to Victor, who is signed in at the provider. Victor's browser goes through the provider and
// lands on the SPA with the link code; Mallory holds the session and the verifier but never sees
// that code. Whatever Victor's app does with it, nothing is linked to anyone, the code is used
// up, and Mallory redeeming it afterwards (had it leaked from Victor's history) gets nothing.
func TestLinkIdentity_LinkURLOpenedInAnotherBrowserLinksNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-victor", "victor", "victor@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)))
		for i, c := range []struct {
			name string
			// victimsApp is what the app in Victor's browser does with a link code it did not ask for.
			victimsApp func(t *testing.T, code string)
		}{
			{"signed in, redeems it with its own session", func(t *testing.T, code string) {
				victor := s.signedInUser(t, "victor")
				_, ownChallenge := pkce()
				s.completeLink(t, victor.AccessToken, code, ownChallenge).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
				s.completeLink(t, victor.AccessToken, code, "").wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
				if ids := s.identities(t, victor.AccessToken); len(ids) != 0 {
					t.Errorf("Victor's local account got %v", ids)
				}
			}},
			{"signed out, kills it through the public exchange", func(t *testing.T, code string) {
				s.completeLink(t, "", code, "").wantError(t, "UNAUTHENTICATED", "MISSING_TOKEN")
				before := s.snapshot(t)
				s.exchangeCode(t, code, "").wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
				if s.snapshot(t) != before {
					t.Error("a link code started a session at the sign-in exchange")
				}
			}},
		} {
			t.Run(c.name, func(t *testing.T) {
				mallory := s.signedInUser(t, fmt.Sprintf("mallory-%d", i))
				before := s.identityRows(t)
				authURL, verifier := s.linkStart(t, p, mallory.AccessToken)
				back := s.callback(t, p.authorize(t, authURL, "victor")) // Victor's browser
				code := linkCodeOf(t, back)
				if s.identityRows(t) != before {
					t.Fatal("the callback linked the identity")
				}
				c.victimsApp(t, code)
				s.completeLink(t, mallory.AccessToken, code, verifier).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
				if ids := s.identities(t, mallory.AccessToken); len(ids) != 0 || s.identityRows(t) != before {
					t.Errorf("Mallory's account got %v", ids)
				}
				for _, e := range s.securityEvents(t, mallory.AccessToken, nil).events() {
					if e.Type == "IDENTITY_LINKED" || strings.Contains(deref(e.Detail), code) {
						t.Errorf("Mallory's events show %s %q", e.Type, deref(e.Detail))
					}
				}
			})
		}
		// Victor's provider account still belongs to Victor alone: it signs up on its own.
		if got := s.signInThrough(t, p, "victor"); strings.HasPrefix(got.User.Username, "mallory") {
			t.Errorf("Victor's provider account signs in to %s", got.User.Username)
		}
	})
}

func TestCompleteIdentityLink_OnlyTheStartingSessionWithItsVerifierWithinAMinute(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-g", "grace", "grace@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)))
		grace := s.signedInUser(t, "grace")
		henry := s.signedInUser(t, "henry")
		invalid := func(t *testing.T, r response) { t.Helper(); r.wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS") }
		for _, c := range []struct {
			name   string
			redeem func(t *testing.T, code, verifier string) // a refused redemption
		}{
			{"another verifier", func(t *testing.T, code, _ string) {
				other, _ := pkce()
				invalid(t, s.completeLink(t, grace.AccessToken, code, other))
			}},
			{"no verifier", func(t *testing.T, code, _ string) {
				invalid(t, s.completeLink(t, grace.AccessToken, code, ""))
			}},
			{"the challenge instead of its verifier", func(t *testing.T, code, verifier string) {
				sum := sha256.Sum256([]byte(verifier))
				invalid(t, s.completeLink(t, grace.AccessToken, code, base64.RawURLEncoding.EncodeToString(sum[:])))
			}},
			{"expired", func(t *testing.T, code, verifier string) {
				s.Clock.Advance(account.AuthCodeTTL + time.Second)
				invalid(t, s.completeLink(t, grace.AccessToken, code, verifier))
			}},
			{"another session of the same user", func(t *testing.T, code, verifier string) {
				elsewhere := s.login(t, "grace", "correct horse battery")
				invalid(t, s.completeLink(t, elsewhere.AccessToken, code, verifier))
			}},
			{"another user", func(t *testing.T, code, verifier string) {
				invalid(t, s.completeLink(t, henry.AccessToken, code, verifier))
			}},
			{"the sign-in exchange", func(t *testing.T, code, verifier string) {
				invalid(t, s.exchangeCode(t, code, verifier))
			}},
		} {
			t.Run(c.name, func(t *testing.T) {
				before := s.identityRows(t)
				back, verifier := s.linkThrough(t, p, grace.AccessToken, "grace")
				code := linkCodeOf(t, back)
				c.redeem(t, code, verifier)
				// Used up: not even the starting session with the right verifier can use it now.
				invalid(t, s.completeLink(t, grace.AccessToken, code, verifier))
				if s.identityRows(t) != before {
					t.Error("a refused redemption linked something")
				}
			})
		}
		t.Run("two redemptions at once link once", func(t *testing.T) {
			back, verifier := s.linkThrough(t, p, grace.AccessToken, "grace")
			code := linkCodeOf(t, back)
			ok := 0
			for _, r := range inParallel(8, func() response { return s.completeLink(t, grace.AccessToken, code, verifier) }) {
				if len(r.Errors) == 0 {
					ok++
				} else {
					invalid(t, r)
				}
			}
			if ids := s.identities(t, grace.AccessToken); ok != 1 || len(ids) != 1 {
				t.Errorf("%d redemptions succeeded, identities %v; want exactly one", ok, ids)
			}
		})
	})
}

func TestCompleteIdentityLink_LoggedOutSessionLinksNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-j", "joan", "joan@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)))
		joan := s.signedInUser(t, "joan")
		back, verifier := s.linkThrough(t, p, joan.AccessToken, "joan")
		code := linkCodeOf(t, back)
		s.query(t, joan.AccessToken, `mutation { logout }`, nil)
		s.completeLink(t, joan.AccessToken, code, verifier).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		// Signing in again makes another session, which is not the one that started the link.
		again := s.login(t, "joan", "correct horse battery")
		s.completeLink(t, again.AccessToken, code, verifier).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		if ids := s.identities(t, again.AccessToken); len(ids) != 0 {
			t.Errorf("identities: %v", ids)
		}
	})
}

func TestCompleteIdentityLink_SignInCodesLinkNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-i", "ida", "ida@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)))
		kim := s.signedInUser(t, "kim")
		back, verifier := s.providerSignIn(t, p, "ida")
		code := back.Query().Get("code")
		s.completeLink(t, kim.AccessToken, code, verifier).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		s.exchangeCode(t, code, verifier).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS") // used up
		if ids := s.identities(t, kim.AccessToken); len(ids) != 0 {
			t.Errorf("identities: %v", ids)
		}
	})
}

func TestUnlinkIdentity_RefusedWhenItIsTheLastWayToSignIn(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-n", "nopass", "nopass@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)))
		pair := s.signInThrough(t, p, "nopass")

		before := s.snapshot(t)
		s.do(t, call{Token: pair.AccessToken, Query: `mutation { unlinkIdentity(provider: "corp") }`}).wantError(t, "BAD_USER_INPUT", "")
		if s.snapshot(t) != before {
			t.Error("a refused unlink changed something")
		}
		// Two unlinks at once cannot race past the rule either.
		for _, r := range inParallel(4, func() response {
			return s.do(t, call{Token: pair.AccessToken, Query: `mutation { unlinkIdentity(provider: "corp") }`})
		}) {
			r.wantError(t, "BAD_USER_INPUT", "")
		}

		s.do(t, call{Token: pair.AccessToken, Query: `mutation { setPassword(newPassword: "short") }`}).wantError(t, "BAD_USER_INPUT", "")
		s.query(t, pair.AccessToken, `mutation { setPassword(newPassword: "a-first-password") }`, nil)
		if e := s.do(t, call{Token: pair.AccessToken, Query: `mutation { setPassword(newPassword: "a-second-password") }`}).wantError(t, "BAD_USER_INPUT", ""); e.Extensions.Field != "newPassword" {
			t.Errorf("second setPassword: field %q", e.Extensions.Field)
		}
		s.query(t, pair.AccessToken, `mutation { unlinkIdentity(provider: "corp") }`, nil)
		if got := s.login(t, pair.User.Username, "a-first-password"); got.User.ID != pair.User.ID {
			t.Errorf("password login after setPassword: %+v", got.User)
		}
		if !strings.Contains(strings.Join(s.eventTypes(t), ","), "PASSWORD_CHANGED first password set") {
			t.Error("setPassword was not audited")
		}
	})
}

func TestSignIn_DisabledUserIsRefusedAtTheCallback(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-d", "dis", "dis@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)))
		pair := s.signInThrough(t, p, "dis")
		pending, verifier := s.providerSignIn(t, p, "dis") // a code issued before the account is disabled
		admin := s.signedInAdmin(t)
		s.setDisabled(t, admin.AccessToken, pair.User.ID, true)

		back, _ := s.providerSignIn(t, p, "dis")
		if back.RawQuery != "error=access_denied" {
			t.Errorf("the SPA got %q, want error=access_denied", back.RawQuery)
		}
		s.exchangeCode(t, pending.Query().Get("code"), verifier).wantError(t, "FORBIDDEN", "ACCOUNT_DISABLED")
	})
}

func TestSignIn_RefusedWhenSignUpIsDisabledAndTheIdentityIsUnknown(t *testing.T) {
	p := newProvider(t, providerUser("sub-s", "stranger", "stranger@corp.example", true))
	s := newServer(t, storetest.SQLite, withOIDC(p.oidcConfig(nil)), withSignupDisabled())
	if back, _ := s.providerSignIn(t, p, "stranger"); back.RawQuery != "error=access_denied" {
		t.Errorf("the SPA got %q, want error=access_denied", back.RawQuery)
	}
}

func TestSignIn_SecondInstanceFinishesAFlowTheFirstStarted(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-2", "twin", "twin@corp.example", true))
		name := storetest.NewName(t, kind)
		dbA, dbB := storetest.OpenShared(t, kind, name), storetest.OpenShared(t, kind, name)
		for _, db := range []interface{ Migrate(context.Context) error }{dbA, dbB} {
			if err := db.Migrate(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		clk := &clock{now: time.Now().UTC()}
		a := newServerOn(t, dbA, clk, withOIDC(p.oidcConfig(nil)))
		b := newServerOn(t, dbB, clk, withOIDC(p.oidcConfig(nil)), withPublicURL(a.URL)) // behind one PUBLIC_URL

		verifier, challenge := pkce()
		_, start, _ := get(t, a.startURL(spaURL, challenge))
		back := b.callback(t, p.authorize(t, start, "twin"))
		var got tokens
		a.exchangeCode(t, back.Query().Get("code"), verifier).field(t, "exchangeAuthCode", &got)
		if r := b.me(t, got.AccessToken); len(r.Errors) > 0 {
			t.Error(r.Errors)
		}
	})
}

func TestSignIn_StartAndCallbackAreRateLimited(t *testing.T) {
	p := newProvider(t, providerUser("sub-r", "rate", "rate@corp.example", true))
	clk := &clock{now: time.Now().UTC()}
	s := newServerOn(t, storetest.Open(t, storetest.SQLite), clk, withOIDC(p.oidcConfig(nil)), withRateLimits(account.Limits{
		Counter: ratelimit.NewMemory(clk.Now), PerClient: 3, ClientWindow: time.Minute,
	}))
	_, challenge := pkce()
	_, start, _ := get(t, s.startURL(spaURL, challenge)) // 1
	providerRedirect := p.authorize(t, start, "rate")
	get(t, s.startURL(spaURL, challenge)) // 2
	get(t, s.startURL(spaURL, challenge)) // 3
	if status, _, _ := get(t, s.startURL(spaURL, challenge)); status != http.StatusTooManyRequests {
		t.Errorf("fourth start: %d, want 429", status)
	}
	u, _ := url.Parse(providerRedirect)
	if status, _, _ := get(t, s.URL+u.RequestURI()); status != http.StatusTooManyRequests {
		t.Errorf("callback over the limit: %d, want 429", status)
	}
}

func TestSignIn_ProvidersAreListedForClients(t *testing.T) {
	p := newProvider(t)
	s := newServer(t, storetest.SQLite, withOIDC(p.oidcConfig(nil)))
	res, err := http.Get(s.URL + "/auth/providers")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var got struct{ Providers []string }
	json.NewDecoder(res.Body).Decode(&got)
	if len(got.Providers) != 1 || got.Providers[0] != "corp" {
		t.Errorf("providers: %v", got.Providers)
	}
}

func TestSignIn_ProviderRefusalReachesTheSPAAsAnRFC6749Code(t *testing.T) {
	p := newProvider(t)
	s := newServer(t, storetest.SQLite, withOIDC(p.oidcConfig(nil)))
	for answer, want := range map[string]string{
		"access_denied":             "error=access_denied",
		"temporarily_unavailable":   "error=temporarily_unavailable",
		"interaction_required":      "error=access_denied",
		"<script>alert(1)</script>": "error=access_denied",
	} {
		_, challenge := pkce()
		_, start, _ := get(t, s.startURL(spaURL, challenge))
		u, _ := url.Parse(start)
		// The user cancelled at the provider, which sends the browser back with an error.
		status, loc, _ := get(t, s.URL+"/auth/corp/callback?"+url.Values{"state": {u.Query().Get("state")}, "error": {answer}}.Encode())
		if status != http.StatusFound || loc != spaURL+"?"+want {
			t.Errorf("provider said %q: %d %q, want a redirect with %s", answer, status, loc, want)
		}
	}
}

func TestSignIn_SeveralAudiencesAreAcceptedWhenAzpIsOurClient(t *testing.T) {
	p := newProvider(t, providerUser("sub-a", "azp", "azp@corp.example", true))
	s := newServer(t, storetest.SQLite, withOIDC(p.oidcConfig(nil)))
	p.tamper.Store(&idTokenTamper{claims: func(c map[string]any) {
		c["aud"], c["azp"] = []string{providerClientID, "another-client"}, providerClientID
	}})
	if back, _ := s.providerSignIn(t, p, "azp"); back.Query().Get("code") == "" {
		t.Errorf("the SPA got %q, want a code", back.RawQuery)
	}
}
