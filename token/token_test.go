package token_test

import (
	"strings"
	"testing"
	"time"

	"gqlauth/model"
	"gqlauth/token"
)

func newTokens(t testing.TB) *token.Tokens {
	t.Helper()
	tokens, err := token.NewTokens(token.TokenConfig{Secret: []byte(strings.Repeat("k", 32)), Issuer: "gqlauth", Audience: "gqlauth", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

// FuzzVerify: no input makes verification panic, and nothing but a token this server signed
// yields claims.
func FuzzVerify(f *testing.F) {
	tokens := newTokens(f)
	valid, err := tokens.Issue(&model.User{ID: "u1", Role: model.RoleUser}, "s1")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiJ1MSJ9.")
	f.Add(valid[:10] + "\x00" + valid[10:]) // NUL in the header
	f.Add(valid + "\x00")
	f.Add(strings.Replace(valid, ".", ".\xff", 1)) // invalid UTF-8 in the claims segment
	f.Add("\xed\xa0\x80" + valid)
	f.Fuzz(func(t *testing.T, token string) {
		claims, reason := tokens.Verify(token)
		if (claims == nil) == (reason == "") {
			t.Fatalf("claims %v with reason %q", claims, reason)
		}
		// Only a token this server signed can be accepted, and the only one it signed is the seed
		// (each fuzz worker signs its own, so compare claims, not strings).
		if claims != nil && (claims.Subject != "u1" || claims.SessionID != "s1" || claims.Issuer != "gqlauth") {
			t.Fatalf("accepted a token it did not issue: %q", token)
		}
	})
}
