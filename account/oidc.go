package account

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/google/uuid"
	"golang.org/x/oauth2"

	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/token"
)

// Lifetimes of the two single-use secrets of a provider sign-in or link.
const (
	SignInFlowTTL = 10 * time.Minute // state: from start to the provider's callback
	AuthCodeTTL   = 60 * time.Second // one-time code: from the callback to exchangeAuthCode or completeIdentityLink
)

// OIDCProvider configures one OpenID Connect provider.
type OIDCProvider struct {
	Name         string // as in the URLs: /auth/<name>/start
	Issuer       string // discovery at <issuer>/.well-known/openid-configuration
	ClientID     string
	ClientSecret string
	Scopes       []string
}

// OIDCConfig configures sign-in through providers.
type OIDCConfig struct {
	Providers []OIDCProvider
	// PublicURL is this server's base URL as browsers reach it: the callback registered at each
	// provider is <PublicURL>/auth/<name>/callback, and <PublicURL>/ (the playground) is always an
	// allowed redirect target.
	PublicURL string
	// RedirectURLs are the exact URLs a flow may return to.
	RedirectURLs []string
	// LinkVerifiedEmail lets a new identity whose provider asserts a verified email join the
	// account with that email, when this server verified the account's address too; otherwise
	// such a sign-in is refused.
	LinkVerifiedEmail bool
	// HTTPClient talks to the providers; nil: one with a 10-second timeout.
	HTTPClient *http.Client
}

// signIns is the relying-party side of every configured provider.
type signIns struct {
	cfg       OIDCConfig
	providers map[string]*relyingParty
	names     []string
	redirects map[string]bool
}

func newSignIns(cfg OIDCConfig, now func() time.Time) *signIns {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	si := &signIns{cfg: cfg, providers: map[string]*relyingParty{}, redirects: map[string]bool{}}
	for _, p := range cfg.Providers {
		si.providers[p.Name] = &relyingParty{cfg: p, client: cfg.HTTPClient, now: now,
			redirectURL: cfg.PublicURL + "/auth/" + p.Name + "/callback"}
		si.names = append(si.names, p.Name)
	}
	for _, u := range cfg.RedirectURLs {
		si.redirects[u] = true
	}
	if cfg.PublicURL != "" {
		si.redirects[cfg.PublicURL+"/"] = true
	}
	return si
}

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

// relyingParty is one provider, discovered on first use and then kept.
type relyingParty struct {
	cfg         OIDCProvider
	redirectURL string
	client      *http.Client
	now         func() time.Time

	mu       sync.Mutex
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
	oauth    *oauth2.Config
}

// idTokenAlgs are the ID token algorithms accepted, whatever a provider lists: never none or HS*.
var idTokenAlgs = map[string]bool{
	oidc.RS256: true, oidc.RS384: true, oidc.RS512: true, oidc.PS256: true, oidc.PS384: true, oidc.PS512: true,
	oidc.ES256: true, oidc.ES384: true, oidc.ES512: true, oidc.EdDSA: true,
}

// discover reads the provider's metadata once; a failure is not kept, so the next request tries
// again.
func (rp *relyingParty) discover(ctx context.Context) (*oidc.Provider, *oidc.IDTokenVerifier, *oauth2.Config, error) {
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

// validChallenge reports whether s looks like an S256 PKCE challenge: 32 bytes in base64url.
func validChallenge(s string) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == sha256.Size && len(s) == 43
}

// s256 is the PKCE S256 challenge of a verifier (RFC 7636 §4.2).
func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// beginFlow stores a new flow and returns the provider's authorization URL for it.
func (s *Service) beginFlow(ctx context.Context, rp *relyingParty, redirectTo, challenge string, link *Principal) (string, error) {
	_, _, oauth, err := rp.discover(ctx)
	if err != nil {
		s.log.WarnContext(ctx, "identity provider unreachable", "provider", rp.cfg.Name, "err", err)
		return "", model.Unavailable()
	}
	state, nonce, verifier := token.Random(32), token.Random(32), oauth2.GenerateVerifier()
	now := s.clock()
	flow := &model.SignInFlow{
		StateHash: token.HashSecret(state), Provider: rp.cfg.Name, Nonce: nonce, Verifier: verifier,
		RedirectTo: redirectTo, CodeChallenge: challenge, CreatedAt: now, ExpiresAt: now.Add(SignInFlowTTL),
	}
	if link != nil {
		flow.LinkUserID, flow.LinkSessionID = &link.User.ID, &link.Session.ID
	}
	if err := s.db.CreateSignInFlow(ctx, flow); err != nil {
		return "", s.check(ctx, "beginFlow", err)
	}
	return oauth.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), nil
}

