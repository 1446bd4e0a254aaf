package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gqlauth/graph"
	"gqlauth/store/storetest"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestLoadConfig_Defaults(t *testing.T) {
	cfg, err := LoadConfig(env())
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
			cfg, err := LoadConfig(env(c.env...))
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
			cfg, err := LoadConfig(env(c.env...))
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
		{"IntrospectionNotBool", []string{"INTROSPECTION", "dev"}, "INTROSPECTION"},
		{"HostWithPort", []string{"HOST", "127.0.0.1:8080"}, "HOST"},
		{"HostURL", []string{"HOST", "http://example.com"}, "HOST"},
		{"HostWithSpace", []string{"HOST", "my host"}, "HOST"},
		{"MetricsAddrWithoutPort", []string{"METRICS_ADDR", "127.0.0.1"}, "METRICS_ADDR"},
		{"MetricsAddrPortOnly", []string{"METRICS_ADDR", "9464"}, "METRICS_ADDR"},
		{"MetricsAddrNamedPort", []string{"METRICS_ADDR", "127.0.0.1:http"}, "METRICS_ADDR"},
		{"MetricsAddrPortOutOfRange", []string{"METRICS_ADDR", "127.0.0.1:70000"}, "METRICS_ADDR"},
		{"MetricsAddrURL", []string{"METRICS_ADDR", "http://127.0.0.1:9464/metrics"}, "METRICS_ADDR"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadConfig(env(c.env...))
			if err == nil {
				t.Fatal("want an error")
			}
			if msg := err.Error(); !strings.Contains(msg, c.naming) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q should be one line naming %s", msg, c.naming)
			}
		})
	}
}

// TestMain lets a test run the real main in a subprocess, to see its exit code and output.
func TestMain(m *testing.M) {
	if os.Getenv("GQLAUTH_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func TestMain_BadConfigurationExits1WithOneClearLine(t *testing.T) {
	cases := map[string][]string{
		"BCRYPT_COST":            {"BCRYPT_COST=99"},
		"ACCESS_TOKEN_TTL":       {"ACCESS_TOKEN_TTL=soon"},
		"JWT_SECRET":             {"DATABASE_URL=postgres://postgres@127.0.0.1:5432/test"},
		"DATABASE_URL":           {"DATABASE_URL=postgres://postgres@127.0.0.1:1/unreachable", "JWT_SECRET=" + strings.Repeat("k", 32)},
		"PORT":                   {"PORT=-1"},
		"TRUSTED_DOCUMENTS_ONLY": {"TRUSTED_DOCUMENTS_ONLY=true"},
		"TRUSTED_DOCUMENTS":      {"TRUSTED_DOCUMENTS=" + badManifest(t)},
	}
	for naming, vars := range cases {
		t.Run(naming, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Dir = t.TempDir()
			cmd.Env = append(os.Environ(), "GQLAUTH_RUN_MAIN=1")
			cmd.Env = append(cmd.Env, vars...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			exit, ok := err.(*exec.ExitError)
			if !ok || exit.ExitCode() != 1 {
				t.Fatalf("want exit code 1, got %v (stderr %q)", err, stderr.String())
			}
			out := strings.TrimSpace(stderr.String())
			if strings.Count(out, "\n") != 0 || !strings.Contains(out, naming) || strings.Contains(out, "goroutine") {
				t.Fatalf("want one line naming %s, got %q", naming, out)
			}
		})
	}
}

// badManifest writes a trusted-documents manifest whose one entry's id is not its document's hash.
func badManifest(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "persisted-documents.json")
	entry := `{"sha256:` + strings.Repeat("ab", 32) + `": "{ me { id } }"}`
	if err := os.WriteFile(path, []byte(entry), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// start runs the server with vars in dir until the test ends and returns its base URL.
func start(t *testing.T, dir string, vars ...string) string {
	t.Helper()
	return startLogged(t, dir, io.Discard, vars...)
}

// startLogged is start with the server's log written to logs.
func startLogged(t *testing.T, dir string, logs io.Writer, vars ...string) string {
	t.Helper()
	t.Chdir(dir)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, env(append([]string{"PORT", "0", "BCRYPT_COST", "10"}, vars...)...), logs, ready)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case addr := <-ready:
		return "http://" + strings.Replace(addr, "[::]", "127.0.0.1", 1)
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("server did not start")
	}
	return ""
}

func graphql(t *testing.T, base, token, query string) map[string]any {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"query": query})
	req, _ := http.NewRequest(http.MethodPost, base+"/query", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func accessToken(t *testing.T, out map[string]any, field string) string {
	t.Helper()
	data, _ := out["data"].(map[string]any)
	payload, _ := data[field].(map[string]any)
	tok, _ := payload["accessToken"].(string)
	if tok == "" {
		t.Fatalf("no %s.accessToken in %v", field, out)
	}
	return tok
}

func status(t *testing.T, url string) int {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

func TestRun_EmbeddedDatabaseServesEndpoints(t *testing.T) {
	dir := t.TempDir()
	base := start(t, dir)
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/": 200} {
		if got := status(t, base+path); got != want {
			t.Errorf("GET %s: %d, want %d", path, got, want)
		}
	}
	tok := accessToken(t, graphql(t, base, "", `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`), "register")
	out := graphql(t, base, tok, `{ me { username } }`)
	if me := out["data"].(map[string]any)["me"].(map[string]any); me["username"] != "alice" {
		t.Fatalf("me: %v", out)
	}
	if _, err := os.Stat(dir + "/gqlauth.db"); err != nil {
		t.Fatalf("embedded database file: %v", err)
	}
}

func TestRun_GeneratedSecretSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	first := start(t, dir)
	tok := accessToken(t, graphql(t, first, "", `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`), "register")
	second := start(t, dir) // a second instance on the same file, as after a restart
	if out := graphql(t, second, tok, `{ me { username } }`); out["errors"] != nil {
		t.Fatalf("token from before the restart: %v", out)
	}
}

func TestRun_BootstrapsAdminOnce(t *testing.T) {
	dir := t.TempDir()
	base := start(t, dir, "ADMIN_USERNAME", "root", "ADMIN_PASSWORD", "first password")
	tok := accessToken(t, graphql(t, base, "", `mutation { login(username: "root", password: "first password") { accessToken } }`), "login")
	if out := graphql(t, base, tok, `{ users { username role } }`); out["errors"] != nil {
		t.Fatalf("admin query: %v", out)
	}
	// An existing user is left untouched: the new password does not replace the old one.
	again := start(t, dir, "ADMIN_USERNAME", "root", "ADMIN_PASSWORD", "second password")
	accessToken(t, graphql(t, again, "", `mutation { login(username: "root", password: "first password") { accessToken } }`), "login")
}

func TestRun_Postgres(t *testing.T) {
	if !contains(storetest.Kinds(t), storetest.Postgres) {
		t.Skip("TEST_DATABASE_URL not set")
	}
	vars, _, _ := databaseVars(t, storetest.Postgres)
	base := start(t, t.TempDir(), vars...)
	tok := accessToken(t, graphql(t, base, "", `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`), "register")
	if out := graphql(t, base, tok, `{ me { username } }`); out["errors"] != nil {
		t.Fatalf("me: %v", out)
	}
	if got := status(t, base+"/readyz"); got != 200 {
		t.Fatalf("readyz: %d", got)
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
