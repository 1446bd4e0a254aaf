// Command gqlauth serves the GraphQL auth API: configuration, wiring and listening, nothing else.
package main

import (
	"context"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"gqlauth/account"
	"gqlauth/feed"
	"gqlauth/graph"
	"gqlauth/model"
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

// Config is the whole configuration, read from the environment by LoadConfig.
type Config struct {
	Host            string // interface to listen on; empty: all
	Port            int
	MetricsAddr     string // host:port of the /metrics listener; empty: /metrics is not served
	DatabaseURL     string // empty: embedded SQLite at SQLitePath
	SQLitePath      string
	JWTSecret       []byte // empty: generated and kept in the embedded database
	JWTIssuer       string
	JWTAlg          string        // HS256, ES256, EdDSA or RS256
	JWKSMaxAge      time.Duration // Cache-Control max-age of the key set
	KeyPublishDelay time.Duration // how long a new key is published before it signs
	KeyRotation     time.Duration // scheduled rotation; 0: never
	PublicURL       string        // base of absolute URLs in metadata; empty: the request's host
	JWTAudience     string
	AccessTTL       time.Duration
	RefreshTTL      time.Duration
	AuditRetention  time.Duration
	ReuseInterval   time.Duration
	BcryptCost      int
	SignupEnabled   bool
	AdminUsername   string
	AdminPassword   string
	ShutdownTimeout time.Duration

	RedisURL           string // empty: rate-limit counters in memory
	TrustedProxies     web.Proxies
	RateLimitPerIP     int
	RateLimitIPWindow  time.Duration
	UserFailures       int
	UserFailuresAll    int // failed passwords of one username from all clients together
	UserFailuresWindow time.Duration
	BcryptWorkers      int
	BcryptQueueTimeout time.Duration
	QueryLimits        graph.QueryLimits
	Introspection      bool
	GraphQLDebug       bool
	TrustedDocuments   string // path of a persisted-documents manifest; empty: none
	TrustedOnly        bool   // refuse free-form queries except from admins
	Sockets            graph.SocketLimits
	LogJSON            bool
	LogLevel           slog.Level
	AccessLog          graph.AccessLog
	RefreshCookie      bool
	CookieSecure       bool
	CORSOrigins        []string
	OIDC               oidc.Config
	LinkVerifiedEmail  bool // a provider's verified email may join the account with that address
}

// LoadConfig reads and validates the configuration. Its error is one line naming the variable.
func LoadConfig(getenv func(string) string) (Config, error) {
	get := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	var errs []error
	duration := func(name, def string) time.Duration {
		d, err := time.ParseDuration(get(name, def))
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s: %q is not a positive Go duration such as 15m or 720h", name, get(name, def)))
		}
		return d
	}
	integer := func(name, def string, lo, hi int) int {
		n, err := strconv.Atoi(get(name, def))
		if err != nil || n < lo || n > hi {
			errs = append(errs, fmt.Errorf("%s: %q must be a whole number from %d to %d", name, get(name, def), lo, hi))
		}
		return n
	}
	// nonNegative is a duration where 0 means "never".
	nonNegative := func(name, def string) time.Duration {
		d, err := time.ParseDuration(get(name, def))
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("%s: %q is not a Go duration such as 720h (0 for never)", name, get(name, def)))
		}
		return d
	}
	boolean := func(name, def string) bool {
		b, err := strconv.ParseBool(get(name, def))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q must be true or false", name, get(name, def)))
		}
		return b
	}

	// Introspection is on for the embedded development database (GraphiQL's docs and completion
	// need it) and off in production (DATABASE_URL); INTROSPECTION overrides either way.
	introspection := "true"
	if get("DATABASE_URL", "") != "" {
		introspection = "false"
	}
	cfg := Config{
		Host:            strings.TrimSuffix(strings.TrimPrefix(get("HOST", ""), "["), "]"),
		Port:            integer("PORT", "8080", 0, 65535),
		MetricsAddr:     get("METRICS_ADDR", ""),
		DatabaseURL:     get("DATABASE_URL", ""),
		SQLitePath:      "gqlauth.db",
		JWTSecret:       []byte(getenv("JWT_SECRET")),
		JWTIssuer:       get("JWT_ISSUER", "gqlauth"),
		JWTAlg:          get("JWT_ALG", "HS256"),
		JWKSMaxAge:      duration("JWKS_MAX_AGE", "10m"),
		KeyRotation:     nonNegative("JWT_KEY_ROTATION", "720h"),
		PublicURL:       strings.TrimRight(get("PUBLIC_URL", ""), "/"),
		JWTAudience:     get("JWT_AUDIENCE", "gqlauth"),
		AccessTTL:       duration("ACCESS_TOKEN_TTL", "15m"),
		RefreshTTL:      duration("REFRESH_TOKEN_TTL", "720h"),
		AuditRetention:  duration("AUDIT_RETENTION", "2160h"),
		ReuseInterval:   duration("REFRESH_REUSE_INTERVAL", "10s"),
		BcryptCost:      integer("BCRYPT_COST", "10", 10, 14),
		SignupEnabled:   boolean("SIGNUP_ENABLED", "true"),
		AdminUsername:   get("ADMIN_USERNAME", ""),
		AdminPassword:   getenv("ADMIN_PASSWORD"),
		ShutdownTimeout: duration("SHUTDOWN_TIMEOUT", "10s"),

		RedisURL:           get("REDIS_URL", ""),
		RateLimitPerIP:     integer("RATE_LIMIT_PER_IP", "60", 0, 1_000_000),
		RateLimitIPWindow:  duration("RATE_LIMIT_IP_WINDOW", "1m"),
		UserFailures:       integer("RATE_LIMIT_USER_FAILURES", "10", 0, 1_000_000),
		UserFailuresAll:    integer("RATE_LIMIT_USER_FAILURES_ALL_CLIENTS", "100", 0, 1_000_000),
		UserFailuresWindow: duration("RATE_LIMIT_USER_WINDOW", "15m"),
		BcryptWorkers:      integer("BCRYPT_WORKERS", strconv.Itoa(runtime.NumCPU()), 1, 1024),
		BcryptQueueTimeout: duration("BCRYPT_QUEUE_TIMEOUT", "2s"),
		QueryLimits: graph.QueryLimits{
			MaxBodyBytes:  int64(integer("MAX_BODY_BYTES", "65536", 1024, 64<<20)),
			MaxQueryBytes: integer("MAX_QUERY_BYTES", "16384", 256, 16<<20),
			MaxTokens:     integer("MAX_QUERY_TOKENS", "2000", 50, 1_000_000),
			MaxDepth:      integer("MAX_QUERY_DEPTH", "15", 2, 1000),
			MaxAliases:    integer("MAX_QUERY_ALIASES", "20", 0, 100_000),
			MaxRootFields: integer("MAX_ROOT_FIELDS", "20", 1, 100_000),
			MaxComplexity: integer("MAX_QUERY_COMPLEXITY", "5000", 10, 1_000_000),
		},
		Introspection:    boolean("INTROSPECTION", introspection),
		GraphQLDebug:     boolean("GRAPHQL_DEBUG", "false"),
		TrustedDocuments: get("TRUSTED_DOCUMENTS", ""),
		TrustedOnly:      boolean("TRUSTED_DOCUMENTS_ONLY", "false"),
		Sockets: graph.SocketLimits{
			PerUser:                integer("WS_MAX_SOCKETS_PER_USER", "10", 1, 100_000),
			PerIP:                  integer("WS_MAX_SOCKETS_PER_IP", "100", 1, 1_000_000),
			SubscriptionsPerSocket: integer("WS_MAX_SUBSCRIPTIONS_PER_SOCKET", "10", 1, 1000),
			QueriesPerSocket:       integer("WS_MAX_QUERIES_PER_SOCKET", "4", 1, 1000),
			InitTimeout:            duration("WS_INIT_TIMEOUT", "10s"),
			PingInterval:           duration("WS_PING_INTERVAL", "25s"),
			MaxMessageBytes:        int64(integer("WS_MAX_MESSAGE_BYTES", "65536", 1024, 16<<20)),
		},
		RefreshCookie: boolean("REFRESH_COOKIE", "false"),
		CookieSecure:  boolean("COOKIE_SECURE", "true"),
	}
	for _, origin := range strings.Split(getenv("CORS_ALLOWED_ORIGINS"), ",") {
		origin = strings.TrimRight(strings.TrimSpace(origin), "/")
		switch {
		case origin == "":
		case origin == "*" || !(strings.HasPrefix(origin, "https://") || strings.HasPrefix(origin, "http://")) || strings.Count(origin, "/") != 2:
			errs = append(errs, fmt.Errorf("CORS_ALLOWED_ORIGINS: %q is not an exact origin such as https://app.example.com (no wildcards, no paths)", origin))
		default:
			cfg.CORSOrigins = append(cfg.CORSOrigins, origin)
		}
	}
	switch format := get("LOG_FORMAT", "text"); format {
	case "text", "json":
		cfg.LogJSON = format == "json"
	default:
		errs = append(errs, fmt.Errorf("LOG_FORMAT: %q must be text or json", format))
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(get("LOG_LEVEL", "info"))); err != nil || !slices.Contains([]string{"debug", "info", "warn", "error"}, strings.ToLower(get("LOG_LEVEL", "info"))) {
		errs = append(errs, fmt.Errorf("LOG_LEVEL: %q must be debug, info, warn or error", get("LOG_LEVEL", "info")))
	}
	switch access := graph.AccessLog(get("ACCESS_LOG", "all")); access {
	case graph.AccessLogAll, graph.AccessLogErrors, graph.AccessLogOff:
		cfg.AccessLog = access
	default:
		errs = append(errs, fmt.Errorf("ACCESS_LOG: %q must be all, errors or off", access))
	}
	if cfg.Host != "" && !validHost(cfg.Host) {
		errs = append(errs, fmt.Errorf("HOST: %q is not an IP address or host name such as 127.0.0.1 (the port is PORT)", get("HOST", "")))
	}
	if host, port, err := net.SplitHostPort(cfg.MetricsAddr); cfg.MetricsAddr != "" && (err != nil || (host != "" && !validHost(host)) || !validPort(port)) {
		errs = append(errs, fmt.Errorf("METRICS_ADDR: %q is not a listen address such as 127.0.0.1:9464 or :9464", cfg.MetricsAddr))
	}
	proxies, err := web.ParseProxies(getenv("TRUSTED_PROXIES"))
	if err != nil {
		errs = append(errs, fmt.Errorf("TRUSTED_PROXIES: %v", err))
	}
	cfg.TrustedProxies = proxies
	if cfg.RedisURL != "" && !strings.HasPrefix(cfg.RedisURL, "redis://") && !strings.HasPrefix(cfg.RedisURL, "rediss://") {
		errs = append(errs, errors.New("REDIS_URL: must be a redis:// or rediss:// URL"))
	}
	switch {
	case cfg.DatabaseURL != "" && !strings.HasPrefix(cfg.DatabaseURL, "postgres://") && !strings.HasPrefix(cfg.DatabaseURL, "postgresql://"):
		errs = append(errs, errors.New("DATABASE_URL: must be a postgres:// URL (unset it to use the embedded SQLite database)"))
	case len(cfg.JWTSecret) > 0 && len(cfg.JWTSecret) < 32:
		errs = append(errs, fmt.Errorf("JWT_SECRET: must be at least 32 bytes, got %d", len(cfg.JWTSecret)))
	case len(cfg.JWTSecret) == 0 && cfg.DatabaseURL != "":
		errs = append(errs, errors.New("JWT_SECRET: required with DATABASE_URL, so that every instance signs with the same key (at least 32 bytes)"))
	case (cfg.AdminUsername == "") != (cfg.AdminPassword == ""):
		errs = append(errs, errors.New("ADMIN_USERNAME and ADMIN_PASSWORD: set both or neither"))
	}
	cfg.KeyPublishDelay = cfg.JWKSMaxAge
	if getenv("JWT_KEY_PUBLISH_DELAY") != "" {
		cfg.KeyPublishDelay = duration("JWT_KEY_PUBLISH_DELAY", "")
	}
	if cfg.JWTAlg != "HS256" && !token.IsAsymmetric(cfg.JWTAlg) {
		errs = append(errs, fmt.Errorf("JWT_ALG: %q must be HS256, ES256, EdDSA or RS256", cfg.JWTAlg))
	}
	if u, err := url.Parse(cfg.PublicURL); cfg.PublicURL != "" && (err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "") {
		errs = append(errs, fmt.Errorf("PUBLIC_URL: %q is not a base URL such as https://auth.example.com", cfg.PublicURL))
	}
	cfg.OIDC, err = loadOIDC(getenv, get, cfg.PublicURL)
	if err != nil {
		errs = append(errs, err)
	}
	cfg.LinkVerifiedEmail = boolean("OIDC_LINK_VERIFIED_EMAIL", "false")
	if cfg.TrustedOnly && cfg.TrustedDocuments == "" {
		errs = append(errs, errors.New("TRUSTED_DOCUMENTS_ONLY: needs TRUSTED_DOCUMENTS, the manifest of the documents to allow"))
	}
	if len(errs) > 0 {
		return cfg, errs[0]
	}
	return cfg, nil
}

