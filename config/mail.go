package config

import (
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Mail is the configuration of the outbox (mailer) and of the links it mails.
type Mail struct {
	SMTPURL   string // empty: nothing is sent (see DevInbox)
	From      string // MAIL_FROM, required with SMTPURL
	AppName   string // named in every message
	Templates string // directory of templates that replace the embedded ones; empty: none
	// DevInbox, without SMTPURL, keeps every message in the development inbox (GET /dev/mail).
	DevInbox bool
	// LinkURL is the base of mailed links (EMAIL_LINK_URL, else <PUBLIC_URL>/, else
	// http://localhost:<PORT>/), never the request's Host.
	LinkURL string
	// VerifyTTL is how long an address verification link works.
	VerifyTTL time.Duration
	// ResetTTL is how long a password reset link works (PASSWORD_RESET_TTL).
	ResetTTL time.Duration
	// CodeTTL is how long a sign-in code works (SIGN_IN_CODE_TTL).
	CodeTTL time.Duration
	// VerificationRequired: register needs an address, and no one signs in with a password to an
	// account whose address is not verified (EMAIL_VERIFICATION_REQUIRED).
	VerificationRequired bool
	// PerAddress is how many messages one address may be sent per hour (0: no limit).
	PerAddress int
	// LinkURLGuessed: neither EMAIL_LINK_URL nor PUBLIC_URL is set; the server logs it at start.
	LinkURLGuessed bool
}

// DevInboxServed reports whether GET /dev/mail is served: the inbox is on and no SMTP server is
// set.
func (m Mail) DevInboxServed() bool { return m.SMTPURL == "" && m.DevInbox }

// loadMail reads the mail variables. The SMTP URL, the sender and the templates are checked in
// full by mailer.New at start (with the same variable names); here, what can be told without it.
func loadMail(get func(name, def string) string, boolean func(name, def string) bool, publicURL string, port int) (Mail, error) {
	devInbox := "true"
	if get("DATABASE_URL", "") != "" {
		devInbox = "false"
	}
	m := Mail{
		SMTPURL:   get("SMTP_URL", ""),
		From:      get("MAIL_FROM", ""),
		AppName:   get("APP_NAME", "gqlauth"),
		Templates: get("MAIL_TEMPLATES", ""),
		DevInbox:  boolean("MAIL_DEV_INBOX", devInbox),
		LinkURL:   get("EMAIL_LINK_URL", ""),
	}
	if m.SMTPURL != "" {
		// The URL may hold a password: the errors never repeat it.
		u, err := url.Parse(m.SMTPURL)
		switch {
		case err != nil:
			return m, errors.New("SMTP_URL: not a valid URL (smtp://[user:pass@]host[:port] or smtps://…)")
		case u.Scheme != "smtp" && u.Scheme != "smtps":
			return m, errors.New("SMTP_URL: the scheme must be smtp:// (STARTTLS) or smtps:// (implicit TLS)")
		case u.Hostname() == "":
			return m, errors.New("SMTP_URL: no host")
		}
		if m.From == "" {
			return m, errors.New("MAIL_FROM: required with SMTP_URL, an address such as \"App <no-reply@example.com>\"")
		}
	}
	if m.From != "" {
		if _, err := mail.ParseAddress(m.From); err != nil || strings.ContainsAny(m.From, "\r\n\x00") {
			return m, fmt.Errorf("MAIL_FROM: %q is not an RFC 5322 address such as \"App <no-reply@example.com>\"", m.From)
		}
	}
	if len(m.AppName) > 100 || strings.IndexFunc(m.AppName, unicode.IsControl) >= 0 {
		return m, errors.New("APP_NAME: at most 100 bytes, without line breaks or control characters")
	}
	switch {
	case m.LinkURL != "":
		u, err := url.Parse(m.LinkURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Fragment != "" || strings.Contains(m.LinkURL, "#") {
			return m, fmt.Errorf("EMAIL_LINK_URL: %q is not an absolute http(s) URL without a fragment, such as https://app.example.com/account", m.LinkURL)
		}
	case publicURL != "":
		m.LinkURL = publicURL + "/"
	default:
		m.LinkURL, m.LinkURLGuessed = "http://localhost:"+strconv.Itoa(port)+"/", true
	}
	return m, nil
}
