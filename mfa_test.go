package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"

	"gqlauth/mfa"
	"gqlauth/store/storetest"
)

// The running server (run, as go run . starts it), with MFA_REQUIRED_ROLES: the bootstrap admin
// must enrol before anything else, and introspection reports a session's level as it is now,
// raised by a step-up after the token was issued.
func TestMFA_RunningServerRequiresAdminsToEnrolAndIntrospectsTheLevelNow(t *testing.T) {
	for _, kind := range storetest.Kinds(t) {
		t.Run(string(kind), func(t *testing.T) {
			vars, _, _ := databaseVars(t, kind)
			base := start(t, t.TempDir(), append(vars, "JWT_SECRET", strings.Repeat("k", 32), "MFA_REQUIRED_ROLES", "admin",
				"APP_NAME", "Acme", "ADMIN_USERNAME", "root", "ADMIN_PASSWORD", "correct horse battery")...)
			login := func() string {
				return accessToken(t, graphql(t, base, "", `mutation { login(username: "root", password: "correct horse battery") { accessToken } }`), "login")
			}
			code := func(secret string, at time.Time) string {
				c, err := mfa.CodeAt(secret, mfa.Step(at), otp.DigitsSix, otp.AlgorithmSHA1)
				if err != nil {
					t.Fatal(err)
				}
				return c
			}
			root := login()
			if errs := fmt.Sprint(graphql(t, base, root, `mutation { createApiKey(name: "introspection") { secret } }`)["errors"]); !strings.Contains(errs, "MFA_REQUIRED") {
				t.Fatalf("an admin without a factor minted a key: %s", errs)
			}
			enrolment := graphql(t, base, root, `mutation { enrollTotp { secret uri } }`)["data"].(map[string]any)["enrollTotp"].(map[string]any)
			secret := enrolment["secret"].(string)
			if !strings.HasPrefix(enrolment["uri"].(string), "otpauth://totp/Acme:root?") {
				t.Fatalf("uri %v", enrolment["uri"])
			}
			graphql(t, base, root, `mutation { confirmTotp(code: "`+code(secret, time.Now())+`") }`)
			out := graphql(t, base, root, `mutation { createApiKey(name: "introspection") { secret } }`)
			key := out["data"].(map[string]any)["createApiKey"].(map[string]any)["secret"].(string)

			second := login()
			if r := introspect(t, base, "X-API-Key", key, second); r.body["active"] != true || r.body["aal"] != "aal1" || fmt.Sprint(r.body["amr"]) != "[pwd]" {
				t.Fatalf("before the step-up: %v", r.body)
			}
			// The next step's code: the confirmation's step was accepted already.
			out = graphql(t, base, second, `mutation { verifyMfa(code: "`+code(secret, time.Now().Add(mfa.Period*time.Second))+`") { aal } }`)
			if fmt.Sprint(out["data"]) != "map[verifyMfa:map[aal:AAL2]]" {
				t.Fatalf("verifyMfa: %v", out)
			}
			r := introspect(t, base, "X-API-Key", key, second) // the token from before the step-up
			amr, _ := r.body["amr"].([]any)
			if r.body["aal"] != "aal2" || !slices.Equal(amr, []any{"pwd", "otp", "mfa"}) {
				t.Fatalf("after the step-up: %v", r.body)
			}
		})
	}
}
