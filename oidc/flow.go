package oidc

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/token"
)

// SignInFlowTTL is the lifetime of a flow's state: from its start to the provider's callback.
const SignInFlowTTL = 10 * time.Minute

// Link names the session that starts a link: the flow then links an identity to its user instead
// of signing in.
type Link struct{ UserID, SessionID string }

// Begin stores a new flow (a hash of its state, its nonce, its own PKCE verifier, redirectTo and
// the SPA's challenge) and returns the provider's authorization URL for it. redirectTo and
// challenge must have been checked already. An unreachable provider is UNAVAILABLE (and logged).
func (rp *RelyingParty) Begin(ctx context.Context, redirectTo, challenge string, link *Link) (string, error) {
	_, _, oauth, err := rp.discover(ctx)
	if err != nil {
		rp.log.WarnContext(ctx, "identity provider unreachable", "provider", rp.cfg.Name, "err", err)
		return "", model.Unavailable()
	}
	state, nonce, verifier := token.Random(32), token.Random(32), oauth2.GenerateVerifier()
	now := rp.clock()
	flow := &model.SignInFlow{
		StateHash: token.HashSecret(state), Provider: rp.cfg.Name, Nonce: nonce, Verifier: verifier,
		RedirectTo: redirectTo, CodeChallenge: challenge, CreatedAt: now, ExpiresAt: now.Add(SignInFlowTTL),
	}
	if link != nil {
		flow.LinkUserID, flow.LinkSessionID = &link.UserID, &link.SessionID
	}
	if err := rp.db.CreateSignInFlow(ctx, flow); err != nil {
		return "", err
	}
	return oauth.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), nil
}

// ErrNoFlow is a callback's state that names no live flow of this provider: unknown, used
// already, expired, or another provider's.
var ErrNoFlow = errors.New("oidc: no such sign-in flow")

// TakeFlow takes the flow of a callback's state out of the store: each works once.
func (rp *RelyingParty) TakeFlow(ctx context.Context, state string) (*model.SignInFlow, error) {
	flow, err := rp.db.TakeSignInFlow(ctx, token.HashSecret(state))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, ErrNoFlow
	case err != nil:
		return nil, err
	case flow.Provider != rp.cfg.Name || !rp.clock().Before(flow.ExpiresAt):
		return nil, ErrNoFlow
	}
	return flow, nil
}

// Refusal is a callback that fails on the provider's side or in its tokens: the RFC 6749 error
// code the SPA gets (access_denied or temporarily_unavailable), and what the logs say about it.
type Refusal struct {
	Code   string
	Detail string
}

func (e *Refusal) Error() string { return e.Code + ": " + e.Detail }

func refuse(code, detail string) *Refusal { return &Refusal{Code: code, Detail: detail} }

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

// Exchange does the provider's side of a callback with a live flow: providerError and code are
// the callback's error and code parameters. It exchanges the code (with the flow's PKCE
// verifier), verifies the ID token (signature, issuer, audience, expiry, the flow's nonce, azp)
// and returns its claims, completed from UserInfo where the token lacks them. A failure is a
// *Refusal.
func (rp *RelyingParty) Exchange(ctx context.Context, flow *model.SignInFlow, providerError, code string) (*model.IdentityClaims, error) {
	if e := providerError; e != "" {
		// The provider refused (the user cancelled, say). Only known codes are passed on.
		if e != "access_denied" && e != "temporarily_unavailable" {
			e = "access_denied"
		}
		return nil, refuse(e, "the provider answered "+model.Truncate(providerError, 64))
	}
	if code == "" || len(code) > 2048 {
		return nil, refuse("access_denied", "the provider's callback has no code")
	}
	_, verifier, oauth, err := rp.discover(ctx)
	if err != nil {
		return nil, refuse("temporarily_unavailable", err.Error())
	}
	exchanged, err := oauth.Exchange(oidc.ClientContext(ctx, rp.client), code, oauth2.VerifierOption(flow.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return nil, refuse("access_denied", "the provider refused the code: "+model.Truncate(re.ErrorCode, 64))
		}
		return nil, refuse("temporarily_unavailable", "code exchange: "+err.Error())
	}
	rawID, _ := exchanged.Extra("id_token").(string)
	if rawID == "" {
		return nil, refuse("access_denied", "the provider returned no ID token")
	}
	idToken, err := verifier.Verify(ctx, rawID)
	if err != nil {
		return nil, refuse("access_denied", "ID token rejected: "+err.Error())
	}
	if !token.Equal(idToken.Nonce, flow.Nonce) {
		return nil, refuse("access_denied", "ID token rejected: nonce does not match")
	}
	var claims providerClaims
	if err := idToken.Claims(&claims); err != nil || claims.Subject == "" || !model.ValidText(claims.Subject) || len(claims.Subject) > 255 {
		return nil, refuse("access_denied", "ID token rejected: no usable subject")
	}
	if len(idToken.Audience) > 1 && claims.AuthorizedParty != rp.cfg.ClientID {
		// OpenID Connect Core §3.1.3.7: a token for several audiences must name us as the party
		// it was issued to; go-oidc checks only that we are among the audiences.
		return nil, refuse("access_denied", "ID token rejected: several audiences and azp is not our client id")
	}
	if claims.Email == "" || (claims.PreferredUsername == "" && claims.Name == "") {
		rp.addUserInfo(ctx, exchanged, &claims)
	}
	if !model.ValidText(claims.Email) || len(claims.Email) > 254 {
		claims.Email, claims.EmailVerified = "", false
	}
	return &model.IdentityClaims{
		Subject: claims.Subject, Email: claims.Email, EmailVerified: bool(claims.EmailVerified),
		PreferredUsername: claims.PreferredUsername, Nickname: claims.Nickname, Name: claims.Name,
	}, nil
}

// addUserInfo fills in what the ID token left out from the UserInfo endpoint, if the provider has
// one and it answers for the same subject (OpenID Connect Core §5.3.2); otherwise it changes
// nothing.
func (rp *RelyingParty) addUserInfo(ctx context.Context, exchanged *oauth2.Token, claims *providerClaims) {
	provider, _, _, err := rp.discover(ctx)
	if err != nil || provider.UserInfoEndpoint() == "" {
		return
	}
	info, err := provider.UserInfo(oidc.ClientContext(ctx, rp.client), oauth2.StaticTokenSource(exchanged))
	if err != nil {
		rp.log.InfoContext(ctx, "userinfo unavailable", "provider", rp.cfg.Name, "err", err)
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
