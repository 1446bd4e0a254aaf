package graph_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"gqlauth/store/storetest"
	"gqlauth/token"
)

type signingKey struct {
	Kid         string  `json:"kid"`
	Alg         string  `json:"alg"`
	State       string  `json:"state"`
	ActivatesAt string  `json:"activatesAt"`
	RetiredAt   *string `json:"retiredAt"`
}

func (s *server) signingKeys(t testing.TB, adminToken string) []signingKey {
	t.Helper()
	var keys []signingKey
	s.query(t, adminToken, `{ signingKeys { kid alg state activatesAt retiredAt } }`, nil).field(t, "signingKeys", &keys)
	return keys
}

func (s *server) rotate(t testing.TB, adminToken string) signingKey {
	t.Helper()
	var k signingKey
	s.query(t, adminToken, `mutation { rotateSigningKey { kid alg state activatesAt retiredAt } }`, nil).field(t, "rotateSigningKey", &k)
	return k
}

// header returns the JOSE header of a JWT.
func header(t testing.TB, token string) map[string]any {
	t.Helper()
	parsed, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	return parsed.Header
}

func TestSigningKeys_EachAlgorithmSignsAndVerifies(t *testing.T) {
	for _, alg := range []string{"ES256", "EdDSA", "RS256"} {
		t.Run(alg, func(t *testing.T) {
			storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
				s := newServer(t, kind, withJWTAlg(alg, 10*time.Minute, 0))
				root := s.signedInAdmin(t)
				h := header(t, root.AccessToken)
				keys := s.signingKeys(t, root.AccessToken)
				if len(keys) != 1 || keys[0].State != "CURRENT" || keys[0].Alg != alg || h["alg"] != alg || h["kid"] != keys[0].Kid || h["typ"] != "at+jwt" {
					t.Fatalf("header %v, keys %+v", h, keys)
				}
				s.query(t, root.AccessToken, `{ me { id } }`, nil)
				refreshed(t, s.refresh(t, root.RefreshToken))
				// Stored encrypted: the private key's DER never sits in the database as is.
				rows, _ := s.DB.DumpTable(context.Background(), "signing_keys")
				if len(rows) != 1 || strings.Contains(rows[0]["private_key"], "PRIVATE") {
					t.Fatalf("rows: %d", len(rows))
				}
			})
		})
	}
}

func TestSigningKeys_ConfusedOrForeignTokensAreInvalid(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind, withJWTAlg("ES256", 10*time.Minute, 0))
		alice := s.signedInUser(t, "alice")
		claims := parseUnverified(t, alice.AccessToken)
		kid := header(t, alice.AccessToken)["kid"].(string)
		rows, err := s.DB.DumpTable(context.Background(), "signing_keys")
		if err != nil || len(rows) != 1 {
			t.Fatal(err)
		}
		publicDER := []byte(rows[0]["public_key"])
		if h, ok := strings.CutPrefix(rows[0]["public_key"], `\x`); ok { // Postgres shows bytea as hex
			publicDER, _ = hex.DecodeString(h)
		}
		if _, err := x509.ParsePKIXPublicKey(publicDER); err != nil {
			t.Fatalf("stored public key: %v", err)
		}
		publicPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: publicDER})
		foreign, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		sign := func(method jwt.SigningMethod, key any, hdr map[string]any) string {
			tok := jwt.NewWithClaims(method, claims)
			for k, v := range hdr {
				tok.Header[k] = v
			}
			str, err := tok.SignedString(key)
			if err != nil {
				t.Fatal(err)
			}
			return str
		}
		for name, token := range map[string]string{
			"HS256WithPublicKeyPEM": sign(jwt.SigningMethodHS256, publicPEM, map[string]any{"typ": "at+jwt", "kid": kid}),
			"HS256WithPublicKeyDER": sign(jwt.SigningMethodHS256, publicDER, map[string]any{"typ": "at+jwt", "kid": kid}),
			"HS256WithServerSecret": sign(jwt.SigningMethodHS256, testSecret, map[string]any{"typ": "at+jwt"}),
			"UnknownKid":            sign(jwt.SigningMethodES256, foreign, map[string]any{"typ": "at+jwt", "kid": "not-a-key"}),
			"NoKid":                 sign(jwt.SigningMethodES256, foreign, map[string]any{"typ": "at+jwt"}),
			"ForeignKeyOurKid":      sign(jwt.SigningMethodES256, foreign, map[string]any{"typ": "at+jwt", "kid": kid}),
			"AlgNone":               sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, map[string]any{"typ": "at+jwt", "kid": kid}),
		} {
			t.Run(name, func(t *testing.T) {
				s.me(t, token).wantError(t, "UNAUTHENTICATED", "INVALID_TOKEN")
			})
		}
		s.query(t, alice.AccessToken, `{ me { id } }`, nil) // the real one still works
	})
}

