package graph_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"gqlauth/account"
	"gqlauth/feed"
	"gqlauth/graph"
	"gqlauth/mfa"
	"gqlauth/oidc"
	"gqlauth/store"
	"gqlauth/store/storetest"
	"gqlauth/token"
	"gqlauth/web"
)

// passkeyOrigin is where the test servers' pages run for the passkey ceremonies (WEBAUTHN_ORIGINS,
// RP ID localhost); the software authenticator (mfa/softauthn) reports it.
const passkeyOrigin = "http://localhost:5173"

// testSecret signs the access tokens of every test server.
var testSecret = []byte("test-secret-of-at-least-32-bytes!!")

// clock is a settable time source shared by a server's token issuer and account rules.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// server is gqlauth's GraphQL endpoint over real HTTP on a fresh database.
type server struct {
	URL     string
	DB      *store.DB
	Clock   *clock
	Queries *queryCounter
	Service *account.Service
	Keys    *token.KeyRing // nil with HS256
	Tokens  *token.Tokens
}

type serverOptions struct {
	cost          int
	reuseInterval time.Duration
	refreshTTL    time.Duration
	signup        bool
	limits        account.Limits
	retention     time.Duration
	queryLimits   graph.QueryLimits
	logs          io.Writer
	noIntrospect  bool
	bcryptWorkers int
	queueTimeout  time.Duration
	debug         bool
	proxies       web.Proxies
	trusted       *graph.TrustedDocuments
	sockets       graph.SocketLimits
	origins       []string
	oidc          func(publicURL string) oidc.Config
	linkVerified  bool
	publicURL     string
	accessLog     graph.AccessLog
	alg           string // "": HS256
	publishDelay  time.Duration
	rotation      time.Duration
	mail          func(t testing.TB, db *store.DB) account.MailConfig // nil: no mail
	mailTweaks    []func(*account.MailConfig)
	mfa           account.MFAConfig
	noCache       bool // the principal cache off (it is on with Postgres)
	cache         store.CacheConfig
}

// withMailConfig changes the mail configuration (SIGN_IN_CODE_TTL, EMAIL_VERIFICATION_REQUIRED…).
func withMailConfig(f func(*account.MailConfig)) option {
	return func(o *serverOptions) { o.mailTweaks = append(o.mailTweaks, f) }
}

type option func(*serverOptions)

// withoutPrincipalCache reads every principal from the database, as PRINCIPAL_CACHE=false does.
func withoutPrincipalCache() option { return func(o *serverOptions) { o.noCache = true } }

func withBcryptCost(c int) option                  { return func(o *serverOptions) { o.cost = c } }
func withSignupDisabled() option                   { return func(o *serverOptions) { o.signup = false } }
func withReuseInterval(d time.Duration) option     { return func(o *serverOptions) { o.reuseInterval = d } }
func withRefreshTTL(d time.Duration) option        { return func(o *serverOptions) { o.refreshTTL = d } }
func withRateLimits(l account.Limits) option       { return func(o *serverOptions) { o.limits = l } }
func withQueryLimits(l graph.QueryLimits) option   { return func(o *serverOptions) { o.queryLimits = l } }
func withoutIntrospection() option                 { return func(o *serverOptions) { o.noIntrospect = true } }
func withLogs(w io.Writer) option                  { return func(o *serverOptions) { o.logs = w } }
func withAuditRetention(d time.Duration) option    { return func(o *serverOptions) { o.retention = d } }
func withDebug() option                            { return func(o *serverOptions) { o.debug = true } }
func withTrustedProxies(p web.Proxies) option      { return func(o *serverOptions) { o.proxies = p } }
func withSocketLimits(l graph.SocketLimits) option { return func(o *serverOptions) { o.sockets = l } }
func withOrigins(origins ...string) option         { return func(o *serverOptions) { o.origins = origins } }

// withMFA sets MFA_REQUIRED_ROLES, REAUTH_WINDOW and the TOTP issuer.
func withMFA(c account.MFAConfig) option { return func(o *serverOptions) { o.mfa = c } }

