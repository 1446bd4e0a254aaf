package graph_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"gqlauth/account"
	"gqlauth/ratelimit"
	"gqlauth/store/storetest"
	"gqlauth/token"
)

const newPassword = "a brand new horse battery"

// resetServer is a server whose outbox delivers to a test SMTP server.
func resetServer(t *testing.T, kind storetest.Kind, opts ...option) (*server, *smtpServer) {
	t.Helper()
	return mailServer(t, kind, opts...)
}

func (s *server) requestReset(t testing.TB, email string) response {
	t.Helper()
	return s.do(t, call{Query: `mutation($e: String!) { requestPasswordReset(email: $e) }`, Variables: map[string]any{"e": email}})
}

func (s *server) resetPassword(t testing.TB, tok, password string) response {
	t.Helper()
	return s.do(t, call{Query: `mutation($t: String!, $p: String!) { resetPassword(token: $t, newPassword: $p) }`,
		Variables: map[string]any{"t": tok, "p": password}})
}

// mailedResetToken asks for a reset of email and returns the token of the nth message.
func (s *server) mailedResetToken(t testing.TB, smtp *smtpServer, email string, n int) string {
	t.Helper()
	wantTrue(t, s.requestReset(t, email), "requestPasswordReset")
	return linkToken(t, smtp.waitFor(t, n+1)[n], "reset_password")
}

func eventTypes(p auditPage) []string {
	var types []string
	for _, e := range p.events() {
		types = append(types, e.Type)
	}
	return types
}

func TestPasswordReset_MailedLinkSetsThePasswordAndRevokesEverySession(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := resetServer(t, kind)
		root := s.signedInAdmin(t)
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		second := s.login(t, "ann", "correct horse battery")
		// Asked by ann herself, in another case and with a forged Host: the link goes to the
		// account's own address, from configuration only.
		r := s.do(t, call{Query: `mutation { requestPasswordReset(email: "Ann@Example.com") }`, Token: ann.AccessToken,
			Header: map[string][]string{"X-Forwarded-Host": {"evil.example"}}})
		wantTrue(t, r, "requestPasswordReset")
		m := smtp.waitFor(t, 1)[0]
		if len(m.To) != 1 || m.To[0] != "ann@example.com" || strings.Contains(m.Text, "evil.example") {
			t.Fatalf("message %+v", m)
		}
		tok := linkToken(t, m, "reset_password")
		if len(tok) != token.MailTokenLength || !strings.Contains(m.Text, "30 minutes") {
			t.Fatalf("token %q, text:\n%s", tok, m.Text)
		}

		wantTrue(t, s.resetPassword(t, tok, newPassword), "resetPassword")
		for _, old := range []tokens{ann, second} {
			s.me(t, old.AccessToken).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
			if r := s.refresh(t, old.RefreshToken); len(r.Errors) == 0 {
				t.Fatal("an old refresh token still works")
			}
		}
		s.do(t, call{Query: `mutation { login(username: "ann", password: "correct horse battery") { accessToken } }`}).
			wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		fresh := s.login(t, "ann", newPassword)
		if !s.emailVerified(t, fresh.AccessToken) {
			t.Fatal("the address the link went to is not verified")
		}
		notice := smtp.waitFor(t, 2)[1]
		if notice.To[0] != "ann@example.com" || !strings.Contains(notice.Text, "password of your account was changed") {
			t.Fatalf("notice %+v", notice)
		}
		if got := smtp.quiet(); len(got) != 2 {
			t.Fatalf("%d messages, want 2", len(got))
		}
		// PASSWORD_RESET_REQUESTED is for admins only; the reset itself is the owner's to see.
		own := eventTypes(s.securityEvents(t, fresh.AccessToken, nil))
		if slices.Contains(own, "PASSWORD_RESET_REQUESTED") || !slices.Contains(own, "PASSWORD_RESET") {
			t.Fatalf("securityEvents: %v", own)
		}
		all := s.auditEvents(t, root.AccessToken, map[string]any{"types": []string{"PASSWORD_RESET_REQUESTED", "PASSWORD_RESET"}}).events()
		if len(all) != 2 || all[1].Type != "PASSWORD_RESET_REQUESTED" || all[1].User == nil || all[1].User.ID != ann.User.ID || all[0].Type != "PASSWORD_RESET" {
			t.Fatalf("auditEvents: %+v", all)
		}
	})
}

