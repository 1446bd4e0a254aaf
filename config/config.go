// Package config reads the whole configuration from the environment and validates it, in one
// place: each variable's default, its parsing and the one-line error naming it. It must not start
// anything (no connection, no listener): server.go does, from the Config it returns.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"gqlauth/graph"
	"gqlauth/model"
	"gqlauth/oidc"
	"gqlauth/store"
	"gqlauth/token"
	"gqlauth/web"
)

// Config is the whole configuration, read from the environment by Load.
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
	// SecondFactorFailures: failed second-factor checks of one user from all clients together
	// per UserFailuresWindow (no client exempt); at most 100 (NIST SP 800-63B §5.2.2).
	SecondFactorFailures int
	BcryptWorkers        int
	BcryptQueueTimeout   time.Duration
	QueryLimits          graph.QueryLimits
	Introspection        bool
	GraphQLDebug         bool
	TrustedDocuments     string // path of a persisted-documents manifest; empty: none
	TrustedOnly          bool   // refuse free-form queries except from admins
	Sockets              graph.SocketLimits
	LogJSON              bool
	LogLevel             slog.Level
	AccessLog            graph.AccessLog
	RefreshCookie        bool
	CookieSecure         bool
	CORSOrigins          []string
	OIDC                 oidc.Config
	LinkVerifiedEmail    bool          // a provider's verified email may join the account with that address
	MFARequiredRoles     []model.Role  // roles that must have a second factor (MFA_REQUIRED_ROLES)
	ReauthWindow         time.Duration // how recent a sign-in sensitive operations need (REAUTH_WINDOW)
	Mail                 Mail
	Passkeys             Passkeys

	// PrincipalCache answers guarded requests' principals from memory with strict revocation
	// (docs/principal-cache.md): on by default with Postgres, impossible with SQLite.
	PrincipalCache bool

	// DatabaseMaxConns is how many Postgres connections the instance opens for its queries (its
	// LISTEN connections come on top).
	DatabaseMaxConns int
}

// Load reads and validates the configuration. Its error is one line naming the variable.
func Load(getenv func(string) string) (Config, error) {
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

		RedisURL:             get("REDIS_URL", ""),
		RateLimitPerIP:       integer("RATE_LIMIT_PER_IP", "60", 0, 1_000_000),
		RateLimitIPWindow:    duration("RATE_LIMIT_IP_WINDOW", "1m"),
		UserFailures:         integer("RATE_LIMIT_USER_FAILURES", "10", 0, 1_000_000),
		UserFailuresAll:      integer("RATE_LIMIT_USER_FAILURES_ALL_CLIENTS", "100", 0, 1_000_000),
		UserFailuresWindow:   duration("RATE_LIMIT_USER_WINDOW", "15m"),
		SecondFactorFailures: integer("RATE_LIMIT_SECOND_FACTOR_FAILURES", "10", 0, 100),
		BcryptWorkers:        integer("BCRYPT_WORKERS", strconv.Itoa(runtime.NumCPU()), 1, 1024),
		BcryptQueueTimeout:   duration("BCRYPT_QUEUE_TIMEOUT", "2s"),
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
	// The principal cache's guarantee needs the invalidation channel of Postgres: another process
	// sharing an SQLite file could not tell this one what it changed. So it is on by default with
	// Postgres (where two attacker reviews could not make it serve a revoked principal) and
	// refused with SQLite (README, "The principal cache").
	cacheDefault := "false"
	if cfg.DatabaseURL != "" {
		cacheDefault = "true"
	}
	if cfg.PrincipalCache = boolean("PRINCIPAL_CACHE", cacheDefault); cfg.PrincipalCache && cfg.DatabaseURL == "" {
		errs = append(errs, errors.New("PRINCIPAL_CACHE: needs DATABASE_URL (Postgres); with the embedded SQLite database it is off"))
	}
	cfg.DatabaseMaxConns = integer("DATABASE_MAX_CONNS", strconv.Itoa(store.DefaultMaxConns), store.MinMaxConns, 1000)
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
	cfg.ReauthWindow = duration("REAUTH_WINDOW", "10m")
	for _, name := range strings.Split(getenv("MFA_REQUIRED_ROLES"), ",") {
		role := model.Role(strings.ToUpper(strings.TrimSpace(name)))
		switch {
		case role == "":
		case !role.IsValid():
			errs = append(errs, fmt.Errorf("MFA_REQUIRED_ROLES: %q is not a role (USER, ADMIN)", strings.TrimSpace(name)))
		case !slices.Contains(cfg.MFARequiredRoles, role):
			cfg.MFARequiredRoles = append(cfg.MFARequiredRoles, role)
		}
	}
	if cfg.Mail, err = loadMail(get, boolean, cfg.PublicURL, cfg.Port); err != nil {
		errs = append(errs, err)
	}
	cfg.Mail.VerifyTTL = duration("EMAIL_VERIFY_TTL", "24h")
	cfg.Mail.ResetTTL = duration("PASSWORD_RESET_TTL", "30m")
	cfg.Mail.CodeTTL = duration("SIGN_IN_CODE_TTL", "10m")
	cfg.Mail.VerificationRequired = boolean("EMAIL_VERIFICATION_REQUIRED", "false")
	cfg.Mail.PerAddress = integer("RATE_LIMIT_EMAIL_PER_ADDRESS", "5", 0, 1_000_000)
	if cfg.Passkeys, err = loadPasskeys(get, cfg.PublicURL, cfg.CORSOrigins, cfg.Port); err != nil {
		errs = append(errs, err)
	}
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
