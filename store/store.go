// Package store is the only package that speaks SQL. It keeps users and sessions in Postgres
// (Bun + pgdialect over pgx) or in an embedded SQLite file (Bun + sqlitedialect over the pure-Go
// modernc driver), behind one set of functions that run inside or outside a transaction (Tx), and
// carries committed audit events between instances (LISTEN/NOTIFY). It holds no rules (those are
// account's) and serves no HTTP.
package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"gqlauth/model"
)

// ErrNotFound is returned when a lookup matches no row.
var ErrNotFound = errors.New("store: not found")

// ErrUnavailable is wrapped into errors caused by the database not answering (down, unreachable,
// connection lost), as opposed to errors in a query.
var ErrUnavailable = errors.New("store: database unavailable")

// DB is a database handle. The value returned by Open runs each call on its own; the Tx passed to
// the function given to Transact runs every call in that transaction.
type DB struct {
	root *bun.DB
	idb  bun.IDB
	pg   bool
	// hooks are the query hooks also run around the queries that bypass Bun (see principal.go).
	hooks *[]bun.QueryHook
	hot   *hotStatements
	// sinks receive every audit event once it is committed (see AddEventSink).
	sinks *eventSinks
	// committed collects, in a transaction, what to run once it has committed.
	committed *[]func()
	// listenConfig connects the Postgres listener (see ListenForEvents).
	listenConfig *pgx.ConnConfig
	// hotPool runs the one query of every guarded request on Postgres (see principal.go).
	hotPool *pgxpool.Pool
	// cache is the principal cache, nil when it is off (see principalcache.go).
	cache *principalCache
}

// DefaultMaxConns is how many Postgres connections an instance opens for its queries when the
// configuration does not say (DATABASE_MAX_CONNS). Two instances of the default, with their
// LISTEN and principal-cache connections, fit in Postgres's default max_connections (100) with
// room left for a third and for migrations and psql: exceeding it fails every request that needs
// a new connection, while a smaller pool only queues, and on a few cores more connections only
// queue inside Postgres anyway.
const DefaultMaxConns = 24

// MinMaxConns is the smallest pool OpenPostgres accepts: one connection for the principal query
// and three for everything else, so that a transaction never waits for a connection it holds.
const MinMaxConns = 4

// poolSplit divides maxConns between the principal query's own pool (a third: with the principal
// cache on it is rarely used) and everything else.
func poolSplit(maxConns int) (general, hot int) {
	hot = max(1, maxConns/3)
	return maxConns - hot, hot
}

