package graph_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vektah/gqlparser/v2/ast"

	"gqlauth/account"
	"gqlauth/mfa"
	"gqlauth/ratelimit"
	"gqlauth/store/storetest"
)

// Attacks on the second factors (§12), as tests.

// codeOutcomes counts verifyMfa responses: "ok", or the error's code/reason.
func codeOutcomes(rs []response) map[string]int {
	got := map[string]int{}
	for _, r := range rs {
		key := "ok"
		if len(r.Errors) > 0 {
			key = r.Errors[0].Extensions.Code + "/" + r.Errors[0].Extensions.Reason
		}
		got[key]++
	}
	return got
}

func TestTOTP_AnAcceptedStepIsNeverAcceptedAgain(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		secret, _ := s.enrolTotp(t, ann.AccessToken)
		code := totpCode(t, secret, s.Clock.Now())

		first := s.loginMFA(t, "ann")
		if r := s.verifyMfa(t, first.AccessToken, code); len(r.Errors) > 0 {
			t.Fatalf("first use: %+v", r.Errors)
		}
		// Later, on another session: the same code is refused, also within its skew window.
		s.Clock.Advance(10 * time.Second)
		second := s.loginMFA(t, "ann")
		s.verifyMfa(t, second.AccessToken, code).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		// An earlier step's code (within the skew) is refused too: the accepted step only moves on.
		s.verifyMfa(t, second.AccessToken, totpCode(t, secret, s.Clock.Now().Add(-mfa.Period*time.Second))).
			wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		// The next step's code works.
		s.Clock.Advance(mfa.Period * time.Second)
		if r := s.verifyMfa(t, second.AccessToken, totpCode(t, secret, s.Clock.Now())); len(r.Errors) > 0 {
			t.Fatalf("next step: %+v", r.Errors)
		}
		if n := s.countEvents(t, "MFA_FAILED"); n != 2 {
			t.Fatalf("%d MFA_FAILED events, want 2", n)
		}
	})
}

func TestTOTP_AStepAcceptedOnOneInstanceIsRefusedOnAnother(t *testing.T) {
	for _, kind := range storetest.Kinds(t) {
		t.Run(string(kind), func(t *testing.T) {
			a, b := twoInstances(t, kind)
			ann := a.register(t, "ann", password)
			secret, _ := a.enrolTotp(t, ann.AccessToken)
			code := totpCode(t, secret, a.Clock.Now())
			if r := a.verifyMfa(t, a.loginMFA(t, "ann").AccessToken, code); len(r.Errors) > 0 {
				t.Fatalf("instance a: %+v", r.Errors)
			}
			b.verifyMfa(t, b.loginMFA(t, "ann").AccessToken, code).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		})
	}
}

func TestTOTP_ConcurrentUsesOfOneCodeOnTwoInstancesExactlyOneSucceeds(t *testing.T) {
	for _, kind := range storetest.Kinds(t) {
		t.Run(string(kind), func(t *testing.T) {
			a, b := twoInstances(t, kind)
			ann := a.register(t, "ann", password)
			secret, _ := a.enrolTotp(t, ann.AccessToken)
			const n = 8
			servers := make([]*server, n)
			sessions := make([]string, n)
			for i := range n {
				servers[i] = []*server{a, b}[i%2]
				sessions[i] = servers[i].loginMFA(t, "ann").AccessToken
			}
			code := totpCode(t, secret, a.Clock.Now())
			next := make(chan int, n)
			for i := range n {
				next <- i
			}
			rs := inParallel(n, func() response {
				i := <-next
				return servers[i].verifyMfa(t, sessions[i], code)
			})
			if got := codeOutcomes(rs); got["ok"] != 1 || got["UNAUTHENTICATED/INVALID_CODE"] != n-1 {
				t.Fatalf("outcomes %v: want exactly one ok, the rest INVALID_CODE", got)
			}
			if got := a.countEvents(t, "MFA_VERIFIED"); got != 1 {
				t.Fatalf("%d MFA_VERIFIED events, want 1", got)
			}
		})
	}
}

