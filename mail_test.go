package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gqlauth/mailer"
	"gqlauth/store"
	"gqlauth/store/storetest"
)

// devMail reads GET /dev/mail: the status and, on 200, the messages.
func devMail(t *testing.T, base string) (int, []mailer.DevMessage) {
	t.Helper()
	res, err := http.Get(base + "/dev/mail")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var msgs []mailer.DevMessage
	if res.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &msgs); err != nil || msgs == nil {
			t.Fatalf("GET /dev/mail: %q is not a JSON array (%v)", body, err)
		}
	}
	return res.StatusCode, msgs
}

func TestRun_DevMailServedOnlyWhileTheDevInboxIsOn(t *testing.T) {
	smtp := []string{"SMTP_URL", "smtp://127.0.0.1:1", "MAIL_FROM", "no-reply@example.com"}
	cases := []struct {
		name   string
		kind   storetest.Kind
		vars   []string
		status int
		log    string
	}{
		{"EmbeddedDefault", storetest.SQLite, nil, 200, "development inbox"},
		{"EmbeddedTurnedOff", storetest.SQLite, []string{"MAIL_DEV_INBOX", "false"}, 404, "mail is off"},
		{"EmbeddedWithSMTP", storetest.SQLite, smtp, 404, "smtp://127.0.0.1:1"},
		{"PostgresDefault", storetest.Postgres, nil, 404, "mail is off"},
		{"PostgresTurnedOn", storetest.Postgres, []string{"MAIL_DEV_INBOX", "true"}, 200, "development inbox"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !contains(storetest.Kinds(t), c.kind) {
				t.Skip("TEST_DATABASE_URL not set")
			}
			vars, _, _ := databaseVars(t, c.kind)
			logs := &syncWriter{w: &bytes.Buffer{}}
			base := startLogged(t, t.TempDir(), logs, append(vars, c.vars...)...)
			status, msgs := devMail(t, base)
			if status != c.status || len(msgs) != 0 {
				t.Fatalf("GET /dev/mail: %d %v, want %d", status, msgs, c.status)
			}
			if !strings.Contains(logs.String(), c.log) || !strings.Contains(logs.String(), "mailed links point to http://localhost:0/") {
				t.Fatalf("the start log does not say where mail goes (%q) and where links point:\n%s", c.log, logs.String())
			}
		})
	}
}