// OpenPostgres connects to a Postgres database given as a postgres:// URL and checks that it
// answers. It opens at most maxConns connections for queries (0: DefaultMaxConns; below
// MinMaxConns: MinMaxConns); the LISTEN connections of events and of the principal cache come on
// top.
//
// The driver is pgx through database/sql: it is the maintained Postgres driver of the Go
// ecosystem, exposes SQLSTATE codes and constraint names for error mapping, and Bun supports it
// as a first-class pgdialect driver.
//
// Bun writes its arguments into the query text, so nearly every query it sends is a new text.
// pgx's default is to prepare and cache each new text per connection: two round trips and an
// ever-churning cache for queries that never repeat. The pool therefore runs Bun's queries in
// pgx's "exec" mode (one round trip, nothing cached), and the one query that runs on every request
// is a real prepared statement with parameters (see principal.go).
func OpenPostgres(ctx context.Context, url string, maxConns int) (*DB, error) {
	if maxConns == 0 {
		maxConns = DefaultMaxConns
	}
	general, hot := poolSplit(max(maxConns, MinMaxConns))
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	cfg.BuildContextWatcherHandler = keepConnectionOnCancel
	sqldb := stdlib.OpenDB(*cfg)
	sqldb.SetMaxOpenConns(general)
	sqldb.SetMaxIdleConns(general)
	sqldb.SetConnMaxIdleTime(5 * time.Minute)
	db := newDB(bun.NewDB(sqldb, pgdialect.New()), true)
	db.listenConfig = cfg.Copy()
	// The principal query skips database/sql: pgx's own pool and statement cache cost a fraction
	// of its per-query bookkeeping, on the query every guarded request makes.
	poolCfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		sqldb.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	poolCfg.MaxConns, poolCfg.MinConns = int32(hot), 0
	poolCfg.ConnConfig.BuildContextWatcherHandler = keepConnectionOnCancel
	poolCfg.MaxConnIdleTime = 5 * time.Minute
	if db.hotPool, err = pgxpool.NewWithConfig(ctx, poolCfg); err != nil {
		sqldb.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	return db, db.ping(ctx)
}

// keepConnectionOnCancel answers a canceled query (a client that went away) by asking Postgres to
// cancel it, and breaks the connection only if that has not ended it within two seconds. pgx's
// default breaks the connection at once, asynchronously: database/sql could then hand the dying
// connection to the next request, which failed with "bad connection" (seen in bench runs whose
// clients stop mid-request).
func keepConnectionOnCancel(c *pgconn.PgConn) ctxwatch.Handler {
	return &pgconn.CancelRequestContextWatcherHandler{Conn: c, CancelRequestDelay: 100 * time.Millisecond, DeadlineDelay: 2 * time.Second}
}

func newDB(root *bun.DB, pg bool) *DB {
	return &DB{root: root, idb: root, pg: pg, hooks: new([]bun.QueryHook), hot: &hotStatements{}, sinks: &eventSinks{}}
}

// OpenSQLite opens (creating it if needed) an SQLite database. dsn is a file path or a
// modernc.org/sqlite "file:" URI, such as "file:name?mode=memory" for a private in-memory database.
//
// SQLite allows one writer at a time, so the pool holds a single connection: transactions then
// serialize in the pool instead of failing with SQLITE_BUSY, and an in-memory database lives as
// long as the handle.
func OpenSQLite(ctx context.Context, dsn string) (*DB, error) {
	if !strings.HasPrefix(dsn, "file:") {
		dsn = "file:" + dsn
	}
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	// BEGIN IMMEDIATE takes the write lock at the start of a transaction, so that one that reads
	// and then writes cannot fail halfway because another process wrote in between.
	dsn += sep + "_pragma=foreign_keys(1)&_pragma=busy_timeout(10000)&_txlock=immediate"
	sqldb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	sqldb.SetMaxOpenConns(1)
	sqldb.SetMaxIdleConns(1)
	sqldb.SetConnMaxLifetime(0)
	sqldb.SetConnMaxIdleTime(0)
	db := newDB(bun.NewDB(sqldb, sqlitedialect.New()), false)
	return db, db.ping(ctx)
}

func (db *DB) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.root.PingContext(ctx); err != nil {
		db.Close()
		return fmt.Errorf("database unreachable: %w", err)
	}
	return nil
}

// Ping reports whether the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.root.PingContext(ctx) }

// Close closes the pool.
func (db *DB) Close() error {
	db.hot.close()
	if db.hotPool != nil {
		db.hotPool.Close()
	}
	return db.root.Close()
}

// IsPostgres reports whether the database is Postgres (as opposed to SQLite).
func (db *DB) IsPostgres() bool { return db.pg }

// AddQueryHook runs hook around every query, Bun's and the prepared ones; tests use it to count
// queries.
func (db *DB) AddQueryHook(hook bun.QueryHook) {
	db.root.AddQueryHook(hook)
	*db.hooks = append(*db.hooks, hook)
}

// Tx is a database handle inside one transaction (a bun.Tx underneath): every call of its DB runs
// in the transaction. Only a Tx records audit events (RecordEvent), so that an event commits or
// rolls back with the change it records: the plain *DB has no such method.
type Tx struct{ *DB }

// Transact runs fn in one transaction, committed if fn returns nil and rolled back otherwise.
// Called on a transaction's DB, fn runs in that transaction.
func (db *DB) Transact(ctx context.Context, fn func(tx *Tx) error) error {
	if _, inTx := db.idb.(bun.Tx); inTx {
		return fn(&Tx{db})
	}
	var (
		committed []func()
		dirty     bool
	)
	err := db.root.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		err := fn(&Tx{&DB{root: db.root, idb: tx, pg: db.pg, hooks: db.hooks, hot: db.hot, sinks: db.sinks, committed: &committed, listenConfig: db.listenConfig, hotPool: db.hotPool, cache: db.cache}})
		if err == nil && db.pg {
			// Did a trigger see a principal's row change? Then the instances caching principals
			// must acknowledge a barrier drawn after this COMMIT (docs/principal-cache.md).
			err = wrap(tx.QueryRowContext(ctx, "SELECT coalesce(current_setting('gqlauth.cache_dirty', true), '') = 'on'").Scan(&dirty), "Transact: cache dirty")
		}
		return err
	})
	if err != nil {
		return err
	}
	for _, f := range committed {
		f()
	}
	if dirty {
		return db.cacheBarrier(ctx)
	}
	return nil
}

// afterCommit runs f once the transaction db belongs to has committed, never if it rolls back;
// outside a transaction, at once.
func (db *DB) afterCommit(f func()) {
	if db.committed != nil {
		*db.committed = append(*db.committed, f)
		return
	}
	f()
}

