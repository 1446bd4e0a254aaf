package mailer_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"gqlauth/internal/smtptest"
	"gqlauth/mailer"
	"gqlauth/store/storetest"
)

// received is one message as the test SMTP server got it.
type received = smtptest.Message

// startSMTP starts the shared test SMTP server (internal/smtptest).
func startSMTP(t testing.TB) *smtptest.Server { return smtptest.Start(t) }

// database is a fresh database of one engine that several handles (instances) may open.
type database struct {
	kind storetest.Kind
	dsn  string // a file path for SQLite, a postgres:// URL with its own search_path
}

func newDatabase(t *testing.T, kind storetest.Kind) database {
	t.Helper()
	if kind == storetest.SQLite {
		// Not t.TempDir(): a test's name may put a % into the path, which the file: URI reads.
		dir, err := os.MkdirTemp("", "mailer-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		return database{kind: kind, dsn: dir + "/mail.db"}
	}
	schema := storetest.NewName(t, kind)
	u, err := url.Parse(os.Getenv("TEST_DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return database{kind: kind, dsn: u.String()}
}

func (d database) engine() mailer.Engine {
	if d.kind == storetest.Postgres {
		return mailer.Postgres
	}
	return mailer.SQLite
}

// open opens a pool configured as the store configures its own (store.OpenSQLite and
// store.OpenPostgres): one connection with immediate transactions on SQLite, pgx's exec mode
// through database/sql on Postgres.
func (d database) open(t testing.TB) *sql.DB {
	t.Helper()
	db, err := openPool(d.kind, d.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func openPool(kind storetest.Kind, dsn string) (*sql.DB, error) {
	if kind == storetest.Postgres {
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, err
		}
		cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
		db := stdlib.OpenDB(*cfg)
		db.SetMaxOpenConns(storetest.MaxConns)
		return db, db.Ping()
	}
	db, err := sql.Open("sqlite", "file:"+dsn+"?_pragma=foreign_keys(1)&_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return db, db.Ping()
}

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// testConfig is a configuration with short waits, sending to srv (if not nil).
func testConfig(srv *smtptest.Server) mailer.Config {
	cfg := mailer.Config{
		From: "Acme <no-reply@acme.example>", AppName: "Acme", Secret: testSecret, Logger: testLogger(),
		PollInterval: 50 * time.Millisecond, SendTimeout: 2 * time.Second, RescueAfter: 3 * time.Second,
		Backoff: func(int) time.Duration { return 100 * time.Millisecond },
	}
	if srv != nil {
		cfg.SMTPURL = srv.URL()
	}
	return cfg
}

func testLogger() *slog.Logger {
	if os.Getenv("MAILER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newMailer builds a migrated Mailer on db; started is whether it also delivers (stopped when
// the test ends).
func newMailer(t testing.TB, db *sql.DB, engine mailer.Engine, cfg mailer.Config, started bool) *mailer.Mailer {
	t.Helper()
	m, err := mailer.New(db, engine, cfg)
	if err != nil {
		t.Fatalf("mailer.New: %v", err)
	}
	if err := m.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if started {
		if err := m.Start(context.Background()); err != nil {
			t.Fatalf("Start: %v", err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			m.Stop(ctx)
		})
	}
	return m
}

// enqueue queues msgs in one transaction and commits it (or rolls it back).
func enqueue(t testing.TB, db *sql.DB, m *mailer.Mailer, commit bool, msgs ...mailer.Message) error {
	t.Helper()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range msgs {
		if err := m.Enqueue(ctx, tx, msg); err != nil {
			tx.Rollback()
			return err
		}
	}
	if !commit {
		return tx.Rollback()
	}
	return tx.Commit()
}

// jobs returns the outbox's rows as text: every column of river_job, in id order.
func jobs(t testing.TB, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query("SELECT * FROM river_job ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for i, v := range vals {
			if raw, ok := v.([]byte); ok {
				v = string(raw)
			}
			fmt.Fprintf(&b, "%s=%v ", cols[i], v)
		}
		out = append(out, b.String())
	}
	return out
}

// jobStates returns each job's state and attempt count, in id order.
func jobStates(t testing.TB, db *sql.DB) (states []string, attempts []int) {
	t.Helper()
	rows, err := db.Query("SELECT state, attempt FROM river_job ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		var a int
		if err := rows.Scan(&s, &a); err != nil {
			t.Fatal(err)
		}
		states, attempts = append(states, s), append(attempts, a)
	}
	return states, attempts
}

// waitUntil polls cond every 20 ms until it holds, and fails past timeout.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
