package graph_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"gqlauth/account"
	"gqlauth/ratelimit"
	"gqlauth/store/storetest"
	"gqlauth/token"
)

const linkURL = "https://app.example.com/account"

// mailServer is a server whose outbox delivers to a test SMTP server.
func mailServer(t *testing.T, kind storetest.Kind, opts ...option) (*server, *smtpServer) {
	t.Helper()
	smtp := startSMTP(t)
	return newServer(t, kind, append([]option{withMail(smtp, linkURL)}, opts...)...), smtp
}

// registerWithEmail signs up a user with an address and returns its tokens.
func (s *server) registerWithEmail(t testing.TB, username, email string) tokens {
	t.Helper()
	var p tokens
	s.query(t, "", `mutation($u: String!, $e: String) { register(username: $u, password: "correct horse battery", email: $e) { `+payloadFields+` } }`,
		map[string]any{"u": username, "e": email}).field(t, "register", &p)
	return p
}

func (s *server) sendVerification(t testing.TB, accessToken string) response {
	t.Helper()
	return s.do(t, call{Query: `mutation { sendEmailVerification }`, Token: accessToken})
}

func (s *server) verifyEmail(t testing.TB, tok string) response {
	t.Helper()
	return s.do(t, call{Query: `mutation($t: String!) { verifyEmail(token: $t) }`, Variables: map[string]any{"t": tok}})
}

func (s *server) emailVerified(t testing.TB, accessToken string) bool {
	t.Helper()
	var me struct {
		EmailVerified bool `json:"emailVerified"`
	}
	s.query(t, accessToken, `{ me { emailVerified } }`, nil).field(t, "me", &me)
	return me.EmailVerified
}

// tokenIn returns the token of the verification link in a mailed message (see linkToken).
func tokenIn(t testing.TB, m mailed) string {
	t.Helper()
	return linkToken(t, m, "verify_email")
}

// linkToken returns the token of the link of type typ in a mailed message, checking that the
// link is the configured one in both bodies.
func linkToken(t testing.TB, m mailed, typ string) string {
	t.Helper()
	match := regexp.MustCompile(`#type=` + typ + `&token=([A-Za-z0-9_-]+)`).FindStringSubmatch(m.Text)
	if match == nil || !strings.Contains(m.Text, linkURL+"#type="+typ+"&token="+match[1]) {
		t.Fatalf("no %s link to %s in the text:\n%s", typ, linkURL, m.Text)
	}
	if !strings.Contains(m.HTML, linkURL+"#type="+typ+"&amp;token="+match[1]) {
		t.Fatalf("no %s link in the HTML:\n%s", typ, m.HTML)
	}
	return match[1]
}

// tokenUses counts the successes and the INVALID_CODE refusals among rs, failing on anything else.
func tokenUses(t testing.TB, rs []response) (ok, invalid int) {
	t.Helper()
	for _, r := range rs {
		switch {
		case len(r.Errors) == 0:
			ok++
		case r.Errors[0].Extensions.Reason == "INVALID_CODE":
			invalid++
		default:
			t.Fatalf("unexpected error %+v", r.Errors)
		}
	}
	return ok, invalid
}

func wantTrue(t testing.TB, r response, field string) {
	t.Helper()
	if len(r.Errors) > 0 {
		t.Fatalf("%s: %+v", field, r.Errors)
	}
	var ok bool
	r.field(t, field, &ok)
	if !ok {
		t.Fatalf("%s: false", field)
	}
}

