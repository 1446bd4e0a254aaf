package mailer

import (
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Kind is what a message is about; each kind has its templates.
type Kind string

const (
	VerifyEmail   Kind = "verify_email"   // a link that verifies an address
	ResetPassword Kind = "reset_password" // a link that sets a new password
	SignInCode    Kind = "sign_in_code"   // a six-digit code that signs in
	// Security notices to the account's owner, each a "security notice" with its own sentence.
	PasswordChanged Kind = "password_changed"
	EmailChanged    Kind = "email_changed"
	MFAChanged      Kind = "mfa_changed"
	APIKeyCreated   Kind = "api_key_created"
)

// Message is one mail to queue. Link and Code are secrets: they are sealed in the outbox.
type Message struct {
	Kind Kind
	// To is the recipient, a bare address (no display name), at most 254 bytes.
	To string
	// Link is an absolute http(s) URL (verify_email and reset_password: required).
	Link string
	// Code is a code of digits (sign_in_code: required; notices: never).
	Code string
	// ExpiresIn is how long the link or code works (required with either).
	ExpiresIn time.Duration
	// Detail is an optional line a notice adds (such as the new address of an email change).
	Detail string
}

// MaxAddressLen is the longest address accepted (RFC 5321's path limit less the brackets).
const MaxAddressLen = 254

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

func (m Message) validate() error {
	if err := validAddress(m.To); err != nil {
		return invalid("recipient: %v", err)
	}
	needLink, needCode, noCode := false, false, false
	switch m.Kind {
	case VerifyEmail, ResetPassword:
		needLink = true
	case SignInCode:
		needCode = true
	case PasswordChanged, EmailChanged, MFAChanged, APIKeyCreated:
		noCode = true
	default:
		return invalid("unknown kind %q", m.Kind)
	}
	if needLink && m.Link == "" {
		return invalid("%s needs a link", m.Kind)
	}
	if m.Link != "" {
		if err := validLink(m.Link); err != nil {
			return invalid("link: %v", err)
		}
	}
	switch {
	case needCode && m.Code == "":
		return invalid("%s needs a code", m.Kind)
	case noCode && m.Code != "":
		return invalid("a notice carries no code")
	case m.Code != "" && (len(m.Code) < 4 || len(m.Code) > 12 || strings.Trim(m.Code, "0123456789") != ""):
		return invalid("a code is 4 to 12 digits")
	}
	if (m.Link != "" || m.Code != "") && (m.ExpiresIn <= 0) && !noCode {
		return invalid("a link or code needs its expiry")
	}
	if err := headerSafe(m.Detail, 200); err != nil {
		return invalid("detail: %v", err)
	}
	return nil
}

// headerSafe refuses what could end a header line or hide in one: CR, LF, NUL and every other
// control character, invalid UTF-8, and more than max bytes.
func headerSafe(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("longer than %d bytes", max)
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		switch {
		case r == '\r' || r == '\n':
			return errors.New("contains a line break")
		case r == 0:
			return errors.New("contains a NUL byte")
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029':
			return errors.New("contains a control character")
		}
	}
	return nil
}

// ValidAddress reports whether addr is a recipient Enqueue accepts, so that a flow can refuse an
// address before it knows whether any account has it.
func ValidAddress(addr string) error { return validAddress(addr) }

// validAddress accepts a bare address (local@domain) that net/mail parses back to itself.
func validAddress(addr string) error {
	if addr == "" {
		return errors.New("empty address")
	}
	if err := headerSafe(addr, MaxAddressLen); err != nil {
		return err
	}
	parsed, err := mail.ParseAddress(addr)
	if err != nil || parsed.Name != "" || parsed.Address != addr {
		return errors.New("not a plain email address")
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 || strings.ContainsAny(addr, " <>\"") {
		return errors.New("not a plain email address")
	}
	return nil
}

func validLink(link string) error {
	if err := headerSafe(link, 2048); err != nil {
		return err
	}
	if strings.ContainsAny(link, " \t") {
		return errors.New("contains white space")
	}
	u, err := url.Parse(link)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return errors.New("not an absolute http(s) URL")
	}
	return nil
}

// parseFrom checks MAIL_FROM: an RFC 5322 address, with or without a display name.
func parseFrom(from string) (*mail.Address, error) {
	if err := headerSafe(from, 320); err != nil {
		return nil, fmt.Errorf("MAIL_FROM: %w", err)
	}
	a, err := mail.ParseAddress(from)
	if err != nil {
		return nil, fmt.Errorf("MAIL_FROM: %q is not an RFC 5322 address such as \"App <no-reply@example.com>\"", from)
	}
	if err := validAddress(a.Address); err != nil {
		return nil, fmt.Errorf("MAIL_FROM: the address: %w", err)
	}
	return a, nil
}

// messageIDDomain is the right-hand side of the Message-IDs: the sender's domain when it is a
// plain dot-atom, else a name that cannot collide with a real one.
func messageIDDomain(addr string) string {
	d := strings.ToLower(addr[strings.LastIndexByte(addr, '@')+1:])
	for _, r := range d {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return "gqlauth.invalid"
		}
	}
	return d
}