// AddEventSink makes sink receive every audit event committed through this handle (and, on
// Postgres, by every instance: see ListenForEvents), once it is committed: never an event of a
// change that rolled back.
func (db *DB) AddEventSink(sink func(*model.AuditEvent)) {
	db.sinks.mu.Lock()
	defer db.sinks.mu.Unlock()
	db.sinks.list = append(db.sinks.list, sink)
}

type eventSinks struct {
	mu   sync.Mutex
	list []func(*model.AuditEvent)
}

func (s *eventSinks) deliver(e *model.AuditEvent) {
	s.mu.Lock()
	list := s.list
	s.mu.Unlock()
	for _, sink := range list {
		sink(e)
	}
}

// forUpdate locks the selected rows until the transaction ends. SQLite has no row locks and needs
// none: its single connection already serializes transactions.
func (db *DB) forUpdate(q *bun.SelectQuery, table string) *bun.SelectQuery {
	if db.pg {
		return q.For("UPDATE OF ?", bun.Ident(table))
	}
	return q
}

// noRows reports whether a row limit asks for no rows at all. Such a limit must never reach Bun:
// its Limit(0) — and any negative limit — writes no LIMIT clause, which would return or delete
// every row. Every query whose size a caller passes in checks it first.
func noRows(limit int) bool { return limit <= 0 }

// deleteExpired deletes up to limit rows of model's table (keyed by key) that expired before
// before (their expires_at), and returns how many it deleted.
func (db *DB) deleteExpired(ctx context.Context, model any, key string, before time.Time, limit int) (int, error) {
	if noRows(limit) {
		return 0, nil
	}
	var n int64
	// The model is a variable, so this write runs on a Tx as every write that could reach a
	// principal's table must (the principal cache's barrier is part of Transact).
	err := db.Transact(ctx, func(tx *Tx) error {
		dead := tx.idb.NewSelect().Model(model).Column(key).Where("expires_at < ?", before).Limit(int64(limit))
		res, err := tx.idb.NewDelete().Model(model).Where("? IN (?)", bun.Ident(key), dead).Exec(ctx)
		if err == nil {
			n, _ = res.RowsAffected()
		}
		return err
	})
	return int(n), err
}

// wrap gives a database error the name of the operation, once; ErrNotFound stays recognizable.
func wrap(err error, op string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if unavailable(err) {
		return fmt.Errorf("store.%s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("store.%s: %w", op, err)
}

// unavailable reports whether err means the database could not be reached or the connection was
// lost, rather than that a query failed.
func unavailable(err error) bool {
	var (
		netErr     net.Error
		connectErr *pgconn.ConnectError
		pgErr      *pgconn.PgError
	)
	switch {
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, sql.ErrConnDone),
		errors.As(err, &netErr), errors.As(err, &connectErr):
		return true
	case errors.As(err, &pgErr):
		// Class 08: connection exception; 57P01–57P03: admin shutdown, crash shutdown, cannot connect now.
		return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P")
	}
	return false
}

// uniqueViolation returns the name of the unique index or constraint err violates, or "".
func uniqueViolation(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return pgErr.ConstraintName
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) && liteErr.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE {
		return liteErr.Error()
	}
	return ""
}

// DumpTable returns every row of table as text, for tests that inspect what is stored at rest.
func (db *DB) DumpTable(ctx context.Context, table string) ([]map[string]string, error) {
	rows, err := db.idb.QueryContext(ctx, "SELECT * FROM "+bunIdent(table))
	if err != nil {
		return nil, wrap(err, "DumpTable")
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []map[string]string
	for rows.Next() {
		values := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range values {
			ptrs[i] = &values[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, wrap(err, "DumpTable")
		}
		row := map[string]string{}
		for i, c := range cols {
			row[c] = values[i].String
		}
		out = append(out, row)
	}
	return out, wrap(rows.Err(), "DumpTable")
}

func bunIdent(name string) string { return `"` + strings.ReplaceAll(name, `"`, `""`) + `"` }

// Exec runs a statement outside the schema's own queries (the load harness creates and drops
// schemas with it).
func (db *DB) Exec(ctx context.Context, query string) error {
	_, err := db.idb.ExecContext(ctx, query)
	return wrap(err, "Exec")
}

// QueryRow runs a query outside the schema's own ones and scans its one row into dest (tests
// inspect the database with it).
func (db *DB) QueryRow(ctx context.Context, query string, dest ...any) error {
	return wrap(db.idb.QueryRowContext(ctx, query).Scan(dest...), "QueryRow")
}
