package graph_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"gqlauth/model"
	"gqlauth/store/storetest"
	"gqlauth/token"
)

// The principal cache (docs/principal-cache.md) runs on Postgres only; these tests are its proof.

func postgresOnly(t *testing.T) {
	t.Helper()
	if !slices.Contains(storetest.Kinds(t), storetest.Postgres) {
		t.Skip("the principal cache runs on Postgres: TEST_DATABASE_URL not set")
	}
}

// guarded sends { me { id } } with the token (or an API key) and reports whether it succeeded; it
// may run in any goroutine.
func guarded(client *http.Client, url, bearer, apiKey string) (bool, error) {
	return guardedQuery(client, url, bearer, apiKey, `{ me { id } }`)
}

// guardedQuery is guarded with another query.
func guardedQuery(client *http.Client, url, bearer, apiKey, query string) (bool, error) {
	body, _ := json.Marshal(map[string]string{"query": query})
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if apiKey != "" {
		req.Header.Set("X-API-Key", apiKey)
	}
	res, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer res.Body.Close()
	var r response
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		return false, err
	}
	if len(r.Errors) > 0 {
		if c := r.Errors[0].Extensions.Code; c != "UNAUTHENTICATED" && c != "FORBIDDEN" {
			return false, fmt.Errorf("unexpected error %+v", r.Errors[0])
		}
		return false, nil
	}
	return true, nil
}

// warm asks three times, so that the principal is in the server's cache (with the cache on).
func warm(t *testing.T, s *server, bearer, apiKey string) {
	t.Helper()
	for range 3 {
		if ok, err := guarded(http.DefaultClient, s.URL, bearer, apiKey); !ok || err != nil {
			t.Fatalf("warming: ok %v, err %v", ok, err)
		}
	}
}

func TestPrincipalCache_SteadyStateCostsNoQueryPerGuardedRequest(t *testing.T) {
	postgresOnly(t)
	for _, c := range []struct {
		name    string
		opts    []option
		perCall int64
	}{
		{"CacheOn", nil, 0},
		{"CacheOff", []option{withoutPrincipalCache()}, 1}, // the counter sees the principal query
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newServer(t, storetest.Postgres, c.opts...)
			alice := s.signedInUser(t, "alice")
			key := s.createAPIKey(t, alice.AccessToken, "bot", nil)
			warm(t, s, alice.AccessToken, "")
			warm(t, s, "", key.Secret) // the first use records lastUsedAt, which invalidates the key's entry
			time.Sleep(100 * time.Millisecond)
			warm(t, s, "", key.Secret)
			const n = 200
			s.Queries.n.Store(0)
			for range n {
				for _, cred := range [][2]string{{alice.AccessToken, ""}, {"", key.Secret}} {
					if ok, err := guarded(http.DefaultClient, s.URL, cred[0], cred[1]); !ok || err != nil {
						t.Fatalf("me: ok %v, err %v", ok, err)
					}
				}
			}
			got := s.Queries.n.Load()
			t.Logf("%s: %d Postgres queries for %d guarded requests (%.3f per request)", c.name, got, 2*n, float64(got)/(2*n))
			if got != c.perCall*2*n {
				t.Fatalf("%d queries for %d guarded requests, want %d", got, 2*n, c.perCall*2*n)
			}
		})
	}
}

// revocation is one way the contract revokes a principal, made on instance a.
type revocation struct {
	name  string
	query string // "" for { me { id } }
	// prepare returns the credential to test (a bearer token or an API key) and what the refusal
	// looks like; revoke revokes it through a.
	run func(t *testing.T, a *server) (bearer, apiKey string, revoke func())
}

