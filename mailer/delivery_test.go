package mailer_test

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"gqlauth/mailer"
	"gqlauth/store/storetest"
)

const resetLink = "https://app.example.com/#type=reset_password&token=Tk_secret-reset-token-0123456789abcdef"

// messageIDOf reads the Message-ID the outbox recorded for the only job on db.
func messageIDOf(t *testing.T, db *sql.DB, kind storetest.Kind) string {
	t.Helper()
	q := "SELECT json_extract(args, '$.message_id') FROM river_job"
	if kind == storetest.Postgres {
		q = "SELECT args->>'message_id' FROM river_job"
	}
	var id string
	if err := db.QueryRow(q).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestMailer_DeliversCommittedMessageWithBothPartsAndHeaders(t *testing.T) {
	cases := []struct {
		msg  mailer.Message
		want []string // in both parts
	}{
		{mailer.Message{Kind: mailer.VerifyEmail, To: "ann@example.com", Link: "https://app.example.com/#type=verify_email&token=abc", ExpiresIn: 24 * time.Hour},
			[]string{"confirm that it is yours", "expires in 24 hours", "If this wasn't you"}},
		{mailer.Message{Kind: mailer.ResetPassword, To: "ann@example.com", Link: resetLink, ExpiresIn: 30 * time.Minute},
			[]string{"reset", "expires in 30 minutes", "If this wasn't you"}},
		{mailer.Message{Kind: mailer.SignInCode, To: "ann@example.com", Code: "493817", ExpiresIn: 10 * time.Minute},
			[]string{"493817", "expires in 10 minutes", "If this wasn't you"}},
		{mailer.Message{Kind: mailer.PasswordChanged, To: "ann@example.com"}, []string{"password of your account was changed", "If this wasn't you"}},
		{mailer.Message{Kind: mailer.EmailChanged, To: "ann@example.com", Detail: "The new address is b***@example.org."},
			[]string{"email address of your account is being changed", "b***@example.org", "If this wasn't you"}},
		{mailer.Message{Kind: mailer.MFAChanged, To: "ann@example.com"}, []string{"second factors", "If this wasn't you"}},
	}
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		for _, c := range cases {
			t.Run(string(c.msg.Kind), func(t *testing.T) {
				srv := startSMTP(t)
				d := newDatabase(t, kind)
				db := d.open(t)
				m := newMailer(t, db, d.engine(), testConfig(srv), false)
				if err := enqueue(t, db, m, true, c.msg); err != nil {
					t.Fatal(err)
				}
				wantID := "<" + messageIDOf(t, db, kind) + ">"
				if err := m.Start(context.Background()); err != nil {
					t.Fatal(err)
				}
				defer m.Stop(context.Background())
				got := srv.WaitFor(t, 1, 10*time.Second)[0]

				if got.From != "no-reply@acme.example" || len(got.To) != 1 || got.To[0] != "ann@example.com" {
					t.Fatalf("envelope from %q to %v", got.From, got.To)
				}
				h := got.Header
				if h.Get("From") != `"Acme" <no-reply@acme.example>` || h.Get("To") != "<ann@example.com>" {
					t.Fatalf("From %q, To %q", h.Get("From"), h.Get("To"))
				}
				if !regexp.MustCompile(`^<[0-9a-f]{32}@acme\.example>$`).MatchString(h.Get("Message-Id")) || h.Get("Message-Id") != wantID {
					t.Fatalf("Message-ID %q, want %q", h.Get("Message-Id"), wantID)
				}
				if subj := h.Get("Subject"); !strings.Contains(subj, "Acme") || strings.ContainsAny(subj, "\r\n") {
					t.Fatalf("Subject %q", subj)
				}
				if h.Get("Date") == "" || h.Get("Auto-Submitted") != "auto-generated" {
					t.Fatalf("Date %q, Auto-Submitted %q", h.Get("Date"), h.Get("Auto-Submitted"))
				}
				want := append([]string{"Acme", "ann@example.com"}, c.want...)
				if c.msg.Link != "" {
					want = append(want, c.msg.Link)
				}
				for _, w := range want {
					if !strings.Contains(got.Text, w) {
						t.Errorf("text part lacks %q:\n%s", w, got.Text)
					}
					// html/template writes a value's & as &amp;
					hw := strings.ReplaceAll(w, "&", "&amp;")
					if !strings.Contains(got.HTML, w) && !strings.Contains(got.HTML, hw) {
						t.Errorf("HTML part lacks %q:\n%s", hw, got.HTML)
					}
				}
			})
		}
	})
}