func TestSigningKeys_RotationPhasesFollowTheClock(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		const delay = 10 * time.Minute
		s := newServer(t, kind, withJWTAlg("EdDSA", delay, 0))
		root := s.signedInAdmin(t)
		first := s.signingKeys(t, root.AccessToken)[0]

		next := s.rotate(t, root.AccessToken)
		if next.State != "NEXT" || next.Kid == first.Kid {
			t.Fatalf("rotated: %+v", next)
		}
		keys := s.signingKeys(t, root.AccessToken)
		if len(keys) != 2 || keys[0].Kid != next.Kid || keys[0].State != "NEXT" || keys[1].State != "CURRENT" {
			t.Fatalf("published at once, not signing yet: %+v", keys)
		}
		s.Clock.Advance(delay - time.Second)
		old := s.login(t, "root", "correct horse battery") // still signed by the first key
		if header(t, old.AccessToken)["kid"] != first.Kid {
			t.Fatal("the next key signed before its publish delay")
		}

		s.Clock.Advance(2 * time.Second) // the next key takes over
		fresh := s.login(t, "root", "correct horse battery")
		if header(t, fresh.AccessToken)["kid"] != next.Kid {
			t.Fatal("the next key does not sign after its publish delay")
		}
		keys = s.signingKeys(t, fresh.AccessToken)
		if len(keys) != 2 || keys[0].State != "CURRENT" || keys[1].State != "RETIRED" || keys[1].RetiredAt == nil {
			t.Fatalf("after the delay: %+v", keys)
		}
		s.query(t, old.AccessToken, `{ me { id } }`, nil) // the retired key still verifies

		// Once every token the retired key can have signed has expired (15 min + 5 s of skew),
		// it leaves the set.
		s.Clock.Advance(15*time.Minute + 6*time.Second)
		refreshedRoot := s.login(t, "root", "correct horse battery")
		if keys = s.signingKeys(t, refreshedRoot.AccessToken); len(keys) != 1 || keys[0].Kid != next.Kid {
			t.Fatalf("the retired key is still published: %+v", keys)
		}

		events := s.auditEvents(t, refreshedRoot.AccessToken, map[string]any{"types": []string{"SIGNING_KEY_ROTATED"}}).events()
		if len(events) != 1 || deref(events[0].Detail) != next.Kid || events[0].Actor.Username != "root" {
			t.Fatalf("audit: %+v", events)
		}
	})
}

func TestSigningKeys_RevocationFailsTokensAtOnceAndOnEveryInstance(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		a, b := twoInstances(t, kind, withJWTAlg("ES256", time.Minute, 0))
		root := a.signedInAdmin(t)
		first := header(t, root.AccessToken)["kid"].(string)
		old := a.login(t, "root", "correct horse battery")
		// Verified on both instances, so both hold it in their verified-token cache.
		a.query(t, old.AccessToken, `{ me { id } }`, nil)
		b.query(t, old.AccessToken, `{ me { id } }`, nil)

		// The only key that can sign cannot be revoked.
		e := a.do(t, call{Query: `mutation($k: ID!) { revokeSigningKey(kid: $k) }`, Variables: map[string]any{"k": first}, Token: root.AccessToken}).
			wantError(t, "BAD_USER_INPUT", "")
		if e.Extensions.Field != "kid" {
			t.Fatalf("field %q", e.Extensions.Field)
		}
		next := a.rotate(t, root.AccessToken)
		// Revoking the current key promotes the next one at once (the emergency path).
		a.query(t, root.AccessToken, `mutation($k: ID!) { revokeSigningKey(kid: $k) }`, map[string]any{"k": first})
		a.me(t, old.AccessToken).wantError(t, "UNAUTHENTICATED", "INVALID_TOKEN")
		fresh := a.login(t, "root", "correct horse battery")
		if header(t, fresh.AccessToken)["kid"] != next.Kid {
			t.Fatal("the next key was not promoted")
		}

		// On Postgres the second instance hears of it through the event channel at once; elsewhere
		// at its next reload (every ReloadInterval, at most 30 s).
		if kind == storetest.Postgres {
			deadline := time.Now().Add(2 * time.Second)
			for len(b.me(t, old.AccessToken).Errors) == 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		} else if err := b.Keys.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		b.me(t, old.AccessToken).wantError(t, "UNAUTHENTICATED", "INVALID_TOKEN")
		b.query(t, fresh.AccessToken, `{ me { id } }`, nil)
		if iv := b.Keys.ReloadInterval(); iv > time.Minute {
			t.Fatalf("reload interval %s exceeds the publish delay", iv)
		}
		a.do(t, call{Query: `mutation { revokeSigningKey(kid: "nope") }`, Token: fresh.AccessToken}).wantError(t, "NOT_FOUND", "")
		for _, k := range a.signingKeys(t, fresh.AccessToken) {
			if k.Kid == first {
				t.Fatal("a revoked key is still listed")
			}
		}
	})
}

