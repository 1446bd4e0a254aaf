// Package storetest gives each test a fresh, migrated database: a private in-memory SQLite
// database always, and a Postgres schema of its own when TEST_DATABASE_URL is set, so that tests
// run in parallel without seeing each other's rows. It is for tests only: nothing but _test files
// may import it.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"sync"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

	"gqlauth/store"
)

// MaxConns is the pool of every Postgres handle a test opens (and the DATABASE_MAX_CONNS tests
// give the servers they start): many tests run at once, each with its own handles and servers,
// against one Postgres whose max_connections may be the default 100.
const MaxConns = 6

// Kind names a database engine.
type Kind string

const (
	SQLite   Kind = "sqlite"
	Postgres Kind = "postgres"
)

// Kinds returns the engines to test on: SQLite always, Postgres when TEST_DATABASE_URL is set.
// Under CI=true a missing TEST_DATABASE_URL fails the test instead of skipping Postgres.
func Kinds(t testing.TB) []Kind {
	t.Helper()
	if os.Getenv("TEST_DATABASE_URL") != "" {
		return []Kind{SQLite, Postgres}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but TEST_DATABASE_URL is not set: Postgres tests must run in CI")
	}
	return []Kind{SQLite}
}

// Each runs fn as a parallel subtest on every engine of Kinds.
func Each(t *testing.T, fn func(t *testing.T, kind Kind)) {
	t.Helper()
	for _, kind := range Kinds(t) {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			fn(t, kind)
		})
	}
}

// Open returns a fresh migrated database of kind, closed and dropped when the test ends.
func Open(t testing.TB, kind Kind) *store.DB {
	t.Helper()
	db := OpenShared(t, kind, NewName(t, kind))
	if err := db.Migrate(context.Background()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

// NewName creates an empty database of kind (a Postgres schema, or a name for an in-memory SQLite
// database) that lives until the test ends, and returns its name for OpenShared.
func NewName(t testing.TB, kind Kind) string {
	t.Helper()
	b := make([]byte, 8)
	rand.Read(b)
	name := "t_" + hex.EncodeToString(b)
	if kind == Postgres {
		admin := adminDB(t)
		if _, err := admin.Exec("CREATE SCHEMA " + name); err != nil {
			t.Fatalf("create schema: %v", err)
		}
		t.Cleanup(func() { admin.Exec("DROP SCHEMA " + name + " CASCADE") })
	}
	return name
}

// OpenShared opens the database called name (from NewName); several handles may share it, as
// several server instances share one Postgres database. For SQLite that needs a shared cache.
func OpenShared(t testing.TB, kind Kind, name string) *store.DB {
	t.Helper()
	ctx := context.Background()
	var (
		db  *store.DB
		err error
	)
	switch kind {
	case Postgres:
		u, perr := url.Parse(os.Getenv("TEST_DATABASE_URL"))
		if perr != nil {
			t.Fatalf("TEST_DATABASE_URL: %v", perr)
		}
		q := u.Query()
		q.Set("search_path", name)
		u.RawQuery = q.Encode()
		db, err = store.OpenPostgres(ctx, u.String(), MaxConns)
	default:
		db, err = store.OpenSQLite(ctx, "file:"+name+"?mode=memory&cache=shared")
	}
	if err != nil {
		t.Fatalf("open %s: %v", kind, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

var (
	adminOnce sync.Once
	admin     *sql.DB
	adminErr  error
)

func adminDB(t testing.TB) *sql.DB {
	t.Helper()
	adminOnce.Do(func() {
		admin, adminErr = sql.Open("pgx", os.Getenv("TEST_DATABASE_URL"))
		if adminErr == nil {
			adminErr = admin.Ping()
		}
	})
	if adminErr != nil {
		t.Fatalf("TEST_DATABASE_URL is set but Postgres is unreachable: %v", adminErr)
	}
	return admin
}

// RedisURL returns TEST_REDIS_URL. Without it the test is skipped, or fails under CI=true.
func RedisURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("TEST_REDIS_URL")
	if url == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but TEST_REDIS_URL is not set: the Redis tests must run in CI")
		}
		t.Skip("TEST_REDIS_URL not set")
	}
	return url
}
