package graph_test

import (
	"slices"
	"strings"
	"testing"

	"gqlauth/account"
	"gqlauth/ratelimit"
	"gqlauth/store/storetest"
)

func (s *server) changeEmail(t testing.TB, accessToken, newEmail string, password any) response {
	t.Helper()
	return s.do(t, call{Query: `mutation($e: String!, $p: String) { changeEmail(newEmail: $e, currentPassword: $p) }`,
		Token: accessToken, Variables: map[string]any{"e": newEmail, "p": password}})
}

func (s *server) email(t testing.TB, accessToken string) (string, bool) {
	t.Helper()
	var me struct {
		Email         *string `json:"email"`
		EmailVerified bool    `json:"emailVerified"`
	}
	s.query(t, accessToken, `{ me { email emailVerified } }`, nil).field(t, "me", &me)
	if me.Email == nil {
		return "", me.EmailVerified
	}
	return *me.Email, me.EmailVerified
}

// verifiedUser registers a user with an address and verifies it through the mailed link (the
// nth message).
func (s *server) verifiedUser(t testing.TB, smtp *smtpServer, username, email string, n int) tokens {
	t.Helper()
	u := s.registerWithEmail(t, username, email)
	wantTrue(t, s.sendVerification(t, u.AccessToken), "sendEmailVerification")
	wantTrue(t, s.verifyEmail(t, tokenIn(t, smtp.waitFor(t, n+1)[n])), "verifyEmail")
	return u
}

// messageTo returns the one message among msgs to addr.
func messageTo(t testing.TB, msgs []mailed, addr string) mailed {
	t.Helper()
	var found []mailed
	for _, m := range msgs {
		if slices.Contains(m.To, addr) {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d messages to %s, want 1: %+v", len(found), addr, msgs)
	}
	return found[0]
}

func TestChangeEmail_LinkToTheNewAddressChangesItAndTheOldGetsANotice(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		ann := s.verifiedUser(t, smtp, "ann", "ann@example.com", 0)
		wantTrue(t, s.changeEmail(t, ann.AccessToken, "ann@new.example", "correct horse battery"), "changeEmail")
		msgs := smtp.waitFor(t, 3)[1:]
		link := messageTo(t, msgs, "ann@new.example")
		notice := messageTo(t, msgs, "ann@example.com")
		if !strings.Contains(notice.Text, "ann@new.example") || !strings.Contains(notice.Text, "If this wasn't you") || !strings.Contains(notice.Text, "UTC") {
			t.Fatalf("notice:\n%s", notice.Text)
		}
		// Nothing changes until the link is used.
		if addr, verified := s.email(t, ann.AccessToken); addr != "ann@example.com" || !verified {
			t.Fatalf("before the link: %s (verified %v)", addr, verified)
		}
		wantTrue(t, s.verifyEmail(t, tokenIn(t, link)), "verifyEmail")
		if addr, verified := s.email(t, ann.AccessToken); addr != "ann@new.example" || !verified {
			t.Fatalf("after the link: %s (verified %v)", addr, verified)
		}
		if types := eventTypes(s.securityEvents(t, ann.AccessToken, nil)); !slices.Contains(types, "EMAIL_CHANGED") {
			t.Fatalf("events %v", types)
		}
		// When the change completes, the old address hears of it too.
		if done := smtp.waitFor(t, 4)[3]; done.To[0] != "ann@example.com" || !strings.Contains(done.Text, "was changed to ann@new.example") {
			t.Fatalf("the notice of the completed change: %+v", done)
		}
		// The old address no longer signs in with a code to this account: a reset goes to the new one.
		wantTrue(t, s.requestReset(t, "ann@new.example"), "requestPasswordReset")
		if m := smtp.waitFor(t, 5)[4]; m.To[0] != "ann@new.example" {
			t.Fatalf("reset went to %v", m.To)
		}
	})
}

func TestChangeEmail_UnverifiedOldAddressGetsNoNotice(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		wantTrue(t, s.changeEmail(t, ann.AccessToken, "ann@new.example", "correct horse battery"), "changeEmail")
		if got := smtp.quiet(); len(got) != 1 || got[0].To[0] != "ann@new.example" {
			t.Fatalf("messages %+v; want only the link to the new address", got)
		}
	})
}

func TestChangeEmail_PasswordIsNeeded(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		before := s.snapshot(t)
		s.changeEmail(t, ann.AccessToken, "ann@new.example", "wrong horse battery").wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		for _, missing := range []any{nil, ""} {
			if e := s.changeEmail(t, ann.AccessToken, "ann@new.example", missing).wantError(t, "BAD_USER_INPUT", ""); e.Extensions.Field != "currentPassword" {
				t.Fatalf("field %q", e.Extensions.Field)
			}
		}
		// The guard stays: the session is not ended by a wrong password.
		s.me(t, ann.AccessToken).field(t, "me", &struct{}{})
		if got := smtp.quiet(); len(got) != 0 || s.snapshot(t) != before || s.count(t, "mail_tokens") != 0 {
			t.Fatalf("%d messages, %d tokens; want nothing", len(got), s.count(t, "mail_tokens"))
		}
		s.changeEmail(t, "", "ann@new.example", "correct horse battery").wantError(t, "UNAUTHENTICATED", "MISSING_TOKEN")
	})
}

