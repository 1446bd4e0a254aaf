package mailer

import (
	"context"
	"crypto/tls"
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
//
// One attempt, from the TCP connection to the server's answer to the message, ends by timeout:
// every deadline go-mail sets on the connection is clamped to the attempt's, which go-mail's own
// timeout does not do (it renews its deadline for each phase, so that an attempt could last two
// or three times as long). The outbox relies on that bound: an attempt still running past it
// must be one whose process died (see riverConfig).
func smtpSender(t smtpTarget, timeout time.Duration) (sendFunc, error) {
	timeout = cmpOr(timeout, defaultSendTimeout)
	opts := []gomail.Option{gomail.WithPort(t.port), gomail.WithTimeout(timeout), gomail.WithDialContextFunc(dialer(t))}
	switch {
	case t.implicitTLS:
		// The dialer has made the connection TLS before the first SMTP line: go-mail sees it
		// (and counts it as encrypted), and there is no STARTTLS to offer.
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
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
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
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

// dialer connects to the SMTP server within the dialing context's deadline (the attempt's), and
// returns a connection that never lets a deadline past it be set; for smtps:// it is a TLS
// connection to the URL's host.
func dialer(t smtpTarget) gomail.DialContextFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		end, ok := ctx.Deadline()
		if !ok {
			return raw, nil
		}
		conn := &boundedConn{Conn: raw, end: end}
		if err := conn.SetDeadline(end); err != nil {
			raw.Close()
			return nil, err
		}
		if !t.implicitTLS {
			return conn, nil
		}
		tlsConn := tls.Client(conn, &tls.Config{ServerName: t.host, MinVersion: tls.VersionTLS12})
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, err
		}
		return tlsConn, nil
	}
}

// boundedConn is a connection whose deadlines are never later than end.
type boundedConn struct {
	net.Conn
	end time.Time
}

func (c *boundedConn) bound(t time.Time) time.Time {
	if t.IsZero() || t.After(c.end) {
		return c.end
	}
	return t
}

func (c *boundedConn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(c.bound(t)) }
func (c *boundedConn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(c.bound(t)) }
func (c *boundedConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.bound(t)) }
