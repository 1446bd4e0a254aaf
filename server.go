// Command gqlauth serves the GraphQL auth API. server.go is wiring only, and reads top to bottom:
// load the configuration (config), open the store, build the services, mount the handlers, serve.
// The layout of the packages, and the path of a request and of an event, are in ARCHITECTURE.md.
package main

import (
	"context"
	_ "embed"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"gqlauth/account"
	"gqlauth/config"
	"gqlauth/feed"
	"gqlauth/graph"
	"gqlauth/logsink"
	"gqlauth/mailer"
	"gqlauth/mfa"
	"gqlauth/oidc"
	"gqlauth/ratelimit"
	"gqlauth/store"
	"gqlauth/token"
	"gqlauth/web"
)

//go:embed schema.graphqls
var schemaSDL string

// DefaultGCPercent is the GOGC the server runs with unless GOGC is set.
const DefaultGCPercent = 400

// startProcs is GOMAXPROCS as the runtime chose it (CPU quota aware), before run adds to it.
var startProcs = runtime.GOMAXPROCS(0)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout, nil); err != nil {
		// One line, whatever the driver's message looks like.
		fmt.Fprintln(os.Stderr, "gqlauth:", strings.Join(strings.Fields(err.Error()), " "))
		os.Exit(1)
	}
}

// run serves until ctx is done. ready, if not nil, receives the listening address.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer, ready chan<- string) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	// Lines of GraphQL requests are written in batches (see logsink), everything else at once.
	sink := logsink.New(stdout, logsink.Interval, logsink.Size)
	defer sink.Close()
	log := slog.New(graph.NewLogHandler(sink, cfg.LogJSON, &slog.HandlerOptions{Level: cfg.LogLevel},
		func(h slog.Handler) slog.Handler { return sink.Handler(h, graph.InRequest) }))

	db, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()

	if getenv("GOGC") == "" {
		// The live heap is small (caches of a few MB), so the default GOGC=100 collects every few
		// MB of garbage: hundreds of cycles a second under load, each shrinking the goroutine
		// stacks that the next requests grow again. 400 trades tens of MB for a third of the CPU
		// (see README, Performance). GOGC, and GOMEMLIMIT, override it as usual.
		debug.SetGCPercent(DefaultGCPercent)
	}
	s, err := build(ctx, cfg, db, log)
	if err != nil {
		return err
	}
	defer s.close()
	// bcrypt workers run on their own low-priority threads; give the Go scheduler a P for each, so
	// that a login flood never holds every P and the cheap requests keep theirs (see account.pool).
	runtime.GOMAXPROCS(startProcs + cfg.BcryptWorkers)

	return serve(ctx, cfg, log, mount(cfg, db, s), s, ready)
}

// openStore opens the database the configuration names, and migrates it.
func openStore(ctx context.Context, cfg config.Config) (*store.DB, error) {
	var (
		db  *store.DB
		err error
	)
	if cfg.DatabaseURL != "" {
		db, err = store.OpenPostgres(ctx, cfg.DatabaseURL, cfg.DatabaseMaxConns)
	} else {
		db, err = store.OpenSQLite(ctx, cfg.SQLitePath)
	}
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %v", err)
	}
	if err := db.Migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("database migration failed: %v", err)
	}
	return db, nil
}

// services are what build makes: the rules, what they use, and the GraphQL endpoint.
type services struct {
	keys      *token.KeyRing // nil with HS256
	tokens    *token.Tokens
	account   *account.Service
	providers *oidc.RelyingParties // nil: no OpenID Connect provider
	mail      *mailer.Mailer
	signIn    *web.SignIn
	gql       *graph.Handler
	metrics   *prometheus.Registry
	listen    func(ctx context.Context, connected func()) // the event listener (graph.WireEvents)
	cache     func(ctx context.Context, joined func())    // the principal cache's lease and channel, or nil
	close     func()
}