// withOIDC configures provider sign-in; cfg receives the server's own base URL, which is its
// PUBLIC_URL unless withPublicURL says otherwise.
func withOIDC(cfg func(publicURL string) oidc.Config) option {
	return func(o *serverOptions) { o.oidc = cfg }
}

// withLinkVerifiedEmail sets OIDC_LINK_VERIFIED_EMAIL.
func withLinkVerifiedEmail(on bool) option { return func(o *serverOptions) { o.linkVerified = on } }

// withAccessLog sets ACCESS_LOG.
func withAccessLog(a graph.AccessLog) option { return func(o *serverOptions) { o.accessLog = a } }

// withPublicURL sets PUBLIC_URL, as for a second instance behind the first one's URL.
func withPublicURL(u string) option { return func(o *serverOptions) { o.publicURL = u } }
func withJWTAlg(alg string, publishDelay, rotation time.Duration) option {
	return func(o *serverOptions) { o.alg, o.publishDelay, o.rotation = alg, publishDelay, rotation }
}

func withTrustedDocuments(d *graph.TrustedDocuments) option {
	return func(o *serverOptions) { o.trusted = d }
}

func withBcryptPool(workers int, queueTimeout time.Duration) option {
	return func(o *serverOptions) { o.bcryptWorkers, o.queueTimeout = workers, queueTimeout }
}

// newServer starts a server on a fresh database of kind.
func newServer(t testing.TB, kind storetest.Kind, opts ...option) *server {
	t.Helper()
	return newServerOn(t, storetest.Open(t, kind), &clock{now: time.Now().UTC()}, opts...)
}

