package token_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"gqlauth/model"
	"gqlauth/store/storetest"
	"gqlauth/token"
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
func newTokensFor(b *testing.B, alg string) *token.Tokens {
	b.Helper()
	if alg == "HS256" {
		return newTokens(b)
	}
	keys, err := token.NewKeyRing(context.Background(), storetest.Open(b, storetest.SQLite), token.KeyRingConfig{
		Alg: alg, Secret: []byte(strings.Repeat("k", 32)), PublishDelay: time.Minute, TokenTTL: time.Hour,
	})
	if err != nil {
		b.Fatal(err)
	}
	tokens, err := token.NewTokens(token.TokenConfig{Secret: []byte(strings.Repeat("k", 32)), Issuer: "gqlauth", Audience: "gqlauth", TTL: time.Hour, Keys: keys})
	if err != nil {
		b.Fatal(err)
	}
	return tokens
}

// BenchmarkRefresh_RecogniseReplayAfter1000Rotations is the worst case of reuse detection per
// thousand rotations: the first token of a session replayed after 1,000 refreshes (the default
// lifetimes need under 3,000 in a session's whole life).
func BenchmarkRefresh_RecogniseReplayAfter1000Rotations(b *testing.B) {
	tokens := newTokens(b)
	const sid = "0193a1b2-0000-7000-8000-000000000002"
	first := token.NewRefreshToken(sid)
	current := first
	for range 1000 {
		current = tokens.Successor(sid, current)
	}
	hash := token.HashRefreshToken(current)
	b.ReportAllocs()
	for b.Loop() {
		if !tokens.Descends(sid, first, hash, 1000) {
			b.Fatal("replay not recognised")
		}
	}
}
