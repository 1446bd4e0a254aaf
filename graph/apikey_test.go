package graph_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"gqlauth/account"
	"gqlauth/model"
	"gqlauth/store"
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
		s.withKey(t, k.Secret, `{ me { id } }`) // records lastUsedAt (at most once a minute), in the background
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if rows, err := s.DB.DumpTable(context.Background(), "api_keys"); err == nil && rows[0]["last_used_at"] != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("lastUsedAt was not recorded")
			}
		}
		// The recording's transaction may still be finishing (its commit, on Postgres its wait for
		// the principal caches): a query of it counted in the window is not the request's, so the
		// measurement is taken again, a few times at most, on a loaded machine.
		for try := 0; ; try++ {
			s.Queries.n.Store(0)
			s.withKey(t, k.Secret, `{ me { id } a: me { id } b: me { username } }`)
			got := s.Queries.n.Load()
			if got <= 1 { // 0 when the principal cache answers
				break
			}
			if try == 5 {
				t.Fatalf("%d queries, want at most 1", got)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// createKeysAtOnce sends n createApiKey calls with token at once, spread over servers, and
// returns how many created a key; every refusal must be the cap's BAD_USER_INPUT on name.
func createKeysAtOnce(t *testing.T, servers []*server, token string, n int) int {
	t.Helper()
	var next atomic.Int64
	results := inParallel(n, func() response {
		i := next.Add(1)
		s := servers[int(i)%len(servers)]
		return s.do(t, call{Query: createKey, Token: token, Variables: map[string]any{"n": fmt.Sprintf("key %d", i)}})
	})
	created := 0
	for _, r := range results {
		if len(r.Errors) == 0 {
			created++
			continue
		}
		if e := r.wantError(t, "BAD_USER_INPUT", ""); e.Extensions.Field != "name" || !strings.Contains(e.Message, "too many API keys") {
			t.Fatalf("refusal: %+v", e)
		}
	}
	return created
}

// keyRowsAndEvents counts the stored API keys and the API_KEY_CREATED events.
func keyRowsAndEvents(t *testing.T, s *server) (keys, created int) {
	t.Helper()
	rows, err := s.DB.DumpTable(context.Background(), "api_keys")
	if err != nil {
		t.Fatal(err)
	}
	events, err := s.DB.DumpTable(context.Background(), "audit_events")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if e["type"] == "API_KEY_CREATED" {
			created++
		}
	}
	return len(rows), created
}

func TestAPIKey_CapHoldsUnderConcurrentCreation(t *testing.T) {
	cases := []struct {
		name      string
		instances int
		before    int // keys created one by one first
		revoked   int // of which revoked (they do not count)
		atOnce    int
	}{
		{"EightyAtOnce", 1, 0, 0, 80},
		// Two instances at full demand would hold 2 × 49 Postgres connections, the test database's
		// whole budget: thirty at once, twenty of them allowed, contend as well.
		{"ThirtyAtOnceOnTwoInstances", 2, 30, 0, 30},
		{"TwentyAtOnceNearTheCap", 1, 45, 0, 20},
		{"RevokedKeysFreeTheirPlaces", 1, 50, 3, 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
				var servers []*server
				if c.instances == 2 {
					a, b := twoInstances(t, kind)
					servers = []*server{a, b}
				} else {
					servers = []*server{newServer(t, kind)}
				}
				s := servers[0]
				alice := s.signedInUser(t, "alice")
				for i := range c.before {
					k := s.createAPIKey(t, alice.AccessToken, fmt.Sprintf("earlier %d", i), nil)
					if i < c.revoked {
						s.query(t, alice.AccessToken, `mutation($id: ID!) { revokeApiKey(id: $id) }`, map[string]any{"id": k.APIKey.ID})
					}
				}
				free := account.MaxAPIKeysPerUser - (c.before - c.revoked)
				if got := createKeysAtOnce(t, servers, alice.AccessToken, c.atOnce); got != free {
					t.Fatalf("%d of %d concurrent creations succeeded, want %d (cap %d, %d live before)",
						got, c.atOnce, free, account.MaxAPIKeysPerUser, c.before-c.revoked)
				}
				var live []apiKey
				s.query(t, alice.AccessToken, `{ apiKeys { id } }`, nil).field(t, "apiKeys", &live)
				rows, events := keyRowsAndEvents(t, s)
				if len(live) != account.MaxAPIKeysPerUser || rows != account.MaxAPIKeysPerUser+c.revoked || events != rows {
					t.Fatalf("%d live keys, %d rows, %d API_KEY_CREATED events; want %d, %d, %d",
						len(live), rows, events, account.MaxAPIKeysPerUser, account.MaxAPIKeysPerUser+c.revoked, account.MaxAPIKeysPerUser+c.revoked)
				}
			})
		})
	}
}

