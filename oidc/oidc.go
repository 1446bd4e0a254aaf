// Package oidc is the OpenID Connect relying party: provider discovery, the state, nonce and PKCE
// of each flow kept in the store, the code exchange, ID-token verification and the claims. It is
// an HTTP client only — go-oidc and golang.org/x/oauth2 talk to the providers over net/http, the
// one reason its imports contain net/http — and serves nothing (the edge, web, serves /auth/).
// It never decides what an identity signs in to, and creates no account or session: account does,
// from the claims it returns.
package oidc

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"gqlauth/store"
)

// Provider configures one OpenID Connect provider.
type Provider struct {
	Name         string // as in the URLs: /auth/<name>/start
	Issuer       string // discovery at <issuer>/.well-known/openid-configuration
	ClientID     string
	ClientSecret string
	Scopes       []string
}

// Config configures sign-in through providers.
type Config struct {
	Providers []Provider
	// PublicURL is this server's base URL as browsers reach it: the callback registered at each
	// provider is <PublicURL>/auth/<name>/callback, and <PublicURL>/ (the playground) is always an
	// allowed redirect target.
	PublicURL string
	// RedirectURLs are the exact URLs a flow may return to.
	RedirectURLs []string
	// HTTPClient talks to the providers; nil: one with a 10-second timeout.
	HTTPClient *http.Client
}

// RelyingParties are the relying-party side of every configured provider.
type RelyingParties struct {
	providers map[string]*RelyingParty
	names     []string
	redirects map[string]bool
}

// New returns the relying parties of cfg, which keep their flows in db; nil when cfg names no
// provider. now is the clock (nil: time.Now), log where an unreachable provider is reported.
func New(db *store.DB, cfg Config, now func() time.Time, log *slog.Logger) *RelyingParties {
	if len(cfg.Providers) == 0 {
		return nil
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	ps := &RelyingParties{providers: map[string]*RelyingParty{}, redirects: map[string]bool{}}
	for _, p := range cfg.Providers {
		ps.providers[p.Name] = &RelyingParty{cfg: p, client: cfg.HTTPClient, now: now, db: db, log: log,
			redirectURL: cfg.PublicURL + "/auth/" + p.Name + "/callback"}
		ps.names = append(ps.names, p.Name)
	}
	for _, u := range cfg.RedirectURLs {
		ps.redirects[u] = true
	}
	if cfg.PublicURL != "" {
		ps.redirects[cfg.PublicURL+"/"] = true
	}
	return ps
}

// Names are the configured providers' names, in configuration order (none for nil).
func (ps *RelyingParties) Names() []string {
	if ps == nil {
		return nil
	}
	return ps.names
}

// Provider returns the configured provider name, or nil.
func (ps *RelyingParties) Provider(name string) *RelyingParty {
	if ps == nil {
		return nil
	}
	return ps.providers[name]
}

// AllowedRedirect reports whether a flow may return to u: one of OIDC_REDIRECT_URLS, exactly, or
// the playground.
func (ps *RelyingParties) AllowedRedirect(u string) bool { return ps != nil && ps.redirects[u] }

// ValidateRedirectURL checks an entry of OIDC_REDIRECT_URLS: an absolute http(s) URL without a
// fragment or user info, as a browser would send it back unchanged.
func ValidateRedirectURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL", raw)
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
		return fmt.Errorf("%q is not an absolute http(s) URL", raw)
	case u.Fragment != "" || strings.Contains(raw, "#"), u.User != nil:
		return fmt.Errorf("%q must have no fragment and no user info", raw)
	case u.String() != raw:
		return fmt.Errorf("%q is not in canonical form (%q)", raw, u.String())
	}
	return nil
}

// ProviderNamePattern is the rule for provider names: they appear in URLs and variable names.
var ProviderNamePattern = regexp.MustCompile(`^[a-z][a-z0-9]{0,31}$`)

// RelyingParty is one provider, discovered on first use and then kept.
type RelyingParty struct {
	cfg         Provider
	redirectURL string
	client      *http.Client
	now         func() time.Time
	db          *store.DB
	log         *slog.Logger

	mu       sync.Mutex
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
	oauth    *oauth2.Config
}

// Name is the provider's name.
func (rp *RelyingParty) Name() string { return rp.cfg.Name }

// clock is the current time as the databases store it: UTC, to the microsecond.
func (rp *RelyingParty) clock() time.Time { return rp.now().UTC().Truncate(time.Microsecond) }

// idTokenAlgs are the ID token algorithms accepted, whatever a provider lists: never none or HS*.
var idTokenAlgs = map[string]bool{
	oidc.RS256: true, oidc.RS384: true, oidc.RS512: true, oidc.PS256: true, oidc.PS384: true, oidc.PS512: true,
	oidc.ES256: true, oidc.ES384: true, oidc.ES512: true, oidc.EdDSA: true,
}

// discover reads the provider's metadata once; a failure is not kept, so the next request tries
// again.
func (rp *RelyingParty) discover(ctx context.Context) (*oidc.Provider, *oidc.IDTokenVerifier, *oauth2.Config, error) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.provider != nil {
		return rp.provider, rp.verifier, rp.oauth, nil
	}
	ctx = oidc.ClientContext(ctx, rp.client)
	provider, err := oidc.NewProvider(ctx, rp.cfg.Issuer)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("discovery of %s: %w", rp.cfg.Issuer, err)
	}
	var meta struct {
		Algs []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := provider.Claims(&meta); err != nil {
		return nil, nil, nil, fmt.Errorf("discovery of %s: %w", rp.cfg.Issuer, err)
	}
	var algs []string
	for _, alg := range meta.Algs {
		if idTokenAlgs[alg] {
			algs = append(algs, alg)
		}
	}
	if len(algs) == 0 {
		return nil, nil, nil, fmt.Errorf("discovery of %s: it lists no asymmetric ID token algorithm (%v)", rp.cfg.Issuer, meta.Algs)
	}
	rp.provider = provider
	rp.verifier = provider.Verifier(&oidc.Config{ClientID: rp.cfg.ClientID, SupportedSigningAlgs: algs, Now: rp.now})
	rp.oauth = &oauth2.Config{
		ClientID: rp.cfg.ClientID, ClientSecret: rp.cfg.ClientSecret, Endpoint: provider.Endpoint(),
		RedirectURL: rp.redirectURL, Scopes: rp.cfg.Scopes,
	}
	return rp.provider, rp.verifier, rp.oauth, nil
}
