package graph_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"gqlauth/account"
	"gqlauth/mfa"
	"gqlauth/mfa/softauthn"
	"gqlauth/ratelimit"
	"gqlauth/store/storetest"
	"gqlauth/web"
)

// §5/§12: a user's second-factor failures have a ceiling over all clients together
// (RATE_LIMIT_SECOND_FACTOR_FAILURES) that no client is exempt from, and a password alone does
// not make a client known.

const secondFactorCeiling = 10

// secondFactorServer is lockoutServer with only the ceiling of second-factor failures (and a
// per-client limit high enough not to matter), on the database kind.
func secondFactorServer(t *testing.T, kind storetest.Kind, l limiterCase) *server {
	t.Helper()
	proxies, _ := web.ParseProxies("127.0.0.1")
	return newServerOn(t, storetest.Open(t, kind), l.clock, withTrustedProxies(proxies), withRateLimits(account.Limits{
		Counter: l.counter, FailuresPerUser: 1000, UserWindow: l.window, SecondFactorFailures: secondFactorCeiling,
	}))
}

// eachSecondFactorCase runs test on each database and counter with a secondFactorServer and the
// user ann (password), whose TOTP secret it passes.
func eachSecondFactorCase(t *testing.T, test func(t *testing.T, s *server, l limiterCase, secret string)) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		eachCounter(t, func(t *testing.T, l limiterCase) {
			s := secondFactorServer(t, kind, l)
			ann := s.register(t, "ann", password)
			secret, _ := s.enrolTotp(t, ann.AccessToken)
			test(t, s, l, secret)
		})
	})
}

// verifyFrom sends verifyMfa with code on the session of token from client ip.
func (s *server) verifyFrom(t testing.TB, ip, token, code string) response {
	t.Helper()
	return s.do(t, call{Query: `mutation($c: String!) { verifyMfa(code: $c) { aal } }`, Variables: map[string]any{"c": code},
		Token: token, Header: http.Header{"X-Forwarded-For": {ip}}})
}

// wrongCodes hands out six-digit codes that are not valid for secret around now.
func wrongCodes(t testing.TB, secret string, now time.Time) func() string {
	valid := map[string]bool{}
	for _, d := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
		valid[totpCode(t, secret, now.Add(d))] = true
	}
	next := 0
	return func() string {
		for {
			code := fmt.Sprintf("%06d", next)
			next++
			if !valid[code] {
				return code
			}
		}
	}
}

// The attack: a password thief signs in from many clients (each /64 is one), which used to make
// each client known with the password alone, and guesses codes from each. The password's
// all-clients ceiling must hold: a password does not make a client known to a user with a second
// factor.
func TestSecondFactor_PasswordAloneDoesNotMakeAClientKnown(t *testing.T) {
	clk := &clock{now: time.Now().UTC()}
	s := lockoutServer(t, limiterCase{counter: ratelimit.NewMemory(clk.Now), clock: clk, window: 15 * time.Minute}, 5, 20)
	ann := s.register(t, "ann", "correct horse battery")
	secret, _ := s.enrolTotp(t, ann.AccessToken)
	wrong := wrongCodes(t, secret, s.Clock.Now())
	thieves := map[string]string{}
	for i := range 15 {
		ip := fmt.Sprintf("203.0.113.%d", i+1)
		var thief tokens
		s.loginFrom(t, ip, "ann", "correct horse battery").field(t, "login", &thief)
		thieves[ip] = thief.AccessToken
	}
	evaluated := 0
	for ip, token := range thieves {
		for range 5 {
			if r := s.verifyFrom(t, ip, token, wrong()); len(r.Errors) == 1 && r.Errors[0].Extensions.Reason == "INVALID_CODE" {
				evaluated++
			}
		}
	}
	if evaluated > 20 {
		t.Fatalf("%d wrong TOTP codes were checked; the all-clients ceiling is 20", evaluated)
	}
}

// Even from clients the owner really signed in from (password and code), a thief with the
// password gets RATE_LIMIT_SECOND_FACTOR_FAILURES wrong codes in all, then TOO_MANY_REQUESTS
// everywhere (the owner too) until the window ends; then the owner's right code works.
func TestSecondFactor_KnownClientsDoNotLiftTheCeilingOnGuesses(t *testing.T) {
	eachSecondFactorCase(t, func(t *testing.T, s *server, l limiterCase, secret string) {
		ips := make([]string, 15)
		for i := range ips {
			ips[i] = fmt.Sprintf("2001:db8:%x::1", i+1)
			var half tokens
			s.loginFrom(t, ips[i], "ann", password).field(t, "login", &half)
			s.verifyFrom(t, ips[i], half.AccessToken, totpCode(t, secret, s.Clock.Now())).field(t, "verifyMfa", new(any))
			s.Clock.Advance(mfa.Period * time.Second)
		}
		wrong := wrongCodes(t, secret, s.Clock.Now())
		evaluated, refused := 0, 0
		for _, ip := range ips {
			var thief tokens
			s.loginFrom(t, ip, "ann", password).field(t, "login", &thief)
			for range 5 {
				r := s.verifyFrom(t, ip, thief.AccessToken, wrong())
				switch {
				case len(r.Errors) == 1 && r.Errors[0].Extensions.Reason == "INVALID_CODE":
					evaluated++
				case len(r.Errors) == 1 && r.Errors[0].Extensions.Code == "TOO_MANY_REQUESTS":
					refused++
				default:
					t.Fatalf("a wrong code from %s: %+v", ip, r)
				}
			}
		}
		if evaluated != secondFactorCeiling || refused != 75-secondFactorCeiling {
			t.Fatalf("%d wrong codes checked and %d refused; want %d checked", evaluated, refused, secondFactorCeiling)
		}
		// The owner, from a known client, is refused within the window, and the lock-out is
		// recorded once.
		var own tokens
		s.loginFrom(t, ips[0], "ann", password).field(t, "login", &own)
		s.verifyFrom(t, ips[0], own.AccessToken, totpCode(t, secret, s.Clock.Now())).wantError(t, "TOO_MANY_REQUESTS", "")
		if n := s.countEvents(t, "RATE_LIMITED"); n != 1 {
			t.Fatalf("%d RATE_LIMITED events; want 1", n)
		}
		if l.afterWindow == nil {
			return
		}
		l.afterWindow()
		s.loginFrom(t, ips[0], "ann", password).field(t, "login", &own)
		s.verifyFrom(t, ips[0], own.AccessToken, totpCode(t, secret, s.Clock.Now())).field(t, "verifyMfa", new(any))
	})
}

