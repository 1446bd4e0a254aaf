package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"gqlauth/account"
	"gqlauth/model"
	"gqlauth/oidc"
)

// SignIn is provider sign-in at the edge. It serves the browser's side under /auth/ — the list of
// providers, the start of a flow and the provider's callback — and starts the flow of a link for
// the linkIdentityStart mutation, orchestrating the relying party (oidc: flows, code exchange, ID
// tokens) and the account rules (account: rate limits, sessions, what an identity signs in to).
type SignIn struct {
	svc       *account.Service
	providers *oidc.RelyingParties // nil: no providers
}

// NewSignIn returns provider sign-in for the relying parties of providers (nil: none).
func NewSignIn(svc *account.Service, providers *oidc.RelyingParties) *SignIn {
	return &SignIn{svc: svc, providers: providers}
}

// Handler serves /auth/. It must be served behind Credentials (client IP for the rate limits).
func (h *SignIn) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /auth/providers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		names := append([]string{}, h.providers.Names()...)
		json.NewEncoder(w).Encode(map[string]any{"providers": names})
	})
	mux.HandleFunc("GET /auth/{provider}/start", h.start)
	mux.HandleFunc("GET /auth/{provider}/callback", h.finish)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Nothing here may be cached or leak its URL (state, code) to another site.
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		mux.ServeHTTP(w, r)
	})
}

// StartLink starts linking a provider to the caller's account and returns the URL to send the
// browser to. The callback redirects to redirectTo with ?link_code=<one-time code>, which only
// this session can redeem (account.Service.CompleteIdentityLink), with the verifier of
// codeChallenge.
func (h *SignIn) StartLink(ctx context.Context, provider, redirectTo, codeChallenge string) (string, error) {
	p, err := h.svc.RequireSession(ctx)
	if err != nil {
		return "", err
	}
	rp := h.providers.Provider(provider)
	switch {
	case rp == nil:
		return "", model.BadInput("provider", "no such identity provider")
	case !h.providers.AllowedRedirect(redirectTo):
		return "", model.BadInput("redirectTo", "redirectTo is not one of this server's allowed redirect URLs")
	case !account.ValidChallenge(codeChallenge):
		return "", model.BadInput("codeChallenge", "codeChallenge must be an S256 PKCE challenge (43 base64url characters)")
	}
	if err := h.svc.LimitClient(ctx); err != nil {
		return "", err
	}
	target, err := rp.Begin(ctx, redirectTo, codeChallenge, &oidc.Link{UserID: p.User.ID, SessionID: p.Session.ID})
	return target, h.svc.ClientError(ctx, "beginFlow", err)
}

// provider returns the configured provider named in the request, or writes 404.
func (h *SignIn) provider(w http.ResponseWriter, r *http.Request) *oidc.RelyingParty {
	if rp := h.providers.Provider(r.PathValue("provider")); rp != nil {
		return rp
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

func (h *SignIn) start(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rp := h.provider(w, r)
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
	case len(q["redirect_to"]) != 1 || !h.providers.AllowedRedirect(redirectTo):
		// Never redirect to an unlisted URL, not even with an error.
		plainError(w, http.StatusBadRequest, "redirect_to is not one of this server's allowed redirect URLs")
		return
	case len(q["code_challenge"]) != 1 || !account.ValidChallenge(challenge):
		plainError(w, http.StatusBadRequest, "code_challenge must be an S256 PKCE challenge (43 base64url characters)")
		return
	case q.Has("code_challenge_method") && q.Get("code_challenge_method") != "S256":
		plainError(w, http.StatusBadRequest, "code_challenge_method must be S256")
		return
	}
	if err := h.svc.LimitClient(ctx); err != nil {
		tooManyPage(w, err)
		return
	}
	target, err := rp.Begin(ctx, redirectTo, challenge, nil)
	if err != nil {
		h.svc.ClientError(ctx, "beginFlow", err)
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

// finish is the provider's callback: the flow of its state (oidc), the code exchange and the ID
// token's claims (oidc), then what the identity signs in to or the checks of a link (account),
// and back to the flow's redirect URL with a one-time code or an error code.
func (h *SignIn) finish(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rp := h.provider(w, r)
	if rp == nil {
		return
	}
	if err := h.svc.LimitClient(ctx); err != nil {
		tooManyPage(w, err)
		return
	}
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" || len(state) > 256 || !validForm(q) {
		plainError(w, http.StatusBadRequest, "this sign-in link is invalid; start again")
		return
	}
	flow, err := rp.TakeFlow(ctx, state)
	switch {
	case errors.Is(err, oidc.ErrNoFlow):
		plainError(w, http.StatusBadRequest, "this sign-in link has expired or was used already; start again")
		return
	case err != nil:
		h.svc.ClientError(ctx, "finishSignIn", err)
		plainError(w, http.StatusServiceUnavailable, "sign-in is unavailable; try again later")
		return
	}
	// From here on the flow's redirect_to is trusted: it was checked at the start.
	claims, err := rp.Exchange(ctx, flow, q.Get("error"), q.Get("code"))
	var code string
	if err == nil {
		code, err = h.svc.IdentityCode(ctx, rp.Name(), flow, claims)
	}
	var providerRefusal *oidc.Refusal
	if errors.As(err, &providerRefusal) {
		err = &account.SignInRefusal{Code: providerRefusal.Code, Detail: providerRefusal.Detail}
	}
	var refusal *account.SignInRefusal
	if errors.As(err, &refusal) {
		h.svc.RecordSignInRefusal(ctx, rp.Name(), refusal)
		redirectWith(w, r, flow.RedirectTo, "error", refusal.Code)
		return
	} else if err != nil {
		h.svc.ClientError(ctx, "finishSignIn", err)
		redirectWith(w, r, flow.RedirectTo, "error", "server_error")
		return
	}
	if flow.LinkUserID != nil {
		redirectWith(w, r, flow.RedirectTo, "link_code", code)
		return
	}
	redirectWith(w, r, flow.RedirectTo, "code", code)
}
