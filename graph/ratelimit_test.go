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

// Rate limits on credential operations (per client IP, per username and client) and the bcrypt
// pool's bound.

// loginFields is one request with n aliased login fields: n attempts.
func loginFields(n int, username, password string) string {
	var b strings.Builder
	b.WriteString("mutation {")
	for i := range n {
		fmt.Fprintf(&b, " a%d: login(username: %q, password: %q) { accessToken }", i, username, password)
	}
	b.WriteString(" }")
	return b.String()
}

func codes(r response) []string {
	var out []string
	for _, e := range r.Errors {
		out = append(out, e.Extensions.Code+"/"+e.Extensions.Reason)
	}
	return out
}

func TestRateLimit_UsernameFailuresLockTheUsernameForTheWindow(t *testing.T) {
	clk := &clock{now: time.Now().UTC()}
	s := newServerOn(t, storetest.Open(t, storetest.SQLite), clk, withRateLimits(account.Limits{
		Counter: ratelimit.NewMemory(clk.Now), FailuresPerUser: 3, UserWindow: 15 * time.Minute,
	}))
	s.signedInUser(t, "alice")
	login := func(password string) response {
		return s.do(t, call{Query: `mutation($p: String!) { login(username: "ALICE", password: $p) { accessToken } }`, Variables: map[string]any{"p": password}})
	}
	for range 3 {
		login("wrong horse battery").wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
	}
	// Limited now, even with the right password: no password is checked.
	e := login("correct horse battery").wantError(t, "TOO_MANY_REQUESTS", "")
	if e.Extensions.RetryAfter <= 0 || e.Extensions.RetryAfter > 15*60 {
		t.Fatalf("retryAfter: %d", e.Extensions.RetryAfter)
	}
	clk.Advance(15*time.Minute + time.Second)
	if r := login("correct horse battery"); len(r.Errors) > 0 {
		t.Fatalf("after the window: %+v", r.Errors)
	}
}

func TestRateLimit_AliasedLoginsCountOneByOne(t *testing.T) {
	clk := &clock{now: time.Now().UTC()}
	s := newServerOn(t, storetest.Open(t, storetest.SQLite), clk, withRateLimits(account.Limits{
		Counter: ratelimit.NewMemory(clk.Now), PerClient: 5, ClientWindow: time.Minute,
	}))
	r := s.do(t, call{Query: loginFields(8, "nobody", "some password")})
	got := codes(r)
	want := []string{
		"UNAUTHENTICATED/INVALID_CREDENTIALS", "UNAUTHENTICATED/INVALID_CREDENTIALS", "UNAUTHENTICATED/INVALID_CREDENTIALS",
		"UNAUTHENTICATED/INVALID_CREDENTIALS", "UNAUTHENTICATED/INVALID_CREDENTIALS",
		"TOO_MANY_REQUESTS/", "TOO_MANY_REQUESTS/", "TOO_MANY_REQUESTS/",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("8 aliased logins with a limit of 5:\n got %v\nwant %v", got, want)
	}
	// The same client's next request, of any credential operation, is limited too.
	s.refresh(t, "whatever").wantError(t, "TOO_MANY_REQUESTS", "")
	s.do(t, call{Query: `mutation { register(username: "newbie", password: "correct horse battery") { accessToken } }`}).wantError(t, "TOO_MANY_REQUESTS", "")
}

func TestRateLimit_ClientIPFromTrustedProxyOnly(t *testing.T) {
	// The test client connects from 127.0.0.1, which is not a trusted proxy here, so a forged
	// X-Forwarded-For cannot buy a fresh quota.
	clk := &clock{now: time.Now().UTC()}
	s := newServerOn(t, storetest.Open(t, storetest.SQLite), clk, withRateLimits(account.Limits{
		Counter: ratelimit.NewMemory(clk.Now), PerClient: 2, ClientWindow: time.Minute,
	}))
	for i := range 3 {
		r := s.do(t, call{
			Query:  `mutation { login(username: "nobody", password: "some password") { accessToken } }`,
			Header: http.Header{"X-Forwarded-For": {fmt.Sprintf("198.51.100.%d", i)}},
		})
		if i == 2 {
			r.wantError(t, "TOO_MANY_REQUESTS", "")
		}
	}
}

func TestRateLimit_UnparsableForwardedForNeverSharesTheProxysBucket(t *testing.T) {
	// The test client connects from 127.0.0.1, a trusted proxy here. Its own requests (no
	// X-Forwarded-For) use up its quota; a client whose entry cannot be read must not be counted
	// there, nor in the bucket of another unreadable entry.
	clk := &clock{now: time.Now().UTC()}
	proxies, _ := web.ParseProxies("127.0.0.1")
	s := newServerOn(t, storetest.Open(t, storetest.SQLite), clk, withTrustedProxies(proxies), withRateLimits(account.Limits{
		Counter: ratelimit.NewMemory(clk.Now), PerClient: 1, ClientWindow: time.Minute,
	}))
	login := func(xff []string) response {
		h := http.Header{}
		for _, v := range xff {
			h.Add("X-Forwarded-For", v)
		}
		return s.do(t, call{Query: `mutation { login(username: "nobody", password: "some password") { accessToken } }`, Header: h})
	}
	login(nil).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
	login(nil).wantError(t, "TOO_MANY_REQUESTS", "") // the proxy's bucket is used up
	for _, xff := range [][]string{
		{"garbage"}, {""}, {"unknown"}, {"_hidden"}, {"1.2.3.4:5"}, {"198.51.100.7", "junk"}, {"[2001:db8::1]:443"},
	} {
		t.Run(fmt.Sprintf("%q", xff), func(t *testing.T) {
			login(xff).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
			login(xff).wantError(t, "TOO_MANY_REQUESTS", "") // a bucket of its own, counted
		})
	}
}