// SignInHandler serves the browser's side of provider sign-in, under /auth/: the list of
// providers, the start of a flow and the provider's callback. It must be served behind Middleware
// (client IP for the rate limits).
func (s *Service) SignInHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /auth/providers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		names := []string{}
		if s.signIns != nil {
			names = append(names, s.signIns.names...)
		}
		json.NewEncoder(w).Encode(map[string]any{"providers": names})
	})
	mux.HandleFunc("GET /auth/{provider}/start", s.startSignIn)
	mux.HandleFunc("GET /auth/{provider}/callback", s.finishSignIn)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Nothing here may be cached or leak its URL (state, code) to another site.
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		mux.ServeHTTP(w, r)
	})
}

// provider returns the configured provider named in the request, or writes 404.
func (s *Service) provider(w http.ResponseWriter, r *http.Request) *relyingParty {
	if s.signIns != nil {
		if rp := s.signIns.providers[r.PathValue("provider")]; rp != nil {
			return rp
		}
	}
	http.Error(w, "unknown identity provider", http.StatusNotFound)
	return nil
}

// plainError answers a browser with a short text page; used where redirecting would be unsafe.
func plainError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}

func (s *Service) startSignIn(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rp := s.provider(w, r)
	if rp == nil {
		return
	}
	q := r.URL.Query()
	if !validForm(q) {
		plainError(w, http.StatusBadRequest, "the query holds invalid UTF-8 or NUL characters")
		return
	}
	redirectTo, challenge := q.Get("redirect_to"), q.Get("code_challenge")
	switch {
	case len(q["redirect_to"]) != 1 || !s.signIns.redirects[redirectTo]:
		// Never redirect to an unlisted URL, not even with an error.
		plainError(w, http.StatusBadRequest, "redirect_to is not one of this server's allowed redirect URLs")
		return
	case len(q["code_challenge"]) != 1 || !validChallenge(challenge):
		plainError(w, http.StatusBadRequest, "code_challenge must be an S256 PKCE challenge (43 base64url characters)")
		return
	case q.Has("code_challenge_method") && q.Get("code_challenge_method") != "S256":
		plainError(w, http.StatusBadRequest, "code_challenge_method must be S256")
		return
	}
	if err := s.limitClient(ctx); err != nil {
		tooManyPage(w, err)
		return
	}
	target, err := s.beginFlow(ctx, rp, redirectTo, challenge, nil)
	if err != nil {
		redirectWith(w, r, redirectTo, "error", "temporarily_unavailable")
		return
	}
	http.Redirect(w, r, target, http.StatusFound)
}

func tooManyPage(w http.ResponseWriter, err error) {
	var merr *model.Error
	if errors.As(err, &merr) && merr.RetryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(merr.RetryAfter))
	}
	plainError(w, http.StatusTooManyRequests, "too many sign-in attempts from this address; try again later")
}