func TestRecoveryCode_WorksOnceAlsoUnderConcurrentUse(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		_, codes := s.enrolTotp(t, ann.AccessToken)
		const n = 8
		sessions := make(chan string, n)
		for range n {
			sessions <- s.loginMFA(t, "ann").AccessToken
		}
		code := strings.ToLower(codes[3]) // as typed: any case
		rs := inParallel(n, func() response { return s.verifyMfa(t, <-sessions, code) })
		if got := codeOutcomes(rs); got["ok"] != 1 || got["UNAUTHENTICATED/INVALID_CODE"] != n-1 {
			t.Fatalf("outcomes %v: want exactly one ok, the rest INVALID_CODE", got)
		}
		var p mfaPayload
		for _, r := range rs {
			if len(r.Errors) == 0 {
				r.field(t, "verifyMfa", &p)
			}
		}
		if p.AAL != "AAL2" || !slices.Equal(toStrings(parseUnverified(t, p.AccessToken)["amr"]), []string{"pwd", "kba", "mfa"}) {
			t.Fatalf("after a recovery code: aal %s amr %v", p.AAL, parseUnverified(t, p.AccessToken)["amr"])
		}
		var me struct {
			Mfa struct{ RecoveryCodesLeft int }
		}
		s.query(t, p.AccessToken, `{ me { mfa { recoveryCodesLeft } } }`, nil).field(t, "me", &me)
		if me.Mfa.RecoveryCodesLeft != 9 || s.countEvents(t, "RECOVERY_CODE_USED") != 1 {
			t.Fatalf("%d codes left, %d RECOVERY_CODE_USED events; want 9 and 1", me.Mfa.RecoveryCodesLeft, s.countEvents(t, "RECOVERY_CODE_USED"))
		}
	})
}

func TestVerifyMfa_GuessingIsLimitedAndRecorded(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		clk := &clock{now: time.Now().UTC()}
		s := newServerOn(t, storetest.Open(t, kind), clk, withRateLimits(account.Limits{
			Counter: ratelimit.NewMemory(clk.Now), FailuresPerUser: 3, UserWindow: 15 * time.Minute,
		}))
		ann := s.register(t, "ann", password)
		secret, _ := s.enrolTotp(t, ann.AccessToken)
		first := s.loginMFA(t, "ann")
		right := totpCode(t, secret, s.Clock.Now())
		wrong := fmt.Sprintf("%06d", (mustAtoi(t, right)+1)%1_000_000)
		for range 3 {
			s.verifyMfa(t, first.AccessToken, wrong).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		}
		// Over the limit: refused before the code is checked, even the right one.
		s.verifyMfa(t, first.AccessToken, right).wantError(t, "TOO_MANY_REQUESTS", "")
		if n := s.countEvents(t, "MFA_FAILED"); n != 3 {
			t.Fatalf("%d MFA_FAILED events, want 3", n)
		}
		if n := s.countEvents(t, "RATE_LIMITED"); n != 1 {
			t.Fatalf("%d RATE_LIMITED events, want 1", n)
		}
		// The window ends: the right code works.
		s.Clock.Advance(16 * time.Minute)
		if r := s.verifyMfa(t, s.loginMFA(t, "ann").AccessToken, totpCode(t, secret, s.Clock.Now())); len(r.Errors) > 0 {
			t.Fatalf("after the window: %+v", r.Errors)
		}
	})
}

func mustAtoi(t testing.TB, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// aal1Fields are the root fields that one factor may call on an account with a second factor:
// the second step itself and what it needs. A new field joins this list deliberately.
var aal1Fields = []string{"me", "logout", "verifyMfa", "reauthenticate", "beginPasskeyVerification", "finishPasskeyVerification"}

// fieldDocument is a document calling the root field f of op with placeholder arguments.
func fieldDocument(op string, f *ast.FieldDefinition) string {
	var args []string
	for _, a := range f.Arguments {
		if a.Type.NonNull && a.DefaultValue == nil {
			args = append(args, a.Name+": "+placeholder(a.Type))
		}
	}
	doc := op + " { " + f.Name
	if len(args) > 0 {
		doc += "(" + strings.Join(args, ", ") + ")"
	}
	if def := schema.Types[f.Type.Name()]; def.Kind == ast.Object {
		doc += " { __typename }"
	}
	return doc + " }"
}

func TestMFA_AnAAL1SessionOnEveryGuardedField(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		s.enrolTotp(t, ann.AccessToken)
		for op, root := range map[string]*ast.Definition{"query": schema.Query, "mutation": schema.Mutation} {
			for _, f := range root.Fields {
				auth := f.Directives.ForName("auth")
				if auth == nil || strings.HasPrefix(f.Name, "__") {
					continue
				}
				role, aal := "USER", ""
				if a := auth.Arguments.ForName("role"); a != nil {
					role = a.Value.Raw
				}
				if a := auth.Arguments.ForName("aal"); a != nil {
					aal = a.Value.Raw
				}
				t.Run(f.Name, func(t *testing.T) {
					session := s.loginMFA(t, "ann") // a fresh AAL1 session: logout ends one
					r := s.do(t, call{Query: fieldDocument(op, f), Token: session.AccessToken})
					var reason, requiredAal string
					if len(r.Errors) > 0 {
						reason, requiredAal = r.Errors[0].Extensions.Reason, r.Errors[0].Extensions.RequiredAal
					}
					switch {
					case role == "ADMIN":
						if reason != "INSUFFICIENT_ROLE" {
							t.Fatalf("%s: %+v, want INSUFFICIENT_ROLE", f.Name, r.Errors)
						}
					case aal == "AAL1":
						if !slices.Contains(aal1Fields, f.Name) {
							t.Fatalf("%s is aal: AAL1 but not among the fields one factor may call", f.Name)
						}
						if reason == "MFA_REQUIRED" {
							t.Fatalf("%s (aal: AAL1) refused at AAL1: %+v", f.Name, r.Errors)
						}
					default:
						if reason != "MFA_REQUIRED" || requiredAal != "AAL2" {
							t.Fatalf("%s (aal %q) at AAL1: %+v, want FORBIDDEN/MFA_REQUIRED requiredAal AAL2", f.Name, aal, r.Errors)
						}
					}
				})
			}
		}
	})
}

