package graph_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"gqlauth/account"
	"gqlauth/mailer"
	"gqlauth/store"
)

// mailed is one message as the test SMTP server received it.
type mailed struct {
	To      []string
	Subject string
	Text    string
	HTML    string
}

// smtpServer is a real SMTP server (emersion/go-smtp) on a loopback port that records every
// message it accepts.
type smtpServer struct {
	addr string
	mu   sync.Mutex
	msgs []mailed
	errs []error
	// unfinished counts the outbox's jobs not yet done (set by withMail; nil: unknown).
	unfinished func() int
}

func startSMTP(t testing.TB) *smtpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpServer{addr: ln.Addr().String()}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &smtpSession{s: s}, nil }))
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, err := range s.errs {
			t.Errorf("SMTP server: %v", err)
		}
	})
	return s
}

func (s *smtpServer) messages() []mailed {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]mailed(nil), s.msgs...)
}

// waitFor waits until the server holds n messages and returns them; it fails past 20 s.
func (s *smtpServer) waitFor(t testing.TB, n int) []mailed {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if got := s.messages(); len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the SMTP server got %d messages, want %d", len(s.messages()), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quiet waits long enough for a queued message to have been delivered, and returns what was:
// until the outbox has no unfinished job (a request resolves into a message, which takes two
// rounds of the senders; up to 20 s on a loaded machine; a request's job is completed in the
// transaction that queues its message, so the count never passes through zero in between), and
// a moment more. Without a view of the outbox, a second.
func (s *smtpServer) quiet() []mailed {
	s.mu.Lock()
	unfinished := s.unfinished
	s.mu.Unlock()
	if unfinished == nil {
		time.Sleep(time.Second)
		return s.messages()
	}
	for deadline := time.Now().Add(20 * time.Second); unfinished() > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	return s.messages()
}

type smtpSession struct {
	s  *smtpServer
	to []string
}

func (x *smtpSession) Reset()                                    { x.to = nil }
func (x *smtpSession) Logout() error                             { return nil }
func (x *smtpSession) Mail(string, *smtp.MailOptions) error      { return nil }
func (x *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error { x.to = append(x.to, to); return nil }

func (x *smtpSession) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	if err != nil {
		x.s.errs = append(x.s.errs, err)
		return err
	}
	subject, _ := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	msg := mailed{To: x.to, Subject: subject}
	_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		x.s.errs = append(x.s.errs, err)
		return err
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		var body io.Reader = p
		if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(p)
		}
		b, _ := io.ReadAll(body)
		switch ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); ct {
		case "text/plain":
			msg.Text = string(b)
		case "text/html":
			msg.HTML = string(b)
		}
	}
	x.s.msgs = append(x.s.msgs, msg)
	return nil
}

// withMail gives the server an outbox on its database that delivers to smtp, with mailed links
// based on linkURL, as server.go builds it (mailer.New, Migrate, Start; Stop when the test ends).
func withMail(smtp *smtpServer, linkURL string) option {
	return func(o *serverOptions) {
		o.mail = func(t testing.TB, db *store.DB) account.MailConfig {
			t.Helper()
			engine := mailer.SQLite
			if db.IsPostgres() {
				engine = mailer.Postgres
			}
			m, err := mailer.New(db.SQLDB(), engine, mailer.Config{
				SMTPURL: "smtp://" + smtp.addr, From: "gqlauth <no-reply@example.com>", Secret: testSecret,
				PollInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := m.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			if err := m.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { m.Stop(ctx) })
			smtp.mu.Lock()
			smtp.unfinished = func() int {
				var n int
				if err := db.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE state IN ('available', 'running', 'retryable', 'scheduled', 'pending')", &n); err != nil {
					return 0
				}
				return n
			}
			smtp.mu.Unlock()
			return account.MailConfig{Mailer: m, LinkURL: linkURL, VerifyTTL: 24 * time.Hour}
		}
	}
}

// withMailStopped queues mail without ever sending it (the senders never start): what is left
// in the database is what requests wrote.
func withMailStopped() option {
	return func(o *serverOptions) {
		mail := o.mail
		o.mail = func(t testing.TB, db *store.DB) account.MailConfig {
			t.Helper()
			c := mail(t, db)
			if err := c.Mailer.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
}