// build makes the services of cfg on db: tokens and signing keys, passwords, rate limits, the
// account rules, provider sign-in, the GraphQL endpoint, and the path of committed events.
func build(ctx context.Context, cfg config.Config, db *store.DB, log *slog.Logger) (*services, error) {
	s := &services{close: func() {}}
	if len(cfg.JWTSecret) == 0 {
		secret, err := db.SettingOrInit(ctx, "jwt_secret", token.NewSecret())
		if err != nil {
			return nil, fmt.Errorf("JWT_SECRET: could not keep a generated key in the embedded database: %v", err)
		}
		if cfg.JWTSecret, err = base64.RawURLEncoding.DecodeString(secret); err != nil {
			return nil, fmt.Errorf("JWT_SECRET: the generated key in the embedded database is corrupt")
		}
	}
	var err error
	if cfg.JWTAlg != "HS256" {
		s.keys, err = token.NewKeyRing(ctx, db, token.KeyRingConfig{
			Alg: cfg.JWTAlg, Secret: cfg.JWTSecret, PublishDelay: cfg.KeyPublishDelay, Rotation: cfg.KeyRotation,
			TokenTTL: cfg.AccessTTL, Logger: log,
		})
		if err != nil {
			return nil, err
		}
	}
	s.tokens, err = token.NewTokens(token.TokenConfig{Secret: cfg.JWTSecret, Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience, TTL: cfg.AccessTTL, Keys: s.keys})
	if err != nil {
		return nil, fmt.Errorf("JWT_SECRET: %v", err)
	}
	passwords, err := account.NewPasswords(account.PasswordConfig{Cost: cfg.BcryptCost, Workers: cfg.BcryptWorkers, QueueTimeout: cfg.BcryptQueueTimeout})
	if err != nil {
		return nil, fmt.Errorf("BCRYPT_COST: %v", err)
	}
	var counter ratelimit.Counter = ratelimit.NewMemory(nil)
	if cfg.RedisURL != "" {
		redis, err := ratelimit.NewRedis(ctx, cfg.RedisURL, "gqlauth:ratelimit:")
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %v", err)
		}
		s.close = func() { redis.Close() }
		counter = redis
	}
	fail := func(err error) (*services, error) { s.close(); return nil, err }
	if s.mail, err = buildMailer(ctx, cfg, db, log); err != nil {
		return fail(err)
	}

	cfg.Passkeys.Logger = log
	passkeys, err := mfa.NewPasskeys(cfg.Passkeys.PasskeyConfig)
	if err != nil {
		return fail(fmt.Errorf("WEBAUTHN_RP_ID/WEBAUTHN_ORIGINS: %v", err))
	}
	if cfg.Passkeys.Guessed {
		log.Info("passkeys work only on "+strings.Join(cfg.Passkeys.Origins, ", ")+" (RP ID localhost); set WEBAUTHN_RP_ID or PUBLIC_URL to the domain users reach", "origins", cfg.Passkeys.Origins)
	}
	if len(cfg.Passkeys.Skipped) > 0 {
		log.Info("these origins cannot run passkey ceremonies for RP ID "+cfg.Passkeys.RPID+"; set WEBAUTHN_RP_ID and WEBAUTHN_ORIGINS to include them", "skipped", cfg.Passkeys.Skipped)
	}

	events := feed.New()
	s.providers = oidc.New(db, cfg.OIDC, nil, log)
	s.account = account.NewService(db, s.tokens, passwords, account.ServiceConfig{
		Cores:      startProcs,
		RefreshTTL: cfg.RefreshTTL, ReuseInterval: cfg.ReuseInterval, SignupEnabled: cfg.SignupEnabled, Logger: log,
		Limits: account.Limits{
			Counter:   counter,
			PerClient: cfg.RateLimitPerIP, ClientWindow: cfg.RateLimitIPWindow,
			FailuresPerUser: cfg.UserFailures, UserWindow: cfg.UserFailuresWindow,
			FailuresPerUserAllClients: cfg.UserFailuresAll,
			SecondFactorFailures:      cfg.SecondFactorFailures,
			MailPerAddress:            cfg.Mail.PerAddress,
		},
		Mail: account.MailConfig{Mailer: s.mail, LinkURL: cfg.Mail.LinkURL, VerifyTTL: cfg.Mail.VerifyTTL, ResetTTL: cfg.Mail.ResetTTL,
			CodeTTL: cfg.Mail.CodeTTL, VerificationRequired: cfg.Mail.VerificationRequired},
		AuditRetention: cfg.AuditRetention, Providers: s.providers.Names(), LinkVerifiedEmail: cfg.LinkVerifiedEmail,
		MFA:  account.MFAConfig{RequiredRoles: cfg.MFARequiredRoles, ReauthWindow: cfg.ReauthWindow, Issuer: cfg.Mail.AppName, Passkeys: passkeys},
		Feed: events,
	})
	s.mail.SetResolver(s.account.ResolveMailRequest) // before the senders start
	if cfg.AdminUsername != "" {
		created, err := s.account.EnsureAdmin(ctx, cfg.AdminUsername, cfg.AdminPassword)
		if err != nil {
			return fail(fmt.Errorf("ADMIN_USERNAME/ADMIN_PASSWORD: %v", err))
		}
		if created {
			log.Info("created admin user", "username", cfg.AdminUsername)
		}
	}
	s.signIn = web.NewSignIn(s.account, s.providers)

	s.metrics = prometheus.NewRegistry()
	s.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var trusted *graph.TrustedDocuments
	if cfg.TrustedDocuments != "" {
		if trusted, err = graph.ReadTrustedDocuments(cfg.TrustedDocuments, cfg.TrustedOnly); err != nil {
			return fail(err)
		}
	}
	// The root resolver holds the services the resolvers call: add your own here (README, "Add
	// your own field").
	resolver := &graph.Resolver{
		Account: s.account,
		SignIn:  s.signIn,
	}
	s.gql, err = graph.NewHandler(resolver, graph.Options{
		Logger: log, Metrics: graph.NewMetrics(s.metrics, passwords.QueueDepth),
		Limits: cfg.QueryLimits, Introspection: cfg.Introspection, Debug: cfg.GraphQLDebug, Trusted: trusted,
		Origins: cfg.CORSOrigins, Sockets: cfg.Sockets, AccessLog: cfg.AccessLog,
	})
	if err != nil {
		return fail(err)
	}
	s.listen = graph.WireEvents(db, events, s.keys, s.gql.Sockets, log)
	if cfg.PrincipalCache {
		s.cache, err = db.CachePrincipals(store.CacheConfig{OnError: func(err error) {
			log.Warn("principal cache off until its channel is back", "err", err)
		}})
		if err != nil {
			return fail(err)
		}
	}
	return s, nil
}