func revocations() []revocation {
	return []revocation{
		{"LogoutCurrent", "", func(t *testing.T, a *server) (string, string, func()) {
			p := a.signedInUser(t, "alice")
			return p.AccessToken, "", func() { a.query(t, p.AccessToken, `mutation { logout(scope: CURRENT) }`, nil) }
		}},
		{"LogoutOthers", "", func(t *testing.T, a *server) (string, string, func()) {
			p := a.signedInUser(t, "alice")
			other := a.login(t, "alice", "correct horse battery")
			return p.AccessToken, "", func() { a.query(t, other.AccessToken, `mutation { logout(scope: OTHERS) }`, nil) }
		}},
		{"LogoutAll", "", func(t *testing.T, a *server) (string, string, func()) {
			p := a.signedInUser(t, "alice")
			other := a.login(t, "alice", "correct horse battery")
			return p.AccessToken, "", func() { a.query(t, other.AccessToken, `mutation { logout(scope: ALL) }`, nil) }
		}},
		{"RefreshTokenReused", "", func(t *testing.T, a *server) (string, string, func()) {
			p := a.signedInUser(t, "alice")
			next := a.refresh(t, p.RefreshToken)
			var fresh tokens
			next.field(t, "refresh", &fresh)
			return fresh.AccessToken, "", func() {
				a.Clock.Advance(time.Minute) // past the reuse interval
				a.refresh(t, p.RefreshToken).wantError(t, "UNAUTHENTICATED", "REFRESH_TOKEN_REUSED")
			}
		}},
		{"PasswordChanged", "", func(t *testing.T, a *server) (string, string, func()) {
			p := a.signedInUser(t, "alice")
			other := a.login(t, "alice", "correct horse battery")
			return p.AccessToken, "", func() {
				a.query(t, other.AccessToken, `mutation { changePassword(currentPassword: "correct horse battery", newPassword: "another horse battery") }`, nil)
			}
		}},
		{"UserDisabled", "", func(t *testing.T, a *server) (string, string, func()) {
			admin := a.signedInAdmin(t)
			p := a.signedInUser(t, "alice")
			return p.AccessToken, "", func() { a.setDisabled(t, admin.AccessToken, p.User.ID, true) }
		}},
		{"RoleLowered", `{ users(limit: 1) { id } }`, func(t *testing.T, a *server) (string, string, func()) {
			root := a.signedInAdmin(t)
			p := a.signedInUser(t, "ops")
			if _, err := a.DB.SetUserRole(context.Background(), p.User.ID, model.RoleAdmin); err != nil {
				t.Fatal(err)
			}
			return p.AccessToken, "", func() {
				a.query(t, root.AccessToken, `mutation($id: ID!) { setUserRole(id: $id, role: USER) { id } }`, map[string]any{"id": p.User.ID})
			}
		}},
		{"APIKeyRevoked", "", func(t *testing.T, a *server) (string, string, func()) {
			p := a.signedInUser(t, "alice")
			k := a.createAPIKey(t, p.AccessToken, "bot", nil)
			return "", k.Secret, func() {
				a.query(t, p.AccessToken, `mutation($id: ID!) { revokeApiKey(id: $id) }`, map[string]any{"id": k.APIKey.ID})
			}
		}},
		{"APIKeyOwnerDisabled", "", func(t *testing.T, a *server) (string, string, func()) {
			admin := a.signedInAdmin(t)
			p := a.signedInUser(t, "alice")
			k := a.createAPIKey(t, p.AccessToken, "bot", nil)
			return "", k.Secret, func() { a.setDisabled(t, admin.AccessToken, p.User.ID, true) }
		}},
		{"SessionExpiredByTime", "", func(t *testing.T, a *server) (string, string, func()) {
			p := a.signedInUser(t, "alice")
			ctx := context.Background()
			user, err := a.DB.UserByID(ctx, p.User.ID)
			if err != nil {
				t.Fatal(err)
			}
			// A session that ends before its access token does (made directly, as no flow makes one).
			now, id := a.Clock.Now(), uuid.Must(uuid.NewV7()).String()
			if err := a.DB.CreateSession(ctx, &model.Session{ID: id, UserID: user.ID, RefreshHash: token.HashRefreshToken(id),
				CreatedAt: now, LastUsedAt: now, ExpiresAt: now.Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
			bearer, err := a.Tokens.Issue(user, id)
			if err != nil {
				t.Fatal(err)
			}
			// Nothing is written: the cached session's expiry is judged against the clock on every hit.
			return bearer, "", func() { a.Clock.Advance(2 * time.Minute) }
		}},
		{"APIKeyExpiredByTime", "", func(t *testing.T, a *server) (string, string, func()) {
			p := a.signedInUser(t, "alice")
			k := a.createAPIKey(t, p.AccessToken, "bot", nil)
			// Nothing is written: the cached key's expiry is judged against the clock on every hit.
			return "", k.Secret, func() { a.Clock.Advance(400 * 24 * time.Hour) }
		}},
	}
}

// TestPrincipalCache_EveryRevocationIsRefusedOnTheOtherInstanceAtOnce revokes on A what B has
// just served from its cache, and asks B once, right after the mutation returned.
func TestPrincipalCache_EveryRevocationIsRefusedOnTheOtherInstanceAtOnce(t *testing.T) {
	postgresOnly(t)
	for _, r := range revocations() {
		t.Run(r.name, func(t *testing.T) {
			a, b := twoInstances(t, storetest.Postgres)
			bearer, apiKey, revoke := r.run(t, a)
			query := r.query
			if query == "" {
				query = `{ me { id } }`
			}
			for range 3 {
				if ok, err := guardedQuery(http.DefaultClient, b.URL, bearer, apiKey, query); !ok || err != nil {
					t.Fatalf("B before the revocation: ok %v, err %v", ok, err)
				}
			}
			if !b.DB.CacheServing() {
				t.Fatal("B's cache is not serving")
			}
			// A key's first use records lastUsedAt in the background, which invalidates its entry:
			// warm until B answers three requests without asking the database.
			for try := 0; ; try++ {
				b.Queries.n.Store(0)
				warm(t, b, bearer, apiKey)
				if b.Queries.n.Load() == 0 {
					break
				}
				if try == 20 {
					t.Fatalf("B still asks the database for a warmed principal")
				}
				time.Sleep(100 * time.Millisecond)
			}
			revoke()
			if ok, err := guardedQuery(http.DefaultClient, b.URL, bearer, apiKey, query); ok || err != nil {
				t.Fatalf("B after the revocation returned: ok %v, err %v", ok, err)
			}
		})
	}
}

// TestPrincipalCache_NoRequestStartedAfterLogoutReturnedSucceeds hammers a session on B while A
// logs it out: every request that started after logout returned must fail.
func TestPrincipalCache_NoRequestStartedAfterLogoutReturnedSucceeds(t *testing.T) {
	postgresOnly(t)
	a, b := twoInstances(t, storetest.Postgres)
	a.signedInUser(t, "alice")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	const rounds, hammers = 15, 4
	served, fromCache := 0, 0
	for round := range rounds {
		p := a.login(t, "alice", "correct horse battery")
		warm(t, b, p.AccessToken, "")
		type attempt struct {
			start time.Time
			ok    bool
		}
		var (
			mu       sync.Mutex
			attempts []attempt
			stop     atomic.Bool
			wg       sync.WaitGroup
			failure  atomic.Value
		)
		before := b.Queries.n.Load()
		for range hammers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					start := time.Now()
					ok, err := guarded(client, b.URL, p.AccessToken, "")
					if err != nil {
						failure.Store(err)
						return
					}
					mu.Lock()
					attempts = append(attempts, attempt{start, ok})
					mu.Unlock()
				}
			}()
		}
		time.Sleep(30 * time.Millisecond)
		a.query(t, p.AccessToken, `mutation { logout(scope: CURRENT) }`, nil)
		returned := time.Now()
		time.Sleep(30 * time.Millisecond)
		stop.Store(true)
		wg.Wait()
		if err := failure.Load(); err != nil {
			t.Fatal(err)
		}
		okBefore := 0
		for _, at := range attempts {
			if at.ok && at.start.After(returned) {
				t.Fatalf("round %d: a request started %v after logout returned succeeded", round, at.start.Sub(returned))
			}
			if at.ok {
				okBefore++
			}
		}
		served += okBefore
		fromCache += okBefore - int(b.Queries.n.Load()-before)
	}
	t.Logf("%d requests served before their logout returned, at least %d of them from B's cache", served, fromCache)
	if fromCache <= 0 {
		t.Fatal("B never answered from its cache: the race was not run against the cache")
	}
}

