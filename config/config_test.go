package config_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"gqlauth/config"
	"gqlauth/graph"
	"gqlauth/model"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestLoadConfig_Defaults(t *testing.T) {
	cfg, err := config.Load(env())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Port != 8080 || cfg.AccessTTL != 15*time.Minute || cfg.RefreshTTL != 720*time.Hour || cfg.AuditRetention != 2160*time.Hour ||
		cfg.ReuseInterval != 10*time.Second || cfg.BcryptCost != 10 || !cfg.SignupEnabled ||
		cfg.JWTIssuer != "gqlauth" || cfg.JWTAudience != "gqlauth" || cfg.SQLitePath != "gqlauth.db" ||
		cfg.JWTAlg != "HS256" || cfg.JWKSMaxAge != 10*time.Minute || cfg.KeyPublishDelay != cfg.JWKSMaxAge ||
		cfg.KeyRotation != 720*time.Hour || cfg.PublicURL != "" || cfg.Sockets != graph.DefaultSocketLimits() ||
		cfg.Host != "" || cfg.MetricsAddr != "" || !cfg.Introspection {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func TestLoadConfig_SecondFactors(t *testing.T) {
	cfg, err := config.Load(env())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ReauthWindow != 10*time.Minute || len(cfg.MFARequiredRoles) != 0 {
		t.Fatalf("defaults: REAUTH_WINDOW %s, MFA_REQUIRED_ROLES %v", cfg.ReauthWindow, cfg.MFARequiredRoles)
	}
	cfg, err = config.Load(env("MFA_REQUIRED_ROLES", " admin, ADMIN ,user", "REAUTH_WINDOW", "5m"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ReauthWindow != 5*time.Minute || !slices.Equal(cfg.MFARequiredRoles, []model.Role{model.RoleAdmin, model.RoleUser}) {
		t.Fatalf("REAUTH_WINDOW %s, MFA_REQUIRED_ROLES %v", cfg.ReauthWindow, cfg.MFARequiredRoles)
	}
}

func TestLoadConfig_IntrospectionOnlyByDefaultWithTheEmbeddedDatabase(t *testing.T) {
	secret := strings.Repeat("s", 32)
	postgres := []string{"DATABASE_URL", "postgres://localhost/db", "JWT_SECRET", secret}
	cases := []struct {
		name string
		env  []string
		want bool
	}{
		{"EmbeddedDatabase", nil, true},
		{"Postgres", postgres, false},
		{"PostgresTurnedOn", append(postgres, "INTROSPECTION", "true"), true},
		{"EmbeddedTurnedOff", []string{"INTROSPECTION", "false"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Load(env(c.env...))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Introspection != c.want {
				t.Fatalf("Introspection = %v, want %v", cfg.Introspection, c.want)
			}
		})
	}
}

func TestLoadConfig_ListenAddresses(t *testing.T) {
	cases := []struct {
		name              string
		env               []string
		host, metricsAddr string
	}{
		{"Loopback", []string{"HOST", "127.0.0.1"}, "127.0.0.1", ""},
		{"IPv6InBrackets", []string{"HOST", "[::1]"}, "::1", ""},
		{"HostName", []string{"HOST", "localhost"}, "localhost", ""},
		{"MetricsOnLoopback", []string{"METRICS_ADDR", "127.0.0.1:9464"}, "", "127.0.0.1:9464"},
		{"MetricsOnEveryInterface", []string{"METRICS_ADDR", ":9464"}, "", ":9464"},
		{"MetricsOnIPv6", []string{"METRICS_ADDR", "[::1]:9464"}, "", "[::1]:9464"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Load(env(c.env...))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Host != c.host || cfg.MetricsAddr != c.metricsAddr {
				t.Fatalf("Host %q, MetricsAddr %q; want %q, %q", cfg.Host, cfg.MetricsAddr, c.host, c.metricsAddr)
			}
		})
	}
}

func TestLoadConfig_RejectsBadValuesNamingTheVariable(t *testing.T) {
	secret := strings.Repeat("s", 32)
	cases := []struct {
		name   string
		env    []string
		naming string
	}{
		{"PortNotANumber", []string{"PORT", "http"}, "PORT"},
		{"PortOutOfRange", []string{"PORT", "70000"}, "PORT"},
		{"DatabaseMaxConnsTooFew", []string{"DATABASE_MAX_CONNS", "3"}, "DATABASE_MAX_CONNS"},
		{"DatabaseMaxConnsNotANumber", []string{"DATABASE_MAX_CONNS", "many"}, "DATABASE_MAX_CONNS"},
		{"AccessTTLUnparsable", []string{"ACCESS_TOKEN_TTL", "15"}, "ACCESS_TOKEN_TTL"},
		{"AccessTTLNegative", []string{"ACCESS_TOKEN_TTL", "-5m"}, "ACCESS_TOKEN_TTL"},
		{"RefreshTTLUnparsable", []string{"REFRESH_TOKEN_TTL", "a month"}, "REFRESH_TOKEN_TTL"},
		{"AuditRetentionUnparsable", []string{"AUDIT_RETENTION", "90 days"}, "AUDIT_RETENTION"},
		{"ReuseIntervalUnparsable", []string{"REFRESH_REUSE_INTERVAL", "10 s"}, "REFRESH_REUSE_INTERVAL"},
		{"CostTooLow", []string{"BCRYPT_COST", "9"}, "BCRYPT_COST"},
		{"CostTooHigh", []string{"BCRYPT_COST", "15"}, "BCRYPT_COST"},
		{"SignupNotBool", []string{"SIGNUP_ENABLED", "maybe"}, "SIGNUP_ENABLED"},
		{"ShortSecret", []string{"JWT_SECRET", "short"}, "JWT_SECRET"},
		{"PostgresWithoutSecret", []string{"DATABASE_URL", "postgres://localhost/db"}, "JWT_SECRET"},
		{"NotPostgresURL", []string{"DATABASE_URL", "mysql://localhost/db", "JWT_SECRET", secret}, "DATABASE_URL"},
		{"AdminWithoutPassword", []string{"ADMIN_USERNAME", "root"}, "ADMIN_PASSWORD"},
		{"UnknownAlgorithm", []string{"JWT_ALG", "HS512"}, "JWT_ALG"},
		{"AlgorithmNone", []string{"JWT_ALG", "none"}, "JWT_ALG"},
		{"RotationNegative", []string{"JWT_KEY_ROTATION", "-1h"}, "JWT_KEY_ROTATION"},
		{"JWKSMaxAgeZero", []string{"JWKS_MAX_AGE", "0s"}, "JWKS_MAX_AGE"},
		{"PublishDelayUnparsable", []string{"JWT_KEY_PUBLISH_DELAY", "soon"}, "JWT_KEY_PUBLISH_DELAY"},
		{"PublicURLNotHTTP", []string{"PUBLIC_URL", "ftp://auth.example.com"}, "PUBLIC_URL"},
		{"PublicURLWithoutHost", []string{"PUBLIC_URL", "https://"}, "PUBLIC_URL"},
		{"SocketsPerUserZero", []string{"WS_MAX_SOCKETS_PER_USER", "0"}, "WS_MAX_SOCKETS_PER_USER"},
		{"PingIntervalUnparsable", []string{"WS_PING_INTERVAL", "often"}, "WS_PING_INTERVAL"},
		{"ProviderWithoutPublicURL", []string{"OIDC_PROVIDERS", "corp", "OIDC_CORP_ISSUER", "https://id.example.com", "OIDC_CORP_CLIENT_ID", "gqlauth"}, "PUBLIC_URL"},
		{"ProviderNameWithCapitals", []string{"OIDC_PROVIDERS", "Corp", "PUBLIC_URL", "https://auth.example.com"}, "OIDC_PROVIDERS"},
		{"ProviderNamedTwice", []string{"OIDC_PROVIDERS", "corp,corp", "OIDC_CORP_ISSUER", "https://id.example.com", "OIDC_CORP_CLIENT_ID", "x", "PUBLIC_URL", "https://auth.example.com"}, "OIDC_PROVIDERS"},
		{"ProviderWithoutIssuer", []string{"OIDC_PROVIDERS", "corp", "OIDC_CORP_CLIENT_ID", "x", "PUBLIC_URL", "https://auth.example.com"}, "OIDC_CORP_ISSUER"},
		{"ProviderIssuerPlainHTTP", []string{"OIDC_PROVIDERS", "corp", "OIDC_CORP_ISSUER", "http://id.example.com", "OIDC_CORP_CLIENT_ID", "x", "PUBLIC_URL", "https://auth.example.com"}, "OIDC_CORP_ISSUER"},
		{"ProviderWithoutClientID", []string{"OIDC_PROVIDERS", "corp", "OIDC_CORP_ISSUER", "https://id.example.com", "PUBLIC_URL", "https://auth.example.com"}, "OIDC_CORP_CLIENT_ID"},
		{"ProviderScopesWithoutOpenID", []string{"OIDC_PROVIDERS", "corp", "OIDC_CORP_ISSUER", "https://id.example.com", "OIDC_CORP_CLIENT_ID", "gqlauth", "OIDC_CORP_SCOPES", "email profile", "PUBLIC_URL", "https://auth.example.com"}, "OIDC_CORP_SCOPES"},
		{"RedirectURLWithFragment", []string{"OIDC_REDIRECT_URLS", "https://app.example.com/#/cb"}, "OIDC_REDIRECT_URLS"},
		{"RedirectURLRelative", []string{"OIDC_REDIRECT_URLS", "/signed-in"}, "OIDC_REDIRECT_URLS"},
		{"RedirectURLNotCanonical", []string{"OIDC_REDIRECT_URLS", "https://app.example.com/a b"}, "OIDC_REDIRECT_URLS"},
		{"LogLevelUnknown", []string{"LOG_LEVEL", "verbose"}, "LOG_LEVEL"},
		{"LogLevelOffset", []string{"LOG_LEVEL", "info+2"}, "LOG_LEVEL"},
		{"AccessLogUnknown", []string{"ACCESS_LOG", "sometimes"}, "ACCESS_LOG"},
		{"LinkVerifiedEmailNotBool", []string{"OIDC_LINK_VERIFIED_EMAIL", "sometimes"}, "OIDC_LINK_VERIFIED_EMAIL"},
		{"MFARequiredRolesUnknown", []string{"MFA_REQUIRED_ROLES", "ADMIN,OWNER"}, "MFA_REQUIRED_ROLES"},
		{"ReauthWindowZero", []string{"REAUTH_WINDOW", "0"}, "REAUTH_WINDOW"},
		{"ReauthWindowNoUnit", []string{"REAUTH_WINDOW", "600"}, "REAUTH_WINDOW"},
		{"IntrospectionNotBool", []string{"INTROSPECTION", "dev"}, "INTROSPECTION"},
		{"HostWithPort", []string{"HOST", "127.0.0.1:8080"}, "HOST"},
		{"HostURL", []string{"HOST", "http://example.com"}, "HOST"},
		{"HostWithSpace", []string{"HOST", "my host"}, "HOST"},
		{"MetricsAddrWithoutPort", []string{"METRICS_ADDR", "127.0.0.1"}, "METRICS_ADDR"},
		{"MetricsAddrPortOnly", []string{"METRICS_ADDR", "9464"}, "METRICS_ADDR"},
		{"MetricsAddrNamedPort", []string{"METRICS_ADDR", "127.0.0.1:http"}, "METRICS_ADDR"},
		{"MetricsAddrPortOutOfRange", []string{"METRICS_ADDR", "127.0.0.1:70000"}, "METRICS_ADDR"},
		{"MetricsAddrURL", []string{"METRICS_ADDR", "http://127.0.0.1:9464/metrics"}, "METRICS_ADDR"},
		{"RPIDIsIPv4", []string{"WEBAUTHN_RP_ID", "127.0.0.1"}, "WEBAUTHN_RP_ID"},
		{"RPIDIsIPv6", []string{"WEBAUTHN_RP_ID", "::1"}, "WEBAUTHN_RP_ID"},
		{"RPIDIsURL", []string{"WEBAUTHN_RP_ID", "https://example.com"}, "WEBAUTHN_RP_ID"},
		{"RPIDWithPort", []string{"WEBAUTHN_RP_ID", "example.com:443"}, "WEBAUTHN_RP_ID"},
		{"OriginOfAnotherSite", []string{"WEBAUTHN_RP_ID", "example.com", "WEBAUTHN_ORIGINS", "https://example.com,https://example.org"}, "WEBAUTHN_ORIGINS"},
		{"OriginMerelyEndingLikeTheRPID", []string{"WEBAUTHN_RP_ID", "example.com", "WEBAUTHN_ORIGINS", "https://notexample.com"}, "WEBAUTHN_ORIGINS"},
		{"OriginAboveTheRPID", []string{"WEBAUTHN_RP_ID", "auth.example.com", "WEBAUTHN_ORIGINS", "https://example.com"}, "WEBAUTHN_ORIGINS"},
		{"OriginPlainHTTP", []string{"WEBAUTHN_RP_ID", "example.com", "WEBAUTHN_ORIGINS", "http://example.com"}, "WEBAUTHN_ORIGINS"},
		{"OriginWithPath", []string{"WEBAUTHN_RP_ID", "example.com", "WEBAUTHN_ORIGINS", "https://example.com/app"}, "WEBAUTHN_ORIGINS"},
		{"OriginIPUnderLocalhost", []string{"WEBAUTHN_ORIGINS", "http://127.0.0.1:8080"}, "WEBAUTHN_ORIGINS"},
		{"RPIDWithoutAnyFittingDefaultOrigin", []string{"WEBAUTHN_RP_ID", "example.com", "PUBLIC_URL", "https://auth.example.org"}, "WEBAUTHN_ORIGINS"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Load(env(c.env...))
			if err == nil {
				t.Fatal("want an error")
			}
			if msg := err.Error(); !strings.Contains(msg, c.naming) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q should be one line naming %s", msg, c.naming)
			}
		})
	}
}

func TestLoadConfig_MailDefaults(t *testing.T) {
	secret := strings.Repeat("s", 32)
	cases := []struct {
		name     string
		env      []string
		devInbox bool
		linkURL  string
		guessed  bool
	}{
		{"EmbeddedDatabase", nil, true, "http://localhost:8080/", true},
		{"EmbeddedOtherPort", []string{"PORT", "9000"}, true, "http://localhost:9000/", true},
		{"Postgres", []string{"DATABASE_URL", "postgres://localhost/db", "JWT_SECRET", secret}, false, "http://localhost:8080/", true},
		{"PostgresInboxOn", []string{"DATABASE_URL", "postgres://localhost/db", "JWT_SECRET", secret, "MAIL_DEV_INBOX", "true"}, true, "http://localhost:8080/", true},
		{"EmbeddedInboxOff", []string{"MAIL_DEV_INBOX", "false"}, false, "http://localhost:8080/", true},
		{"PublicURL", []string{"PUBLIC_URL", "https://auth.example.com/"}, true, "https://auth.example.com/", false},
		{"LinkURLOverPublicURL", []string{"PUBLIC_URL", "https://auth.example.com", "EMAIL_LINK_URL", "https://app.example.com/account"}, true, "https://app.example.com/account", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Load(env(c.env...))
			if err != nil {
				t.Fatal(err)
			}
			m := cfg.Mail
			if m.DevInbox != c.devInbox || m.LinkURL != c.linkURL || m.LinkURLGuessed != c.guessed || m.AppName != "gqlauth" || m.SMTPURL != "" ||
				m.VerifyTTL != 24*time.Hour || m.ResetTTL != 30*time.Minute || m.PerAddress != 5 || m.CodeTTL != 10*time.Minute || m.VerificationRequired {
				t.Fatalf("Mail = %+v, want DevInbox %v, LinkURL %q, guessed %v", m, c.devInbox, c.linkURL, c.guessed)
			}
		})
	}
}