// Parallel wrong codes each hold a place before any is checked: exactly the ceiling's worth are
// checked, the rest refused.
func TestSecondFactor_ParallelFailuresAreCountedExactly(t *testing.T) {
	eachSecondFactorCase(t, func(t *testing.T, s *server, l limiterCase, secret string) {
		half := s.loginMFA(t, "ann")
		wrong := wrongCodes(t, secret, s.Clock.Now())
		const n = 3 * secondFactorCeiling
		codes := make([]string, n)
		for i := range codes {
			codes[i] = wrong()
		}
		var mu sync.Mutex
		count := map[string]int{}
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				r := s.verifyFrom(t, fmt.Sprintf("198.51.100.%d", i+1), half.AccessToken, codes[i])
				key := "ok"
				if len(r.Errors) > 0 {
					key = r.Errors[0].Extensions.Code + "/" + r.Errors[0].Extensions.Reason
				}
				mu.Lock()
				count[key]++
				mu.Unlock()
			})
		}
		wg.Wait()
		if count["UNAUTHENTICATED/INVALID_CODE"] != secondFactorCeiling || count["TOO_MANY_REQUESTS/"] != n-secondFactorCeiling {
			t.Fatalf("answers %v; want %d INVALID_CODE and the rest TOO_MANY_REQUESTS", count, secondFactorCeiling)
		}
	})
}

// Wrong reauthenticate passwords count toward the same ceiling (a stolen session guessing the
// password), and a right password does not clear it: after the ceiling's worth, the right code
// of verifyMfa is refused too.
func TestSecondFactor_WrongReauthenticationsCountTowardTheCeiling(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		clk := &clock{now: time.Now().UTC()}
		s := secondFactorServer(t, kind, limiterCase{counter: ratelimit.NewMemory(clk.Now), clock: clk, window: 15 * time.Minute})
		ann := s.register(t, "ann", password)
		secret, _ := s.enrolTotp(t, ann.AccessToken)
		half := s.loginMFA(t, "ann")
		reauth := `mutation($p: String!) { reauthenticate(password: $p) { aal } }`
		for i := range secondFactorCeiling {
			s.do(t, call{Query: reauth, Variables: map[string]any{"p": fmt.Sprintf("wrong password %d", i)}, Token: half.AccessToken}).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		}
		s.do(t, call{Query: reauth, Variables: map[string]any{"p": password}, Token: half.AccessToken}).wantError(t, "TOO_MANY_REQUESTS", "")
		s.verifyMfa(t, half.AccessToken, totpCode(t, secret, s.Clock.Now())).wantError(t, "TOO_MANY_REQUESTS", "")
	})
}

// Refused passkey step-ups count toward the same ceiling: past it, the right passkey is refused
// too until the window ends.
func TestSecondFactor_RefusedPasskeyStepUpsCountTowardTheCeiling(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		clk := &clock{now: time.Now().UTC()}
		l := limiterCase{counter: ratelimit.NewMemory(clk.Now), clock: clk, window: 15 * time.Minute}
		s := secondFactorServer(t, kind, l)
		_, auth := withPasskey(t, s)
		half := s.loginMFA(t, "ann")
		for range secondFactorCeiling {
			s.passkeyStepUp(t, half.AccessToken, auth, softauthn.WithOrigin("https://evil.example")).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		}
		s.passkeyStepUp(t, half.AccessToken, auth).wantError(t, "TOO_MANY_REQUESTS", "")
		clk.Advance(l.window + time.Second)
		atAAL2(t, s.passkeyStepUp(t, s.loginMFA(t, "ann").AccessToken, auth), "finishPasskeyVerification")
	})
}

// The failure that reaches the ceiling mails the owner (verified address) once: the failures
// past it, refused, mail nothing more.
func TestSecondFactor_TheOwnerIsMailedOncePerLockOut(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		clk := &clock{now: time.Now().UTC()}
		s, smtp := mailServer(t, kind, withRateLimits(account.Limits{
			Counter: ratelimit.NewMemory(clk.Now), FailuresPerUser: 1000, UserWindow: 15 * time.Minute, SecondFactorFailures: secondFactorCeiling,
		}))
		ann := s.verifiedUser(t, smtp, "ann", "ann@example.com", 0)
		secret, _ := s.enrolTotp(t, ann.AccessToken)
		before := len(smtp.quiet())
		half := s.loginMFA(t, "ann")
		wrong := wrongCodes(t, secret, s.Clock.Now())
		for range 2 * secondFactorCeiling {
			s.verifyMfa(t, half.AccessToken, wrong())
		}
		msgs := smtp.quiet()
		if len(msgs) != before+1 {
			t.Fatalf("%d messages after the lock-out, want one more than %d", len(msgs), before)
		}
		if n := msgs[len(msgs)-1]; n.To[0] != "ann@example.com" || !strings.Contains(n.Text, "refused 10 times") {
			t.Fatalf("notice to %v: %s", n.To, n.Text)
		}
	})
}
