package graph_test

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gqlauth/account"
	"gqlauth/ratelimit"
	"gqlauth/store/storetest"
)

func (s *server) requestCode(t testing.TB, email string) response {
	t.Helper()
	return s.do(t, call{Query: `mutation($e: String!) { requestSignInCode(email: $e) }`, Variables: map[string]any{"e": email}})
}

func (s *server) signInWithCode(t testing.TB, email, code string) response {
	t.Helper()
	return s.do(t, call{Query: `mutation($e: String!, $c: String!) { signInWithCode(email: $e, code: $c) { ` + payloadFields + ` } }`,
		Variables: map[string]any{"e": email, "c": code}})
}

var codeInText = regexp.MustCompile(`(?m)^\s+(\d{6})\s*$`)

// mailedCode asks for a code for email and returns the code of the nth message (which must be
// to email).
func (s *server) mailedCode(t testing.TB, smtp *smtpServer, email string, n int) string {
	t.Helper()
	wantTrue(t, s.requestCode(t, email), "requestSignInCode")
	m := smtp.waitFor(t, n+1)[n]
	match := codeInText.FindStringSubmatch(m.Text)
	if len(m.To) != 1 || !strings.EqualFold(m.To[0], email) || match == nil || !strings.Contains(m.HTML, match[1]) {
		t.Fatalf("no code to %s in %+v", email, m)
	}
	return match[1]
}

// wrongCode is a well-formed code other than code.
func wrongCode(code string) string {
	if code == "000000" {
		return "000001"
	}
	return "000000"
}

func TestSignInCode_KnownAddressSignsInLikeLogin(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		code := s.mailedCode(t, smtp, "Ann@Example.com", 0)
		if !strings.Contains(smtp.messages()[0].Text, "10 minutes") {
			t.Fatalf("the message does not say the default lifetime:\n%s", smtp.messages()[0].Text)
		}
		// Only an HMAC is stored: no table holds the code.
		for _, table := range []string{"sign_in_codes", "river_job"} {
			rows, _ := s.DB.DumpTable(context.Background(), table)
			for _, row := range rows {
				for col, v := range row {
					if strings.Contains(v, code) && col != "id" {
						t.Fatalf("%s.%s holds the code in the clear", table, col)
					}
				}
			}
		}
		var p tokens
		s.signInWithCode(t, "ann@example.com", code).field(t, "signInWithCode", &p)
		if p.User.ID != ann.User.ID || p.TokenType != "Bearer" || p.ExpiresIn != 900 || p.RefreshToken == "" {
			t.Fatalf("payload %+v", p)
		}
		s.me(t, p.AccessToken).field(t, "me", &struct{}{})
		if r := s.refresh(t, p.RefreshToken); len(r.Errors) > 0 {
			t.Fatalf("refresh: %+v", r.Errors)
		}
		if !s.emailVerified(t, p.AccessToken) {
			t.Fatal("the code did not verify the address")
		}
		var detail string
		for _, e := range s.securityEvents(t, p.AccessToken, nil).events() {
			if e.Type == "SIGN_IN" && e.Detail != nil && strings.Contains(*e.Detail, "code") {
				detail = *e.Detail
			}
		}
		if detail == "" {
			t.Fatal("no SIGN_IN event whose detail says code")
		}
		// Used once.
		s.signInWithCode(t, "ann@example.com", code).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
	})
}

func TestSignInCode_UnknownAddressSignsUpWithAVerifiedAddress(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		code := s.mailedCode(t, smtp, "new.person@example.com", 0)
		var p tokens
		s.signInWithCode(t, "new.person@example.com", code).field(t, "signInWithCode", &p)
		if p.User.Role != "USER" || p.User.Email == nil || *p.User.Email != "new.person@example.com" || !s.emailVerified(t, p.AccessToken) {
			t.Fatalf("user %+v", p.User)
		}
		types := map[string]string{}
		for _, e := range s.securityEvents(t, p.AccessToken, nil).events() {
			if e.Detail != nil {
				types[e.Type] = *e.Detail
			}
		}
		if !strings.Contains(types["SIGN_UP"], "code") || !strings.Contains(types["SIGN_IN"], "code") {
			t.Fatalf("events %v; want SIGN_UP and SIGN_IN whose detail says code", types)
		}
	})
}

func TestSignInCode_UnknownAddressWithoutSignUpGetsNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind, withSignupDisabled())
		wantTrue(t, s.requestCode(t, "nobody@example.com"), "requestSignInCode")
		// No mail; a row with a hash no code has, so that a wrong code costs what it costs for a
		// known address.
		if got := smtp.quiet(); len(got) != 0 || s.count(t, "sign_in_codes") != 1 {
			t.Fatalf("%d messages, %d code rows; want no message and one unusable row", len(got), s.count(t, "sign_in_codes"))
		}
		s.signInWithCode(t, "nobody@example.com", "123456").wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		if s.count(t, "users") != 0 {
			t.Fatal("an account was created without sign-up")
		}
	})
}

func TestSignInCode_FiveWrongTriesKillTheCode(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		s.registerWithEmail(t, "ann", "ann@example.com")
		code := s.mailedCode(t, smtp, "ann@example.com", 0)
		// Concurrent wrong tries must all count: five at once, then the right code is dead.
		for _, r := range inParallel(5, func() response { return s.signInWithCode(t, "ann@example.com", wrongCode(code)) }) {
			r.wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		}
		s.signInWithCode(t, "ann@example.com", code).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		// Four wrong tries leave a new code alive.
		code = s.mailedCode(t, smtp, "ann@example.com", 1)
		for range 4 {
			s.signInWithCode(t, "ann@example.com", wrongCode(code)).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		}
		var p tokens
		s.signInWithCode(t, "ann@example.com", code).field(t, "signInWithCode", &p)
	})
}

