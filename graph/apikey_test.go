package graph_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"gqlauth/store/storetest"
)

type apiKey struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	Prefix     string  `json:"prefix"`
	Role       string  `json:"role"`
	CreatedAt  string  `json:"createdAt"`
	LastUsedAt *string `json:"lastUsedAt"`
	ExpiresAt  string  `json:"expiresAt"`
}

type apiKeySecret struct {
	Secret string `json:"secret"`
	APIKey apiKey `json:"apiKey"`
}

const createKey = `mutation($n: String!, $r: Role, $e: Int) { createApiKey(name: $n, role: $r, expiresIn: $e) { secret apiKey { id name prefix role createdAt lastUsedAt expiresAt } } }`

func (s *server) createAPIKey(t *testing.T, token, name string, role any) apiKeySecret {
	t.Helper()
	var k apiKeySecret
	s.query(t, token, createKey, map[string]any{"n": name, "r": role}).field(t, "createApiKey", &k)
	return k
}

// withKey calls query with an API key in X-API-Key.
func (s *server) withKey(t *testing.T, key, query string) response {
	t.Helper()
	return s.do(t, call{Query: query, Header: http.Header{"X-Api-Key": {key}}})
}

func TestAPIKey_CreateUseListRevoke(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		k := s.createAPIKey(t, alice.AccessToken, "ci deploys", nil)
		if !strings.HasPrefix(k.Secret, "gqa_") || len(k.Secret) < 4+43 || !strings.HasPrefix(k.Secret, k.APIKey.Prefix) || len(k.APIKey.Prefix) != 12 {
			t.Fatalf("secret %q / prefix %q", k.Secret, k.APIKey.Prefix)
		}
		if k.APIKey.Role != "USER" || k.APIKey.Name != "ci deploys" {
			t.Fatalf("key: %+v", k.APIKey)
		}
		exp, _ := time.Parse(time.RFC3339Nano, k.APIKey.ExpiresAt)
		if d := exp.Sub(s.Clock.Now()); d < 89*24*time.Hour || d > 91*24*time.Hour {
			t.Fatalf("default lifetime: %v", d)
		}

		for name, r := range map[string]response{
			"X-API-Key": s.withKey(t, k.Secret, `{ me { username } }`),
			"Bearer":    s.do(t, call{Query: `{ me { username } }`, Token: k.Secret}),
		} {
			var me user
			if len(r.Errors) > 0 {
				t.Fatalf("%s: %+v", name, r.Errors)
			}
			r.field(t, "me", &me)
			if me.Username != "alice" {
				t.Fatalf("%s: me %+v", name, me)
			}
		}

		var keys []map[string]any
		r := s.query(t, alice.AccessToken, `{ apiKeys { id name prefix role createdAt lastUsedAt expiresAt } }`, nil)
		r.field(t, "apiKeys", &keys)
		if len(keys) != 1 || keys[0]["id"] != k.APIKey.ID {
			t.Fatalf("apiKeys: %+v", keys)
		}
		if raw := string(r.Data["apiKeys"]); strings.Contains(raw, k.Secret[len(k.APIKey.Prefix):]) {
			t.Fatal("apiKeys shows the secret")
		}

		s.query(t, alice.AccessToken, `mutation($id: ID!) { revokeApiKey(id: $id) }`, map[string]any{"id": k.APIKey.ID})
		s.withKey(t, k.Secret, `{ me { id } }`).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		s.query(t, alice.AccessToken, `{ apiKeys { id } }`, nil).field(t, "apiKeys", &keys)
		if len(keys) != 0 {
			t.Fatalf("a revoked key is listed: %+v", keys)
		}
		s.do(t, call{Query: `mutation($id: ID!) { revokeApiKey(id: $id) }`, Token: alice.AccessToken, Variables: map[string]any{"id": k.APIKey.ID}}).
			wantError(t, "NOT_FOUND", "")
	})
}

func TestAPIKey_RoleIsCappedByOwnerAndKey(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		admin := s.signedInAdmin(t)
		userKey := s.createAPIKey(t, admin.AccessToken, "read only", "USER")
		adminKey := s.createAPIKey(t, admin.AccessToken, "full", nil)
		if adminKey.APIKey.Role != "ADMIN" {
			t.Fatalf("default role: %s", adminKey.APIKey.Role)
		}
		s.withKey(t, userKey.Secret, `{ users { id } }`).wantError(t, "FORBIDDEN", "INSUFFICIENT_ROLE")
		s.query(t, "", `{ __typename }`, nil)
		if r := s.withKey(t, adminKey.Secret, `{ users { id } }`); len(r.Errors) > 0 {
			t.Fatalf("admin key: %+v", r.Errors)
		}
		// Demote the owner: the ADMIN key is now worth a USER.
		s.query(t, admin.AccessToken, `mutation($id: ID!) { setUserRole(id: $id, role: USER) { id } }`, map[string]any{"id": admin.User.ID})
		s.withKey(t, adminKey.Secret, `{ users { id } }`).wantError(t, "FORBIDDEN", "INSUFFICIENT_ROLE")
		// And a USER cannot mint an ADMIN key.
		alice := s.signedInUser(t, "alice")
		r := s.do(t, call{Query: createKey, Token: alice.AccessToken, Variables: map[string]any{"n": "escalate", "r": "ADMIN"}})
		if e := r.wantError(t, "BAD_USER_INPUT", ""); e.Extensions.Field != "role" {
			t.Fatalf("field %q", e.Extensions.Field)
		}
	})
}

