package account_test

import (
	"context"
	"testing"

	"gqlauth/account"
)

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