func TestLoadConfig_MailAcceptsGoodValues(t *testing.T) {
	cases := []struct {
		name string
		env  []string
	}{
		{"SMTPWithFrom", []string{"SMTP_URL", "smtp://mail.example.com:587", "MAIL_FROM", "no-reply@example.com"}},
		{"SMTPSWithUser", []string{"SMTP_URL", "smtps://user:secret-pw@mail.example.com", "MAIL_FROM", "App <no-reply@example.com>"}},
		{"AppName", []string{"APP_NAME", "Acme Accounts"}},
		{"Templates", []string{"MAIL_TEMPLATES", "/etc/gqlauth/mail"}},
		{"LinkURLWithPath", []string{"EMAIL_LINK_URL", "http://localhost:5173/auth"}},
		{"VerifyTTL", []string{"EMAIL_VERIFY_TTL", "2h"}},
		{"ResetTTL", []string{"PASSWORD_RESET_TTL", "15m"}},
		{"PerAddressOff", []string{"RATE_LIMIT_EMAIL_PER_ADDRESS", "0"}},
		{"CodeTTL", []string{"SIGN_IN_CODE_TTL", "5m"}},
		{"VerificationRequired", []string{"EMAIL_VERIFICATION_REQUIRED", "true"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := config.Load(env(c.env...)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLoadConfig_MailRejectsBadValuesNamingTheVariable(t *testing.T) {
	cases := []struct {
		name   string
		env    []string
		naming string
	}{
		{"SMTPWithoutFrom", []string{"SMTP_URL", "smtp://mail.example.com"}, "MAIL_FROM"},
		{"SMTPSchemeHTTP", []string{"SMTP_URL", "http://mail.example.com", "MAIL_FROM", "a@example.com"}, "SMTP_URL"},
		{"SMTPWithoutScheme", []string{"SMTP_URL", "mail.example.com:25", "MAIL_FROM", "a@example.com"}, "SMTP_URL"},
		{"SMTPWithoutHost", []string{"SMTP_URL", "smtp://", "MAIL_FROM", "a@example.com"}, "SMTP_URL"},
		{"SMTPUnparsable", []string{"SMTP_URL", "smtp://user:secret-pw@mail.example.com:25%zz", "MAIL_FROM", "a@example.com"}, "SMTP_URL"},
		{"FromNotAnAddress", []string{"MAIL_FROM", "no-reply"}, "MAIL_FROM"},
		{"FromWithLineBreak", []string{"MAIL_FROM", "App <a@example.com>\r\nBcc: x@example.com"}, "MAIL_FROM"},
		{"AppNameWithLineBreak", []string{"APP_NAME", "Acme\nBcc: x@example.com"}, "APP_NAME"},
		{"AppNameTooLong", []string{"APP_NAME", strings.Repeat("a", 101)}, "APP_NAME"},
		{"DevInboxNotBool", []string{"MAIL_DEV_INBOX", "dev"}, "MAIL_DEV_INBOX"},
		{"LinkURLRelative", []string{"EMAIL_LINK_URL", "/account"}, "EMAIL_LINK_URL"},
		{"LinkURLNotHTTP", []string{"EMAIL_LINK_URL", "javascript:alert(1)"}, "EMAIL_LINK_URL"},
		{"LinkURLWithFragment", []string{"EMAIL_LINK_URL", "https://app.example.com/#/account"}, "EMAIL_LINK_URL"},
		{"VerifyTTLUnparsable", []string{"EMAIL_VERIFY_TTL", "a day"}, "EMAIL_VERIFY_TTL"},
		{"VerifyTTLZero", []string{"EMAIL_VERIFY_TTL", "0s"}, "EMAIL_VERIFY_TTL"},
		{"ResetTTLUnparsable", []string{"PASSWORD_RESET_TTL", "half an hour"}, "PASSWORD_RESET_TTL"},
		{"ResetTTLZero", []string{"PASSWORD_RESET_TTL", "0s"}, "PASSWORD_RESET_TTL"},
		{"CodeTTLUnparsable", []string{"SIGN_IN_CODE_TTL", "ten minutes"}, "SIGN_IN_CODE_TTL"},
		{"CodeTTLZero", []string{"SIGN_IN_CODE_TTL", "0s"}, "SIGN_IN_CODE_TTL"},
		{"VerificationRequiredNotBool", []string{"EMAIL_VERIFICATION_REQUIRED", "yes please"}, "EMAIL_VERIFICATION_REQUIRED"},
		{"PerAddressNegative", []string{"RATE_LIMIT_EMAIL_PER_ADDRESS", "-1"}, "RATE_LIMIT_EMAIL_PER_ADDRESS"},
		{"PerAddressNotANumber", []string{"RATE_LIMIT_EMAIL_PER_ADDRESS", "five"}, "RATE_LIMIT_EMAIL_PER_ADDRESS"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Load(env(c.env...))
			if err == nil {
				t.Fatal("want an error")
			}
			msg := err.Error()
			if !strings.Contains(msg, c.naming) || strings.Contains(msg, "\n") || strings.Contains(msg, "secret-pw") {
				t.Fatalf("error %q should be one line naming %s (and no password)", msg, c.naming)
			}
		})
	}
}

func TestLoadConfig_Passkeys(t *testing.T) {
	cases := []struct {
		name    string
		env     []string
		rpID    string
		origins string
		guessed bool
		skipped string
	}{
		{"Nothing", nil, "localhost", "http://localhost:8080", true, ""},
		{"OtherPort", []string{"PORT", "9000"}, "localhost", "http://localhost:9000", true, ""},
		{"PublicURL", []string{"PUBLIC_URL", "https://auth.example.com"}, "auth.example.com", "https://auth.example.com", false, ""},
		{"PublicURLOnAnIP", []string{"PUBLIC_URL", "http://10.0.0.5:8080"}, "localhost", "http://localhost:8080", true, "http://10.0.0.5:8080"},
		{"PublicURLOnLocalhost", []string{"PUBLIC_URL", "http://localhost:3000"}, "localhost", "http://localhost:3000", false, ""},
		{"CORSOriginsUnderTheRPID", []string{"PUBLIC_URL", "https://example.com", "CORS_ALLOWED_ORIGINS", "https://app.example.com,https://other.org"},
			"example.com", "https://example.com https://app.example.com", false, "https://other.org"},
		{"ParentDomainAsRPID", []string{"WEBAUTHN_RP_ID", "example.com", "PUBLIC_URL", "https://auth.example.com", "CORS_ALLOWED_ORIGINS", "https://app.example.com"},
			"example.com", "https://auth.example.com https://app.example.com", false, ""},
		{"ExplicitOrigins", []string{"WEBAUTHN_RP_ID", "example.com", "WEBAUTHN_ORIGINS", "https://example.com/, https://app.example.com:8443", "PUBLIC_URL", "https://other.org"},
			"example.com", "https://example.com https://app.example.com:8443", false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Load(env(c.env...))
			if err != nil {
				t.Fatal(err)
			}
			p := cfg.Passkeys
			if p.RPID != c.rpID || strings.Join(p.Origins, " ") != c.origins || p.Guessed != c.guessed || strings.Join(p.Skipped, " ") != c.skipped {
				t.Fatalf("got RP ID %q, origins %q, guessed %v, skipped %q; want %q, %q, %v, %q",
					p.RPID, p.Origins, p.Guessed, p.Skipped, c.rpID, c.origins, c.guessed, c.skipped)
			}
			if err := p.Validate(); err != nil {
				t.Fatalf("the loaded configuration does not validate: %v", err)
			}
		})
	}
}

func TestLoadConfig_PrincipalCacheIsOnWithPostgresAndRefusedWithSQLite(t *testing.T) {
	secret := strings.Repeat("s", 32)
	postgres := []string{"DATABASE_URL", "postgres://localhost/db", "JWT_SECRET", secret}
	cases := []struct {
		name    string
		env     []string
		want    bool
		refused bool
	}{
		{"EmbeddedDatabase", nil, false, false},
		{"Postgres", postgres, true, false},
		{"PostgresTurnedOff", append(postgres, "PRINCIPAL_CACHE", "false"), false, false},
		{"PostgresTurnedOn", append(postgres, "PRINCIPAL_CACHE", "true"), true, false},
		{"EmbeddedTurnedOn", []string{"PRINCIPAL_CACHE", "true"}, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Load(env(c.env...))
			if c.refused {
				if err == nil || !strings.Contains(err.Error(), "PRINCIPAL_CACHE") {
					t.Fatalf("want PRINCIPAL_CACHE refused, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.PrincipalCache != c.want {
				t.Fatalf("PrincipalCache = %v, want %v", cfg.PrincipalCache, c.want)
			}
		})
	}
}

func TestLoadConfig_DatabaseMaxConnsDefaultsToThreeInstancesInPostgresDefaultLimit(t *testing.T) {
	secret := strings.Repeat("s", 32)
	cases := []struct {
		name string
		env  []string
		want int
	}{
		{"Default", []string{"DATABASE_URL", "postgres://localhost/db", "JWT_SECRET", secret}, 24},
		{"Set", []string{"DATABASE_URL", "postgres://localhost/db", "JWT_SECRET", secret, "DATABASE_MAX_CONNS", "60"}, 60},
		{"Smallest", []string{"DATABASE_URL", "postgres://localhost/db", "JWT_SECRET", secret, "DATABASE_MAX_CONNS", "4"}, 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Load(env(c.env...))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.DatabaseMaxConns != c.want {
				t.Fatalf("DatabaseMaxConns = %d, want %d", cfg.DatabaseMaxConns, c.want)
			}
			// Three default instances, each with its LISTEN and the principal cache's two
			// connections, within Postgres's default max_connections less its three reserved.
			if c.name == "Default" && 3*(cfg.DatabaseMaxConns+3) > 100-3 {
				t.Fatalf("three instances need %d connections", 3*(cfg.DatabaseMaxConns+3))
			}
		})
	}
}