func TestMailer_EscapesValuesInTheHTMLPart(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		srv := startSMTP(t)
		d := newDatabase(t, kind)
		db := d.open(t)
		cfg := testConfig(srv)
		cfg.AppName = `Acme <script>alert(1)</script>`
		m := newMailer(t, db, d.engine(), cfg, true)
		msg := mailer.Message{Kind: mailer.EmailChanged, To: "ann@example.com", Detail: `<img src=x onerror=alert(2)>`}
		if err := enqueue(t, db, m, true, msg); err != nil {
			t.Fatal(err)
		}
		got := srv.WaitFor(t, 1, 10*time.Second)[0]
		for _, bad := range []string{"<script>", "<img"} {
			if strings.Contains(got.HTML, bad) {
				t.Fatalf("HTML part holds %q unescaped:\n%s", bad, got.HTML)
			}
		}
		if !strings.Contains(got.HTML, "&lt;img src=x onerror=alert(2)&gt;") || !strings.Contains(got.Text, "<img src=x onerror=alert(2)>") {
			t.Fatalf("detail not escaped in HTML / kept in text:\n%s\n%s", got.HTML, got.Text)
		}
	})
}

func TestMailer_SubjectIsOneLineWhateverTheTemplateWrites(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		srv := startSMTP(t)
		d := newDatabase(t, kind)
		db := d.open(t)
		cfg := testConfig(srv)
		cfg.TemplatesDir = writeFiles(t, map[string]string{
			"security_notice.txt": "{{define \"subject\"}}Notice\r\nBcc: victim@example.com\n\nbody{{end}}{{.What}}",
		})
		m := newMailer(t, db, d.engine(), cfg, true)
		if err := enqueue(t, db, m, true, notice("ann@example.com")); err != nil {
			t.Fatal(err)
		}
		got := srv.WaitFor(t, 1, 10*time.Second)[0]
		if s := got.Header.Get("Subject"); s != "Notice Bcc: victim@example.com body" || got.Header.Get("Bcc") != "" || len(got.To) != 1 {
			t.Fatalf("Subject %q, Bcc %q, recipients %v", s, got.Header.Get("Bcc"), got.To)
		}
	})
}

func TestMailer_RolledBackMessageIsNeverSent(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		srv := startSMTP(t)
		d := newDatabase(t, kind)
		db := d.open(t)
		m := newMailer(t, db, d.engine(), testConfig(srv), true)
		rolledBack := mailer.Message{Kind: mailer.ResetPassword, To: "gone@example.com", Link: resetLink, ExpiresIn: time.Minute}
		if err := enqueue(t, db, m, false, rolledBack); err != nil {
			t.Fatal(err)
		}
		if n := len(jobs(t, db)); n != 0 {
			t.Fatalf("%d jobs after a rollback", n)
		}
		// A message committed afterwards goes out; the rolled-back one never does.
		if err := enqueue(t, db, m, true, mailer.Message{Kind: mailer.PasswordChanged, To: "kept@example.com"}); err != nil {
			t.Fatal(err)
		}
		srv.WaitFor(t, 1, 10*time.Second)
		time.Sleep(300 * time.Millisecond)
		got := srv.Messages()
		if len(got) != 1 || got[0].To[0] != "kept@example.com" {
			t.Fatalf("sent %d messages: %+v", len(got), got)
		}
	})
}