func TestSigningKeys_InstancesStartingAtOnceCreateOneKey(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		name := storetest.NewName(t, kind)
		first := storetest.OpenShared(t, kind, name)
		if err := first.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range 4 {
			db := storetest.OpenShared(t, kind, name)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = token.NewKeyRing(context.Background(), db, token.KeyRingConfig{
					Alg: "ES256", Secret: testSecret, PublishDelay: time.Minute, TokenTTL: 15 * time.Minute,
				})
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if rows, _ := first.DumpTable(context.Background(), "signing_keys"); len(rows) != 1 {
			t.Fatalf("%d keys after four instances started at once", len(rows))
		}
	})
}

func TestSigningKeys_WrongSecretAtStartIsOneClearErrorAndNoNewKey(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		db := storetest.Open(t, kind)
		cfg := token.KeyRingConfig{Alg: "ES256", Secret: testSecret, PublishDelay: time.Minute, TokenTTL: 15 * time.Minute}
		if _, err := token.NewKeyRing(context.Background(), db, cfg); err != nil {
			t.Fatal(err)
		}
		cfg.Secret = []byte(strings.Repeat("w", 32))
		_, err := token.NewKeyRing(context.Background(), db, cfg)
		if err == nil || !strings.HasPrefix(err.Error(), "JWT_SECRET:") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("got %v", err)
		}
		if rows, _ := db.DumpTable(context.Background(), "signing_keys"); len(rows) != 1 {
			t.Fatalf("%d keys: a wrong secret must not make a silent new key", len(rows))
		}
	})
}

func TestSigningKeys_ScheduledRotationHappensOnceAcrossInstances(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		a, b := twoInstances(t, kind, withJWTAlg("ES256", time.Minute, time.Hour))
		root := a.signedInAdmin(t)
		ctx := context.Background()
		for _, s := range []*server{a, b} { // not due yet
			if err := s.Service.RotateSigningKeyIfDue(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if n := len(a.signingKeys(t, root.AccessToken)); n != 1 {
			t.Fatalf("%d keys before the rotation is due", n)
		}
		a.Clock.Advance(time.Hour)
		var wg sync.WaitGroup
		for _, s := range []*server{a, b, a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.Service.RotateSigningKeyIfDue(ctx); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		a.Keys.Reload(ctx)
		fresh := a.login(t, "root", "correct horse battery")
		keys := a.signingKeys(t, fresh.AccessToken)
		if len(keys) != 2 || keys[0].State != "NEXT" {
			t.Fatalf("after the scheduled rotation: %+v", keys)
		}
		events := a.auditEvents(t, fresh.AccessToken, map[string]any{"types": []string{"SIGNING_KEY_ROTATED"}}).events()
		if len(events) != 1 || !strings.HasPrefix(deref(events[0].Detail), "scheduled: ") {
			t.Fatalf("audit: %+v", events)
		}
	})
}

func TestSigningKeys_HS256HasNoneToRotate(t *testing.T) {
	s := newServer(t, storetest.SQLite)
	root := s.signedInAdmin(t)
	if keys := s.signingKeys(t, root.AccessToken); len(keys) != 0 {
		t.Fatalf("keys: %+v", keys)
	}
	s.do(t, call{Query: `mutation { rotateSigningKey { kid } }`, Token: root.AccessToken}).wantError(t, "BAD_USER_INPUT", "")
	alice := s.signedInUser(t, "alice")
	s.do(t, call{Query: `{ signingKeys { kid } }`, Token: alice.AccessToken}).wantError(t, "FORBIDDEN", "INSUFFICIENT_ROLE")
}
