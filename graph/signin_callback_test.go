package graph_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"gqlauth/account"
	"gqlauth/oidc"
	"gqlauth/ratelimit"
	"gqlauth/store/storetest"
)

// What the start and the callback of a provider sign-in refuse, and how (CONTRACT §10).

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
