package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"

	"gqlauth/config"
	"gqlauth/mailer"
	"gqlauth/store"
)

// buildMailer builds the outbox on the store's database and runs its migrations (River's tables),
// and logs where mail goes: an SMTP server, the development inbox, or nowhere.
func buildMailer(ctx context.Context, cfg config.Config, db *store.DB, log *slog.Logger) (*mailer.Mailer, error) {
	engine := mailer.SQLite
	if db.IsPostgres() {
		engine = mailer.Postgres
	}
	m, err := mailer.New(db.SQLDB(), engine, mailer.Config{
		SMTPURL: cfg.Mail.SMTPURL, From: cfg.Mail.From, AppName: cfg.Mail.AppName, TemplatesDir: cfg.Mail.Templates,
		Secret: cfg.JWTSecret, DevInbox: cfg.Mail.DevInbox, DevInboxStore: devInbox{db}, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	if err := m.Migrate(ctx); err != nil {
		return nil, fmt.Errorf("database migration failed: %v", err)
	}
	switch {
	case cfg.Mail.SMTPURL != "":
		log.Info("mail is sent through SMTP", "server", smtpHost(cfg.Mail.SMTPURL), "from", cfg.Mail.From, "links", cfg.Mail.LinkURL)
	case cfg.Mail.DevInbox:
		log.Info("mail goes to the development inbox, not sent; read it at GET /dev/mail (loopback only)", "links", cfg.Mail.LinkURL)
	default:
		log.Warn("mail is off: nothing is sent; set SMTP_URL and MAIL_FROM (or MAIL_DEV_INBOX=true in development)")
	}
	if cfg.Mail.LinkURLGuessed {
		log.Info("mailed links point to "+cfg.Mail.LinkURL+"; set EMAIL_LINK_URL or PUBLIC_URL to the address users reach", "links", cfg.Mail.LinkURL)
	}
	return m, nil
}

// smtpHost is the host:port of an SMTP URL, without the credentials, for the log.
func smtpHost(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Scheme + "://" + u.Host
	}
	return ""
}

// devInbox keeps the development inbox in the store's dev_mail table, so that every instance
// shows the same inbox.
type devInbox struct{ db *store.DB }

func (d devInbox) Add(ctx context.Context, m mailer.DevMessage) error {
	return d.db.AddDevMail(ctx, &store.DevMail{To: m.To, Subject: m.Subject, Text: m.Text, HTML: m.HTML, At: m.At})
}

func (d devInbox) List(ctx context.Context) ([]mailer.DevMessage, error) {
	rows, err := d.db.DevMails(ctx)
	out := make([]mailer.DevMessage, len(rows))
	for i, r := range rows {
		out[i] = mailer.DevMessage{To: r.To, Subject: r.Subject, Text: r.Text, HTML: r.HTML, At: r.At.UTC()}
	}
	return out, err
}
