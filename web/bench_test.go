package web_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"gqlauth/account"
	"gqlauth/model"
	"gqlauth/token"
	"gqlauth/web"
)

// BenchmarkMiddleware_BearerRequest is the per-request cost of the credential middleware: header
// parsing, JWT verification and the context value.
func BenchmarkMiddleware_BearerRequest(b *testing.B) {
	tokens := newTokens(b)
	tok, _ := tokens.Issue(&model.User{ID: "0193a1b2-0000-7000-8000-000000000001", Role: model.RoleUser}, "0193a1b2-0000-7000-8000-000000000002")
	var seen string
	h := web.Credentials(tokens, web.CredentialOptions{})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = account.CallerID(r.Context())
	}))
	r := httptest.NewRequest("POST", "/query", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
	if seen == "" {
		b.Fatal("no caller")
	}
}

func newTokens(t testing.TB) *token.Tokens {
	t.Helper()
	tokens, err := token.NewTokens(token.TokenConfig{Secret: []byte(strings.Repeat("k", 32)), Issuer: "gqlauth", Audience: "gqlauth", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}
