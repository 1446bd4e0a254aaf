package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"gqlauth/store/storetest"
)

// getJSON fetches url and decodes its JSON body into a map.
func getJSON(t *testing.T, url string) (map[string]any, http.Header) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, res.StatusCode)
	}
	var out map[string]any
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out, res.Header
}

func TestJWKS_PublicKeysOnlyWithCacheHeaders(t *testing.T) {
	for _, c := range []struct {
		alg, kty string
		members  []string
	}{
		{"HS256", "", nil},
		{"ES256", "EC", []string{"crv", "x", "y"}},
		{"EdDSA", "OKP", []string{"crv", "x"}},
		{"RS256", "RSA", []string{"n", "e"}},
	} {
		for _, kind := range storetest.Kinds(t) {
			t.Run(c.alg+"/"+string(kind), func(t *testing.T) { testJWKS(t, kind, c.alg, c.kty, c.members) })
		}
	}
}

func testJWKS(t *testing.T, kind storetest.Kind, alg, kty string, members []string) {
	vars, _, _ := databaseVars(t, kind)
	base := start(t, t.TempDir(), append(vars, "JWT_ALG", alg, "JWKS_MAX_AGE", "5m")...)
	set, h := getJSON(t, base+"/.well-known/jwks.json")
	if got := h.Get("Cache-Control"); got != "public, max-age=300" {
		t.Fatalf("Cache-Control %q", got)
	}
	keys, _ := set["keys"].([]any)
	if alg == "HS256" {
		if keys == nil || len(keys) != 0 {
			t.Fatalf("HS256 publishes %v; its key is a secret", set)
		}
		return
	}
	if len(keys) != 1 {
		t.Fatalf("keys: %v", set)
	}
	k := keys[0].(map[string]any)
	if k["kty"] != kty || k["alg"] != alg || k["use"] != "sig" || k["kid"] == "" {
		t.Fatalf("key: %v", k)
	}
	for _, m := range members {
		if s, _ := k[m].(string); s == "" {
			t.Fatalf("key lacks %s: %v", m, k)
		}
	}
	for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k", "oth"} {
		if _, ok := k[private]; ok {
			t.Fatalf("the key set holds the private member %q", private)
		}
	}
}

func TestMetadata_NamesTheEndpointsUnderPublicURL(t *testing.T) {
	for name, c := range map[string]struct{ publicURL, wantBase, cache string }{
		"PublicURL": {"https://auth.example.com/", "https://auth.example.com", "public, max-age=600"},
		// Built from the request's Host header: never for a shared cache.
		"RequestHost": {"", "", "no-store"},
	} {
		t.Run(name, func(t *testing.T) {
			vars := []string{"JWT_ISSUER", "https://issuer.example.com"}
			if c.publicURL != "" {
				vars = append(vars, "PUBLIC_URL", c.publicURL)
			}
			base := start(t, t.TempDir(), vars...)
			want := c.wantBase
			if want == "" {
				want = base
			}
			m, h := getJSON(t, base+"/.well-known/oauth-authorization-server")
			for field, value := range map[string]string{
				"issuer": "https://issuer.example.com", "jwks_uri": want + "/.well-known/jwks.json",
				"token_endpoint": want + "/oauth/token", "introspection_endpoint": want + "/oauth/introspect",
			} {
				if m[field] != value {
					t.Fatalf("%s: got %v, want %s", field, m[field], value)
				}
			}
			if grants, _ := m["grant_types_supported"].([]any); len(grants) != 2 || h.Get("Content-Type") != "application/json" || h.Get("Cache-Control") != c.cache {
				t.Fatalf("metadata: %v", m)
			}
		})
	}
}

type introspection struct {
	status int
	header http.Header
	body   map[string]any
}

