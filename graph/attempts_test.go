package graph_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"gqlauth/account"
	"gqlauth/ratelimit"
	"gqlauth/store/storetest"
	"gqlauth/web"
)

// eachKindAndCounter runs test on every database with the in-memory counter and (with
// TEST_REDIS_URL) Redis, one combination after another: each test fires bursts of parallel
// requests, and running the combinations side by side would take Postgres connections from the
// other tests.
func eachKindAndCounter(t *testing.T, test func(t *testing.T, kind storetest.Kind, l limiterCase)) {
	for _, kind := range storetest.Kinds(t) {
		t.Run(string(kind)+"/memory", func(t *testing.T) {
			clk := &clock{now: time.Now().UTC()}
			const window = 15 * time.Minute
			test(t, kind, limiterCase{ratelimit.NewMemory(clk.Now), clk, window, nil})
		})
		t.Run(string(kind)+"/redis", func(t *testing.T) {
			url := storetest.RedisURL(t)
			counter, err := ratelimit.NewRedis(context.Background(), url, fmt.Sprintf("gqlauth-test:%s:%d:", t.Name(), time.Now().UnixNano()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { counter.Close() })
			test(t, kind, limiterCase{counter, &clock{now: time.Now().UTC()}, time.Minute, nil})
		})
	}
}

// burstServer is lockoutServer on a database of kind.
func burstServer(t *testing.T, kind storetest.Kind, l limiterCase, perClient, allClients int) *server {
	t.Helper()
	proxies, _ := web.ParseProxies("127.0.0.1")
	// The bcrypt queue also answers TOO_MANY_REQUESTS when a check waits over its timeout (2 s), which
	// a loaded CI machine reaches with 40 checks at once: a long timeout leaves the limits as the
	// only source of refusals, so the counts measure them alone.
	return newServerOn(t, storetest.Open(t, kind), l.clock, withTrustedProxies(proxies), withBcryptPool(0, 5*time.Minute), withRateLimits(account.Limits{
		Counter: l.counter, FailuresPerUser: perClient, FailuresPerUserAllClients: allClients, UserWindow: l.window,
	}))
}

// outcomes counts the responses by error code and reason ("ok" for none), and fails on any other
// than want's, or a TOO_MANY_REQUESTS without a retryAfter within window.
func outcomes(t testing.TB, rs []response, window time.Duration, want ...string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, r := range rs {
		key := "ok"
		if len(r.Errors) > 0 {
			e := r.Errors[0].Extensions
			key = e.Code + "/" + e.Reason + e.Field
			if e.Code == "TOO_MANY_REQUESTS" && (e.RetryAfter < 1 || e.RetryAfter > int(window.Seconds())) {
				t.Fatalf("retryAfter %d, want 1–%d", e.RetryAfter, int(window.Seconds()))
			}
		}
		got[key]++
	}
	for key := range got {
		known := false
		for _, w := range want {
			known = known || key == w
		}
		if !known {
			t.Fatalf("unexpected outcome %q in %v", key, got)
		}
	}
	return got
}

const (
	wrongPassword = "UNAUTHENTICATED/INVALID_CREDENTIALS"
	wrongCurrent  = "BAD_USER_INPUT/currentPassword"
	limited       = "TOO_MANY_REQUESTS/"
)

// The failure limits count an attempt before its password is checked: N guesses sent at once from
// one client get exactly the limit's worth of checks, however many are in flight together. Counted
// after the check, every guess already in flight passed (40 got 35 checks against a limit of 10).
func TestLockout_ParallelWrongPasswordsFromOneClientGetExactlyTheLimitChecked(t *testing.T) {
	const attempts, limit = 40, 10
	eachKindAndCounter(t, func(t *testing.T, kind storetest.Kind, l limiterCase) {
		s := burstServer(t, kind, l, limit, 0)
		alice := s.signedInUser(t, "alice")

		t.Run("Login", func(t *testing.T) {
			rs := inParallel(attempts, func() response { return s.loginFrom(t, "203.0.113.5", "alice", attackerPw) })
			got := outcomes(t, rs, l.window, wrongPassword, limited)
			if got[wrongPassword] != limit || got[limited] != attempts-limit {
				t.Fatalf("%v; want %d checked and %d refused", got, limit, attempts-limit)
			}
			lockEvents, failed := rateLimitedEvents(t, s)
			want := `203.0.113.5 username locked for this client after failed sign-ins: "alice"`
			if failed != limit || len(lockEvents) != 1 || lockEvents[0] != want {
				t.Fatalf("%d SIGN_IN_FAILED and RATE_LIMITED %q; want %d and [%q]", failed, lockEvents, limit, want)
			}
			// The owner, from another client, is not locked out.
			wantSignedIn(t, s.loginFrom(t, "198.51.100.7", "alice", ownerPw), "owner")
		})
		// changePassword's current password is counted the same way, under the same username.
		t.Run("ChangePassword", func(t *testing.T) {
			rs := inParallel(attempts, func() response {
				return s.do(t, call{
					Query:  `mutation { changePassword(currentPassword: "wrong horse battery", newPassword: "another horse battery") }`,
					Token:  alice.AccessToken,
					Header: http.Header{"X-Forwarded-For": {"192.0.2.44"}},
				})
			})
			got := outcomes(t, rs, l.window, wrongCurrent, limited)
			if got[wrongCurrent] != limit || got[limited] != attempts-limit {
				t.Fatalf("%v; want %d checked and %d refused", got, limit, attempts-limit)
			}
		})
	})
}

// Bursts from several clients at once: each client gets at most its own limit, and all of them
// together exactly the all-clients ceiling, however the bursts interleave.
func TestLockout_ParallelBurstsFromManyClientsStayWithinTheAllClientsCeiling(t *testing.T) {
	const clients, perClient, ceiling = 4, 10, 20
	eachKindAndCounter(t, func(t *testing.T, kind storetest.Kind, l limiterCase) {
		s := burstServer(t, kind, l, perClient, ceiling)
		s.signedInUser(t, "alice")
		ips := make([]string, clients*perClient)
		for i := range ips {
			ips[i] = fmt.Sprintf("203.0.113.%d", 10+i%clients)
		}
		next := make(chan string, len(ips))
		for _, ip := range ips {
			next <- ip
		}
		byClient := map[string]int{}
		results := make(chan [2]string, len(ips))
		rs := inParallel(len(ips), func() response {
			ip := <-next
			r := s.loginFrom(t, ip, "alice", attackerPw)
			key := "ok"
			if len(r.Errors) > 0 {
				key = r.Errors[0].Extensions.Code + "/" + r.Errors[0].Extensions.Reason
			}
			results <- [2]string{ip, key}
			return r
		})
		close(results)
		for r := range results {
			if r[1] == wrongPassword {
				byClient[r[0]]++
			}
		}
		got := outcomes(t, rs, l.window, wrongPassword, limited)
		if got[wrongPassword] != ceiling || got[limited] != clients*perClient-ceiling {
			t.Fatalf("%v; want exactly %d checked in all", got, ceiling)
		}
		for ip, n := range byClient {
			if n > perClient {
				t.Fatalf("%s got %d checks, over its limit of %d", ip, n, perClient)
			}
		}
		lockEvents, failed := rateLimitedEvents(t, s)
		ceilingEvents := 0
		for _, e := range lockEvents {
			if strings.Contains(e, "username locked for unknown clients") {
				ceilingEvents++
			}
		}
		if failed != ceiling || ceilingEvents != 1 {
			t.Fatalf("%d SIGN_IN_FAILED and RATE_LIMITED %q; want %d and one for the ceiling", failed, lockEvents, ceiling)
		}
		// A fifth client, never used before, is refused before any password is checked.
		wantLimited(t, s.loginFrom(t, "192.0.2.200", "alice", ownerPw), l.window)
	})
}

// createApiKey writes an audit event each time and is bounded by the 50-key cap only while keys
// stay live: created and revoked in a loop, it wrote ~550 rows a second. It is a credential
// operation now, limited per client IP (RATE_LIMIT_PER_IP, as login) and per user with the same
// numbers, so that an account spread over many addresses is held to it too.
func TestAPIKey_CreationIsRateLimitedPerClientAndPerUser(t *testing.T) {
	const perWindow, window = 5, time.Minute
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		clk := &clock{now: time.Now().UTC()}
		proxies, _ := web.ParseProxies("127.0.0.1")
		s := newServerOn(t, storetest.Open(t, kind), clk, withTrustedProxies(proxies), withRateLimits(account.Limits{
			Counter: ratelimit.NewMemory(clk.Now), PerClient: perWindow, ClientWindow: window,
		}))
		alice := s.signedInUser(t, "alice")
		bob := s.signedInUser(t, "bob")
		n := 0
		create := func(ip string, who tokens) response {
			n++
			return s.do(t, call{Query: createKey, Token: who.AccessToken, Variables: map[string]any{"n": fmt.Sprintf("key %d", n)},
				Header: http.Header{"X-Forwarded-For": {ip}}})
		}
		for range perWindow {
			if r := create("203.0.113.9", alice); len(r.Errors) > 0 {
				t.Fatalf("creation within the limit: %+v", r.Errors)
			}
		}
		before := s.snapshot(t)
		keys, created := keyRowsAndEvents(t, s)

		wantLimited(t, create("203.0.113.9", alice), window)   // the client's limit
		wantLimited(t, create("203.0.113.9", bob), window)     // anyone's, from that client
		wantLimited(t, create("198.51.100.20", alice), window) // alice's own limit, from any address
		if after := s.snapshot(t); after != before {
			t.Fatalf("a refused creation wrote:\nbefore %s\nafter  %s", before, after)
		}
		if k, c := keyRowsAndEvents(t, s); k != keys || c != created || k != perWindow {
			t.Fatalf("%d keys and %d API_KEY_CREATED after the refusals, want %d and %d", k, c, perWindow, perWindow)
		}
		limits, _ := rateLimitedEvents(t, s)
		want := []string{"203.0.113.9 credential attempts from one client IP", "198.51.100.20 credential operations of one user"}
		if strings.Join(limits, "\n") != strings.Join(want, "\n") {
			t.Fatalf("RATE_LIMITED events %q, want %q", limits, want)
		}

		// bob, from another address, has his own count; alice may create again after the window.
		if r := create("198.51.100.20", bob); len(r.Errors) > 0 {
			t.Fatalf("bob from another address: %+v", r.Errors)
		}
		clk.Advance(window + time.Second)
		if r := create("203.0.113.9", alice); len(r.Errors) > 0 {
			t.Fatalf("alice after the window: %+v", r.Errors)
		}
	})
}