// mount routes every endpoint: the edge's middleware (CORS, credentials) in front of GraphQL and
// the edge's own endpoints.
func mount(cfg config.Config, db *store.DB, s *services) http.Handler {
	mux := http.NewServeMux()
	cors := web.CORS(cfg.CORSOrigins)
	credentials := web.Credentials(s.tokens, web.CredentialOptions{
		Proxies: cfg.TrustedProxies, RefreshCookie: cfg.RefreshCookie, CookieSecure: cfg.CookieSecure, Origins: cfg.CORSOrigins,
	})
	mux.Handle("/query", cors(credentials(s.gql)))
	mux.Handle("/oauth/token", cors(credentials(web.TokenEndpoint(s.account))))
	mux.Handle("/auth/", cors(credentials(s.signIn.Handler())))
	mux.Handle("/oauth/introspect", credentials(web.Introspection(s.account)))
	mux.Handle("/.well-known/jwks.json", cors(web.JWKS(s.keys, cfg.JWKSMaxAge)))
	mux.Handle("/.well-known/oauth-authorization-server", cors(web.Metadata(cfg.JWTIssuer, cfg.PublicURL, cfg.JWKSMaxAge, s.providers != nil)))
	playground := web.Playground()
	mux.Handle("GET /{$}", playground)
	mux.Handle("GET /playground/", playground)
	mux.HandleFunc("GET /schema.graphql", func(w http.ResponseWriter, r *http.Request) {
		// The SDL with directive usages, which introspection cannot show: codegen users want to
		// know which fields need @auth.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, schemaSDL)
	})
	if cfg.Mail.DevInboxServed() {
		mux.Handle("GET /dev/mail", web.DevMail(s.mail.Inbox))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := db.Ping(ctx); err != nil {
			http.Error(w, "database unavailable", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	return web.DrainBodies(web.NoSniff(mux))
}

// serve listens (HOST/PORT, and METRICS_ADDR for /metrics), starts the background work (sweeps,
// the event listener, the key ring's reloads and rotations) and serves until ctx is done, then
// shuts down within SHUTDOWN_TIMEOUT.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger, handler http.Handler, s *services, ready chan<- string) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
	if err != nil {
		if cfg.Host != "" {
			return fmt.Errorf("HOST/PORT: %v", err)
		}
		return fmt.Errorf("PORT: %v", err)
	}
	srv := newHTTPServer(handler)
	// /metrics is not authenticated and names every operation's traffic and failures: it gets a
	// listener of its own (e.g. loopback, or a port only the scraper can reach), never the public
	// port, where a reverse proxy on the same host would make every visitor a "local" one.
	var metricsSrv *http.Server
	if cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("METRICS_ADDR: %v", err)
		}
		metricsMux := http.NewServeMux()
		metricsMux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{}))
		metricsSrv = newHTTPServer(web.NoSniff(metricsMux))
		go metricsSrv.Serve(mln)
		defer metricsSrv.Close()
		log.Info("serving metrics", "addr", mln.Addr().String(), "path", "/metrics")
	} else {
		log.Info("metrics are not served; set METRICS_ADDR (e.g. 127.0.0.1:9464) to serve /metrics on an address of its own")
	}
	// The outbox's senders outlive ctx: at shutdown they finish the messages being sent, within
	// the grace period, after the HTTP server has drained.
	if err := s.mail.Start(context.WithoutCancel(ctx)); err != nil {
		ln.Close()
		return err
	}
	stopMail := func(ctx context.Context) {
		if err := s.mail.Stop(ctx); err != nil {
			log.Warn("mail senders did not stop cleanly; unfinished messages are sent again later", "err", err)
		}
	}
	go sweep(ctx, s.account, log)
	go s.listen(ctx, nil)
	if s.cache != nil {
		go s.cache(ctx, func() { log.Info("principal cache serving") })
	}
	if s.keys != nil {
		go s.keys.Run(ctx, s.account.RotateSigningKeyIfDue)
	}

	addr := ln.Addr().(*net.TCPAddr)
	browse := "localhost"
	if ip, err := netip.ParseAddr(cfg.Host); cfg.Host != "" && (err != nil || !(ip.IsUnspecified() || ip.IsLoopback())) {
		browse = cfg.Host
	}
	log.Info("listening", "addr", addr.String(), "playground", "http://"+net.JoinHostPort(browse, strconv.Itoa(addr.Port))+"/")
	if warning := web.DevMailListenWarning(addr); cfg.Mail.DevInboxServed() && warning != "" {
		log.Warn(warning, "addr", addr.String())
	}
	if ready != nil {
		ready <- addr.String()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		stopMail(context.Background())
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", cfg.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if metricsSrv != nil {
		go metricsSrv.Shutdown(shutdownCtx)
	}
	err = srv.Shutdown(shutdownCtx)
	stopMail(shutdownCtx)
	return err
}