func TestMFA_ASocketAtAAL1RunsOnlyAAL1Operations(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		secret, _ := s.enrolTotp(t, ann.AccessToken)
		first := s.loginMFA(t, "ann")
		sock, _ := s.dialSocket(t, "", bearer(first.AccessToken))
		sock.acked(t)

		results(t, sock.operation(t, "1", `query { sessions { id } }`, nil))[0].wantError(t, "FORBIDDEN", "MFA_REQUIRED")
		results(t, sock.operation(t, "2", `subscription { securityEvents { type } }`, nil))[0].wantError(t, "FORBIDDEN", "MFA_REQUIRED")
		results(t, sock.operation(t, "3", `mutation { enrollTotp { uri } }`, nil))[0].wantError(t, "FORBIDDEN", "MFA_REQUIRED")
		if r := results(t, sock.operation(t, "4", `query { me { username } }`, nil))[0]; len(r.Errors) > 0 {
			t.Fatalf("me at AAL1: %+v", r.Errors)
		}
		// The session steps up (over HTTP): the socket's next operation sees it.
		if r := s.verifyMfa(t, first.AccessToken, totpCode(t, secret, s.Clock.Now())); len(r.Errors) > 0 {
			t.Fatal(r.Errors)
		}
		if r := results(t, sock.operation(t, "5", `query { sessions { id } }`, nil))[0]; len(r.Errors) > 0 {
			t.Fatalf("after the step-up: %+v", r.Errors)
		}
	})
}

func TestReauth_AnExpiredWindowCannotMintAKey(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind, withMFA(account.MFAConfig{ReauthWindow: 10 * time.Minute}))
		ann := s.register(t, "ann", password)
		// The access token is still valid (15 min) but its session signed in 11 minutes ago.
		s.Clock.Advance(11 * time.Minute)
		createKey := `mutation { createApiKey(name: "ci") { secret } }`
		s.do(t, call{Query: createKey, Token: ann.AccessToken}).wantError(t, "FORBIDDEN", "REAUTHENTICATION_REQUIRED")
		s.do(t, call{Query: `mutation { enrollTotp { uri } }`, Token: ann.AccessToken}).wantError(t, "FORBIDDEN", "REAUTHENTICATION_REQUIRED")
		s.do(t, call{Query: `mutation { setPassword(newPassword: "another long one") }`, Token: ann.AccessToken}).wantError(t, "FORBIDDEN", "REAUTHENTICATION_REQUIRED")
		if n := s.count(t, "api_keys"); n != 0 {
			t.Fatalf("%d keys minted", n)
		}
		reauth := `mutation($p: String!) { reauthenticate(password: $p) { aal } }`
		s.do(t, call{Query: reauth, Variables: map[string]any{"p": "wrong password!"}, Token: ann.AccessToken}).
			wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		s.query(t, ann.AccessToken, reauth, map[string]any{"p": password})
		s.query(t, ann.AccessToken, createKey, nil)
	})
}

func TestPasswordGrant_RefusedForAUserWithASecondFactor(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		grant := func() (int, string) {
			res, err := http.PostForm(s.URL+"/oauth/token", url.Values{"grant_type": {"password"}, "username": {"ann"}, "password": {password}})
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var body map[string]any
			if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			return res.StatusCode, fmt.Sprint(body["error"], ": ", body["error_description"])
		}
		if status, _ := grant(); status != 200 {
			t.Fatalf("without a factor: %d", status)
		}
		s.enrolTotp(t, ann.AccessToken)
		sessions := s.count(t, "sessions")
		status, answer := grant()
		if status != 400 || !strings.HasPrefix(answer, "invalid_grant: a second factor is required") {
			t.Fatalf("with a factor: %d %s", status, answer)
		}
		if n := s.count(t, "sessions"); n != sessions {
			t.Fatalf("the refused grant started a session (%d → %d)", sessions, n)
		}
	})
}