func TestAPIKey_SweepDeletesRevokedAndExpiredKeysAfterTheGracePeriodOnly(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		root := s.signedInAdmin(t)
		alice := s.signedInUser(t, "alice")
		bob := s.signedInUser(t, "bob")
		create := func(who tokens, name string, expiresIn any) apiKeySecret {
			t.Helper()
			var k apiKeySecret
			s.query(t, who.AccessToken, createKey, map[string]any{"n": name, "e": expiresIn}).field(t, "createApiKey", &k)
			return k
		}
		revoke := func(who tokens, k apiKeySecret) {
			t.Helper()
			s.query(t, who.AccessToken, `mutation($id: ID!) { revokeApiKey(id: $id) }`, map[string]any{"id": k.APIKey.ID})
		}
		sweep := func(want int) {
			t.Helper()
			n, err := s.Service.SweepAPIKeys(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if n != want {
				t.Fatalf("swept %d keys, want %d", n, want)
			}
		}
		stored := func() []string {
			t.Helper()
			rows, err := s.DB.DumpTable(context.Background(), "api_keys")
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, r := range rows {
				names = append(names, r["name"])
			}
			slices.Sort(names)
			return names
		}

		live := create(alice, "live", nil) // 90 days
		revokedOld := create(alice, "revoked long ago", nil)
		revoke(alice, revokedOld)
		expiredOld := create(alice, "expired long ago", 60)
		bobRevoked := create(bob, "bob revoked long ago", nil)
		revoke(bob, bobRevoked)
		bobLive := create(bob, "bob live", account.MaxAPIKeyLifetime/time.Second)

		s.Clock.Advance(account.DeadAPIKeyRetention - 24*time.Hour)
		alice = s.login(t, "alice", "correct horse battery") // the first access token has expired
		revokedRecent := create(alice, "revoked lately", nil)
		revoke(alice, revokedRecent)
		create(alice, "expired lately", 60)

		// Just inside the grace period of the old ones: nothing goes.
		s.Clock.Advance(24*time.Hour - 2*time.Minute)
		sweep(0)
		// Past it: the keys revoked or expired more than the grace period ago, of every user.
		s.Clock.Advance(4 * time.Minute)
		sweep(3)
		if got, want := stored(), []string{"bob live", "expired lately", "live", "revoked lately"}; !slices.Equal(got, want) {
			t.Fatalf("kept %q, want %q", got, want)
		}
		sweep(0)

		// A kept dead key still says why it fails; a swept one is merely unknown; live keys work.
		s.withKey(t, revokedRecent.Secret, `{ me { id } }`).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		for _, k := range []apiKeySecret{revokedOld, expiredOld, bobRevoked} {
			s.withKey(t, k.Secret, `{ me { id } }`).wantError(t, "UNAUTHENTICATED", "INVALID_TOKEN")
		}
		for _, k := range []apiKeySecret{live, bobLive} {
			if r := s.withKey(t, k.Secret, `{ me { id } }`); len(r.Errors) > 0 {
				t.Fatalf("%s: %+v", k.APIKey.Name, r.Errors)
			}
		}
		// The audit log keeps the swept keys' history.
		root = s.login(t, "root", "correct horse battery")
		events := s.auditEvents(t, root.AccessToken, map[string]any{"userId": alice.User.ID, "types": []string{"API_KEY_REVOKED"}}).events()
		if len(events) != 2 || deref(events[1].Detail) != "revoked long ago" {
			t.Fatalf("API_KEY_REVOKED events: %+v", events)
		}

		// A grace period later the recent ones go too; the live ones stay while they live.
		s.Clock.Advance(account.DeadAPIKeyRetention)
		sweep(2)
		if got, want := stored(), []string{"bob live", "live"}; !slices.Equal(got, want) {
			t.Fatalf("kept %q, want %q", got, want)
		}
	})
}

func TestAPIKey_SweepWorksInBatches(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		live := s.createAPIKey(t, alice.AccessToken, "live", nil)
		// More dead keys than one batch deletes, written straight to the store (the API would
		// take a while to revoke 2,345 keys).
		const dead = 2345
		ctx := context.Background()
		err := s.DB.Transact(ctx, func(tx *store.Tx) error {
			at := s.Clock.Now().UTC().Add(-account.DeadAPIKeyRetention - time.Hour)
			for i := range dead {
				id := uuid.Must(uuid.NewV7()).String()
				k := &model.APIKey{ID: id, UserID: alice.User.ID, Name: "dead", Prefix: "gqa_dead", SecretHash: id,
					Role: model.RoleUser, CreatedAt: at, ExpiresAt: at.Add(time.Minute)}
				if i%2 == 0 {
					k.ExpiresAt, k.RevokedAt = at.Add(90*24*time.Hour), &at
				}
				if err := tx.CreateAPIKey(ctx, k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		n, err := s.Service.SweepAPIKeys(ctx)
		if err != nil || n != dead {
			t.Fatalf("swept %d (%v), want %d", n, err, dead)
		}
		rows, _ := keyRowsAndEvents(t, s)
		if rows != 1 {
			t.Fatalf("%d keys left, want 1", rows)
		}
		if r := s.withKey(t, live.Secret, `{ me { id } }`); len(r.Errors) > 0 {
			t.Fatal(r.Errors)
		}
	})
}
