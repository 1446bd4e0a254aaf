package web

import (
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strconv"

	"gqlauth/account"
	"gqlauth/model"
)

// TokenEndpoint is the OAuth 2.0 token endpoint (RFC 6749) for the resource-owner password grant
// (§4.3), the refresh-token grant (§6) and the authorization-code grant of provider sign-ins
// (§4.1.3 with PKCE), so that standard OAuth2 clients can sign in. It runs the same rules as the
// login and refresh mutations: same sessions, rotation, reuse detection, rate limits and
// disabled-user rules. It must be served behind Credentials.
//
// It never reads, sets or clears the refresh cookie of cookie mode: a form POST is a request any
// page can send cross-site without a preflight, so cookieRequest refuses it (login CSRF). OAuth
// clients keep the refresh token from the response body.
func TokenEndpoint(svc *account.Service) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "use POST")
			return
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
			oauthError(w, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
			return
		}
		if !readForm(w, r) {
			return
		}
		form := r.PostForm
		if !validForm(form) || !validForm(r.URL.Query()) {
			// Decoders would repair invalid bytes into U+FFFD, letting different inputs compare equal.
			oauthError(w, http.StatusBadRequest, "invalid_request", "the form holds invalid UTF-8 or NUL characters")
			return
		}
		ctx := r.Context()
		clientID := form.Get("client_id")
		if id, _, ok := r.BasicAuth(); ok && clientID == "" {
			clientID = id // clients are not authenticated; the id only labels the session
		}
		if req := account.RequestFrom(ctx); req != nil {
			req.ClientID = model.Truncate(clientID, 128)
		}

		var (
			payload *model.AuthPayload
			err     error
		)
		switch grant := form.Get("grant_type"); grant {
		case "password":
			if !form.Has("username") || !form.Has("password") {
				oauthError(w, http.StatusBadRequest, "invalid_request", "username and password are required")
				return
			}
			payload, err = svc.PasswordGrant(ctx, form.Get("username"), form.Get("password"))
		case "refresh_token":
			if form.Get("refresh_token") == "" {
				oauthError(w, http.StatusBadRequest, "invalid_request", "refresh_token is required")
				return
			}
			payload, err = svc.Refresh(ctx, form.Get("refresh_token"))
		case "authorization_code":
			// The one-time code of a provider sign-in (RFC 6749 §4.1.3 with RFC 7636's verifier).
			if form.Get("code") == "" || form.Get("code_verifier") == "" {
				oauthError(w, http.StatusBadRequest, "invalid_request", "code and code_verifier are required")
				return
			}
			payload, err = svc.ExchangeAuthCode(ctx, form.Get("code"), form.Get("code_verifier"))
		case "":
			oauthError(w, http.StatusBadRequest, "invalid_request", "grant_type is required")
			return
		default:
			oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "supported grant types: password, refresh_token, authorization_code")
			return
		}
		if err != nil {
			writeOAuthFailure(w, err, form.Get("grant_type"))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"access_token":  payload.AccessToken,
			"token_type":    payload.TokenType,
			"expires_in":    payload.ExpiresIn,
			"refresh_token": payload.RefreshToken,
		})
	})
}

// writeOAuthFailure maps the rules' errors of a grant onto RFC 6749 §5.2.
func writeOAuthFailure(w http.ResponseWriter, err error, grant string) {
	var merr *model.Error
	if !errors.As(err, &merr) {
		merr = model.Internal()
	}
	switch merr.Code {
	case model.ErrorCodeUnauthenticated, model.ErrorCodeForbidden:
		// Bad credentials, a disabled account, an unknown, expired, revoked or replayed refresh token.
		description := merr.Message
		if merr.Reason == model.AuthErrorReasonMfaRequired {
			// RFC 9470's insufficient_user_authentication is a resource server's challenge, not
			// a token endpoint error: the grant itself is what cannot work for this user.
			description = "a second factor is required for this account: sign in through the GraphQL API (login, then verifyMfa)"
		}
		if grant == "authorization_code" && merr.Reason == model.AuthErrorReasonInvalidCredentials {
			// The rules refuse a code with the sign-in's reason; its message speaks of passwords.
			description = "the code is unknown, expired or already used, or code_verifier does not match it"
		}
		oauthError(w, http.StatusBadRequest, "invalid_grant", description)
	case model.ErrorCodeBadUserInput:
		oauthError(w, http.StatusBadRequest, "invalid_request", merr.Message)
	case model.ErrorCodeTooManyRequests:
		w.Header().Set("Retry-After", strconv.Itoa(merr.RetryAfter))
		oauthError(w, http.StatusTooManyRequests, "temporarily_unavailable", merr.Message)
	default:
		oauthError(w, http.StatusInternalServerError, "server_error", merr.Message)
	}
}

func oauthError(w http.ResponseWriter, status int, code, description string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": description})
}
