package mailer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// smtpTarget is a checked SMTP_URL.
type smtpTarget struct {
	host        string
	port        int
	implicitTLS bool // smtps://
	loopback    bool // smtp:// to a loopback host may go without TLS
	user, pass  string
}

// parseSMTPURL checks SMTP_URL. Its errors never repeat the URL, which may hold a password.
func parseSMTPURL(raw string) (smtpTarget, error) {
	var t smtpTarget
	u, err := url.Parse(raw)
	if err != nil {
		return t, errors.New("SMTP_URL: not a valid URL (smtp://[user:pass@]host[:port] or smtps://…)")
	}
	switch u.Scheme {
	case "smtp":
	case "smtps":
		t.implicitTLS = true
	default:
		return t, errors.New("SMTP_URL: the scheme must be smtp:// (STARTTLS) or smtps:// (implicit TLS)")
	}
	if u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return t, errors.New("SMTP_URL: only smtp[s]://[user:pass@]host[:port] is understood (no path or query)")
	}
	t.host = u.Hostname()
	if t.host == "" {
		return t, errors.New("SMTP_URL: no host")
	}
	t.port = 587
	if t.implicitTLS {
		t.port = 465
	}
	if p := u.Port(); p != "" {
		if t.port, err = strconv.Atoi(p); err != nil || t.port < 1 || t.port > 65535 {
			return t, errors.New("SMTP_URL: the port must be 1 to 65535")
		}
	}
	if u.User != nil {
		t.user = u.User.Username()
		t.pass, _ = u.User.Password()
		if t.user == "" {
			return t, errors.New("SMTP_URL: a password needs a user name")
		}
	}
	t.loopback = isLoopback(t.host)
	return t, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sendFunc delivers one rendered message; a permanent failure (the server refused it for good)
// is a *permanentError.
type sendFunc func(ctx context.Context, msg *gomail.Msg, rendered *rendered) error

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// smtpSender sends through go-mail: TLS is mandatory (STARTTLS, or implicit with smtps://)
// except towards a loopback host, where STARTTLS is used when offered.
func smtpSender(t smtpTarget, timeout time.Duration) (sendFunc, error) {
	opts := []gomail.Option{gomail.WithPort(t.port), gomail.WithTimeout(cmpOr(timeout, 30*time.Second))}
	switch {
	case t.implicitTLS:
		opts = append(opts, gomail.WithSSL())
	case t.loopback:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	default:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	}
	if t.user != "" {
		auth := gomail.SMTPAuthAutoDiscover
		if t.loopback && !t.implicitTLS {
			// Without TLS, go-mail's discovery never picks PLAIN; PLAIN itself allows loopback.
			auth = gomail.SMTPAuthPlain
		}
		opts = append(opts, gomail.WithSMTPAuth(auth), gomail.WithUsername(t.user), gomail.WithPassword(t.pass))
	}
	client, err := gomail.NewClient(t.host, opts...)
	if err != nil {
		return nil, fmt.Errorf("SMTP_URL: %w", err)
	}
	return func(ctx context.Context, msg *gomail.Msg, _ *rendered) error {
		conn, err := client.DialToSMTPClientWithContext(ctx)
		if err != nil {
			return fmt.Errorf("connect to the SMTP server: %w", err)
		}
		if err := client.SendWithSMTPClient(conn, msg); err != nil {
			_ = client.CloseWithSMTPClient(conn)
			var sendErr *gomail.SendError
			if errors.As(err, &sendErr) && !sendErr.IsTemp() && sendErr.ErrorCode() >= 500 {
				return &permanentError{err}
			}
			return err
		}
		// The server has accepted the message: a failure to say goodbye must not send it again.
		_ = client.CloseWithSMTPClient(conn)
		return nil
	}, nil
}
