package graph_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"gqlauth/account"
	"gqlauth/ratelimit"
	"gqlauth/store/storetest"
)

func withVerificationRequired() option {
	return withMailConfig(func(c *account.MailConfig) { c.VerificationRequired = true })
}

func (s *server) registerResponse(t testing.TB, username string, email any) response {
	t.Helper()
	return s.do(t, call{Query: `mutation($u: String!, $e: String) { register(username: $u, password: "correct horse battery", email: $e) { ` + payloadFields + ` } }`,
		Variables: map[string]any{"u": username, "e": email}})
}

func (s *server) loginResponse(t testing.TB, username, password string) response {
	t.Helper()
	return s.do(t, call{Query: `mutation($u: String!, $p: String!) { login(username: $u, password: $p) { ` + payloadFields + ` } }`,
		Variables: map[string]any{"u": username, "p": password}})
}

// passwordGrant signs in at /oauth/token and returns the status and the JSON body.
func (s *server) passwordGrant(t testing.TB, username, password string) (int, map[string]any) {
	t.Helper()
	res, err := http.PostForm(s.URL+"/oauth/token", url.Values{"grant_type": {"password"}, "username": {username}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body map[string]any
	json.NewDecoder(res.Body).Decode(&body)
	return res.StatusCode, body
}

func TestEmailVerificationRequired_RegisterMailsALinkInsteadOfSigningIn(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind, withVerificationRequired())
		for _, none := range []any{nil, ""} {
			if e := s.registerResponse(t, "ann", none).wantError(t, "BAD_USER_INPUT", ""); e.Extensions.Field != "email" {
				t.Fatalf("field %q", e.Extensions.Field)
			}
		}
		if s.count(t, "users") != 0 {
			t.Fatal("an account without an address was created")
		}
		s.registerResponse(t, "ann", "ann@example.com").wantError(t, "FORBIDDEN", "EMAIL_NOT_VERIFIED")
		if s.count(t, "users") != 1 || s.count(t, "sessions") != 0 || s.countEvents(t, "SIGN_UP") != 1 {
			t.Fatalf("%d users, %d sessions; want the account and no session", s.count(t, "users"), s.count(t, "sessions"))
		}
		tok := tokenIn(t, smtp.waitFor(t, 1)[0])
		wantTrue(t, s.verifyEmail(t, tok), "verifyEmail")
		s.login(t, "ann", "correct horse battery")
	})
}

func TestEmailVerificationRequired_SignInToAnUnverifiedAccountIsRefusedAfterThePassword(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		limits := account.Limits{Counter: ratelimit.NewMemory(nil), MailPerAddress: 3}
		s, smtp := mailServer(t, kind, withVerificationRequired(), withRateLimits(limits))
		s.registerResponse(t, "ann", "ann@example.com").wantError(t, "FORBIDDEN", "EMAIL_NOT_VERIFIED") // message 1
		smtp.waitFor(t, 1)
		// A wrong password says nothing about the address, and mails nothing.
		s.loginResponse(t, "ann", "wrong horse battery").wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		if code, body := s.passwordGrant(t, "ann", "wrong horse battery"); code != 400 || body["error"] != "invalid_grant" {
			t.Fatalf("%d %v", code, body)
		}
		if got := smtp.quiet(); len(got) != 1 {
			t.Fatalf("%d messages after wrong passwords, want 1", len(got))
		}
		// The right password: refused, and a fresh link (messages 2 and 3), then the limit.
		s.loginResponse(t, "ann", "correct horse battery").wantError(t, "FORBIDDEN", "EMAIL_NOT_VERIFIED")
		code, body := s.passwordGrant(t, "ann", "correct horse battery")
		if desc, _ := body["error_description"].(string); code != 400 || body["error"] != "invalid_grant" || !strings.Contains(desc, "not verified") {
			t.Fatalf("%d %v", code, body)
		}
		s.loginResponse(t, "ann", "correct horse battery").wantError(t, "FORBIDDEN", "EMAIL_NOT_VERIFIED")
		msgs := smtp.quiet()
		if len(msgs) != 3 || s.count(t, "sessions") != 0 {
			t.Fatalf("%d messages, %d sessions; want 3 (the limit) and none", len(msgs), s.count(t, "sessions"))
		}
		// Each link voided the one before; they may arrive in any order, and the newest works.
		var uses []response
		for _, m := range msgs {
			uses = append(uses, s.verifyEmail(t, tokenIn(t, m)))
		}
		if ok, invalid := tokenUses(t, uses); ok != 1 || invalid != 2 {
			t.Fatalf("%d links worked, %d INVALID_CODE; want 1, 2", ok, invalid)
		}
		s.login(t, "ann", "correct horse battery")
		if code, body := s.passwordGrant(t, "ann", "correct horse battery"); code != 200 || body["access_token"] == nil {
			t.Fatalf("%d %v", code, body)
		}
	})
}

func TestEmailVerificationRequired_AccountsWithoutAnAddressAndCodeSignInsPass(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind, withVerificationRequired())
		// The ADMIN_USERNAME bootstrap and an admin's createUser make accounts without an address.
		if _, err := s.Service.EnsureAdmin(context.Background(), "root", "correct horse battery"); err != nil {
			t.Fatal(err)
		}
		root := s.login(t, "root", "correct horse battery")
		s.query(t, root.AccessToken, `mutation { createUser(username: "bob", password: "correct horse battery") { id } }`, nil)
		s.login(t, "bob", "correct horse battery")
		code := s.mailedCode(t, smtp, "carol@example.com", 0)
		var p tokens
		s.signInWithCode(t, "carol@example.com", code).field(t, "signInWithCode", &p)
	})
}