func TestChangeEmail_AnAddressAnotherAccountHoldsIsBadUserInput(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		s.registerWithEmail(t, "bob", "bob@example.com")
		for _, addr := range []string{"bob@example.com", "BOB@example.com", "ann@example.com", "Ann@Example.com"} {
			if e := s.changeEmail(t, ann.AccessToken, addr, "correct horse battery").wantError(t, "BAD_USER_INPUT", ""); e.Extensions.Field != "newEmail" {
				t.Fatalf("%s: field %q", addr, e.Extensions.Field)
			}
		}
		if got := smtp.quiet(); len(got) != 0 || s.count(t, "mail_tokens") != 0 {
			t.Fatalf("%d messages; want none", len(got))
		}
	})
}

func TestChangeEmail_AddressTakenMeanwhileIsBadUserInputAndChangesNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		wantTrue(t, s.changeEmail(t, ann.AccessToken, "shared@example.com", "correct horse battery"), "changeEmail")
		tok := tokenIn(t, smtp.waitFor(t, 1)[0])
		s.registerWithEmail(t, "bob", "Shared@Example.com") // takes the address before ann's link is used
		before := s.snapshot(t)
		eventsBefore := s.count(t, "audit_events")
		if e := s.verifyEmail(t, tok).wantError(t, "BAD_USER_INPUT", ""); !strings.Contains(e.Message, "another account") {
			t.Fatalf("message %q", e.Message)
		}
		if s.snapshot(t) != before || s.count(t, "audit_events") != eventsBefore {
			t.Fatal("the refused change wrote something")
		}
		if addr, _ := s.email(t, ann.AccessToken); addr != "ann@example.com" {
			t.Fatalf("address %s", addr)
		}
	})
}

func TestChangeEmail_SendEmailVerificationMailsThePendingAddress(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		ann := s.verifiedUser(t, smtp, "ann", "ann@example.com", 0)
		wantTrue(t, s.changeEmail(t, ann.AccessToken, "ann@new.example", "correct horse battery"), "changeEmail")
		first := tokenIn(t, messageTo(t, smtp.waitFor(t, 3)[1:], "ann@new.example"))
		wantTrue(t, s.sendVerification(t, ann.AccessToken), "sendEmailVerification") // the old one is verified already
		again := smtp.waitFor(t, 4)[3]
		if again.To[0] != "ann@new.example" {
			t.Fatalf("sent to %v, want the pending address", again.To)
		}
		s.verifyEmail(t, first).wantError(t, "UNAUTHENTICATED", "INVALID_CODE") // voided by the newer link
		wantTrue(t, s.verifyEmail(t, tokenIn(t, again)), "verifyEmail")
		if addr, _ := s.email(t, ann.AccessToken); addr != "ann@new.example" {
			t.Fatalf("address %s", addr)
		}
	})
}

func TestChangeEmail_BadInputWritesAndSendsNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		before := s.snapshot(t)
		for _, addr := range []string{
			"", " ", "ann", "ann@", "@example.com", "ann@@example.com", " new@example.com", "new@example.com ",
			"new@example.com\r\nBcc: eve@example.com", "new@example.com\n", "Ann <new@example.com>",
			strings.Repeat("a", 243) + "@example.com",
		} {
			if e := s.changeEmail(t, ann.AccessToken, addr, "correct horse battery").wantError(t, "BAD_USER_INPUT", ""); e.Extensions.Field != "newEmail" && e.Extensions.Field != "" {
				t.Fatalf("%q: field %q", addr, e.Extensions.Field)
			}
		}
		if got := smtp.quiet(); len(got) != 0 || s.snapshot(t) != before || s.count(t, "mail_tokens") != 0 || s.count(t, "river_job") != 0 {
			t.Fatalf("%d messages, %d tokens, %d jobs; want nothing", len(got), s.count(t, "mail_tokens"), s.count(t, "river_job"))
		}
	})
}

func TestChangeEmail_PerAddressLimitIsTooManyRequests(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind, withRateLimits(account.Limits{Counter: ratelimit.NewMemory(nil), MailPerAddress: 2}))
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		for range 2 {
			wantTrue(t, s.changeEmail(t, ann.AccessToken, "ann@new.example", "correct horse battery"), "changeEmail")
		}
		s.changeEmail(t, ann.AccessToken, "ann@new.example", "correct horse battery").wantError(t, "TOO_MANY_REQUESTS", "")
		if got := smtp.quiet(); len(got) != 2 {
			t.Fatalf("%d messages, want 2", len(got))
		}
	})
}
