package graph_test

import (
	"context"
	"log/slog"
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

// quiet waits long enough for a queued message to have been delivered, and returns what was.
func (s *smtpServer) quiet() []mailed {
	time.Sleep(time.Second)
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
			return account.MailConfig{Mailer: m, LinkURL: linkURL, VerifyTTL: 24 * time.Hour}
		}
	}
}