func (s *server) countEvents(t testing.TB, typ string) int {
	t.Helper()
	var n int
	if err := s.DB.QueryRow(context.Background(), "SELECT count(*) FROM audit_events WHERE type = '"+typ+"'", &n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (s *server) count(t testing.TB, table string) int {
	t.Helper()
	rows, err := s.DB.DumpTable(context.Background(), table)
	if err != nil {
		t.Fatal(err)
	}
	return len(rows)
}

func TestEmailVerification_MailedLinkVerifiesTheAddress(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		if s.emailVerified(t, ann.AccessToken) {
			t.Fatal("a new address is verified")
		}
		// A forged Host never reaches the link: links come from configuration only.
		r := s.do(t, call{Query: `mutation { sendEmailVerification }`, Token: ann.AccessToken,
			Header: map[string][]string{"X-Forwarded-Host": {"evil.example"}}})
		wantTrue(t, r, "sendEmailVerification")
		msgs := smtp.waitFor(t, 1)
		if len(msgs[0].To) != 1 || msgs[0].To[0] != "ann@example.com" || msgs[0].Subject == "" {
			t.Fatalf("message %+v", msgs[0])
		}
		tok := tokenIn(t, msgs[0])
		if len(tok) != token.MailTokenLength || strings.Contains(msgs[0].Text, "evil.example") {
			t.Fatalf("token %q (%d chars)", tok, len(tok))
		}
		for _, table := range []string{"mail_tokens", "river_job"} {
			rows, err := s.DB.DumpTable(context.Background(), table)
			if err != nil {
				t.Fatal(err)
			}
			for _, row := range rows {
				for col, v := range row {
					if strings.Contains(v, tok) {
						t.Fatalf("%s.%s holds the token in the clear", table, col)
					}
				}
			}
		}

		wantTrue(t, s.verifyEmail(t, tok), "verifyEmail") // no Authorization: the link is the proof
		if !s.emailVerified(t, ann.AccessToken) {
			t.Fatal("emailVerified is false after verifyEmail")
		}
		var verified int
		for _, e := range s.securityEvents(t, ann.AccessToken, nil).events() {
			if e.Type == "EMAIL_VERIFIED" {
				verified++
			}
		}
		if verified != 1 {
			t.Fatalf("securityEvents hold %d EMAIL_VERIFIED events, want 1", verified)
		}
		// A verified address is not mailed again.
		wantTrue(t, s.sendVerification(t, ann.AccessToken), "sendEmailVerification")
		if got := smtp.quiet(); len(got) != 1 {
			t.Fatalf("%d messages after asking again for a verified address, want 1", len(got))
		}
	})
}

func TestEmailVerification_UnusableTokensAreInvalidCode(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		cases := []struct {
			name string
			// token returns the token to present, given a signed-in user with an address and the
			// mail it gets; it may use the server first.
			token func(t *testing.T, user tokens, mailNo int) string
		}{
			{"Replayed", func(t *testing.T, u tokens, n int) string {
				wantTrue(t, s.sendVerification(t, u.AccessToken), "sendEmailVerification")
				tok := tokenIn(t, smtp.waitFor(t, n+1)[n])
				wantTrue(t, s.verifyEmail(t, tok), "verifyEmail")
				return tok
			}},
			{"Unknown", func(t *testing.T, u tokens, n int) string { return token.NewMailToken() }},
			{"Empty", func(t *testing.T, u tokens, n int) string { return "" }},
			{"TooShort", func(t *testing.T, u tokens, n int) string { return token.NewMailToken()[:42] }},
			{"TooLong", func(t *testing.T, u tokens, n int) string { return token.NewMailToken() + "A" }},
			{"NotBase64URL", func(t *testing.T, u tokens, n int) string { return strings.Repeat("!", token.MailTokenLength) }},
			{"WithSpace", func(t *testing.T, u tokens, n int) string { return " " + token.NewMailToken()[1:] }},
			{"VoidedByANewerOne", func(t *testing.T, u tokens, n int) string {
				wantTrue(t, s.sendVerification(t, u.AccessToken), "sendEmailVerification")
				older := tokenIn(t, smtp.waitFor(t, n+1)[n])
				wantTrue(t, s.sendVerification(t, u.AccessToken), "sendEmailVerification")
				smtp.waitFor(t, n+2)
				return older
			}},
			{"Expired", func(t *testing.T, u tokens, n int) string {
				wantTrue(t, s.sendVerification(t, u.AccessToken), "sendEmailVerification")
				tok := tokenIn(t, smtp.waitFor(t, n+1)[n])
				s.Clock.Advance(24*time.Hour + time.Second)
				return tok
			}},
		}
		for i, c := range cases {
			// One at a time: the cases share the SMTP server's count and the clock.
			u := s.registerWithEmail(t, "user"+string(rune('a'+i)), "user"+string(rune('a'+i))+"@example.com")
			n := len(smtp.messages())
			tok := c.token(t, u, n)
			before := s.countEvents(t, "EMAIL_VERIFIED")
			s.verifyEmail(t, tok).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
			if after := s.countEvents(t, "EMAIL_VERIFIED"); after != before {
				t.Fatalf("%s: a refused token recorded EMAIL_VERIFIED", c.name)
			}
			if c.name != "Replayed" {
				// A fresh token for the refresh of the access token after the clock moved.
				u = s.login(t, u.User.Username, "correct horse battery")
				if s.emailVerified(t, u.AccessToken) {
					t.Fatalf("%s: the address is verified", c.name)
				}
			}
		}
	})
}