func TestRun_MailQueuedInATransactionReachesTheSharedDevInbox(t *testing.T) {
	for _, kind := range storetest.Kinds(t) {
		t.Run(string(kind), func(t *testing.T) {
			dir := t.TempDir()
			secret := strings.Repeat("k", 32)
			vars, _, dsn := databaseVars(t, kind)
			vars = append(vars, "JWT_SECRET", secret, "MAIL_DEV_INBOX", "true")
			base := start(t, dir, vars...)

			// Another instance on the same database queues the mail; it does not send (not
			// started): the running server's senders deliver it into the inbox every instance reads.
			ctx := context.Background()
			var (
				db     *store.DB
				err    error
				engine = mailer.SQLite
			)
			if kind == storetest.Postgres {
				db, err = store.OpenPostgres(ctx, dsn, storetest.MaxConns)
				engine = mailer.Postgres
			} else {
				db, err = store.OpenSQLite(ctx, filepath.Join(dir, dsn))
			}
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			m, err := mailer.New(db.SQLDB(), engine, mailer.Config{Secret: []byte(secret), DevInbox: true})
			if err != nil {
				t.Fatal(err)
			}
			queue := func(to string, rollback bool) {
				t.Helper()
				errRollback := errors.New("rolled back")
				err := db.Transact(ctx, func(tx *store.Tx) error {
					msg := mailer.Message{Kind: mailer.VerifyEmail, To: to, Link: "http://localhost:8080/#type=verify_email&token=t0k3n", ExpiresIn: time.Hour}
					if err := m.Enqueue(ctx, tx.SQLTx(), msg); err != nil {
						return err
					}
					if rollback {
						return errRollback
					}
					return nil
				})
				if err != nil && !(rollback && errors.Is(err, errRollback)) {
					t.Fatal(err)
				}
			}
			queue("first@example.com", false)
			queue("rolled-back@example.com", true)
			queue("second@example.com", false)

			deadline := time.Now().Add(20 * time.Second)
			var msgs []mailer.DevMessage
			for len(msgs) < 2 && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				_, msgs = devMail(t, base)
			}
			time.Sleep(500 * time.Millisecond) // room for a wrongly sent third message to show
			// Senders work in parallel, so either may be delivered first; the inbox lists them in
			// the order of delivery, newest first.
			_, msgs = devMail(t, base)
			if len(msgs) != 2 || msgs[0].To == msgs[1].To || msgs[0].At.Before(msgs[1].At) {
				t.Fatalf("inbox %+v, want the two committed messages, newest first, and nothing of the rolled-back transaction", msgs)
			}
			for _, msg := range msgs {
				if msg.To != "first@example.com" && msg.To != "second@example.com" {
					t.Fatalf("inbox holds a message to %s", msg.To)
				}
			}
			if !strings.Contains(msgs[0].Text, "http://localhost:8080/#type=verify_email&token=t0k3n") || msgs[0].Subject == "" || msgs[0].HTML == "" || msgs[0].At.IsZero() {
				t.Fatalf("message %+v", msgs[0])
			}
			rows, err := db.DumpTable(ctx, "river_job")
			if err != nil || len(rows) != 2 {
				t.Fatalf("river_job: %d rows, %v", len(rows), err)
			}
			for _, row := range rows {
				for col, v := range row {
					if strings.Contains(v, "t0k3n") {
						t.Fatalf("river_job.%s holds the link's token in the clear", col)
					}
				}
			}
		})
	}
}

// syncWriter is a log destination the server writes to while the test reads it.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

func TestRun_VerificationLinkThroughTheDevInbox(t *testing.T) {
	for _, kind := range storetest.Kinds(t) {
		t.Run(string(kind), func(t *testing.T) {
			vars, _, _ := databaseVars(t, kind)
			vars = append(vars, "MAIL_DEV_INBOX", "true", "PUBLIC_URL", "https://auth.example.com")
			base := start(t, t.TempDir(), vars...)
			tok := accessToken(t, graphql(t, base, "", `mutation { register(username: "ann", password: "correct horse battery", email: "ann@example.com") { accessToken } }`), "register")
			if out := graphql(t, base, tok, `mutation { sendEmailVerification }`); out["errors"] != nil {
				t.Fatalf("sendEmailVerification: %v", out)
			}
			var msgs []mailer.DevMessage
			for deadline := time.Now().Add(20 * time.Second); len(msgs) == 0 && time.Now().Before(deadline); {
				time.Sleep(100 * time.Millisecond)
				_, msgs = devMail(t, base)
			}
			const prefix = "https://auth.example.com/#type=verify_email&token="
			if len(msgs) == 0 {
				t.Fatal("the development inbox stayed empty")
			}
			i := strings.Index(msgs[0].Text, prefix)
			if len(msgs) != 1 || msgs[0].To != "ann@example.com" || i < 0 {
				t.Fatalf("inbox %+v: want one message to ann with a link under PUBLIC_URL", msgs)
			}
			link := msgs[0].Text[i+len(prefix):]
			link = link[:strings.IndexAny(link, " \r\n")]
			if out := graphql(t, base, "", `mutation { verifyEmail(token: "`+link+`") }`); out["errors"] != nil {
				t.Fatalf("verifyEmail: %v", out)
			}
			out := graphql(t, base, tok, `{ me { emailVerified } }`)
			if me := out["data"].(map[string]any)["me"].(map[string]any); me["emailVerified"] != true {
				t.Fatalf("me: %v", out)
			}
		})
	}
}