// validHost reports whether host is an IP address or a DNS name, without a port.
func validHost(host string) bool {
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	if len(host) > 253 {
		return false
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(host, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// validPort reports whether port is a decimal port number (0: any free port).
func validPort(port string) bool {
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535 && port == strconv.Itoa(n)
}

// loadOIDC reads OIDC_PROVIDERS and the variables of each provider it names.
func loadOIDC(getenv func(string) string, get func(name, def string) string, publicURL string) (oidc.Config, error) {
	cfg := oidc.Config{PublicURL: publicURL}
	seen := map[string]bool{}
	for _, name := range strings.Split(getenv("OIDC_PROVIDERS"), ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !oidc.ProviderNamePattern.MatchString(name) || seen[name] {
			return cfg, fmt.Errorf("OIDC_PROVIDERS: %q must be a unique name of 1–32 lower-case letters and digits, starting with a letter", name)
		}
		seen[name] = true
		prefix := "OIDC_" + strings.ToUpper(name) + "_"
		p := oidc.Provider{
			Name: name, Issuer: strings.TrimRight(get(prefix+"ISSUER", ""), "/"), ClientID: get(prefix+"CLIENT_ID", ""),
			ClientSecret: getenv(prefix + "CLIENT_SECRET"), Scopes: strings.Fields(get(prefix+"SCOPES", "openid email profile")),
		}
		u, err := url.Parse(p.Issuer)
		local := err == nil && (u.Hostname() == "localhost" || u.Hostname() == "127.0.0.1" || u.Hostname() == "::1")
		switch {
		case err != nil || u.Host == "" || !(u.Scheme == "https" || (u.Scheme == "http" && local)) || u.RawQuery != "" || u.Fragment != "":
			return cfg, fmt.Errorf("%sISSUER: %q must be the provider's https:// issuer URL (http only for localhost)", prefix, p.Issuer)
		case p.ClientID == "":
			return cfg, fmt.Errorf("%sCLIENT_ID: required for provider %q", prefix, name)
		case !slices.Contains(p.Scopes, "openid"):
			return cfg, fmt.Errorf("%sSCOPES: must include openid", prefix)
		}
		cfg.Providers = append(cfg.Providers, p)
	}
	for _, raw := range strings.Split(getenv("OIDC_REDIRECT_URLS"), ",") {
		if raw = strings.TrimSpace(raw); raw == "" {
			continue
		}
		if err := oidc.ValidateRedirectURL(raw); err != nil {
			return cfg, fmt.Errorf("OIDC_REDIRECT_URLS: %v", err)
		}
		cfg.RedirectURLs = append(cfg.RedirectURLs, raw)
	}
	if len(cfg.Providers) > 0 && publicURL == "" {
		return cfg, errors.New("PUBLIC_URL: required with OIDC_PROVIDERS; the redirect URI to register at each provider is <PUBLIC_URL>/auth/<name>/callback")
	}
	return cfg, nil
}

// run serves until ctx is done. ready, if not nil, receives the listening address.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer, ready chan<- string) error {
	cfg, err := LoadConfig(getenv)
	if err != nil {
		return err
	}
	logOpts := &slog.HandlerOptions{Level: cfg.LogLevel}
	var logHandler slog.Handler = slog.NewTextHandler(stdout, logOpts)
	if cfg.LogJSON {
		logHandler = slog.NewJSONHandler(stdout, logOpts)
	}
	log := slog.New(graph.LogHandler(logHandler))

	var db *store.DB
	if cfg.DatabaseURL != "" {
		db, err = store.OpenPostgres(ctx, cfg.DatabaseURL)
	} else {
		db, err = store.OpenSQLite(ctx, cfg.SQLitePath)
	}
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %v", err)
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		return fmt.Errorf("database migration failed: %v", err)
	}

	if len(cfg.JWTSecret) == 0 {
		secret, err := db.SettingOrInit(ctx, "jwt_secret", token.NewSecret())
		if err != nil {
			return fmt.Errorf("JWT_SECRET: could not keep a generated key in the embedded database: %v", err)
		}
		if cfg.JWTSecret, err = base64.RawURLEncoding.DecodeString(secret); err != nil {
			return fmt.Errorf("JWT_SECRET: the generated key in the embedded database is corrupt")
		}
	}
	var keys *token.KeyRing
	if cfg.JWTAlg != "HS256" {
		keys, err = token.NewKeyRing(ctx, db, token.KeyRingConfig{
			Alg: cfg.JWTAlg, Secret: cfg.JWTSecret, PublishDelay: cfg.KeyPublishDelay, Rotation: cfg.KeyRotation,
			TokenTTL: cfg.AccessTTL, Logger: log,
		})
		if err != nil {
			return err
		}
	}
	tokens, err := token.NewTokens(token.TokenConfig{Secret: cfg.JWTSecret, Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience, TTL: cfg.AccessTTL, Keys: keys})
	if err != nil {
		return fmt.Errorf("JWT_SECRET: %v", err)
	}
	passwords, err := account.NewPasswords(account.PasswordConfig{Cost: cfg.BcryptCost, Workers: cfg.BcryptWorkers, QueueTimeout: cfg.BcryptQueueTimeout})
	if err != nil {
		return fmt.Errorf("BCRYPT_COST: %v", err)
	}
	if getenv("GOGC") == "" {
		// The live heap is small (caches of a few MB), so the default GOGC=100 collects every few
		// MB of garbage: hundreds of cycles a second under load, each shrinking the goroutine
		// stacks that the next requests grow again. 400 trades tens of MB for a third of the CPU
		// (see README, Performance). GOGC, and GOMEMLIMIT, override it as usual.
		debug.SetGCPercent(DefaultGCPercent)
	}
	// bcrypt workers run on their own low-priority threads; give the Go scheduler a P for each, so
	// that a login flood never holds every P and the cheap requests keep theirs (see auth.pool).
	runtime.GOMAXPROCS(startProcs + cfg.BcryptWorkers)

	var counter ratelimit.Counter = ratelimit.NewMemory(nil)
	if cfg.RedisURL != "" {
		redis, err := ratelimit.NewRedis(ctx, cfg.RedisURL, "gqlauth:ratelimit:")
		if err != nil {
			return fmt.Errorf("REDIS_URL: %v", err)
		}
		defer redis.Close()
		counter = redis
	}
	events := feed.New()
	providers := oidc.New(db, cfg.OIDC, nil, log)
	svc := account.NewService(db, tokens, passwords, account.ServiceConfig{
		RefreshTTL: cfg.RefreshTTL, ReuseInterval: cfg.ReuseInterval, SignupEnabled: cfg.SignupEnabled, Logger: log,
		Limits: account.Limits{
			Counter:   counter,
			PerClient: cfg.RateLimitPerIP, ClientWindow: cfg.RateLimitIPWindow,
			FailuresPerUser: cfg.UserFailures, UserWindow: cfg.UserFailuresWindow,
			FailuresPerUserAllClients: cfg.UserFailuresAll,
		},
		AuditRetention: cfg.AuditRetention, Providers: providers.Names(), LinkVerifiedEmail: cfg.LinkVerifiedEmail, Feed: events,
	})
	if cfg.AdminUsername != "" {
		created, err := svc.EnsureAdmin(ctx, cfg.AdminUsername, cfg.AdminPassword)
		if err != nil {
			return fmt.Errorf("ADMIN_USERNAME/ADMIN_PASSWORD: %v", err)
		}
		if created {
			log.Info("created admin user", "username", cfg.AdminUsername)
		}
	}
	signIn := web.NewSignIn(svc, providers)

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var trusted *graph.TrustedDocuments
	if cfg.TrustedDocuments != "" {
		if trusted, err = graph.ReadTrustedDocuments(cfg.TrustedDocuments, cfg.TrustedOnly); err != nil {
			return err
		}
	}
	gql, err := graph.NewHandler(&graph.Resolver{Account: svc, SignIn: signIn}, graph.Options{
		Logger: log, Metrics: graph.NewMetrics(registry, passwords.QueueDepth),
		Limits: cfg.QueryLimits, Introspection: cfg.Introspection, Debug: cfg.GraphQLDebug, Trusted: trusted,
		Origins: cfg.CORSOrigins, Sockets: cfg.Sockets, AccessLog: cfg.AccessLog,
	})
	if err != nil {
		return err
	}
	listen := wireEvents(db, events, keys, gql.Sockets, log)
	mux := http.NewServeMux()
	cors := web.CORS(cfg.CORSOrigins)
	credentials := web.Credentials(tokens, web.CredentialOptions{
		Proxies: cfg.TrustedProxies, RefreshCookie: cfg.RefreshCookie, CookieSecure: cfg.CookieSecure, Origins: cfg.CORSOrigins,
	})
	mux.Handle("/query", cors(credentials(gql)))
	mux.Handle("/oauth/token", cors(credentials(web.TokenEndpoint(svc))))
	mux.Handle("/auth/", cors(credentials(signIn.Handler())))
	mux.Handle("/oauth/introspect", credentials(web.Introspection(svc)))
	mux.Handle("/.well-known/jwks.json", cors(web.JWKS(keys, cfg.JWKSMaxAge)))
	mux.Handle("/.well-known/oauth-authorization-server", cors(web.Metadata(cfg.JWTIssuer, cfg.PublicURL, cfg.JWKSMaxAge, providers != nil)))
	playground := web.Playground()
	mux.Handle("GET /{$}", playground)
	mux.Handle("GET /playground/", playground)
	mux.HandleFunc("GET /schema.graphql", func(w http.ResponseWriter, r *http.Request) {
		// The SDL with directive usages, which introspection cannot show: codegen users want to
		// know which fields need @auth.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, schemaSDL)
	})
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

	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
	if err != nil {
		if cfg.Host != "" {
			return fmt.Errorf("HOST/PORT: %v", err)
		}
		return fmt.Errorf("PORT: %v", err)
	}
	srv := newHTTPServer(web.DrainBodies(web.NoSniff(mux)))
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
		metricsMux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
		metricsSrv = newHTTPServer(web.NoSniff(metricsMux))
		go metricsSrv.Serve(mln)
		defer metricsSrv.Close()
		log.Info("serving metrics", "addr", mln.Addr().String(), "path", "/metrics")
	} else {
		log.Info("metrics are not served; set METRICS_ADDR (e.g. 127.0.0.1:9464) to serve /metrics on an address of its own")
	}
	go sweep(ctx, svc, log)
	go listen(ctx, nil)
	if keys != nil {
		go keys.Run(ctx, svc.RotateSigningKeyIfDue)
	}

	addr := ln.Addr().(*net.TCPAddr)
	browse := "localhost"
	if ip, err := netip.ParseAddr(cfg.Host); cfg.Host != "" && (err != nil || !(ip.IsUnspecified() || ip.IsLoopback())) {
		browse = cfg.Host
	}
	log.Info("listening", "addr", addr.String(), "playground", "http://"+net.JoinHostPort(browse, strconv.Itoa(addr.Port))+"/")
	if ready != nil {
		ready <- addr.String()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", cfg.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if metricsSrv != nil {
		go metricsSrv.Shutdown(shutdownCtx)
	}
	return srv.Shutdown(shutdownCtx)
}