// redirectWith sends the browser to target (an allowed URL) with one query parameter added.
func redirectWith(w http.ResponseWriter, r *http.Request, target, name, value string) {
	u, _ := url.Parse(target) // allowed URLs were parsed at start
	q := u.Query()
	q.Set(name, value)
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// signInRefusal is a callback failure: the RFC 6749 error code the SPA gets, and what the audit
// log and server log say about it.
type signInRefusal struct {
	code   string // access_denied, account_exists, temporarily_unavailable, server_error
	detail string
	userID string // the account of the identity itself: its owner sees the refusal
	// concerns is an account the refusal is about that the browser at the callback need not
	// belong to (the starter of a link, an account holding the same email). The event names it
	// for admins only: its owner would otherwise see a stranger's IP and user agent, and learn
	// from a link URL sent to someone whether their provider account is known here.
	concerns string
}

func (e *signInRefusal) Error() string { return e.code + ": " + e.detail }

func refuse(code, detail string) *signInRefusal { return &signInRefusal{code: code, detail: detail} }

func (s *Service) finishSignIn(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rp := s.provider(w, r)
	if rp == nil {
		return
	}
	if err := s.limitClient(ctx); err != nil {
		tooManyPage(w, err)
		return
	}
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" || len(state) > 256 || !validForm(q) {
		plainError(w, http.StatusBadRequest, "this sign-in link is invalid; start again")
		return
	}
	flow, err := s.db.TakeSignInFlow(ctx, token.HashSecret(state))
	switch {
	case errors.Is(err, store.ErrNotFound):
		plainError(w, http.StatusBadRequest, "this sign-in link has expired or was used already; start again")
		return
	case err != nil:
		s.check(ctx, "finishSignIn", err)
		plainError(w, http.StatusServiceUnavailable, "sign-in is unavailable; try again later")
		return
	case flow.Provider != rp.cfg.Name || !s.clock().Before(flow.ExpiresAt):
		plainError(w, http.StatusBadRequest, "this sign-in link has expired or was used already; start again")
		return
	}
	// From here on the flow's redirect_to is trusted: it was checked at the start.
	result, err := s.completeFlow(ctx, rp, flow, q)
	var refusal *signInRefusal
	if errors.As(err, &refusal) {
		s.log.InfoContext(ctx, "provider sign-in refused", "provider", rp.cfg.Name, "error", refusal.code, "detail", refusal.detail)
		if refusal.code != "temporarily_unavailable" && refusal.code != "server_error" {
			detail := rp.cfg.Name + ": " + refusal.detail
			if refusal.concerns != "" {
				detail = rp.cfg.Name + " (account " + refusal.concerns + "): " + refusal.detail
			}
			s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeSignInFailed, "", refusal.userID, "", detail))
		}
		redirectWith(w, r, flow.RedirectTo, "error", refusal.code)
		return
	} else if err != nil {
		s.check(ctx, "finishSignIn", err)
		redirectWith(w, r, flow.RedirectTo, "error", "server_error")
		return
	}
	if flow.LinkUserID != nil {
		redirectWith(w, r, flow.RedirectTo, "link_code", result)
		return
	}
	redirectWith(w, r, flow.RedirectTo, "code", result)
}

// providerClaims are the claims read from the ID token and, where it lacks them, the UserInfo
// response.
type providerClaims struct {
	Subject           string       `json:"sub"`
	AuthorizedParty   string       `json:"azp"`
	Email             string       `json:"email"`
	EmailVerified     flexibleBool `json:"email_verified"`
	PreferredUsername string       `json:"preferred_username"`
	Nickname          string       `json:"nickname"`
	Name              string       `json:"name"`
}

// flexibleBool reads true, false, "true" and "false": some providers send email_verified as a
// string.
type flexibleBool bool

func (b *flexibleBool) UnmarshalJSON(data []byte) error {
	switch strings.Trim(string(data), `"`) {
	case "true":
		*b = true
	default:
		*b = false
	}
	return nil
}

