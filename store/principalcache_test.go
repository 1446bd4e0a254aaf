package store_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"time"

	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/store/storetest"
)

// TestPrincipalCache_EveryTableAPrincipalIsReadFromIsWatched reads the principal queries' FROM and
// JOIN clauses and checks that each table has the cache's three triggers (update, delete,
// truncate): a column added to the principal from a new table must bring its triggers along.
func TestPrincipalCache_EveryTableAPrincipalIsReadFromIsWatched(t *testing.T) {
	if !contains(storetest.Kinds(t), storetest.Postgres) {
		t.Skip("TEST_DATABASE_URL not set")
	}
	db := storetest.Open(t, storetest.Postgres)
	tables := map[string]bool{}
	for _, q := range db.PrincipalQueries() {
		for _, m := range regexp.MustCompile(`(?i)\b(?:FROM|JOIN)\s+"?(\w+)"?`).FindAllStringSubmatch(q, -1) {
			tables[m[1]] = true
		}
	}
	if !tables["sessions"] || !tables["users"] || !tables["api_keys"] || !tables["signing_keys"] {
		t.Fatalf("tables read: %v; the test no longer reads the principal queries", tables)
	}
	for table := range tables {
		var n int
		err := db.QueryRow(context.Background(), `SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relname = '`+table+`' AND c.relnamespace = current_schema()::regnamespace AND t.tgfoid = 'gqlauth_cache_invalidate'::regproc`, &n)
		if err != nil {
			t.Fatal(err)
		}
		if n != 3 {
			t.Errorf("%s has %d of the principal cache's triggers, want 3 (update, delete, truncate)", table, n)
		}
	}
}

func contains[T comparable](xs []T, x T) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// TestPrincipalCache_ARevocationDuringARead_IsNotCached revokes a session (and waits, as every
// revoker does) between the cache's database read of it and the store of what it read: the read
// may answer its own request, but must not be kept for the next one.
func TestPrincipalCache_ARevocationDuringARead_IsNotCached(t *testing.T) {
	db, u, s := cachingDBWithASession(t, store.CacheConfig{})
	ctx := context.Background()
	db.AfterCacheLoad(func() {
		db.AfterCacheLoad(nil)
		if _, err := db.RevokeSessions(ctx, u.ID, s.ID, store.RevokeOne, time.Now().UTC()); err != nil {
			t.Error(err)
		}
	})
	if sess, _, err := db.Principal(ctx, s.ID, u.ID); err != nil || sess.RevokedAt != nil {
		t.Fatalf("the read that started before the revocation: %+v, %v", sess, err)
	}
	if sess, _, err := db.Principal(ctx, s.ID, u.ID); err != nil || sess.RevokedAt == nil {
		t.Fatalf("the next read, after the revocation returned: %+v, %v (a stale read was cached)", sess, err)
	}
	if !db.CacheServing() {
		t.Fatal("the cache stopped serving: the test proved nothing about it")
	}
}

