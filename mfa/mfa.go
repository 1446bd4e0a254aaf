// Package mfa computes second factors: RFC 6238 TOTP (new secrets, otpauth:// URIs, which time
// step a code belongs to), recovery codes (new ones, their normal form) and the passkey
// ceremonies (passkey.go). It holds no state and no rules: it must not talk SQL, import net/http,
// or decide who may do what — account keeps the rules and has the store remember what was
// accepted (the last time step, used codes, a ceremony's session data, a passkey's counter).
package mfa

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base32"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// The TOTP parameters (RFC 6238 with the defaults every authenticator app supports).
const (
	Digits = 6
	Period = 30 // seconds per time step
	// Skew is how many steps either side of the current one a code may belong to (clock drift,
	// and the seconds a person takes to type it).
	Skew = 1
	// SecretSize is the secret's length in bytes (160 bits, RFC 4226's recommendation for SHA-1).
	SecretSize = 20
)

// NewTOTP makes a new TOTP secret for account at issuer, and returns it in base32 (for typing
// into an app) and as an otpauth://totp/ URI (for a QR code).
func NewTOTP(issuer, account string) (secret, uri string, err error) {
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer: issuer, AccountName: account, Period: Period, SecretSize: SecretSize,
		Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1,
	})
	if err != nil {
		return "", "", err
	}
	return key.Secret(), key.URL(), nil
}

// Step is the RFC 6238 time step of t.
func Step(t time.Time) int64 { return t.Unix() / Period }

// CodeAt is the code of secret (base32) for time step step, with digits digits and alg (RFC
// 6238's test vectors use 8 digits and SHA-1, SHA-256, SHA-512; the factor itself uses Digits
// and SHA-1).
func CodeAt(secret string, step int64, digits otp.Digits, alg otp.Algorithm) (string, error) {
	return totp.GenerateCodeCustom(secret, time.Unix(step*Period, 0), totp.ValidateOpts{
		Period: Period, Digits: digits, Algorithm: alg,
	})
}

// IsTOTPCode reports whether code has the shape of a TOTP code: Digits decimal digits.
func IsTOTPCode(code string) bool {
	if len(code) != Digits {
		return false
	}
	for _, c := range code {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// MatchTOTP returns the latest time step within Skew of now that is later than after and whose
// code is code, and whether there is one. Every candidate step is computed and compared in
// constant time, so the answer takes as long whichever step (if any) matched. Steps up to after
// were accepted before: the caller remembers the latest accepted step and moves it forward with
// a conditional update, so no step is ever accepted twice.
func MatchTOTP(secret, code string, now time.Time, after int64) (int64, bool) {
	if !IsTOTPCode(code) {
		return 0, false
	}
	current := Step(now)
	var found int64
	ok := 0
	for step := current - Skew; step <= current+Skew; step++ {
		want, err := CodeAt(secret, step, otp.DigitsSix, otp.AlgorithmSHA1)
		if err != nil {
			return 0, false
		}
		match := subtle.ConstantTimeCompare([]byte(want), []byte(code)) & boolInt(step > after)
		if match == 1 {
			found = step // the loop goes up: the latest matching step wins
		}
		ok |= match
	}
	return found, ok == 1
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Recovery codes: RecoveryCodeCount of them, each RecoveryCodeChars base32 characters (5 bits
// each: 60 random bits), shown in groups of four ("ABCD-EFGH-JKLM").
const (
	RecoveryCodeCount = 10
	RecoveryCodeChars = 12
)

var recoveryEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewRecoveryCodes returns RecoveryCodeCount new recovery codes, as shown to the user.
func NewRecoveryCodes() []string {
	codes := make([]string, RecoveryCodeCount)
	for i := range codes {
		raw := make([]byte, 8) // 64 bits; 60 of them survive the cut to 12 characters
		rand.Read(raw)
		c := recoveryEncoding.EncodeToString(raw)[:RecoveryCodeChars]
		codes[i] = c[:4] + "-" + c[4:8] + "-" + c[8:]
	}
	return codes
}

// NormalRecoveryCode is the normal form of a recovery code as typed (any case, with or without
// the dashes, spaces around), and whether it has a recovery code's shape at all.
func NormalRecoveryCode(typed string) (string, bool) {
	c := strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(strings.TrimSpace(typed)))
	if len(c) != RecoveryCodeChars {
		return "", false
	}
	for _, r := range c {
		if !(r >= 'A' && r <= 'Z' || r >= '2' && r <= '7') {
			return "", false
		}
	}
	return c, true
}
