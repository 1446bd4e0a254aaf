package graph_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"gqlauth/account"
	"gqlauth/internal/smtptest"
	"gqlauth/mailer"
	"gqlauth/store"
)

// mailed is one message as the test SMTP server received it.
type mailed = smtptest.Message

// smtpServer is the shared test SMTP server (internal/smtptest) with the short names this
// package's tests use.
type smtpServer struct {
	*smtptest.Server
	addr string
	mu   sync.Mutex
	// unfinished counts the outbox's jobs not yet done (set by withMail; nil: unknown).
	unfinished func() int
}

func startSMTP(t testing.TB) *smtpServer {
	t.Helper()
	s := smtptest.Start(t)
	return &smtpServer{Server: s, addr: s.Addr()}
}

func (s *smtpServer) messages() []mailed { return s.Messages() }

// waitFor waits until the server holds n messages and returns them; it fails past 20 s.
func (s *smtpServer) waitFor(t testing.TB, n int) []mailed {
	t.Helper()
	return s.WaitFor(t, n, 20*time.Second)
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
