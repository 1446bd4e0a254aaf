package account_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"gqlauth/account"
	"gqlauth/model"
	"gqlauth/store/storetest"
	"gqlauth/token"
)

// /oauth/introspect's caller goes through the guard of an ADMIN field: the key's role, and its
// owner's own level. An ADMIN's key minted at AAL1 (before MFA_REQUIRED_ROLES named ADMIN) is
// refused.
func TestAuthorizeIntrospection_AppliesTheGuardOfAnAdminField(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		db := storetest.Open(t, kind)
		tokens, err := token.NewTokens(token.TokenConfig{Secret: []byte("test-secret-of-at-least-32-bytes!!"), Issuer: "gqlauth", Audience: "gqlauth", TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		passwords, err := account.NewPasswords(account.PasswordConfig{Cost: 4})
		if err != nil {
			t.Fatal(err)
		}
		svc := account.NewService(db, tokens, passwords, account.ServiceConfig{SignupEnabled: true, RefreshTTL: time.Hour,
			Logger: slog.New(slog.DiscardHandler), MFA: account.MFAConfig{RequiredRoles: []model.Role{model.RoleAdmin}}})
		ctx := context.Background()
		root, err := svc.Register(ctx, "root", "correct horse battery", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.SetUserRole(ctx, root.User.ID, model.RoleAdmin); err != nil {
			t.Fatal(err)
		}
		key := func(aal model.AuthLevel) string {
			secret := account.APIKeyPrefix + token.Random(32)
			now := time.Now()
			if err := db.CreateAPIKey(ctx, &model.APIKey{ID: uuid.NewString(), UserID: root.User.ID, Name: "k", Prefix: secret[:12],
				SecretHash: token.HashRefreshToken(secret), Role: model.RoleAdmin, AAL: aal, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			return secret
		}
		with := func(secret string) context.Context {
			return account.WithRequest(ctx, account.NewRequest(tokens, nil, []string{secret}))
		}
		if err := svc.AuthorizeIntrospection(with(key(model.AuthLevelAal1))); err != account.ErrIntrospectionNotAnAdmin {
			t.Fatalf("an ADMIN key minted at AAL1 under MFA_REQUIRED_ROLES=ADMIN: %v", err)
		}
	})
}