// TestPrincipalCache_ChannelCutFallsBackToTheDatabase kills B's cache listener (or its acker) in
// Postgres: B stops answering from memory at once, a revocation on A still takes effect on B on
// the next request, and B's cache comes back by itself.
func TestPrincipalCache_ChannelCutFallsBackToTheDatabase(t *testing.T) {
	postgresOnly(t)
	for _, conn := range []string{"listener", "acker"} {
		t.Run(conn, func(t *testing.T) {
			a, b := twoInstances(t, storetest.Postgres)
			p := a.signedInUser(t, "alice")
			other := a.login(t, "alice", "correct horse battery")
			warm(t, b, p.AccessToken, "")
			warm(t, b, other.AccessToken, "")
			var killed bool
			if err := a.DB.QueryRow(context.Background(), fmt.Sprintf(
				`SELECT bool_or(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'gqlauth-cache-%s %s'`,
				conn, b.DB.CacheInstance()), &killed); err != nil || !killed {
				t.Fatalf("terminate B's %s: %v, %v", conn, killed, err)
			}
			// At once, without waiting for B to notice.
			start := time.Now()
			a.query(t, p.AccessToken, `mutation { logout(scope: CURRENT) }`, nil)
			took := time.Since(start)
			if ok, err := guarded(http.DefaultClient, b.URL, p.AccessToken, ""); ok || err != nil {
				t.Fatalf("B after logout, its %s cut: ok %v, err %v", conn, ok, err)
			}
			t.Logf("logout took %v with B's %s cut", took, conn)
			// While B has no channel it reads the database, and still serves live sessions.
			deadline := time.Now().Add(10 * time.Second)
			for !b.DB.CacheServing() {
				if ok, err := guarded(http.DefaultClient, b.URL, other.AccessToken, ""); !ok || err != nil {
					t.Fatalf("B without its channel: ok %v, err %v", ok, err)
				}
				if time.Now().After(deadline) {
					t.Fatal("B's cache did not come back")
				}
				time.Sleep(20 * time.Millisecond)
			}
			warm(t, b, other.AccessToken, "")
			a.query(t, other.AccessToken, `mutation { logout(scope: CURRENT) }`, nil)
			if ok, err := guarded(http.DefaultClient, b.URL, other.AccessToken, ""); ok || err != nil {
				t.Fatalf("B after its cache came back: ok %v, err %v", ok, err)
			}
		})
	}
}

