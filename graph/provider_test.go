package graph_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/storage"

	"gqlauth/e2e/oidcprovider"
	"gqlauth/oidc"
)

// provider is a real OpenID provider in the test process: zitadel/oidc's op package with its
// example storage and login form, on its own listener. Only the users are ours.
type provider struct {
	Issuer  string
	ts      *httptest.Server
	users   oidcprovider.Users
	storage *storage.Storage
	once    sync.Once
	// tamper, when set, rewrites the ID token of the token endpoint's next answers, as a provider
	// that misbehaves (or an attacker between us and it) would.
	tamper atomic.Pointer[idTokenTamper]
}

type idTokenTamper struct {
	claims     func(map[string]any) // change claims and re-sign with the provider's key
	foreignKey bool                 // sign with a key the provider never published, under its kid
}

const (
	providerClientID     = "gqlauth-test"
	providerClientSecret = "provider-client-secret-never-in-a-url"
	providerPassword     = "provider-password"
)

// providerUser is an account at the provider; its subject is its id.
func providerUser(id, username, email string, verified bool) *storage.User {
	return &storage.User{ID: id, Username: username, Password: providerPassword, FirstName: "Test", LastName: id,
		Email: email, EmailVerified: verified}
}

// newProvider makes a provider with these users; it starts serving once a server registers its
// callback (oidcConfig).
func newProvider(t testing.TB, users ...*storage.User) *provider {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	p := &provider{Issuer: "http://" + ts.Listener.Addr().String(), ts: ts, users: oidcprovider.Users{}}
	for _, u := range users {
		p.users[u.ID] = u
	}
	t.Cleanup(func() {
		if ts.URL != "" {
			ts.Close()
		}
	})
	return p
}

// oidcConfig registers publicURL's callback as the client's only redirect URI, starts the
// provider, and returns the configuration of a server that signs in through it as "corp".
func (p *provider) oidcConfig(extra func(*oidc.Config)) func(publicURL string) oidc.Config {
	return func(publicURL string) oidc.Config {
		p.once.Do(func() {
			var h http.Handler
			h, p.storage = oidcprovider.New(p.Issuer, p.users, providerClientID, providerClientSecret, publicURL+"/auth/corp/callback", nil)
			p.ts.Config.Handler = p.intercept(h)
			p.ts.Start()
		})
		cfg := oidc.Config{
			Providers: []oidc.Provider{{Name: "corp", Issuer: p.Issuer, ClientID: providerClientID,
				ClientSecret: providerClientSecret, Scopes: []string{"openid", "email", "profile"}}},
			PublicURL:    publicURL,
			RedirectURLs: []string{spaURL},
		}
		if extra != nil {
			extra(&cfg)
		}
		return cfg
	}
}

// spaURL is the one redirect target the test servers allow (besides their own playground).
const spaURL = "https://app.example.com/signed-in"

// intercept applies p.tamper to the token endpoint's ID tokens.
func (p *provider) intercept(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tp := p.tamper.Load()
		if tp == nil || r.URL.Path != "/oauth/token" {
			next.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		var body map[string]any
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &body) != nil {
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			return
		}
		parts := strings.Split(body["id_token"].(string), ".")
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		var claims map[string]any
		json.Unmarshal(payload, &claims)
		if tp.claims != nil {
			tp.claims(claims)
		}
		key, _ := p.storage.SigningKey(r.Context())
		var signWith any = key.Key()
		if tp.foreignKey {
			signWith, _ = rsa.GenerateKey(rand.Reader, 2048)
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: signWith},
			(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", key.ID()))
		if err != nil {
			panic(err)
		}
		raw, _ := json.Marshal(claims)
		signed, _ := signer.Sign(raw)
		body["id_token"], _ = signed.CompactSerialize()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(body)
	})
}

// noRedirects is a cookie-less client that shows each redirect instead of following it.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// get sends a GET and returns the status, the Location header and the body.
func get(t testing.TB, target string) (int, string, string) {
	t.Helper()
	res, err := noRedirects.Get(target)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header.Get("Location"), string(body)
}