// newServerOn starts a server on db, as one more instance in front of the same database.
// db may be nil for a service without a database.
func newServerOn(t testing.TB, db *store.DB, clk *clock, opts ...option) *server {
	t.Helper()
	o := serverOptions{cost: 4, reuseInterval: 10 * time.Second, refreshTTL: 720 * time.Hour, signup: true, logs: io.Discard}
	for _, opt := range opts {
		opt(&o)
	}
	var keys *token.KeyRing
	if o.alg != "" {
		var err error
		keys, err = token.NewKeyRing(context.Background(), db, token.KeyRingConfig{
			Alg: o.alg, Secret: testSecret, PublishDelay: o.publishDelay, Rotation: o.rotation, TokenTTL: 15 * time.Minute, Now: clk.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	tokens, err := token.NewTokens(token.TokenConfig{Secret: testSecret, Issuer: "gqlauth", Audience: "gqlauth", TTL: 15 * time.Minute, Now: clk.Now, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	passwords, err := account.NewPasswords(account.PasswordConfig{Cost: o.cost, Workers: o.bcryptWorkers, QueueTimeout: o.queueTimeout})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(graph.NewLogHandler(o.logs, true, nil, nil))
	// The listener first: the server's URL is part of its configuration (PUBLIC_URL).
	ts := httptest.NewUnstartedServer(nil)
	base := "http://" + ts.Listener.Addr().String()
	var providerConfig oidc.Config
	if o.oidc != nil {
		if o.publicURL == "" {
			o.publicURL = base
		}
		providerConfig = o.oidc(o.publicURL)
	}
	var mailCfg account.MailConfig
	if o.mail != nil {
		mailCfg = o.mail(t, db)
	}
	for _, f := range o.mailTweaks {
		f(&mailCfg)
	}
	if o.mfa.Passkeys == nil {
		// Every instance's pages are on one origin, as behind one public URL (see passkeyOrigin).
		var err error
		if o.mfa.Passkeys, err = mfa.NewPasskeys(mfa.PasskeyConfig{RPID: "localhost", Origins: []string{passkeyOrigin}, DisplayName: "gqlauth test", Logger: log}); err != nil {
			t.Fatal(err)
		}
	}
	events := feed.New()
	providers := oidc.New(db, providerConfig, clk.Now, log)
	svc := account.NewService(db, tokens, passwords, account.ServiceConfig{
		RefreshTTL: o.refreshTTL, ReuseInterval: o.reuseInterval, SignupEnabled: o.signup, Now: clk.Now, Logger: log,
		Limits: o.limits, AuditRetention: o.retention, Providers: providers.Names(), LinkVerifiedEmail: o.linkVerified, Feed: events,
		Mail: mailCfg, MFA: o.mfa,
	})
	if mailCfg.Mailer != nil {
		mailCfg.Mailer.SetResolver(svc.ResolveMailRequest) // as server.go does
	}
	signIn := web.NewSignIn(svc, providers)
	// As server.go builds it: a service of your own goes here too.
	resolver := &graph.Resolver{
		Account: svc,
		SignIn:  signIn,
	}
	h, err := graph.NewHandler(resolver, graph.Options{Logger: log, Limits: o.queryLimits, Introspection: !o.noIntrospect, Debug: o.debug, Trusted: o.trusted,
		Sockets: o.sockets, Origins: o.origins, AccessLog: o.accessLog})
	if err != nil {
		t.Fatal(err)
	}
	// As server.go mounts them, behind the credential middleware.
	credentials := web.Credentials(tokens, web.CredentialOptions{Proxies: o.proxies})
	mux := http.NewServeMux()
	mux.Handle("/", credentials(h))
	mux.Handle("/auth/", credentials(signIn.Handler()))
	mux.Handle("/oauth/token", credentials(web.TokenEndpoint(svc)))
	ts.Config.Handler = mux
	ts.Start()
	t.Cleanup(ts.Close)
	counter := &queryCounter{}
	if db != nil { // nil: a service without a database, to provoke a panic
		db.AddQueryHook(counter)
	}
	var listen func(ctx context.Context, connected func())
	if db != nil {
		listen = graph.WireEvents(db, events, keys, h.Sockets, log)
	}
	if db != nil && db.IsPostgres() {
		// Committed events reach sockets through LISTEN: wait until this instance listens.
		ctx, cancel := context.WithCancel(context.Background())
		listening := make(chan struct{}, 1)
		go listen(ctx, func() {
			select {
			case listening <- struct{}{}:
			default:
			}
		})
		t.Cleanup(cancel)
		select {
		case <-listening:
		case <-time.After(10 * time.Second):
			t.Fatal("the event listener did not connect")
		}
		if !o.noCache {
			// As server.go runs it (PRINCIPAL_CACHE on by default with Postgres): serving from
			// memory before the test's first request.
			run, err := db.CachePrincipals(store.CacheConfig{})
			if err != nil {
				t.Fatal(err)
			}
			joined := make(chan struct{}, 1)
			done := make(chan struct{})
			go func() {
				defer close(done)
				run(ctx, func() {
					select {
					case joined <- struct{}{}:
					default:
					}
				})
			}()
			t.Cleanup(func() { cancel(); <-done })
			select {
			case <-joined:
			case <-time.After(10 * time.Second):
				t.Fatal("the principal cache did not start serving")
			}
		}
	}
	return &server{URL: ts.URL, DB: db, Clock: clk, Queries: counter, Service: svc, Keys: keys, Tokens: tokens}
}

// twoInstances starts two servers on one fresh database, sharing a clock, as two instances
// behind a load balancer.
func twoInstances(t *testing.T, kind storetest.Kind, opts ...option) (a, b *server) {
	t.Helper()
	name := storetest.NewName(t, kind)
	dbA := storetest.OpenShared(t, kind, name)
	if err := dbA.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	dbB := storetest.OpenShared(t, kind, name)
	if err := dbB.Migrate(context.Background()); err != nil { // idempotent
		t.Fatal(err)
	}
	clk := &clock{now: time.Now().UTC()}
	return newServerOn(t, dbA, clk, opts...), newServerOn(t, dbB, clk, opts...)
}

// snapshot is every stored row of the tables a request could write, as text, to show that a
// refused request wrote nothing.
func (s *server) snapshot(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	for _, table := range []string{"users", "sessions", "api_keys"} {
		rows, err := s.DB.DumpTable(context.Background(), table)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s: %v\n", table, rows)
	}
	return b.String()
}

// queryCounter counts the queries a database runs.
type queryCounter struct{ n atomic.Int64 }

func (c *queryCounter) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	return ctx
}

func (c *queryCounter) AfterQuery(context.Context, *bun.QueryEvent) { c.n.Add(1) }