func TestAPIKey_DisabledOwnerRefused(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		admin := s.signedInAdmin(t)
		alice := s.signedInUser(t, "alice")
		k := s.createAPIKey(t, alice.AccessToken, "laptop", nil)
		s.setDisabled(t, admin.AccessToken, alice.User.ID, true)
		s.withKey(t, k.Secret, `{ me { id } }`).wantError(t, "FORBIDDEN", "ACCOUNT_DISABLED")
		// Re-enabling does not revive the key: disabling revoked it.
		s.setDisabled(t, admin.AccessToken, alice.User.ID, false)
		s.withKey(t, k.Secret, `{ me { id } }`).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
	})
}

func TestAPIKey_ExpiredKeyRefused(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		var k apiKeySecret
		s.query(t, alice.AccessToken, createKey, map[string]any{"n": "short", "e": 120}).field(t, "createApiKey", &k)
		s.query(t, "", `{ __typename }`, nil)
		if r := s.withKey(t, k.Secret, `{ me { id } }`); len(r.Errors) > 0 {
			t.Fatal(r.Errors)
		}
		s.Clock.Advance(121 * time.Second)
		s.withKey(t, k.Secret, `{ me { id } }`).wantError(t, "UNAUTHENTICATED", "TOKEN_EXPIRED")
	})
}

func TestAPIKey_CannotDoSessionOnlyOperations(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		k := s.createAPIKey(t, alice.AccessToken, "bot", nil)
		for name, q := range map[string]string{
			"createApiKey":   `mutation { createApiKey(name: "more") { secret } }`,
			"changePassword": `mutation { changePassword(currentPassword: "correct horse battery", newPassword: "another password") }`,
			"logout":         `mutation { logout }`,
		} {
			t.Run(name, func(t *testing.T) {
				s.withKey(t, k.Secret, q).wantError(t, "FORBIDDEN", "")
			})
		}
		s.login(t, "alice", "correct horse battery") // the password did not change
	})
}

func TestAPIKey_BadKeysRefusedWithReason(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		k := s.createAPIKey(t, alice.AccessToken, "bot", nil)
		unknown := k.Secret[:len(k.Secret)-4] + "AAAA"
		if unknown == k.Secret {
			unknown = k.Secret[:len(k.Secret)-4] + "BBBB"
		}
		for name, c := range map[string]call{
			"Unknown":          {Query: `{ me { id } }`, Header: http.Header{"X-Api-Key": {unknown}}},
			"Malformed":        {Query: `{ me { id } }`, Header: http.Header{"X-Api-Key": {"gqa_short"}}},
			"NoPrefix":         {Query: `{ me { id } }`, Header: http.Header{"X-Api-Key": {strings.TrimPrefix(k.Secret, "gqa_") + "xxxx"}}},
			"UnknownAsBearer":  {Query: `{ me { id } }`, Token: unknown},
			"KeyAndBearerBoth": {Query: `{ me { id } }`, Token: alice.AccessToken, Header: http.Header{"X-Api-Key": {k.Secret}}},
		} {
			t.Run(name, func(t *testing.T) {
				s.do(t, c).wantError(t, "UNAUTHENTICATED", "INVALID_TOKEN")
			})
		}
	})
}

func TestAPIKey_StoredOnlyAsHash(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		k := s.createAPIKey(t, alice.AccessToken, "bot", nil)
		rows, err := s.DB.DumpTable(context.Background(), "api_keys")
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1 {
			t.Fatalf("rows: %d", len(rows))
		}
		secretPart := strings.TrimPrefix(k.Secret, k.APIKey.Prefix)
		for col, v := range rows[0] {
			if strings.Contains(v, secretPart) {
				t.Fatalf("column %s holds the secret", col)
			}
		}
	})
}

func TestAPIKey_OneQueryPerRequest(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		k := s.createAPIKey(t, alice.AccessToken, "bot", nil)
		s.withKey(t, k.Secret, `{ me { id } }`) // records lastUsedAt (at most once a minute)
		time.Sleep(50 * time.Millisecond)
		s.Queries.n.Store(0)
		s.withKey(t, k.Secret, `{ me { id } a: me { id } b: me { username } }`)
		if got := s.Queries.n.Load(); got != 1 {
			t.Fatalf("%d queries, want 1", got)
		}
	})
}
