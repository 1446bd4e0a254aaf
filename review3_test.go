package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Third review (attacker), issue #25: a signing key's revocation must be refused on every
// instance at once, by the principal query's join on signing_keys — not only once the other
// instance's key ring has reloaded. TestSigningKeyRevocation_RefusedOnTheOtherInstanceAtOnce
// revokes through the mutation, whose SIGNING_KEY_REVOKED event also makes B reload its ring, so
// it cannot tell the two apart. Here the key is revoked by a statement that records no event:
// B's ring still holds the key as live, and only the database check can refuse its token — on a
// guarded request and on token introspection, each after B had cached the principal.
func TestReview3_SigningKeyRevokedWithoutItsEventIsRefusedByTheDatabase(t *testing.T) {
	schema := cacheFaultSetup(t)
	env := []string{"JWT_ALG=ES256", "ADMIN_USERNAME=root", "ADMIN_PASSWORD=correct horse battery"}
	a := startInstance(t, schema, env...)
	b := startInstance(t, schema, env...)
	root := accessToken(t, graphql(t, a.URL, "", `mutation { login(username: "root", password: "correct horse battery") { accessToken } }`), "login")
	secret := graphql(t, a.URL, root, `mutation { createApiKey(name: "introspect", role: ADMIN) { secret } }`)
	apiKey := secret["data"].(map[string]any)["createApiKey"].(map[string]any)["secret"].(string)
	alice := accessToken(t, graphql(t, a.URL, "", `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`), "register")
	if !meOK(t, b.URL, alice) || !introspectActive(t, b.URL, apiKey, alice) {
		t.Fatal("B refused a live token")
	}

	res, err := adminConn(t, schema).ExecContext(context.Background(), `UPDATE signing_keys SET revoked_at = now() WHERE kid = $1`, kidOf(t, alice))
	if n, _ := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("revoking the key: %v (%d rows)", err, n)
	}
	// The statement waited for no lease holder (only Transact does), so B may take a moment to
	// drop its cached principal; its key ring, which no event reached, is not reloaded meanwhile.
	deadline := time.Now().Add(2 * time.Second)
	for meOK(t, b.URL, alice) {
		if time.Now().After(deadline) {
			t.Fatal("B still accepts a token of a key revoked 2s ago")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if introspectActive(t, b.URL, apiKey, alice) {
		t.Error("B's introspection reports a token of a revoked key active")
	}
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	var h struct{ Kid string }
	if err != nil || json.Unmarshal(raw, &h) != nil || h.Kid == "" {
		t.Fatalf("token header without kid: %s", raw)
	}
	return h.Kid
}

func introspectActive(t *testing.T, base, apiKey, tok string) bool {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/oauth/introspect", strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-API-Key", apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out struct{ Active bool }
	if resp.StatusCode != 200 || json.Unmarshal(body, &out) != nil {
		t.Fatalf("introspect: %d %s", resp.StatusCode, body)
	}
	return out.Active
}