// completeFlow does the work of a callback with a valid state: the code exchange, the ID token
// checks, and the sign-in or the checks of a link. It returns the one-time code for the SPA.
func (s *Service) completeFlow(ctx context.Context, rp *relyingParty, flow *model.SignInFlow, q url.Values) (string, error) {
	if e := q.Get("error"); e != "" {
		// The provider refused (the user cancelled, say). Only known codes are passed on.
		if e != "access_denied" && e != "temporarily_unavailable" {
			e = "access_denied"
		}
		return "", refuse(e, "the provider answered "+truncate(q.Get("error"), 64))
	}
	code := q.Get("code")
	if code == "" || len(code) > 2048 {
		return "", refuse("access_denied", "the provider's callback has no code")
	}
	_, verifier, oauth, err := rp.discover(ctx)
	if err != nil {
		return "", refuse("temporarily_unavailable", err.Error())
	}
	exchanged, err := oauth.Exchange(oidc.ClientContext(ctx, rp.client), code, oauth2.VerifierOption(flow.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return "", refuse("access_denied", "the provider refused the code: "+truncate(re.ErrorCode, 64))
		}
		return "", refuse("temporarily_unavailable", "code exchange: "+err.Error())
	}
	rawID, _ := exchanged.Extra("id_token").(string)
	if rawID == "" {
		return "", refuse("access_denied", "the provider returned no ID token")
	}
	idToken, err := verifier.Verify(ctx, rawID)
	if err != nil {
		return "", refuse("access_denied", "ID token rejected: "+err.Error())
	}
	if !token.Equal(idToken.Nonce, flow.Nonce) {
		return "", refuse("access_denied", "ID token rejected: nonce does not match")
	}
	var claims providerClaims
	if err := idToken.Claims(&claims); err != nil || claims.Subject == "" || !validText(claims.Subject) || len(claims.Subject) > 255 {
		return "", refuse("access_denied", "ID token rejected: no usable subject")
	}
	if len(idToken.Audience) > 1 && claims.AuthorizedParty != rp.cfg.ClientID {
		// OpenID Connect Core §3.1.3.7: a token for several audiences must name us as the party
		// it was issued to; go-oidc checks only that we are among the audiences.
		return "", refuse("access_denied", "ID token rejected: several audiences and azp is not our client id")
	}
	if claims.Email == "" || (claims.PreferredUsername == "" && claims.Name == "") {
		s.addUserInfo(ctx, rp, exchanged, &claims)
	}
	if !validText(claims.Email) || len(claims.Email) > 254 {
		claims.Email, claims.EmailVerified = "", false
	}
	if flow.LinkUserID != nil {
		return s.linkCode(ctx, rp.cfg.Name, flow, &claims)
	}
	return s.signInIdentity(ctx, rp.cfg.Name, flow, &claims)
}

// addUserInfo fills in what the ID token left out from the UserInfo endpoint, if the provider has
// one and it answers for the same subject (OpenID Connect Core §5.3.2); otherwise it changes
// nothing.
func (s *Service) addUserInfo(ctx context.Context, rp *relyingParty, exchanged *oauth2.Token, claims *providerClaims) {
	provider, _, _, err := rp.discover(ctx)
	if err != nil || provider.UserInfoEndpoint() == "" {
		return
	}
	info, err := provider.UserInfo(oidc.ClientContext(ctx, rp.client), oauth2.StaticTokenSource(exchanged))
	if err != nil {
		s.log.InfoContext(ctx, "userinfo unavailable", "provider", rp.cfg.Name, "err", err)
		return
	}
	var more providerClaims
	if info.Claims(&more) != nil || more.Subject != claims.Subject {
		return
	}
	if claims.Email == "" {
		claims.Email, claims.EmailVerified = more.Email, more.EmailVerified
	}
	if claims.PreferredUsername == "" {
		claims.PreferredUsername = more.PreferredUsername
	}
	if claims.Nickname == "" {
		claims.Nickname = more.Nickname
	}
	if claims.Name == "" {
		claims.Name = more.Name
	}
}

// signInIdentity finds or creates the user of an identity and returns a one-time code for them.
func (s *Service) signInIdentity(ctx context.Context, provider string, flow *model.SignInFlow, claims *providerClaims) (string, error) {
	now := s.clock()
	code := token.Random(32)
	// A refusal is returned from the transaction, so that nothing it wrote stays.
	err := s.db.Transact(ctx, func(tx *store.Tx) error {
		var user *model.User
		identity, err := tx.IdentityBySubject(ctx, provider, claims.Subject)
		switch {
		case err == nil:
			if user, err = tx.UserByID(ctx, identity.UserID); err != nil {
				return err
			}
		case errors.Is(err, store.ErrNotFound):
			if user, err = s.newIdentity(ctx, tx, provider, claims, now); err != nil {
				return err
			}
		default:
			return err
		}
		if user.Disabled {
			return &signInRefusal{code: "access_denied", detail: "account disabled", userID: user.ID}
		}
		return tx.CreateAuthCode(ctx, &model.AuthCode{
			CodeHash: token.HashSecret(code), UserID: user.ID, Provider: provider, CodeChallenge: flow.CodeChallenge,
			CreatedAt: now, ExpiresAt: now.Add(AuthCodeTTL),
		})
	})
	if errors.Is(err, store.ErrIdentityTaken) {
		// Another callback linked the same identity (or took the username or email) at the same
		// moment; the second attempt sees its result.
		return "", refuse("temporarily_unavailable", "a concurrent sign-in of the same identity; try again")
	}
	if err != nil {
		return "", err
	}
	return code, nil
}