func TestPasswordReset_UnknownAddressAnswersTrueAndWritesNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := resetServer(t, kind)
		s.registerWithEmail(t, "ann", "ann@example.com")
		for _, addr := range []string{"nobody@example.com", "ann@example.org", "ann+x@example.com"} {
			wantTrue(t, s.requestReset(t, addr), "requestPasswordReset")
		}
		// Each request is one queued job, resolved by the sender to nothing.
		if got := smtp.quiet(); len(got) != 0 || s.count(t, "mail_tokens") != 0 || s.jobs(t, "gqlauth.mail") != 0 ||
			s.countEvents(t, "PASSWORD_RESET_REQUESTED") != 0 || s.jobs(t, "gqlauth.mail_request") != 3 {
			t.Fatalf("%d messages, %d tokens, %d mail jobs, %d events, %d requests; want none and 3 requests", len(got), s.count(t, "mail_tokens"),
				s.jobs(t, "gqlauth.mail"), s.countEvents(t, "PASSWORD_RESET_REQUESTED"), s.jobs(t, "gqlauth.mail_request"))
		}
	})
}

func TestPasswordReset_MalformedAddressIsBadUserInput(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := resetServer(t, kind)
		s.registerWithEmail(t, "ann", "ann@example.com")
		for _, addr := range []string{
			"", " ", "ann", "ann@", "@example.com", "ann@@example.com", " ann@example.com", "ann@example.com ",
			"ann@example.com\r\nBcc: eve@example.com", "ann@example.com\n", "ann@example.com\x00", "ann\x00@example.com",
			"Ann <ann@example.com>", strings.Repeat("a", 243) + "@example.com",
		} {
			e := s.requestReset(t, addr).wantError(t, "BAD_USER_INPUT", "")
			if e.Extensions.Field != "email" {
				t.Fatalf("%q: field %q, want email", addr, e.Extensions.Field)
			}
		}
		if got := smtp.quiet(); len(got) != 0 || s.count(t, "mail_tokens") != 0 || s.count(t, "river_job") != 0 ||
			s.countEvents(t, "PASSWORD_RESET_REQUESTED") != 0 {
			t.Fatalf("%d messages, %d tokens, %d jobs: want none", len(got), s.count(t, "mail_tokens"), s.count(t, "river_job"))
		}
	})
}

func TestPasswordReset_RefusedPasswordLeavesTheTokenUsable(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := resetServer(t, kind)
		s.registerWithEmail(t, "ann", "ann@example.com")
		tok := s.mailedResetToken(t, smtp, "ann@example.com", 0)
		for _, weak := range []string{"", "short", strings.Repeat("x", 1000)} {
			e := s.resetPassword(t, tok, weak).wantError(t, "BAD_USER_INPUT", "")
			if e.Extensions.Field != "newPassword" {
				t.Fatalf("field %q, want newPassword", e.Extensions.Field)
			}
		}
		if s.countEvents(t, "PASSWORD_RESET") != 0 {
			t.Fatal("a refused password recorded PASSWORD_RESET")
		}
		s.login(t, "ann", "correct horse battery") // unchanged
		wantTrue(t, s.resetPassword(t, tok, newPassword), "resetPassword")
		s.login(t, "ann", newPassword)
	})
}