func TestSignInCode_MalformedCodesCountNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		s.registerWithEmail(t, "ann", "ann@example.com")
		code := s.mailedCode(t, smtp, "ann@example.com", 0)
		before := s.snapshot(t)
		for _, bad := range []string{"", "12345", "1234567", "12a456", "abcdef", " 12345", "123456 ", "١٢٣٤٥٦", "12345\n"} {
			s.signInWithCode(t, "ann@example.com", bad).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		}
		if s.snapshot(t) != before {
			t.Fatal("a malformed code wrote something")
		}
		var p tokens
		s.signInWithCode(t, "ann@example.com", code).field(t, "signInWithCode", &p) // ten malformed tries counted nothing
	})
}

func TestSignInCode_ConcurrentRightTriesSignInOnce(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		s.registerWithEmail(t, "ann", "ann@example.com")
		code := s.mailedCode(t, smtp, "ann@example.com", 0)
		sessionsBefore := s.count(t, "sessions")
		ok, invalid := tokenUses(t, inParallel(8, func() response { return s.signInWithCode(t, "ann@example.com", code) }))
		if ok != 1 || invalid != 7 || s.count(t, "sessions") != sessionsBefore+1 {
			t.Fatalf("%d signed in, %d INVALID_CODE, %d new sessions; want 1, 7, 1", ok, invalid, s.count(t, "sessions")-sessionsBefore)
		}
	})
}

func TestSignInCode_NewerCodeVoidsOlderAndCodesExpire(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind, withMailConfig(func(c *account.MailConfig) { c.CodeTTL = 5 * time.Minute }))
		s.registerWithEmail(t, "ann", "ann@example.com")
		older := s.mailedCode(t, smtp, "ann@example.com", 0)
		newer := s.mailedCode(t, smtp, "ann@example.com", 1)
		if older != newer {
			s.signInWithCode(t, "ann@example.com", older).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		}
		if !strings.Contains(smtp.messages()[1].Text, "5 minutes") {
			t.Fatal("the message does not say SIGN_IN_CODE_TTL")
		}
		s.Clock.Advance(5*time.Minute + time.Second)
		s.signInWithCode(t, "ann@example.com", newer).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
	})
}

func TestSignInCode_DisabledAccountIsRefused(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		root := s.signedInAdmin(t)
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		s.setDisabled(t, root.AccessToken, ann.User.ID, true)
		code := s.mailedCode(t, smtp, "ann@example.com", 0)
		s.signInWithCode(t, "ann@example.com", code).wantError(t, "FORBIDDEN", "ACCOUNT_DISABLED")
		s.signInWithCode(t, "ann@example.com", wrongCode(code)).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
	})
}

func TestSignInCode_BadInputWritesAndSendsNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		s.registerWithEmail(t, "ann", "ann@example.com")
		before := s.snapshot(t)
		for _, addr := range []string{
			"", " ", "ann", "ann@", "@example.com", "ann@@example.com", " ann@example.com", "ann@example.com ",
			"ann@example.com\r\nBcc: eve@example.com", "ann@example.com\n", "ann@example.com\x00", "Ann <ann@example.com>",
			strings.Repeat("a", 243) + "@example.com",
		} {
			for _, r := range []response{s.requestCode(t, addr), s.signInWithCode(t, addr, "123456")} {
				if e := r.wantError(t, "BAD_USER_INPUT", ""); e.Extensions.Field != "email" {
					t.Fatalf("%q: field %q", addr, e.Extensions.Field)
				}
			}
		}
		if got := smtp.quiet(); len(got) != 0 || s.snapshot(t) != before || s.count(t, "sign_in_codes") != 0 || s.count(t, "river_job") != 0 {
			t.Fatalf("%d messages, %d codes, %d jobs; want nothing", len(got), s.count(t, "sign_in_codes"), s.count(t, "river_job"))
		}
	})
}

func TestSignInCode_UnverifiedAccountIsVerifiedAndItsOtherSessionsEnd(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		// Someone registered the address without owning it; the mailbox's owner signs in with a code.
		squatter := s.registerWithEmail(t, "squatter", "ann@example.com")
		code := s.mailedCode(t, smtp, "ann@example.com", 0)
		var p tokens
		s.signInWithCode(t, "ann@example.com", code).field(t, "signInWithCode", &p)
		s.me(t, squatter.AccessToken).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		if !s.emailVerified(t, p.AccessToken) {
			t.Fatal("the address is not verified")
		}
		if types := eventTypes(s.securityEvents(t, p.AccessToken, nil)); !slices.Contains(types, "SIGN_IN") {
			t.Fatalf("events %v", types)
		}
	})
}

func TestSignInCode_OverThePerAddressLimitAnswersTrueAndSendsNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind, withRateLimits(account.Limits{Counter: ratelimit.NewMemory(nil), MailPerAddress: 2}))
		s.registerWithEmail(t, "ann", "ann@example.com")
		for _, addr := range []string{"ann@example.com", "nobody@example.com"} { // known or not, the same
			for range 4 {
				wantTrue(t, s.requestCode(t, addr), "requestSignInCode")
			}
		}
		smtp.waitFor(t, 4)
		if got := smtp.quiet(); len(got) != 4 || s.jobs(t, "gqlauth.mail_request") != 4 {
			t.Fatalf("%d messages, %d requests; want 2 per address", len(got), s.jobs(t, "gqlauth.mail_request"))
		}
	})
}
