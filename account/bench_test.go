package account_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"gqlauth/account"
	"gqlauth/model"
	"gqlauth/token"
)

// BenchmarkMiddleware_BearerRequest is the per-request cost of the auth middleware: header
// parsing, JWT verification and the context value.
func BenchmarkMiddleware_BearerRequest(b *testing.B) {
	tokens := newTokens(b)
	tok, _ := tokens.Issue(&model.User{ID: "0193a1b2-0000-7000-8000-000000000001", Role: model.RoleUser}, "0193a1b2-0000-7000-8000-000000000002")
	var seen string
	h := account.Middleware(tokens, nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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

func BenchmarkPasswords_HashCost10(b *testing.B) {
	p, _ := account.NewPasswords(account.PasswordConfig{Cost: 10})
	ctx := context.Background()
	for b.Loop() {
		if _, err := p.Hash(ctx, "correct horse battery"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPasswords_MatchCost10(b *testing.B) {
	p, _ := account.NewPasswords(account.PasswordConfig{Cost: 10})
	ctx := context.Background()
	hash, _ := p.Hash(ctx, "correct horse battery")
	for b.Loop() {
		if ok, _ := p.Match(ctx, hash, "correct horse battery"); !ok {
			b.Fatal("no match")
		}
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
