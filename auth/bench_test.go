package auth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"gqlauth/auth"
	"gqlauth/model"
	"gqlauth/store/storetest"
)

func BenchmarkTokens_Issue(b *testing.B) {
	tokens := newTokens(b)
	u := &model.User{ID: "0193a1b2-0000-7000-8000-000000000001", Role: model.RoleUser}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tokens.Issue(u, "0193a1b2-0000-7000-8000-000000000002"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTokens_Verify(b *testing.B) {
	tokens := newTokens(b)
	tok, _ := tokens.Issue(&model.User{ID: "0193a1b2-0000-7000-8000-000000000001", Role: model.RoleUser}, "0193a1b2-0000-7000-8000-000000000002")
	b.ReportAllocs()
	for b.Loop() {
		if c, _ := tokens.Verify(tok); c == nil {
			b.Fatal("rejected")
		}
	}
}

// BenchmarkTokens_VerifyUncached is a full golang-jwt verification, per algorithm: more distinct
// tokens than the verified-token cache holds, so every one misses. (A hit costs the same for every
// algorithm: BenchmarkTokens_Verify.)
func BenchmarkTokens_VerifyUncached(b *testing.B) {
	for _, alg := range []string{"HS256", "ES256", "EdDSA", "RS256"} {
		b.Run(alg, func(b *testing.B) {
			tokens := newTokensFor(b, alg)
			u := &model.User{ID: "0193a1b2-0000-7000-8000-000000000001", Role: model.RoleUser}
			token, _ := tokens.Issue(u, "0193a1b2-0000-7000-8000-000000000002")
			b.ReportAllocs()
			for b.Loop() {
				if c, _ := tokens.VerifyUncached(token); c == nil {
					b.Fatal("rejected")
				}
			}
		})
	}
}

// newTokensFor returns Tokens that sign with alg; asymmetric keys live in a fresh database.
func newTokensFor(b *testing.B, alg string) *auth.Tokens {
	b.Helper()
	if alg == "HS256" {
		return newTokens(b)
	}
	keys, err := auth.NewKeyRing(context.Background(), storetest.Open(b, storetest.SQLite), auth.KeyRingConfig{
		Alg: alg, Secret: []byte(strings.Repeat("k", 32)), PublishDelay: time.Minute, TokenTTL: time.Hour,
	})
	if err != nil {
		b.Fatal(err)
	}
	tokens, err := auth.NewTokens(auth.TokenConfig{Secret: []byte(strings.Repeat("k", 32)), Issuer: "gqlauth", Audience: "gqlauth", TTL: time.Hour, Keys: keys})
	if err != nil {
		b.Fatal(err)
	}
	return tokens
}

// BenchmarkMiddleware_BearerRequest is the per-request cost of the auth middleware: header
// parsing, JWT verification and the context value.
func BenchmarkMiddleware_BearerRequest(b *testing.B) {
	tokens := newTokens(b)
	tok, _ := tokens.Issue(&model.User{ID: "0193a1b2-0000-7000-8000-000000000001", Role: model.RoleUser}, "0193a1b2-0000-7000-8000-000000000002")
	var seen string
	h := auth.Middleware(tokens, nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = auth.CallerID(r.Context())
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
	p, _ := auth.NewPasswords(auth.PasswordConfig{Cost: 10})
	ctx := context.Background()
	for b.Loop() {
		if _, err := p.Hash(ctx, "correct horse battery"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPasswords_MatchCost10(b *testing.B) {
	p, _ := auth.NewPasswords(auth.PasswordConfig{Cost: 10})
	ctx := context.Background()
	hash, _ := p.Hash(ctx, "correct horse battery")
	for b.Loop() {
		if ok, _ := p.Match(ctx, hash, "correct horse battery"); !ok {
			b.Fatal("no match")
		}
	}
}

// BenchmarkRefresh_RecogniseReplayAfter1000Rotations is the worst case of reuse detection per
// thousand rotations: the first token of a session replayed after 1,000 refreshes (the default
// lifetimes need under 3,000 in a session's whole life).
func BenchmarkRefresh_RecogniseReplayAfter1000Rotations(b *testing.B) {
	tokens := newTokens(b)
	const sid = "0193a1b2-0000-7000-8000-000000000002"
	first := auth.NewRefreshToken(sid)
	current := first
	for range 1000 {
		current = tokens.Successor(sid, current)
	}
	hash := auth.HashRefreshToken(current)
	b.ReportAllocs()
	for b.Loop() {
		if !tokens.Descends(sid, first, hash, 1000) {
			b.Fatal("replay not recognised")
		}
	}
}
