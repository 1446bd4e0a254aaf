package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"gqlauth/store/storetest"
)

// Findings of the principal cache's security review (branch attack-cache). These tests FAIL on
// the code they were written against; each names the class of the fault it shows.

// graphqlWithin is graphql with a deadline: nil when none came back in time.
func graphqlWithin(t *testing.T, d time.Duration, base, token, query string, vars map[string]any) map[string]any {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequest(http.MethodPost, base+"/query", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := (&http.Client{Timeout: d}).Do(req)
	if err != nil {
		return nil
	}
	defer res.Body.Close()
	var out map[string]any
	json.NewDecoder(res.Body).Decode(&out)
	return out
}

func adminConn(t *testing.T, searchPath string) *sql.DB {
	t.Helper()
	u, err := url.Parse(os.Getenv("TEST_DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	if searchPath != "" {
		q := u.Query()
		q.Set("search_path", searchPath)
		u.RawQuery = q.Encode()
	}
	db, err := sql.Open("pgx", u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Class: availability — a cluster-wide lock held across a client round trip. Transact takes the
// schema's advisory lock in gqlauth_cache_commit() and releases it only at COMMIT, which is the
// NEXT round trip of the client. An instance frozen (SIGSTOP, GC/VM pause) or cut off from the
// network between the two holds the lock for as long as it is frozen (Postgres sees only an idle
// transaction): every other transaction that changes a principal's row — every logout, refresh,
// disable, role change on every instance — and every heartbeat waits for it. The docs promise at
// most one lease (2 s) for a frozen instance.
func TestPrincipalCache_InstanceFrozenBetweenBarrierAndCommitStallsEveryRevocation(t *testing.T) {
	schema := cacheFaultSetup(t)
	a := startInstance(t, schema)
	c := startInstance(t, schema)
	db := adminConn(t, schema)

	// C refreshes sessions in a loop: every refresh is a dirty transaction that ends with the barrier.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		name := fmt.Sprintf("loader%d", i)
		out := graphql(t, c.URL, "", fmt.Sprintf(`mutation { register(username: %q, password: "correct horse battery") { refreshToken } }`, name))
		data, _ := out["data"].(map[string]any)
		reg, _ := data["register"].(map[string]any)
		refresh, _ := reg["refreshToken"].(string)
		if refresh == "" {
			t.Fatalf("register %s: %v", name, out)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				out := graphqlWithin(t, 5*time.Second, c.URL, "", `mutation($r: String) { refresh(refreshToken: $r) { refreshToken } }`, map[string]any{"r": refresh})
				if data, ok := out["data"].(map[string]any); ok {
					if p, ok := data["refresh"].(map[string]any); ok {
						refresh = p["refreshToken"].(string)
					}
				}
			}
		}()
	}
	t.Cleanup(func() { close(stop); c.cmd.Process.Signal(syscall.SIGCONT); wg.Wait() })

	// Freeze C until it is caught holding the lock between its barrier and its COMMIT.
	held := func() bool {
		var n int
		db.QueryRow(`SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			WHERE l.locktype = 'advisory' AND l.granted AND a.state LIKE 'idle in transaction%'
			AND a.query LIKE '%gqlauth_cache_commit%'`).Scan(&n)
		return n > 0
	}
	caught := false
	for range 200 {
		c.cmd.Process.Signal(syscall.SIGSTOP)
		time.Sleep(50 * time.Millisecond)
		if held() {
			caught = true
			break
		}
		c.cmd.Process.Signal(syscall.SIGCONT)
		time.Sleep(20 * time.Millisecond)
	}
	if !caught {
		// No lock is held between a barrier and a COMMIT any more (the barrier is drawn after
		// it): freeze C wherever it is, mid-load, and the revocation must still not wait on it.
		c.cmd.Process.Signal(syscall.SIGSTOP)
		t.Log("C was never caught holding the barrier lock; frozen mid-load instead")
	}

	tok := accessToken(t, graphql(t, a.URL, "", `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`), "register")
	start := time.Now()
	out := graphqlWithin(t, 10*time.Second, a.URL, tok, `mutation { logout(scope: ALL) }`, nil)
	if out == nil || out["errors"] != nil {
		t.Fatalf("logout on A with C frozen mid-commit: no answer (or an error: %v) after %v; a frozen instance should delay a revocation by at most its lease (2 s)",
			out, time.Since(start).Round(time.Millisecond))
	}
}

// Class: invalidation routed by the writer's search_path instead of the written table. The
// triggers call gqlauth_cache_channel() unqualified, and it names the channel after
// current_schema(): both resolve in the WRITER's session. An operator (or another service) whose
// search_path starts with another gqlauth schema — two deployments in one database, as the tests
// themselves run — that disables a user with a schema-qualified UPDATE announces it on the other
// deployment's channel. Nobody of this deployment hears it, and cached entries have no time to
// live: every instance serves the disabled user until its channel breaks.
func TestPrincipalCache_WriteFromAnotherSearchPathIsHeard(t *testing.T) {
	schema := cacheFaultSetup(t)
	other := storetest.NewName(t, storetest.Postgres)
	a := startInstance(t, schema)
	startInstance(t, other) // a second deployment in the same database: its migrations create its functions
	tok := accessToken(t, graphql(t, a.URL, "", `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`), "register")
	if !meOK(t, a.URL, tok) {
		t.Fatal("A refused a live session")
	}
	// An operator's session whose search_path names the other deployment first.
	op := adminConn(t, other)
	if _, err := op.ExecContext(context.Background(), fmt.Sprintf(`UPDATE %s.users SET disabled = true WHERE username = 'alice'`, schema)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // far longer than any delivery through a working channel
	if meOK(t, a.URL, tok) {
		t.Fatal("A still serves a user disabled 3 s ago (the invalidation went to the other schema's channel)")
	}
}

// Class: a lapsed lease renewed without starting over. An acknowledgement renews the lease on the
// holder's side from the time it was SENT (sent + lease − margin), whatever happened before it
// committed; the revoker, meanwhile, reads the committed row, where the lease has already run out,
// and returns. Once the slow acknowledgement commits, the holder serves again — from entries it
// never cleared, because only rejoin() (run before the acknowledgement was sent) clears on a lapse.
// Here: the acker's upsert is held up by a row lock (a slow database connection) while the
// listener's backend is frozen (a slow delivery of notifications), a logout on A returns after B's
// lease ran out, and B — its acknowledgement then committing — serves the logged-out session.
func TestPrincipalCache_AckCommittedAfterTheLeaseRanOutDoesNotRenewIt(t *testing.T) {
	schema := cacheFaultSetup(t)
	db := adminConn(t, schema)
	ctx := context.Background()
	a := startInstance(t, schema)
	var idA, idB string
	if err := db.QueryRow(`SELECT instance_id FROM cache_leases`).Scan(&idA); err != nil {
		t.Fatal(err)
	}
	b := startInstance(t, schema)
	if err := db.QueryRow(`SELECT instance_id FROM cache_leases WHERE instance_id <> $1`, idA).Scan(&idB); err != nil {
		t.Fatal(err)
	}
	tok := accessToken(t, graphql(t, a.URL, "", `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`), "register")
	for range 3 {
		if !meOK(t, b.URL, tok) {
			t.Fatal("B refused a live session")
		}
	}
	var listener int
	if err := db.QueryRow(`SELECT pid FROM pg_stat_activity WHERE application_name = $1`, "gqlauth-cache-listener "+idB).Scan(&listener); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(listener, syscall.SIGCONT) })

	// 1. Hold the barrier lock: B's next heartbeat (and so its next acknowledgement) waits.
	l2, _ := db.Conn(ctx)
	defer l2.Close()
	l2.ExecContext(ctx, `BEGIN`)
	if _, err := l2.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('gqlauth.cache.' || current_schema()))`); err != nil {
		t.Fatal(err)
	}
	var left time.Duration
	var ms float64
	if err := db.QueryRow(`SELECT extract(epoch FROM expires_at - clock_timestamp()) * 1000 FROM cache_leases WHERE instance_id = $1`, idB).Scan(&ms); err != nil {
		t.Fatal(err)
	}
	left = time.Duration(ms) * time.Millisecond
	time.Sleep(left - 900*time.Millisecond) // B's lease: 0.9 s left on the database, 0.4 s on B
	// 2. Hold B's lease row, then let the heartbeat through: B sends its acknowledgement now, and
	// it waits on the row.
	l1, _ := db.Conn(ctx)
	defer l1.Close()
	l1.ExecContext(ctx, `BEGIN`)
	if _, err := l1.ExecContext(ctx, `SELECT 1 FROM cache_leases WHERE instance_id = $1 FOR UPDATE`, idB); err != nil {
		t.Fatal(err)
	}
	l2.ExecContext(ctx, `COMMIT`)
	deadline := time.Now().Add(2 * time.Second)
	for {
		var waiting bool
		db.QueryRow(`SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE application_name = $1`, "gqlauth-cache-acker "+idB).Scan(&waiting)
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Skip("B's acknowledgement never waited on the row")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// 3. B's listener stops hearing (its backend frozen).
	if err := syscall.Kill(listener, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// 4. The revocation: it waits for B's lease to run out on the database, then returns.
	start := time.Now()
	out := graphqlWithin(t, 10*time.Second, a.URL, tok, `mutation { logout(scope: CURRENT) }`, nil)
	if out == nil || out["errors"] != nil {
		t.Fatalf("logout: %v", out)
	}
	t.Logf("logout returned after %v", time.Since(start).Round(time.Millisecond))
	returned := time.Now()
	// 5. B's acknowledgement commits now (the row is free again).
	l1.ExecContext(ctx, `ROLLBACK`)
	for time.Since(returned) < 1500*time.Millisecond {
		if meOK(t, b.URL, tok) {
			syscall.Kill(listener, syscall.SIGCONT)
			t.Fatalf("B served a session %v after its logout on A had returned", time.Since(returned).Round(time.Millisecond))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Class: a revocation that does not wait for the other instances. revokeSigningKey returned once
// its own instance reloaded the keys; the others learned of it when the SIGNING_KEY_REVOKED event
// reached them and their reload ended, so a token of the revoked key, sent to another instance
// right after the mutation returned, was sometimes still accepted (a few in 30 on a loaded
// machine, with the cache on or off). Now the principal query checks the token's kid against
// signing_keys, and signing_keys carries the cache's triggers, so the revocation waits for every
// lease holder to drop what it read with that key (issue #25). Both with the cache and without.
func TestSigningKeyRevocation_RefusedOnTheOtherInstanceAtOnce(t *testing.T) {
	for _, cache := range []string{"true", "false"} {
		t.Run("PRINCIPAL_CACHE="+cache, func(t *testing.T) {
			schema := cacheFaultSetup(t)
			env := []string{"JWT_ALG=ES256", "ADMIN_USERNAME=root", "ADMIN_PASSWORD=correct horse battery", "RATE_LIMIT_PER_IP=100000", "PRINCIPAL_CACHE=" + cache}
			a := startInstance(t, schema, env...)
			b := startInstance(t, schema, env...)
			for i := range 30 {
				tok := accessToken(t, graphql(t, a.URL, "", `mutation { login(username: "root", password: "correct horse battery") { accessToken } }`), "login")
				keys := graphql(t, a.URL, tok, `{ signingKeys { kid state } }`)
				current := ""
				for _, k := range keys["data"].(map[string]any)["signingKeys"].([]any) {
					if k.(map[string]any)["state"] == "CURRENT" {
						current = k.(map[string]any)["kid"].(string)
					}
				}
				graphql(t, a.URL, tok, `mutation { rotateSigningKey { kid } }`)
				if !meOK(t, b.URL, tok) {
					t.Fatal("B refused a live token")
				}
				out := graphql(t, a.URL, tok, fmt.Sprintf(`mutation { revokeSigningKey(kid: %q) }`, current))
				if out["errors"] != nil {
					t.Fatalf("revokeSigningKey: %v", out)
				}
				out = graphql(t, b.URL, tok, `{ me { id } }`)
				if out["errors"] == nil {
					t.Fatalf("round %d: B accepted a token of a key whose revocation on A had returned", i)
				}
				// Refused as a revoked key's token is once the key ring has reloaded.
				if reason := fmt.Sprint(out["errors"].([]any)[0].(map[string]any)["extensions"].(map[string]any)["reason"]); reason != "INVALID_TOKEN" {
					t.Fatalf("round %d: B refused the revoked key's token with %q, want INVALID_TOKEN: %v", i, reason, out)
				}
			}
		})
	}
}

// Class: an invalidation that depends on the writer's session, with no bound on a missed one.
// Ordinary triggers do not fire in session_replication_role = replica (logical replication's apply
// workers, pg_restore --disable-triggers, an operator's session so set), and cached entries have
// no time to live: the disabled user is served from memory until the instance's channel breaks.
// ALTER TABLE … ENABLE ALWAYS TRIGGER makes them fire in every role.
func TestPrincipalCache_WriteInReplicationRoleReplicaIsHeard(t *testing.T) {
	schema := cacheFaultSetup(t)
	a := startInstance(t, schema)
	tok := accessToken(t, graphql(t, a.URL, "", `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`), "register")
	if !meOK(t, a.URL, tok) {
		t.Fatal("A refused a live session")
	}
	conn, err := adminConn(t, schema).Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, stmt := range []string{`SET session_replication_role = replica`, `UPDATE users SET disabled = true WHERE username = 'alice'`} {
		if _, err := conn.ExecContext(context.Background(), stmt); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * time.Second)
	if meOK(t, a.URL, tok) {
		t.Fatal("A still serves a user disabled 3 s ago (no trigger fired in replica mode)")
	}
}