// newIdentity decides what an identity seen for the first time signs in to: an account whose
// email it shares, only when so configured, the provider says the email is verified and this
// server verified the account's address; otherwise a new account, unless an account has that
// email. It runs in the transaction db.
func (s *Service) newIdentity(ctx context.Context, db *store.Tx, provider string, claims *providerClaims, now time.Time) (*model.User, error) {
	identity := &model.Identity{Provider: provider, Subject: claims.Subject, LinkedAt: now}
	if claims.Email != "" {
		identity.Email = &claims.Email
		existing, err := db.UserByEmail(ctx, claims.Email)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return nil, err
		case !s.signIns.cfg.LinkVerifiedEmail || !bool(claims.EmailVerified):
			return nil, &signInRefusal{code: "account_exists", detail: "an account with this email exists; sign in to it and link the provider", concerns: existing.ID}
		case existing.EmailVerifiedAt == nil:
			// Anyone may register an address they do not own; the provider's word that its user
			// owns it says nothing about who registered it here. Joining the two would hand the
			// provider's user to whoever typed the address first.
			return nil, &signInRefusal{code: "account_exists", detail: "an account with this email exists and its address is not verified; sign in to it and link the provider", concerns: existing.ID}
		default:
			identity.UserID = existing.ID
			if err := db.CreateIdentity(ctx, identity); err != nil {
				return nil, err
			}
			return existing, db.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeIdentityLinked, existing.ID, existing.ID, "", provider+" (verified email)"))
		}
	}
	if !s.cfg.SignupEnabled {
		return nil, refuse("access_denied", "sign-up is disabled and the identity is linked to no account")
	}
	user := &model.User{ID: uuid.Must(uuid.NewV7()).String(), Role: model.RoleUser, CreatedAt: now}
	if claims.Email != "" && bool(claims.EmailVerified) {
		// An unverified address is not given to the account: it could be someone else's, who
		// would then find it taken.
		user.Email = &claims.Email
	}
	base := usernameFrom(claims)
	for attempt := 0; ; attempt++ {
		user.Username = base
		if attempt > 0 {
			user.Username = base[:min(len(base), 57)] + "-" + strings.ToLower(token.Random(4))[:6]
		}
		// A savepoint would be needed to retry inside the transaction after a failed insert on
		// Postgres; checking first and letting the unique index catch the rare race is simpler.
		if _, err := db.UserByUsername(ctx, user.Username); errors.Is(err, store.ErrNotFound) {
			break
		} else if err != nil {
			return nil, err
		}
		if attempt == 5 {
			return nil, errors.New("no free username")
		}
	}
	if err := db.CreateUser(ctx, user); err != nil {
		var merr *model.Error
		if errors.As(err, &merr) { // the username or email was taken a moment ago
			return nil, store.ErrIdentityTaken
		}
		return nil, err
	}
	identity.UserID = user.ID
	if err := db.CreateIdentity(ctx, identity); err != nil {
		return nil, err
	}
	if err := db.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeSignUp, user.ID, user.ID, "", "via "+provider)); err != nil {
		return nil, err
	}
	return user, db.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeIdentityLinked, user.ID, user.ID, "", provider))
}

// usernameFrom derives a username from the provider's claims: the preferred username, nickname,
// the local part of the email, or the name, reduced to the characters usernames allow.
func usernameFrom(c *providerClaims) string {
	local, _, _ := strings.Cut(c.Email, "@")
	for _, candidate := range []string{c.PreferredUsername, c.Nickname, local, c.Name} {
		candidate, _, _ = strings.Cut(candidate, "@")
		var b strings.Builder
		for _, r := range candidate {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
				b.WriteRune(r)
			case r == ' ':
				b.WriteByte('.')
			}
		}
		name := strings.Trim(b.String(), ".-_")
		if len(name) > 48 {
			name = name[:48]
		}
		if ValidateUsername(name) == nil {
			return name
		}
	}
	return "user-" + strings.ToLower(token.Random(4))[:6]
}