func TestEmailVerification_ConcurrentUsesOfOneTokenSucceedOnce(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		wantTrue(t, s.sendVerification(t, ann.AccessToken), "sendEmailVerification")
		tok := tokenIn(t, smtp.waitFor(t, 1)[0])
		ok, invalid := tokenUses(t, inParallel(8, func() response { return s.verifyEmail(t, tok) }))
		if ok != 1 || invalid != 7 || s.countEvents(t, "EMAIL_VERIFIED") != 1 {
			t.Fatalf("%d succeeded, %d INVALID_CODE, %d events; want 1, 7, 1", ok, invalid, s.countEvents(t, "EMAIL_VERIFIED"))
		}
	})
}

func TestEmailVerification_AccountWithoutEmailIsBadUserInput(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		bob := s.signedInUser(t, "bob")
		e := s.sendVerification(t, bob.AccessToken).wantError(t, "BAD_USER_INPUT", "")
		if e.Extensions.Field != "email" {
			t.Fatalf("field %q, want email", e.Extensions.Field)
		}
		if got := smtp.quiet(); len(got) != 0 || s.count(t, "mail_tokens") != 0 || s.count(t, "river_job") != 0 {
			t.Fatalf("%d messages, %d tokens, %d jobs: want nothing", len(got), s.count(t, "mail_tokens"), s.count(t, "river_job"))
		}
	})
}

func TestEmailVerification_OnlyASignedInSessionMayAsk(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		s.sendVerification(t, "").wantError(t, "UNAUTHENTICATED", "MISSING_TOKEN")
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		key := s.createAPIKey(t, ann.AccessToken, "ci", nil)
		s.withKey(t, key.Secret, `mutation { sendEmailVerification }`).wantError(t, "FORBIDDEN", "")
		if got := smtp.quiet(); len(got) != 0 {
			t.Fatalf("%d messages", len(got))
		}
	})
}

func TestEmailVerification_RolledBackRequestSendsNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		// The token row is written after the message is queued, in the same transaction: a
		// failure there rolls the queued message back too.
		undo := fault(t, s, kind, "mail_tokens", "NEW.purpose = 'verify_email'")
		s.sendVerification(t, ann.AccessToken).wantError(t, "INTERNAL_SERVER_ERROR", "")
		if got := smtp.quiet(); len(got) != 0 || s.count(t, "river_job") != 0 {
			t.Fatalf("%d messages, %d jobs after a rolled-back request; want none", len(got), s.count(t, "river_job"))
		}
		undo()
		wantTrue(t, s.sendVerification(t, ann.AccessToken), "sendEmailVerification")
		if got := smtp.waitFor(t, 1); len(got) != 1 {
			t.Fatalf("%d messages, want 1", len(got))
		}
	})
}

func TestEmailVerification_PerAddressLimitIsTooManyRequests(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		limits := account.Limits{Counter: ratelimit.NewMemory(nil), MailPerAddress: 2}
		s, smtp := mailServer(t, kind, withRateLimits(limits))
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		wantTrue(t, s.sendVerification(t, ann.AccessToken), "sendEmailVerification")
		wantTrue(t, s.sendVerification(t, ann.AccessToken), "sendEmailVerification")
		e := s.sendVerification(t, ann.AccessToken).wantError(t, "TOO_MANY_REQUESTS", "")
		if e.Extensions.RetryAfter <= 0 || e.Extensions.RetryAfter > 3600 {
			t.Fatalf("retryAfter %d", e.Extensions.RetryAfter)
		}
		if got := smtp.quiet(); len(got) != 2 {
			t.Fatalf("%d messages, want 2", len(got))
		}
		// Another address has its own count.
		bob := s.registerWithEmail(t, "bob", "bob@example.com")
		wantTrue(t, s.sendVerification(t, bob.AccessToken), "sendEmailVerification")
	})
}