func TestPasswordReset_UnusableTokensAreInvalidCode(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := resetServer(t, kind)
		cases := []struct {
			name string
			// token returns the token to present for a user with address addr whose next
			// message is the nth.
			token func(t *testing.T, u tokens, addr string, n int) string
		}{
			{"Replayed", func(t *testing.T, u tokens, addr string, n int) string {
				tok := s.mailedResetToken(t, smtp, addr, n)
				wantTrue(t, s.resetPassword(t, tok, newPassword), "resetPassword")
				smtp.waitFor(t, n+2) // the notice
				return tok
			}},
			{"Unknown", func(t *testing.T, u tokens, addr string, n int) string { return token.NewMailToken() }},
			{"Empty", func(t *testing.T, u tokens, addr string, n int) string { return "" }},
			{"TooShort", func(t *testing.T, u tokens, addr string, n int) string { return token.NewMailToken()[:42] }},
			{"NotBase64URL", func(t *testing.T, u tokens, addr string, n int) string {
				return strings.Repeat("!", token.MailTokenLength)
			}},
			{"VoidedByANewerOne", func(t *testing.T, u tokens, addr string, n int) string {
				older := s.mailedResetToken(t, smtp, addr, n)
				s.mailedResetToken(t, smtp, addr, n+1)
				return older
			}},
			{"Expired", func(t *testing.T, u tokens, addr string, n int) string {
				tok := s.mailedResetToken(t, smtp, addr, n)
				s.Clock.Advance(30*time.Minute + time.Second)
				return tok
			}},
			{"OfAnotherPurpose", func(t *testing.T, u tokens, addr string, n int) string {
				wantTrue(t, s.sendVerification(t, u.AccessToken), "sendEmailVerification")
				return tokenIn(t, smtp.waitFor(t, n+1)[n])
			}},
		}
		for i, c := range cases {
			name := "user" + string(rune('a'+i))
			u := s.registerWithEmail(t, name, name+"@example.com")
			tok := c.token(t, u, name+"@example.com", len(smtp.messages()))
			before := s.countEvents(t, "PASSWORD_RESET")
			s.resetPassword(t, tok, "yet another horse battery").wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
			if s.countEvents(t, "PASSWORD_RESET") != before {
				t.Fatalf("%s: a refused token recorded PASSWORD_RESET", c.name)
			}
			if c.name != "Replayed" {
				s.login(t, name, "correct horse battery") // the password is unchanged
			}
		}
	})
}

func TestPasswordReset_ConcurrentUsesOfOneTokenSucceedOnce(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := resetServer(t, kind)
		s.registerWithEmail(t, "ann", "ann@example.com")
		tok := s.mailedResetToken(t, smtp, "ann@example.com", 0)
		ok, invalid := tokenUses(t, inParallel(8, func() response { return s.resetPassword(t, tok, newPassword) }))
		if ok != 1 || invalid != 7 || s.countEvents(t, "PASSWORD_RESET") != 1 {
			t.Fatalf("%d succeeded, %d INVALID_CODE, %d events; want 1, 7, 1", ok, invalid, s.countEvents(t, "PASSWORD_RESET"))
		}
		if got := smtp.quiet(); len(got) != 2 {
			t.Fatalf("%d messages (link and notices), want 2", len(got))
		}
	})
}

func TestPasswordReset_OverThePerAddressLimitAnswersTrueAndSendsNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := resetServer(t, kind, withRateLimits(account.Limits{Counter: ratelimit.NewMemory(nil), MailPerAddress: 2}))
		s.registerWithEmail(t, "ann", "ann@example.com")
		for range 4 {
			wantTrue(t, s.requestReset(t, "ann@example.com"), "requestPasswordReset")
		}
		if got := smtp.quiet(); len(got) != 2 || s.countEvents(t, "PASSWORD_RESET_REQUESTED") != 2 {
			t.Fatalf("%d messages, %d events; want 2, 2", len(got), s.countEvents(t, "PASSWORD_RESET_REQUESTED"))
		}
	})
}

func TestPasswordReset_PerClientLimitApplies(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := resetServer(t, kind, withRateLimits(account.Limits{Counter: ratelimit.NewMemory(nil), PerClient: 2, ClientWindow: time.Hour}))
		s.registerWithEmail(t, "ann", "ann@example.com") // one credential operation
		wantTrue(t, s.requestReset(t, "nobody@example.com"), "requestPasswordReset")
		s.requestReset(t, "ann@example.com").wantError(t, "TOO_MANY_REQUESTS", "")
		if got := smtp.quiet(); len(got) != 0 {
			t.Fatalf("%d messages, want none", len(got))
		}
	})
}