// Reasons a link cannot be made, as the callback and completeIdentityLink report them.
var (
	errLinkedElsewhere = errors.New("the identity is linked to another account")
	errProviderLinked  = errors.New("the account has another identity of this provider; unlink it first")
)

// linkCheck reports whether the identity (provider, subject) can be linked to userID: the
// identity if it is linked to that user already, errLinkedElsewhere or errProviderLinked if it
// cannot be, or nil and nil.
func linkCheck(ctx context.Context, db *store.DB, provider, subject, userID string) (*model.Identity, error) {
	identity, err := db.IdentityBySubject(ctx, provider, subject)
	switch {
	case err == nil && identity.UserID == userID:
		return identity, nil
	case err == nil:
		return nil, errLinkedElsewhere
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	ids, err := db.IdentitiesOf(ctx, userID)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if id.Provider == provider {
			return nil, errProviderLinked
		}
	}
	return nil, nil
}

// linkCode finishes the callback of a link: it checks that the session that started the link is
// live and that the identity can be linked to its user, and returns a one-time code bound to that
// session and the flow's challenge. It links nothing. The browser that came back from the
// provider need not be the one that started the link: whoever started it can send the URL to
// someone else, whose browser (signed in at the provider as them) would come back here. Only the
// starting session, redeeming the code with its verifier (CompleteIdentityLink), makes the link;
// the code reaches only the browser that came back, so a stranger's identity never gets linked.
func (s *Service) linkCode(ctx context.Context, provider string, flow *model.SignInFlow, claims *providerClaims) (string, error) {
	now := s.clock()
	sess, user, err := s.db.LockSession(ctx, *flow.LinkSessionID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (user.ID != *flow.LinkUserID || !sess.Live(now) || user.Disabled)) {
		return "", &signInRefusal{code: "access_denied", detail: "the session that started the link has ended", concerns: *flow.LinkUserID}
	} else if err != nil {
		return "", err
	}
	if _, err := linkCheck(ctx, s.db, provider, claims.Subject, user.ID); errors.Is(err, errLinkedElsewhere) || errors.Is(err, errProviderLinked) {
		return "", &signInRefusal{code: "account_exists", detail: err.Error(), concerns: user.ID}
	} else if err != nil {
		return "", err
	}
	code := token.Random(32)
	c := &model.AuthCode{
		CodeHash: token.HashSecret(code), UserID: user.ID, Provider: provider, CodeChallenge: flow.CodeChallenge,
		LinkSessionID: &sess.ID, Subject: &claims.Subject, CreatedAt: now, ExpiresAt: now.Add(AuthCodeTTL),
	}
	if claims.Email != "" {
		c.Email = &claims.Email
	}
	if err := s.db.CreateAuthCode(ctx, c); err != nil {
		return "", err
	}
	return code, nil
}