// TestPrincipalCache_RevocationStorm revokes 1,000 of 10,000 sessions on A, eight at a time,
// while B serves all 10,000 from eight clients (each served once before the storm, so B's cache
// holds them): no session is served by a request that started after its logout returned, and
// every session not revoked keeps working.
func TestPrincipalCache_RevocationStorm(t *testing.T) {
	postgresOnly(t)
	if testing.Short() {
		t.Skip("the storm is not short")
	}
	a, b := twoInstances(t, storetest.Postgres)
	alice := a.signedInUser(t, "alice")
	ctx := context.Background()
	user, err := a.DB.UserByID(ctx, alice.User.ID)
	if err != nil {
		t.Fatal(err)
	}
	const sessions, revoked, clients = 10000, 1000, 8
	bearers := make([]string, sessions)
	now := a.Clock.Now()
	for i := range bearers {
		id := uuid.Must(uuid.NewV7()).String()
		if err := a.DB.CreateSession(ctx, &model.Session{ID: id, UserID: user.ID, RefreshHash: token.HashRefreshToken(id),
			CreatedAt: now, LastUsedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if bearers[i], err = a.Tokens.Issue(user, id); err != nil {
			t.Fatal(err)
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	returned := make([]atomic.Int64, sessions) // unix nanos when session i's logout returned; 0: not (yet)
	var (
		stop, failed atomic.Bool
		requests     atomic.Int64
		wg           sync.WaitGroup
		errs         = make(chan error, 2*clients)
	)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; !stop.Load(); i = (i + clients) % sessions {
				start := time.Now().UnixNano()
				ok, err := guarded(client, b.URL, bearers[i], "")
				requests.Add(1)
				switch r := returned[i].Load(); {
				case err != nil:
					errs <- err
					failed.Store(true)
					return
				case ok && r != 0 && start > r:
					errs <- fmt.Errorf("session %d served by a request that started %v after its logout returned", i, time.Duration(start-r))
					failed.Store(true)
					return
				case !ok && i >= revoked:
					errs <- fmt.Errorf("session %d, never revoked, refused", i)
					failed.Store(true)
					return
				}
			}
		}()
	}
	// B's cache fills: every session served once at least before the storm starts.
	for deadline := time.Now().Add(time.Minute); requests.Load() < sessions && !failed.Load(); {
		if time.Now().After(deadline) {
			t.Fatalf("B served only %d requests in a minute", requests.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Queries.n.Store(0)
	served := requests.Load()
	start := time.Now()
	var revokers sync.WaitGroup
	next := atomic.Int64{}
	for range clients {
		revokers.Add(1)
		go func() {
			defer revokers.Done()
			for i := int(next.Add(1) - 1); i < revoked && !failed.Load(); i = int(next.Add(1) - 1) {
				ok, err := logout(client, a.URL, bearers[i])
				if err != nil || !ok {
					errs <- fmt.Errorf("logout %d: ok %v, err %v", i, ok, err)
					failed.Store(true)
					return
				}
				returned[i].Store(time.Now().UnixNano())
			}
		}()
	}
	revokers.Wait()
	storm := time.Since(start)
	time.Sleep(200 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	total := requests.Load() - served
	t.Logf("%d logouts in %v on A while B answered %d requests with %d Postgres queries", revoked, storm, total, b.Queries.n.Load())
	for i := range revoked {
		if ok, err := guarded(client, b.URL, bearers[i], ""); ok || err != nil {
			t.Fatalf("session %d after the storm: ok %v, err %v", i, ok, err)
		}
	}
}

func logout(client *http.Client, url, bearer string) (bool, error) {
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte(`{"query":"mutation { logout(scope: CURRENT) }"}`)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+bearer)
	res, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer res.Body.Close()
	var r response
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		return false, err
	}
	return len(r.Errors) == 0, nil
}