// TestPrincipalCache_SigningKeyRevocationDropsItsEntries: an entry read with a token of key kid
// says the key was live then; the key's revocation (like a logout) returns only once every lease
// holder has dropped the entries read with it, so the next read asks the database and is refused.
func TestPrincipalCache_SigningKeyRevocationDropsItsEntries(t *testing.T) {
	db, u, s := cachingDBWithASession(t, store.CacheConfig{})
	ctx := context.Background()
	now := s.CreatedAt
	for _, kid := range []string{"k1", "k2"} {
		if err := db.InsertSigningKey(ctx, &model.SigningKey{Kid: kid, Alg: "ES256", PublicKey: []byte("p"), PrivateKey: []byte("s"), CreatedAt: now, ActivatesAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	loads := 0
	db.AfterCacheLoad(func() { loads++ })
	for range 3 {
		for _, kid := range []string{"k1", "k2"} {
			if _, _, err := db.TokenPrincipal(ctx, s.ID, u.ID, kid); err != nil {
				t.Fatal(err)
			}
		}
	}
	if loads != 2 {
		t.Fatalf("%d database reads for 6 principals of 2 keys, want 2: the cache does not serve them", loads)
	}
	if ok, err := db.RevokeSigningKey(ctx, "k1", time.Now().UTC()); err != nil || !ok {
		t.Fatalf("revoke: %v %v", ok, err)
	}
	if _, _, err := db.TokenPrincipal(ctx, s.ID, u.ID, "k1"); !errors.Is(err, store.ErrSigningKeyRevoked) {
		t.Fatalf("the revoked key's token after its revocation returned: %v (served from memory)", err)
	}
	if _, _, err := db.TokenPrincipal(ctx, s.ID, u.ID, "k2"); err != nil {
		t.Fatal(err)
	}
	if loads != 3 {
		t.Fatalf("%d database reads, want 3: the other key's entry should have stayed", loads)
	}
	if !db.CacheServing() {
		t.Fatal("the cache stopped serving: the test proved nothing about it")
	}
}

// cachingDBWithASession opens a fresh Postgres schema whose principal cache is serving (it has
// joined), with one user and one live session.
func cachingDBWithASession(t *testing.T, cfg store.CacheConfig) (*store.DB, *model.User, *model.Session) {
	t.Helper()
	if !contains(storetest.Kinds(t), storetest.Postgres) {
		t.Skip("TEST_DATABASE_URL not set")
	}
	db := storetest.Open(t, storetest.Postgres)
	ctx := context.Background()
	run, err := db.CachePrincipals(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	joined, done := make(chan struct{}), make(chan struct{})
	var once sync.Once
	go func() { defer close(done); run(runCtx, func() { once.Do(func() { close(joined) }) }) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-joined:
	case <-time.After(10 * time.Second):
		t.Fatal("the cache did not start serving")
	}
	now := time.Now().UTC()
	u := &model.User{ID: "u1", Username: "alice", Role: model.RoleUser, CreatedAt: now}
	s := &model.Session{ID: "s1", UserID: u.ID, RefreshHash: "h1", CreatedAt: now, LastUsedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := db.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateSession(ctx, s); err != nil {
		t.Fatal(err)
	}
	return db, u, s
}

// TestPrincipalCache_HoldsAtMostMaxEntries: past its bound the cache forgets arbitrary entries;
// every principal is still answered, and a revocation still counts.
func TestPrincipalCache_HoldsAtMostMaxEntries(t *testing.T) {
	db, u, first := cachingDBWithASession(t, store.CacheConfig{MaxEntries: 3})
	ctx := context.Background()
	ids := []string{first.ID}
	for i := range 9 {
		now := time.Now().UTC()
		s := &model.Session{ID: fmt.Sprintf("s-%d", i), UserID: u.ID, RefreshHash: fmt.Sprintf("h-%d", i), CreatedAt: now, LastUsedAt: now, ExpiresAt: now.Add(time.Hour)}
		if err := db.CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	for range 2 {
		for _, id := range ids {
			if sess, _, err := db.Principal(ctx, id, u.ID); err != nil || sess.ID != id || sess.RevokedAt != nil {
				t.Fatalf("principal of %s: %+v, %v", id, sess, err)
			}
		}
	}
	if n := db.CachedPrincipals(); n == 0 || n > 3 {
		t.Fatalf("the cache holds %d principals, want 1 to 3", n)
	}
	if _, err := db.RevokeSessions(ctx, u.ID, ids[9], store.RevokeOne, time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	if sess, _, err := db.Principal(ctx, ids[9], u.ID); err != nil || sess.RevokedAt == nil {
		t.Fatalf("after its revocation: %+v, %v", sess, err)
	}
	if !db.CacheServing() {
		t.Fatal("the cache stopped serving: the test proved nothing about it")
	}
}
