package mfa_test

import (
	"encoding/base32"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"

	"gqlauth/mfa"
)

// RFC 6238 Appendix B: the SHA-1 vectors (secret "12345678901234567890", 8 digits, 30 s steps).
func TestCodeAt_RFC6238Vectors(t *testing.T) {
	secret := base32.StdEncoding.EncodeToString([]byte("12345678901234567890"))
	for _, c := range []struct {
		unix int64
		want string
	}{
		{59, "94287082"},
		{1111111109, "07081804"},
		{1111111111, "14050471"},
		{1234567890, "89005924"},
		{2000000000, "69279037"},
		{20000000000, "65353130"},
	} {
		got, err := mfa.CodeAt(secret, mfa.Step(time.Unix(c.unix, 0)), otp.DigitsEight, otp.AlgorithmSHA1)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("T=%d: got %s, want %s", c.unix, got, c.want)
		}
	}
}

func TestMatchTOTP_OneStepOfSkewEitherWayAndNeverAnAcceptedStep(t *testing.T) {
	secret, _, err := mfa.NewTOTP("gqlauth", "ann")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	step := mfa.Step(now)
	code := func(s int64) string {
		c, err := mfa.CodeAt(secret, s, otp.DigitsSix, otp.AlgorithmSHA1)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, c := range []struct {
		name    string
		step    int64
		after   int64
		wantOK  bool
		wantHit int64
	}{
		{"current", step, 0, true, step},
		{"one behind", step - 1, 0, true, step - 1},
		{"one ahead", step + 1, 0, true, step + 1},
		{"two behind", step - 2, 0, false, 0},
		{"two ahead", step + 2, 0, false, 0},
		{"accepted before", step, step, false, 0},
		{"older than the accepted step", step - 1, step, false, 0},
		{"later than the accepted step", step + 1, step, true, step + 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok := mfa.MatchTOTP(secret, code(c.step), now, c.after)
			if ok != c.wantOK || got != c.wantHit {
				t.Fatalf("got %d %v, want %d %v", got, ok, c.wantHit, c.wantOK)
			}
		})
	}
	for _, bad := range []string{"", "12345", "1234567", "12a456", " 123456"} {
		if _, ok := mfa.MatchTOTP(secret, bad, now, 0); ok {
			t.Errorf("%q matched", bad)
		}
	}
}

func TestNewTOTP_URIForAnAuthenticatorApp(t *testing.T) {
	secret, uri, err := mfa.NewTOTP("Acme Auth", "ann")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(secret)
	if err != nil || len(raw) != mfa.SecretSize {
		t.Fatalf("secret %q: %d bytes, %v", secret, len(raw), err)
	}
	for _, want := range []string{"otpauth://totp/Acme%20Auth:ann?", "issuer=Acme%20Auth", "secret=" + secret, "algorithm=SHA1", "digits=6", "period=30"} {
		if !strings.Contains(uri, want) {
			t.Errorf("uri %q lacks %q", uri, want)
		}
	}
}

func TestRecoveryCodes_TenDistinctOf60BitsInTheirNormalForm(t *testing.T) {
	codes := mfa.NewRecoveryCodes()
	if len(codes) != 10 {
		t.Fatalf("%d codes", len(codes))
	}
	seen := map[string]bool{}
	for _, c := range codes {
		normal, ok := mfa.NormalRecoveryCode(c)
		if !ok || len(normal) != 12 || seen[normal] {
			t.Fatalf("code %q: normal %q ok %v (12 base32 characters = 60 bits, distinct)", c, normal, ok)
		}
		seen[normal] = true
		for _, typed := range []string{strings.ToLower(c), strings.ReplaceAll(c, "-", ""), " " + strings.ReplaceAll(c, "-", " ") + " "} {
			if n, ok := mfa.NormalRecoveryCode(typed); !ok || n != normal {
				t.Errorf("%q: got %q %v, want %q", typed, n, ok, normal)
			}
		}
	}
	for _, bad := range []string{"", "ABCD-EFGH-JKL", "ABCD-EFGH-JKLMN", "ABCD-EFGH-JK1M", "123456"} {
		if _, ok := mfa.NormalRecoveryCode(bad); ok {
			t.Errorf("%q has a recovery code's shape", bad)
		}
	}
}