// CompleteIdentityLink redeems the one-time code a link's callback redirected back with: the
// identity it carries is linked to the caller's account if the caller's session is the one that
// called linkIdentityStart and codeVerifier is the verifier of the challenge it passed. A code
// works once: every refusal (another session, even of the same user; another verifier; too
// late; a sign-in code) uses it up and looks the same.
func (s *Service) CompleteIdentityLink(ctx context.Context, code, codeVerifier string) (*model.Identity, error) {
	p, err := s.requireSession(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.limitClient(ctx); err != nil {
		return nil, err
	}
	invalid := model.Unauthenticated(model.AuthErrorReasonInvalidCredentials)
	if code == "" || len(code) > 128 {
		return nil, invalid
	}
	// Taken in a transaction of its own, so that the code is used up whatever follows.
	c, err := s.db.TakeAuthCode(ctx, token.HashSecret(code))
	if errors.Is(err, store.ErrNotFound) {
		return nil, invalid
	} else if err != nil {
		return nil, s.check(ctx, "CompleteIdentityLink", err)
	}
	now := s.clock()
	if !c.IsLink() || c.Subject == nil || !now.Before(c.ExpiresAt) ||
		!token.Equal(*c.LinkSessionID, p.Session.ID) || c.UserID != p.User.ID ||
		len(codeVerifier) < 43 || len(codeVerifier) > 128 || !token.Equal(s256(codeVerifier), c.CodeChallenge) {
		return nil, invalid
	}
	var identity *model.Identity
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		// The lock makes a logout of this session and the link take turns.
		sess, user, err := tx.LockSession(ctx, p.Session.ID)
		switch {
		case errors.Is(err, store.ErrNotFound) || (err == nil && !sess.Live(now)):
			return model.Unauthenticated(model.AuthErrorReasonSessionRevoked)
		case err != nil:
			return err
		case user.Disabled:
			return model.Forbidden(model.AuthErrorReasonAccountDisabled)
		}
		existing, err := linkCheck(ctx, tx.DB, c.Provider, *c.Subject, user.ID)
		switch {
		case errors.Is(err, errLinkedElsewhere) || errors.Is(err, errProviderLinked):
			return model.BadInput("code", err.Error())
		case err != nil:
			return err
		case existing != nil:
			identity = existing // linked already: nothing to do
			return nil
		}
		identity = &model.Identity{Provider: c.Provider, Subject: *c.Subject, UserID: user.ID, Email: c.Email, LinkedAt: now}
		if err := tx.CreateIdentity(ctx, identity); err != nil {
			return err
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeIdentityLinked, user.ID, user.ID, sess.ID, c.Provider))
	})
	if errors.Is(err, store.ErrIdentityTaken) {
		// Another link of the identity, or of this provider to this account, won a race.
		return nil, model.BadInput("code", "the identity was linked to another account, or this account got another identity of this provider, a moment ago")
	}
	if err != nil {
		return nil, s.check(ctx, "CompleteIdentityLink", err)
	}
	return identity, nil
}

// ExchangeAuthCode redeems a one-time code from a provider sign-in for a session, if codeVerifier
// is the verifier of the challenge the flow started with. A code works once: a wrong verifier
// uses it up too, and so does a link code, which it refuses.
func (s *Service) ExchangeAuthCode(ctx context.Context, code, codeVerifier string) (*model.AuthPayload, error) {
	if err := s.limitClient(ctx); err != nil {
		return nil, err
	}
	if code == "" || len(code) > 128 {
		return nil, model.Unauthenticated(model.AuthErrorReasonInvalidCredentials)
	}
	var payload *model.AuthPayload
	var outcome error
	err := s.db.Transact(ctx, func(tx *store.Tx) error {
		c, err := tx.TakeAuthCode(ctx, token.HashSecret(code))
		if errors.Is(err, store.ErrNotFound) {
			outcome = model.Unauthenticated(model.AuthErrorReasonInvalidCredentials)
			return nil
		} else if err != nil {
			return err
		}
		// A malformed verifier is a wrong one: it uses the code up too (an app that finds a code
		// it did not ask for sends an empty one to kill it). A link code never signs in, not even
		// its own user: it is completeIdentityLink's.
		if c.IsLink() || !s.clock().Before(c.ExpiresAt) ||
			len(codeVerifier) < 43 || len(codeVerifier) > 128 || !token.Equal(s256(codeVerifier), c.CodeChallenge) {
			outcome = model.Unauthenticated(model.AuthErrorReasonInvalidCredentials)
			return nil // the code stays used up
		}
		user, err := tx.UserByID(ctx, c.UserID)
		if err != nil {
			return err
		}
		if user.Disabled {
			outcome = model.Forbidden(model.AuthErrorReasonAccountDisabled)
			return nil
		}
		payload, err = s.startSession(ctx, tx, user, model.AuditEventTypeSignIn, "via "+c.Provider)
		return err
	})
	if err != nil {
		return nil, s.check(ctx, "ExchangeAuthCode", err)
	}
	return payload, outcome
}