// newHTTPServer is an http.Server with the timeouts and header limit of every listener.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

// sweep deletes dead sessions, expired provider sign-ins, mailed tokens and passkey ceremonies, dead API keys and audit events past their retention at start
// and then every ten minutes.
func sweep(ctx context.Context, svc *account.Service, log *slog.Logger) {
	tick := time.NewTicker(10 * time.Minute)
	defer tick.Stop()
	for {
		if n, err := svc.SweepSessions(ctx); err != nil && ctx.Err() == nil {
			log.Warn("session sweep failed", "err", err)
		} else if n > 0 {
			log.Info("swept dead sessions", "deleted", n)
		}
		if _, err := svc.SweepSignIns(ctx); err != nil && ctx.Err() == nil {
			log.Warn("sign-in sweep failed", "err", err)
		}
		if _, err := svc.SweepMailTokens(ctx); err != nil && ctx.Err() == nil {
			log.Warn("mailed-token sweep failed", "err", err)
		}
		if _, err := svc.SweepPasskeyChallenges(ctx); err != nil && ctx.Err() == nil {
			log.Warn("passkey challenge sweep failed", "err", err)
		}
		if n, err := svc.SweepAPIKeys(ctx); err != nil && ctx.Err() == nil {
			log.Warn("API key sweep failed", "err", err)
		} else if n > 0 {
			log.Info("swept dead API keys", "deleted", n)
		}
		if n, err := svc.SweepAuditEvents(ctx); err != nil && ctx.Err() == nil {
			log.Warn("audit sweep failed", "err", err)
		} else if n > 0 {
			log.Info("swept old audit events", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