func TestRateLimit_IPv6ClientsCountedByTheirSlash64(t *testing.T) {
	// One subscriber usually holds a whole /64; counting each address would give them 2^64 quotas.
	clk := &clock{now: time.Now().UTC()}
	proxies, _ := web.ParseProxies("127.0.0.1")
	s := newServerOn(t, storetest.Open(t, storetest.SQLite), clk, withTrustedProxies(proxies), withRateLimits(account.Limits{
		Counter: ratelimit.NewMemory(clk.Now), PerClient: 2, ClientWindow: time.Minute,
	}))
	login := func(client string) response {
		return s.do(t, call{
			Query:  `mutation { login(username: "nobody", password: "some password") { accessToken } }`,
			Header: http.Header{"X-Forwarded-For": {client}},
		})
	}
	login("2001:db8:1:2::1").wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
	login("2001:db8:1:2:ffff::9").wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
	login("2001:db8:1:2:abcd:1:2:3").wantError(t, "TOO_MANY_REQUESTS", "")
	login("2001:db8:1:3::1").wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS") // another /64
	login("::ffff:198.51.100.7").wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
	login("198.51.100.7").wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS") // one IPv4 client, however written
	login("198.51.100.7").wantError(t, "TOO_MANY_REQUESTS", "")
}

func TestRateLimit_BatchedOperationsRefused(t *testing.T) {
	s := newServer(t, storetest.SQLite)
	body := `[` + strings.Repeat(`{"query":"mutation { login(username: \"a\", password: \"b\") { accessToken } }"},`, 49) +
		`{"query":"{ __typename }"}]`
	res := post(t, s.URL, "application/json", body)
	if res.Status != http.StatusBadRequest || len(res.Errors) != 1 || res.Errors[0].Extensions.Code != "GRAPHQL_PARSE_FAILED" {
		t.Fatalf("batch: %d %+v", res.Status, res.Errors)
	}
}

func TestRateLimit_SharedThroughRedis(t *testing.T) {
	url := storetest.RedisURL(t)
	prefix := fmt.Sprintf("gqlauth-test:%d:", time.Now().UnixNano())
	counter, err := ratelimit.NewRedis(context.Background(), url, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { counter.Close() })
	limits := withRateLimits(account.Limits{Counter: counter, FailuresPerUser: 2, UserWindow: time.Minute, PerClient: 100, ClientWindow: time.Minute})
	db := storetest.Open(t, storetest.SQLite)
	clk := &clock{now: time.Now().UTC()}
	a, b := newServerOn(t, db, clk, limits), newServerOn(t, db, clk, limits)
	a.signedInUser(t, "alice")
	wrong := `mutation { login(username: "alice", password: "wrong horse battery") { accessToken } }`
	a.do(t, call{Query: wrong}).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
	b.do(t, call{Query: wrong}).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
	// Two failures, one on each instance: both instances now refuse the username.
	e := a.do(t, call{Query: `mutation { login(username: "alice", password: "correct horse battery") { accessToken } }`}).wantError(t, "TOO_MANY_REQUESTS", "")
	if e.Extensions.RetryAfter < 1 || e.Extensions.RetryAfter > 60 {
		t.Fatalf("retryAfter %d", e.Extensions.RetryAfter)
	}
	b.do(t, call{Query: `mutation { login(username: "alice", password: "correct horse battery") { accessToken } }`}).wantError(t, "TOO_MANY_REQUESTS", "")
}

func TestBcryptPool_OverCapacityIsTooManyRequestsNotAHang(t *testing.T) {
	// One worker, a queue timeout far shorter than one hash at cost 12: of several concurrent
	// logins, the first is served and those that wait too long are refused quickly.
	s := newServer(t, storetest.SQLite, withBcryptCost(12), withBcryptPool(1, 20*time.Millisecond))
	const n = 4
	start := time.Now()
	results := inParallel(n, func() response {
		return s.do(t, call{Query: `mutation { login(username: "nobody", password: "some password") { accessToken } }`})
	})
	limited := 0
	for _, r := range results {
		if len(r.Errors) == 1 && r.Errors[0].Extensions.Code == "TOO_MANY_REQUESTS" {
			limited++
		}
	}
	if limited == 0 || limited == n {
		t.Fatalf("%d of %d refused: want some served and some refused (%v)", limited, n, results)
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Fatalf("took %v", elapsed)
	}
}