// LinkIdentityStart starts linking a provider to the caller's account and returns the URL to
// send the browser to. The callback redirects to redirectTo with ?link_code=<one-time code>, which
// only this session can redeem (CompleteIdentityLink), with the verifier of codeChallenge.
func (s *Service) LinkIdentityStart(ctx context.Context, provider, redirectTo, codeChallenge string) (string, error) {
	p, err := s.requireSession(ctx)
	if err != nil {
		return "", err
	}
	var rp *relyingParty
	if s.signIns != nil {
		rp = s.signIns.providers[provider]
	}
	switch {
	case rp == nil:
		return "", model.BadInput("provider", "no such identity provider")
	case !s.signIns.redirects[redirectTo]:
		return "", model.BadInput("redirectTo", "redirectTo is not one of this server's allowed redirect URLs")
	case !validChallenge(codeChallenge):
		return "", model.BadInput("codeChallenge", "codeChallenge must be an S256 PKCE challenge (43 base64url characters)")
	}
	if err := s.limitClient(ctx); err != nil {
		return "", err
	}
	return s.beginFlow(ctx, rp, redirectTo, codeChallenge, p)
}

// UnlinkIdentity removes the caller's identity of provider, unless the account would be left
// with no way to sign in (no password and no other identity).
func (s *Service) UnlinkIdentity(ctx context.Context, provider string) (bool, error) {
	p, err := s.requireSession(ctx)
	if err != nil {
		return false, err
	}
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		// The lock makes two unlinks of one account take turns, so that they cannot each leave
		// the other's identity as the last way in and then both remove theirs.
		user, err := tx.LockUser(ctx, p.User.ID)
		if err != nil {
			return err
		}
		if err := tx.DeleteIdentity(ctx, user.ID, provider); errors.Is(err, store.ErrNotFound) {
			return model.BadInput("provider", "no identity of this provider is linked to your account")
		} else if err != nil {
			return err
		}
		left, err := tx.IdentitiesOf(ctx, user.ID)
		if err != nil {
			return err
		}
		if len(left) == 0 && user.PasswordHash == "" {
			return model.BadInput("provider", "this is your only way to sign in; set a password or link another provider first")
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeIdentityUnlinked, user.ID, user.ID, p.Session.ID, provider))
	})
	return err == nil, s.check(ctx, "UnlinkIdentity", err)
}

// SetPassword gives an account created through a provider its first password.
func (s *Service) SetPassword(ctx context.Context, newPassword string) (bool, error) {
	p, err := s.requireSession(ctx)
	if err != nil {
		return false, err
	}
	pw := NormalizePassword(newPassword)
	if err := ValidatePassword("newPassword", pw); err != nil {
		return false, err
	}
	if p.User.PasswordHash != "" {
		return false, model.BadInput("newPassword", "the account has a password already; use changePassword")
	}
	hash, err := s.passwords.Hash(ctx, pw)
	if err != nil {
		return false, s.check(ctx, "SetPassword", err)
	}
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		if err := tx.SetFirstPassword(ctx, p.User.ID, hash); errors.Is(err, store.ErrNotFound) {
			return model.BadInput("newPassword", "the account has a password already; use changePassword")
		} else if err != nil {
			return err
		}
		return tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypePasswordChanged, p.User.ID, p.User.ID, p.Session.ID, "first password set"))
	})
	return err == nil, s.check(ctx, "SetPassword", err)
}

// Identities lists a user's linked identities: for the user themself and for admins; anyone else
// gets an empty list. Within a response, the identities of all its users are loaded together
// (see identityBatch).
func (s *Service) Identities(ctx context.Context, userID string) ([]*model.Identity, error) {
	p, err := s.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	admin := p.Role.Satisfies(model.RoleAdmin)
	if p.User.ID != userID && !admin {
		return []*model.Identity{}, nil
	}
	var ids []*model.Identity
	if sc := scopeFrom(ctx); sc != nil {
		ids, err = sc.identities.load(ctx, s.db, userID, admin)
	} else {
		ids, err = s.db.IdentitiesOf(ctx, userID)
	}
	return ids, s.check(ctx, "Identities", err)
}

// SweepSignIns deletes flows and one-time codes that have expired.
func (s *Service) SweepSignIns(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := s.db.DeleteExpiredSignIns(ctx, s.clock(), 1000)
		total += n
		if err != nil || n < 1000 {
			return total, err
		}
	}
}
