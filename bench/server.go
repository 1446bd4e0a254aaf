package main

// The in-process server (or a remote one) and the virtual users that call it.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/uptrace/bun"

	"gqlauth/account"
	"gqlauth/graph"
	"gqlauth/logsink"
	"gqlauth/store"
	"gqlauth/token"
	"gqlauth/web"
)

// environment is the server under load and the users it was seeded with.
type environment struct {
	concurrency int
	cost        int
	base        string
	client      *http.Client
	db          *store.DB // in-process only: for the ceiling handler
	// principalCache runs the in-process Postgres server with the principal cache, as server.go
	// does by default; queries counts its database queries (each result's queries per request).
	principalCache bool
	queries        queryCount
	recipe         bool   // the recipe's handler is served at /recipe (Postgres only)
	dsn            string // the in-process server's Postgres URL, schema included
	svc            *account.Service
	tokens         *token.Tokens
	scale          *scaleData // -scale: the seeded population
	accessLog      graph.AccessLog
	passwords      *account.Passwords
	users          []*virtualUser
	mu             sync.Mutex
}

type virtualUser struct {
	username, userID, sessionID string
	access, refresh             string
}

// startProcs is GOMAXPROCS as the runtime chose it, before startServer adds to it (server.go's).
var startProcs = runtime.GOMAXPROCS(0)

// startServer runs gqlauth's GraphQL handler and a ceiling handler in this process.
func (env *environment) startServer(ctx context.Context, databaseURL string) (func(), error) {
	var (
		db  *store.DB
		err error
	)
	cleanup := func() {}
	var pool *pgxpool.Pool
	if databaseURL != "" {
		// A fresh schema per run, so runs never see each other's rows.
		admin, err := store.OpenPostgres(ctx, databaseURL, store.MinMaxConns)
		if err != nil {
			return nil, err
		}
		schema := "bench_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
		if err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
			return nil, err
		}
		cleanup = func() { admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); admin.Close() }
		sep := "?"
		if strings.Contains(databaseURL, "?") {
			sep = "&"
		}
		env.dsn = databaseURL + sep + "search_path=" + schema
		db, err = store.OpenPostgres(ctx, env.dsn, store.DefaultMaxConns)
		if err == nil {
			pool, err = recipePool(ctx, databaseURL+sep+"search_path="+schema)
		}
	} else {
		dir, _ := os.MkdirTemp("", "gqlauth-bench")
		cleanup = func() { os.RemoveAll(dir) }
		db, err = store.OpenSQLite(ctx, dir+"/bench.db")
	}
	if err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx); err != nil {
		return nil, err
	}
	env.db = db
	db.AddQueryHook(&env.queries)
	secret := []byte(token.NewSecret())
	tokens, err := token.NewTokens(token.TokenConfig{Secret: secret, Issuer: "gqlauth", Audience: "gqlauth", TTL: 15 * time.Minute})
	if err != nil {
		return nil, err
	}
	if env.passwords, err = account.NewPasswords(account.PasswordConfig{Cost: env.cost}); err != nil {
		return nil, err
	}
	runtime.GOMAXPROCS(startProcs + runtime.NumCPU()) // as server.go does for the bcrypt workers
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400) // as server.go does (DefaultGCPercent); the recipe shares the process
	}
	// As server.go builds it: the request log line, written to -log-file, and metrics.
	var logOut io.Writer = io.Discard
	if logPath != "discard" {
		f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		closeLog := cleanup
		cleanup = func() { f.Close(); closeLog() }
		logOut = f
	}
	sink := logsink.New(logOut, logsink.Interval, logsink.Size)
	closeSink := cleanup
	cleanup = func() { sink.Close(); closeSink() }
	loud := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})
	log := slog.New(graph.NewLogHandler(sink, false, nil, func(all slog.Handler) slog.Handler {
		return sink.Handler(teeHandler{all, loud}, graph.InRequest)
	}))
	svc := account.NewService(db, tokens, env.passwords, account.ServiceConfig{
		Cores:      startProcs,
		RefreshTTL: 720 * time.Hour, ReuseInterval: 10 * time.Second, SignupEnabled: true, Logger: log,
		// No rate limits: the harness is one client IP doing what a crowd would.
	})
	metrics := graph.NewMetrics(prometheus.NewRegistry(), env.passwords.QueueDepth)
	env.svc, env.tokens = svc, tokens
	gql, err := graph.NewHandler(&graph.Resolver{Account: svc}, graph.Options{Logger: log, Metrics: metrics, Introspection: true, AccessLog: env.accessLog})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/query", web.Credentials(tokens, web.CredentialOptions{})(gql))
	if pool != nil {
		mux.Handle("/recipe", recipeHandler(pool, secret))
		env.recipe = true
	}
	mux.HandleFunc("/ceiling", func(w http.ResponseWriter, r *http.Request) {
		// What any server must pay per guarded request: the directive's user/session query on the
		// same store and pool, and a small JSON body. No GraphQL, no JWT.
		sess, user, err := db.Principal(store.Uncached(r.Context()), r.Header.Get("X-Session"), r.Header.Get("X-User"))
		if err != nil || !sess.Live(time.Now()) || user.Disabled {
			http.Error(w, `{"errors":[{"message":"ceiling query failed","extensions":{"code":"INTERNAL_SERVER_ERROR"}}]}`, 500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data":{"me":{"id":"`+user.ID+`","username":"`+user.Username+`","role":"`+string(user.Role)+`"}}}`)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	env.base = "http://" + ln.Addr().String()
	stopCache := func() {}
	if env.principalCache && db.IsPostgres() {
		run, err := db.CachePrincipals(store.CacheConfig{})
		if err != nil {
			return nil, err
		}
		var cacheCtx context.Context
		cacheCtx, stopCache = context.WithCancel(ctx)
		joined := make(chan struct{})
		var once sync.Once
		go run(cacheCtx, func() { once.Do(func() { close(joined) }) })
		select {
		case <-joined:
		case <-time.After(10 * time.Second):
			stopCache()
			srv.Close()
			return nil, fmt.Errorf("the principal cache did not start serving")
		}
	}
	return func() {
		stopCache()
		srv.Close()
		if pool != nil {
			pool.Close()
		}
		db.Close()
		cleanup()
	}, nil
}

// queryCount counts the in-process server's database queries (a bun.QueryHook).
type queryCount struct{ n atomic.Int64 }

func (c *queryCount) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context { return ctx }
func (c *queryCount) AfterQuery(context.Context, *bun.QueryEvent)                        { c.n.Add(1) }

// teeHandler formats every record with all (what the server pays) and shows warnings and errors
// with loud, so that a run that goes wrong says why.
type teeHandler struct{ all, loud slog.Handler }

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool { return t.all.Enabled(ctx, l) }
func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	if t.loud.Enabled(ctx, r.Level) {
		t.loud.Handle(ctx, r)
	}
	return t.all.Handle(ctx, r)
}
func (t teeHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return teeHandler{t.all.WithAttrs(a), t.loud.WithAttrs(a)}
}
func (t teeHandler) WithGroup(n string) slog.Handler {
	return teeHandler{t.all.WithGroup(n), t.loud.WithGroup(n)}
}