func introspect(t *testing.T, base, credentialHeader, credential, token string) introspection {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/oauth/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if credential != "" {
		req.Header.Set(credentialHeader, credential)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out := introspection{status: res.StatusCode, header: res.Header}
	json.NewDecoder(res.Body).Decode(&out.body)
	return out
}

func TestIntrospection_ActiveOnlyForALiveSessionOfAnEnabledUser(t *testing.T) {
	for _, kind := range storetest.Kinds(t) {
		t.Run(string(kind), func(t *testing.T) {
			vars, _, _ := databaseVars(t, kind)
			secret := strings.Repeat("k", 32)
			base := start(t, t.TempDir(), append(vars, "JWT_SECRET", secret, "JWT_ALG", "ES256",
				"ADMIN_USERNAME", "root", "ADMIN_PASSWORD", "correct horse battery")...)
			login := func(name string) string {
				return accessToken(t, graphql(t, base, "", `mutation { login(username: "`+name+`", password: "correct horse battery") { accessToken } }`), "login")
			}
			apiKey := func(token string) string {
				out := graphql(t, base, token, `mutation { createApiKey(name: "introspection") { secret } }`)
				return out["data"].(map[string]any)["createApiKey"].(map[string]any)["secret"].(string)
			}
			root := login("root")
			adminKey := apiKey(root)
			for _, name := range []string{"alice", "bob"} {
				graphql(t, base, root, `mutation { createUser(username: "`+name+`", password: "correct horse battery") { id } }`)
			}
			userKey := apiKey(login("alice"))

			live := login("alice")
			loggedOut := login("alice")
			graphql(t, base, loggedOut, `mutation { logout }`)
			disabled := login("bob")
			bobID := graphql(t, base, disabled, `{ me { id } }`)["data"].(map[string]any)["me"].(map[string]any)["id"].(string)
			graphql(t, base, root, `mutation { setUserDisabled(id: "`+bobID+`", disabled: true) { id } }`)
			claims := jwt.MapClaims{}
			jwt.NewParser().ParseUnverified(live, claims)
			claims["exp"], claims["iat"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-2*time.Hour).Unix()
			expiredTok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
			expiredTok.Header["typ"] = "at+jwt"
			expired, _ := expiredTok.SignedString([]byte(secret)) // HS256 in ES256 mode: never valid

			r := introspect(t, base, "X-API-Key", adminKey, live)
			if r.status != 200 || r.body["active"] != true || r.body["username"] != "alice" || r.body["role"] != "USER" ||
				r.body["token_type"] != "access_token" || r.body["sub"] == nil || r.body["sid"] == nil || r.body["exp"] == nil ||
				r.body["iss"] != "gqlauth" || r.header.Get("Cache-Control") != "no-store" {
				t.Fatalf("live token: %d %v %v", r.status, r.body, r.header)
			}
			if r := introspect(t, base, "Authorization", "Bearer "+adminKey, live); r.body["active"] != true {
				t.Fatalf("API key as a Bearer token: %v", r.body)
			}
			for name, token := range map[string]string{
				"LoggedOut": loggedOut, "Disabled": disabled, "Expired": expired, "Garbage": "not.a.token", "Refresh": "x.y",
			} {
				t.Run(name, func(t *testing.T) {
					r := introspect(t, base, "X-API-Key", adminKey, token)
					if r.status != 200 || len(r.body) != 1 || r.body["active"] != false {
						t.Fatalf("got %d %v, want exactly {\"active\": false}", r.status, r.body)
					}
				})
			}
			for name, c := range map[string]struct{ header, value string }{
				"NoCredential":      {"", ""},
				"UsersAPIKey":       {"X-API-Key", userKey},
				"AdminAccessToken":  {"Authorization", "Bearer " + root},
				"UnknownAPIKey":     {"X-API-Key", "gqa_" + strings.Repeat("A", 43)},
				"MalformedAPIKey":   {"X-API-Key", "gqa_short"},
				"AdminKeyAsWrongHd": {"Authorization", "Basic " + adminKey},
			} {
				t.Run("Refused/"+name, func(t *testing.T) {
					r := introspect(t, base, c.header, c.value, live)
					if r.status != 401 || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") || r.body["active"] != nil {
						t.Fatalf("got %d %v %v", r.status, r.body, r.header)
					}
				})
			}
		})
	}
}