// pkce returns a fresh verifier and its S256 challenge, as the SPA makes them.
func pkce() (verifier, challenge string) {
	b := make([]byte, 32)
	rand.Read(b)
	verifier = base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

// startURL is the SPA's link to start signing in through corp.
func (s *server) startURL(redirectTo, challenge string) string {
	return s.URL + "/auth/corp/start?" + url.Values{"redirect_to": {redirectTo}, "code_challenge": {challenge}}.Encode()
}

// authorize follows an authorization URL at the provider and signs in there as username with the
// login form, like a browser without cookies. It returns the provider's redirect to our callback.
func (p *provider) authorize(t testing.TB, authURL, username string) string {
	t.Helper()
	status, loc, body := get(t, authURL)
	if status != http.StatusFound {
		t.Fatalf("provider's authorize: %d %s", status, body)
	}
	login, _ := url.Parse(loc) // relative or absolute: only its query matters
	id := login.Query().Get("authRequestID")
	res, err := noRedirects.PostForm(p.Issuer+"/login/username", url.Values{"username": {username}, "password": {providerPassword}, "id": {id}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusFound {
		t.Fatalf("provider's login form: %d", res.StatusCode)
	}
	next, _ := res.Request.URL.Parse(res.Header.Get("Location"))
	status, loc, body = get(t, next.String())
	if status != http.StatusFound || !strings.Contains(loc, "/auth/corp/callback?") {
		t.Fatalf("provider's callback redirect: %d %q %s", status, loc, body)
	}
	return loc
}

// callback delivers the provider's redirect to instance s (whatever host it names, as a load
// balancer would) and returns where s sends the browser, parsed.
func (s *server) callback(t testing.TB, providerRedirect string) *url.URL {
	t.Helper()
	u, _ := url.Parse(providerRedirect)
	status, loc, body := get(t, s.URL+u.RequestURI())
	if status != http.StatusFound {
		t.Fatalf("callback: %d %s", status, body)
	}
	back, err := url.Parse(loc)
	if err != nil || !strings.HasPrefix(loc, spaURL+"?") {
		t.Fatalf("callback redirected to %q, not to the SPA", loc)
	}
	return back
}

// providerSignIn runs the browser's part of a sign-in through corp as username and returns the
// SPA's URL it ends on and the PKCE verifier of the flow.
func (s *server) providerSignIn(t testing.TB, p *provider, username string) (*url.URL, string) {
	t.Helper()
	verifier, challenge := pkce()
	status, loc, body := get(t, s.startURL(spaURL, challenge))
	if status != http.StatusFound {
		t.Fatalf("start: %d %s", status, body)
	}
	return s.callback(t, p.authorize(t, loc, username)), verifier
}

// exchangeCode redeems a one-time code through GraphQL.
func (s *server) exchangeCode(t testing.TB, code, verifier string) response {
	t.Helper()
	return s.do(t, call{Query: `mutation($c: String!, $v: String!) { exchangeAuthCode(code: $c, codeVerifier: $v) {
		accessToken refreshToken user { id username email } } }`, Variables: map[string]any{"c": code, "v": verifier}})
}

// signInThrough signs in through corp as username, all the way to a token pair.
func (s *server) signInThrough(t testing.TB, p *provider, username string) tokens {
	t.Helper()
	back, verifier := s.providerSignIn(t, p, username)
	if back.Query().Get("code") == "" {
		t.Fatalf("sign-in ended with %s", back.RawQuery)
	}
	var out tokens
	s.exchangeCode(t, back.Query().Get("code"), verifier).field(t, "exchangeAuthCode", &out)
	return out
}

// linkStart calls linkIdentityStart for corp as the holder of token, with a fresh PKCE pair, and
// returns the provider's authorization URL and the verifier, as the SPA keeps it.
func (s *server) linkStart(t testing.TB, p *provider, token string) (authURL, verifier string) {
	t.Helper()
	verifier, challenge := pkce()
	s.query(t, token, `mutation($c: String!, $r: String!) { linkIdentityStart(provider: "corp", redirectTo: $r, codeChallenge: $c) }`,
		map[string]any{"c": challenge, "r": spaURL}).field(t, "linkIdentityStart", &authURL)
	if !strings.HasPrefix(authURL, p.Issuer+"/") {
		t.Fatalf("linkIdentityStart returned %q, want the provider's authorization URL", authURL)
	}
	return authURL, verifier
}

// linkThrough starts a link as the holder of token, and plays the browser that signs in at the
// provider as username. It returns where the callback sends that browser and the verifier.
func (s *server) linkThrough(t testing.TB, p *provider, token, username string) (*url.URL, string) {
	t.Helper()
	authURL, verifier := s.linkStart(t, p, token)
	return s.callback(t, p.authorize(t, authURL, username)), verifier
}

// linkCodeOf returns the one-time code of a link's return to the SPA, which must carry nothing else.
func linkCodeOf(t testing.TB, back *url.URL) string {
	t.Helper()
	if len(back.Query()) != 1 || back.Query().Get("link_code") == "" {
		t.Fatalf("the SPA got %q, want only ?link_code=", back.RawQuery)
	}
	return back.Query().Get("link_code")
}

// completeLink redeems a link code through GraphQL as the holder of token ("": nobody).
func (s *server) completeLink(t testing.TB, token, code, verifier string) response {
	t.Helper()
	return s.do(t, call{Token: token, Query: `mutation($c: String!, $v: String!) { completeIdentityLink(code: $c, codeVerifier: $v) {
		provider subject email linkedAt } }`, Variables: map[string]any{"c": code, "v": verifier}})
}

// identityRows is every stored identity, as text: what a link writes.
func (s *server) identityRows(t testing.TB) string {
	t.Helper()
	rows, err := s.DB.DumpTable(context.Background(), "identities")
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(rows)
}
