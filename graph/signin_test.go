package graph_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"gqlauth/account"
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