func TestMailer_SealsTokensAndCodesInTheJobTable(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		d := newDatabase(t, kind)
		db := d.open(t)
		m := newMailer(t, db, d.engine(), testConfig(startSMTP(t)), false)
		link := "https://app.example.com/#type=verify_email&token=Zq9xVerifyTokenNeverInTheClear"
		msgs := []mailer.Message{
			{Kind: mailer.ResetPassword, To: "ann@example.com", Link: resetLink, ExpiresIn: time.Minute},
			{Kind: mailer.VerifyEmail, To: "ann@example.com", Link: link, ExpiresIn: time.Minute},
			{Kind: mailer.SignInCode, To: "ann@example.com", Code: "493817", ExpiresIn: time.Minute},
		}
		if err := enqueue(t, db, m, true, msgs...); err != nil {
			t.Fatal(err)
		}
		rows := jobs(t, db)
		if len(rows) != 3 {
			t.Fatalf("%d jobs", len(rows))
		}
		dump := strings.Join(rows, "\n")
		// The table as stored, and every base64 string in it decoded (JSON writes bytes so).
		readable := dump
		for _, b64 := range regexp.MustCompile(`[A-Za-z0-9+/]{16,}={0,2}`).FindAllString(dump, -1) {
			if raw, err := base64.StdEncoding.DecodeString(b64); err == nil {
				readable += "\n" + string(raw)
			}
		}
		for _, secret := range []string{"Tk_secret-reset-token", "Zq9xVerifyToken", "493817", "app.example.com"} {
			if strings.Contains(readable, secret) {
				t.Fatalf("river_job holds %q in the clear:\n%s", secret, readable)
			}
		}
		if !strings.Contains(dump, "ann@example.com") || !strings.Contains(dump, "sealed") {
			t.Fatalf("river_job lacks the recipient or the sealed parts:\n%s", dump)
		}
	})
}

func TestMailer_AlteredJobIsNotSent(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		srv := startSMTP(t)
		d := newDatabase(t, kind)
		db := d.open(t)
		m := newMailer(t, db, d.engine(), testConfig(srv), false)
		if err := enqueue(t, db, m, true, mailer.Message{Kind: mailer.ResetPassword, To: "ann@example.com", Link: resetLink, ExpiresIn: time.Minute}); err != nil {
			t.Fatal(err)
		}
		// Someone with write access to the table redirects the sealed reset link to themselves.
		q := "UPDATE river_job SET args = json_set(json(args), '$.to', 'mallory@example.com')"
		if kind == storetest.Postgres {
			q = `UPDATE river_job SET args = jsonb_set(args, '{to}', '"mallory@example.com"')`
		}
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
		if err := m.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer m.Stop(context.Background())
		waitUntil(t, 10*time.Second, "the job to be cancelled", func() bool {
			s, _ := jobStates(t, db)
			return len(s) == 1 && s[0] == "cancelled"
		})
		if got := srv.Messages(); len(got) != 0 {
			t.Fatalf("an altered job was sent: %+v", got)
		}
	})
}

func TestMailer_DevInboxListsDeliveredMessagesNewestFirst(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		d := newDatabase(t, kind)
		db := d.open(t)
		cfg := testConfig(nil)
		cfg.DevInbox = true
		m := newMailer(t, db, d.engine(), cfg, true)
		for i := range 3 {
			msg := mailer.Message{Kind: mailer.SignInCode, To: fmt.Sprintf("u%d@example.com", i), Code: fmt.Sprintf("10000%d", i), ExpiresIn: time.Minute}
			if err := enqueue(t, db, m, true, msg); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, 10*time.Second, "the inbox to grow", func() bool {
				inbox, err := m.Inbox(context.Background())
				return err == nil && len(inbox) == i+1
			})
		}
		inbox, _ := m.Inbox(context.Background())
		for i, want := range []string{"u2@example.com", "u1@example.com", "u0@example.com"} {
			got := inbox[i]
			if got.To != want || !strings.Contains(got.Text, fmt.Sprintf("10000%d", 2-i)) || !strings.Contains(got.HTML, "<b>") ||
				got.Subject != "Your Acme sign-in code" || got.At.IsZero() {
				t.Fatalf("inbox[%d] = %+v, want to %s", i, got, want)
			}
			if i > 0 && got.At.After(inbox[i-1].At) {
				t.Fatalf("inbox not newest first: %v after %v", got.At, inbox[i-1].At)
			}
		}
	})
}

func TestMailer_WithNeitherSMTPNorInboxQueuesNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		d := newDatabase(t, kind)
		db := d.open(t)
		m := newMailer(t, db, d.engine(), testConfig(nil), true)
		if m.Enabled() {
			t.Fatal("enabled without SMTP or inbox")
		}
		if err := enqueue(t, db, m, true, mailer.Message{Kind: mailer.PasswordChanged, To: "ann@example.com"}); err != nil {
			t.Fatal(err)
		}
		if n := len(jobs(t, db)); n != 0 {
			t.Fatalf("%d jobs queued with nowhere to send them", n)
		}
		if inbox, err := m.Inbox(context.Background()); inbox != nil || err != nil {
			t.Fatalf("inbox %v, %v", inbox, err)
		}
	})
}
