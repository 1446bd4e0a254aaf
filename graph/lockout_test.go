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

// limiterCase is one kind of rate-limit counter the failure limits must work with.
type limiterCase struct {
	counter ratelimit.Counter
	clock   *clock
	window  time.Duration
	// afterWindow ends every window, or is nil where the counter keeps real time (Redis).
	afterWindow func()
}

// eachCounter runs test with the in-memory counter (on the test clock) and with Redis (when
// TEST_REDIS_URL is set).
func eachCounter(t *testing.T, test func(t *testing.T, l limiterCase)) {
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		clk := &clock{now: time.Now().UTC()}
		const window = 15 * time.Minute
		test(t, limiterCase{ratelimit.NewMemory(clk.Now), clk, window, func() { clk.Advance(window + time.Second) }})
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		url := storetest.RedisURL(t)
		counter, err := ratelimit.NewRedis(context.Background(), url, fmt.Sprintf("gqlauth-test:%s:%d:", t.Name(), time.Now().UnixNano()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { counter.Close() })
		test(t, limiterCase{counter, &clock{now: time.Now().UTC()}, time.Minute, nil})
	})
}

// lockoutServer is a server behind a trusted proxy, so that each request names its client in
// X-Forwarded-For, with the failure limits of l.
func lockoutServer(t *testing.T, l limiterCase, perClient, allClients int) *server {
	t.Helper()
	proxies, _ := web.ParseProxies("127.0.0.1")
	return newServerOn(t, storetest.Open(t, storetest.SQLite), l.clock, withTrustedProxies(proxies), withRateLimits(account.Limits{
		Counter: l.counter, FailuresPerUser: perClient, FailuresPerUserAllClients: allClients, UserWindow: l.window,
	}))
}

// loginFrom signs in as username with password from client ip.
func (s *server) loginFrom(t testing.TB, ip, username, password string) response {
	t.Helper()
	return s.do(t, call{
		Query:     `mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }`,
		Variables: map[string]any{"u": username, "p": password},
		Header:    http.Header{"X-Forwarded-For": {ip}},
	})
}

// wantSignedIn fails unless r is a successful sign-in.
func wantSignedIn(t testing.TB, r response, who string) {
	t.Helper()
	if len(r.Errors) > 0 {
		t.Fatalf("%s: %+v", who, r.Errors)
	}
}

// wantLimited fails unless r is TOO_MANY_REQUESTS with a retryAfter within the window.
func wantLimited(t testing.TB, r response, window time.Duration) {
	t.Helper()
	e := r.wantError(t, "TOO_MANY_REQUESTS", "")
	if e.Extensions.RetryAfter < 1 || e.Extensions.RetryAfter > int(window.Seconds()) {
		t.Fatalf("retryAfter %d, want 1–%d", e.Extensions.RetryAfter, int(window.Seconds()))
	}
}

// rateLimitedEvents returns the detail and IP of every RATE_LIMITED event, and how many failed
// sign-ins were recorded.
func rateLimitedEvents(t testing.TB, s *server) (limited []string, failed int) {
	t.Helper()
	rows, err := s.DB.DumpTable(context.Background(), "audit_events")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		switch r["type"] {
		case "RATE_LIMITED":
			limited = append(limited, r["ip"]+" "+r["detail"])
		case "SIGN_IN_FAILED":
			failed++
		}
	}
	return limited, failed
}

const (
	ownerPw    = "correct horse battery"
	attackerPw = "wrong horse battery"
)

func TestLockout_OneClientCannotLockTheOwnerOut(t *testing.T) {
	eachCounter(t, func(t *testing.T, l limiterCase) {
		s := lockoutServer(t, l, 3, 100)
		s.signedInUser(t, "alice")
		const attacker, owner = "203.0.113.5", "198.51.100.7"
		for range 3 {
			s.loginFrom(t, attacker, "alice", attackerPw).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		}
		// The attacker's client is refused before any password is checked, the right one included.
		wantLimited(t, s.loginFrom(t, attacker, "alice", ownerPw), l.window)
		// The owner, from a client that never signed in to alice before, is not.
		wantSignedIn(t, s.loginFrom(t, owner, "alice", ownerPw), "owner")
		// Nor does the owner's sign-in lift the attacker's lock.
		wantLimited(t, s.loginFrom(t, attacker, "alice", attackerPw), l.window)

		limited, failed := rateLimitedEvents(t, s)
		want := attacker + ` username locked for this client after failed sign-ins: "alice"`
		if len(limited) != 1 || limited[0] != want || failed != 3 {
			t.Fatalf("RATE_LIMITED %q and %d SIGN_IN_FAILED; want [%q] and 3", limited, failed, want)
		}
		if l.afterWindow != nil {
			l.afterWindow()
			s.loginFrom(t, attacker, "alice", attackerPw).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		}
	})
}