// wireEvents lays the path of a committed audit event through this instance, in this one place,
// and returns the listener that feeds it from every instance (Postgres LISTEN; with SQLite there
// is one instance and the listener returns at once), to run until ctx ends; connected, if not
// nil, is called each time it is (re)connected.
//
//	store: the event, once its transaction committed (SQLite: right after the commit; Postgres:
//	       NOTIFY sent in the transaction, heard by every instance's listener)
//	  → feed: the securityEvents and auditEvents subscriptions it concerns
//	  → key ring (a rotation or revocation): the signing keys are reloaded, then every
//	    subscription checks its authority again and every socket verifies its token again
//	  → sockets: the open sockets of the user the event concerns are authenticated again
//	    (graph/ws.go), and closed if their authority is gone
//
// When the listener (re)connects, events may have been missed: every subscription and socket is
// checked again, and the keys are reloaded (a key change may be among the missed events).
func wireEvents(db *store.DB, events *feed.Feed, keys *token.KeyRing, sockets *graph.Sockets, log *slog.Logger) func(ctx context.Context, connected func()) {
	// A key change on any instance reaches this one at once where events travel between
	// instances (Postgres); the key ring's periodic reload remains the bound everywhere else.
	reloadKeys := func() {
		if err := keys.Reload(context.Background()); err != nil {
			log.Warn("signing keys could not be reloaded", "err", err)
			return
		}
		events.MarkStale()
		sockets.ReverifyAll()
	}
	db.AddEventSink(func(e *model.AuditEvent) {
		events.Publish(e)
		if keys != nil && (e.Type == model.AuditEventTypeSigningKeyRotated || e.Type == model.AuditEventTypeSigningKeyRevoked) {
			go reloadKeys()
		}
		sockets.Recheck(e)
	})
	return func(ctx context.Context, connected func()) {
		db.ListenForEvents(ctx, func() {
			events.MarkStale()
			if keys != nil {
				go reloadKeys()
			}
			sockets.RecheckAll()
			if connected != nil {
				connected()
			}
		}, func(err error) { log.Warn("event listener lost its connection; reconnecting", "err", err) })
	}
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

// sweep deletes dead sessions, expired provider sign-ins, dead API keys and audit events past their retention at start
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