func TestLockout_PerClientLimitHoldsForEveryFormOfTheClientAndName(t *testing.T) {
	// Each case's attempts are one client guessing one username, written differently: the limit
	// counts them together, and the next attempt is refused.
	cases := []struct {
		name     string
		attempts [][2]string // client, username
		next     [2]string
	}{
		{"SameAddress", [][2]string{{"203.0.113.5", "alice"}, {"203.0.113.5", "alice"}, {"203.0.113.5", "alice"}}, [2]string{"203.0.113.5", "alice"}},
		{"UsernameCase", [][2]string{{"203.0.113.5", "alice"}, {"203.0.113.5", "ALICE"}, {"203.0.113.5", "Alice"}}, [2]string{"203.0.113.5", "aLiCe"}},
		{"IPv6AddressesOfOneSlash64", [][2]string{{"2001:db8:1:2::1", "alice"}, {"2001:db8:1:2::2", "alice"}, {"2001:db8:1:2:ffff::3", "alice"}}, [2]string{"2001:db8:1:2:abcd::9", "alice"}},
		{"IPv4MappedIPv6", [][2]string{{"198.51.100.9", "alice"}, {"::ffff:198.51.100.9", "alice"}, {"198.51.100.9", "alice"}}, [2]string{"::ffff:198.51.100.9", "alice"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			eachCounter(t, func(t *testing.T, l limiterCase) {
				s := lockoutServer(t, l, 3, 100)
				s.signedInUser(t, "alice")
				for _, a := range c.attempts {
					s.loginFrom(t, a[0], a[1], attackerPw).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
				}
				wantLimited(t, s.loginFrom(t, c.next[0], c.next[1], ownerPw), l.window)
				// Another /64 is another client, which may sign in.
				wantSignedIn(t, s.loginFrom(t, "2001:db8:1:3::1", "alice", ownerPw), "owner on another /64")
			})
		})
	}
}

func TestLockout_ManyClientsReachTheAllClientsCeilingExceptFromTheOwnersKnownNetwork(t *testing.T) {
	eachCounter(t, func(t *testing.T, l limiterCase) {
		s := lockoutServer(t, l, 3, 8)
		s.signedInUser(t, "alice")
		const home = "198.51.100.7"
		wantSignedIn(t, s.loginFrom(t, home, "alice", ownerPw), "owner at home") // home is now known

		// Every password check counts toward the ceiling, a correct one too (it is counted before
		// it is checked). The owner's sign-in and three clients' 3 + 3 + 1 failures reach the
		// ceiling of 8; from then on, a client alice never signed in from is refused before any
		// password is checked.
		for i := 1; i <= 3; i++ {
			for j := range 3 {
				r := s.loginFrom(t, fmt.Sprintf("203.0.113.%d", i), "alice", attackerPw)
				if i == 3 && j > 0 {
					wantLimited(t, r, l.window)
				} else {
					r.wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
				}
			}
		}
		wantLimited(t, s.loginFrom(t, "203.0.113.4", "alice", ownerPw), l.window)
		// The owner at home still signs in, and that does not reopen the username to others.
		wantSignedIn(t, s.loginFrom(t, home, "alice", ownerPw), "owner at home")
		wantLimited(t, s.loginFrom(t, "203.0.113.5", "alice", ownerPw), l.window)
		// The cost of the ceiling: the owner on a network never used before waits for the window.
		wantLimited(t, s.loginFrom(t, "192.0.2.1", "alice", ownerPw), l.window)
		// Other usernames are not affected.
		s.signedInUser(t, "bob")
		s.loginFrom(t, "203.0.113.1", "bob", attackerPw).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		// A known network is still held to the per-client limit.
		for range 3 {
			s.loginFrom(t, home, "alice", attackerPw).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		}
		wantLimited(t, s.loginFrom(t, home, "alice", ownerPw), l.window)

		limited, failed := rateLimitedEvents(t, s)
		want := []string{
			`203.0.113.1 username locked for this client after failed sign-ins: "alice"`,
			`203.0.113.2 username locked for this client after failed sign-ins: "alice"`,
			`203.0.113.3 username locked for unknown clients after failed sign-ins from all clients: "alice"`,
			home + ` username locked for this client after failed sign-ins: "alice"`,
		}
		if strings.Join(limited, "\n") != strings.Join(want, "\n") || failed != 7+1+3 {
			t.Fatalf("RATE_LIMITED:\n%s\nand %d SIGN_IN_FAILED; want\n%s\nand 11", strings.Join(limited, "\n"), failed, strings.Join(want, "\n"))
		}
		if l.afterWindow != nil {
			l.afterWindow()
			wantSignedIn(t, s.loginFrom(t, "192.0.2.1", "alice", ownerPw), "owner on a new network after the window")
		}
	})
}
