// Package mailer queues mail in the caller's transaction and delivers each message once through
// SMTP. A flow calls Enqueue with the transaction of the change that causes the mail: the message
// is a River job in the same database, committed or rolled back with the change, and River's
// workers on any instance send it with go-mail, retrying with backoff for up to a day.
//
// A request that must not reveal whether an address has an account (a password reset, a sign-in
// code) is queued as a Request instead (EnqueueRequest): the same sealed job for any address,
// which the senders hand to the Resolver the server set (account's), in the background.
//
// It renders the messages from templates (embedded defaults, each overridable from a directory)
// and seals the secret parts of a queued message (a link's token, a code) so that the job table
// never holds them in the clear. Without an SMTP server it can deliver to a development inbox.
//
// It does not decide who gets mail or when (the flows do), knows nothing of accounts, users or
// tokens' meaning, and serves no HTTP: the development inbox is read through Inbox.
package mailer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
)

// ErrInvalid is wrapped into every error Enqueue returns for a message it refuses (a malformed
// or oversized address, a line break or NUL where a header goes, a missing link or code): nothing
// is queued. Flows map it to BAD_USER_INPUT.
var ErrInvalid = errors.New("mailer: invalid message")

// Engine names the database the outbox lives in.
type Engine string

const (
	Postgres Engine = "postgres"
	SQLite   Engine = "sqlite"
)

// Config configures a Mailer. The zero values of the tuning fields are the production defaults.
type Config struct {
	// SMTPURL is smtp://[user:pass@]host[:port] (STARTTLS required unless the host is loopback;
	// port 587 by default) or smtps://[user:pass@]host[:port] (implicit TLS; port 465). Empty:
	// nothing is sent (see DevInbox).
	SMTPURL string
	// From is the sender, an RFC 5322 address with or without a display name. Required with
	// SMTPURL.
	From string
	// AppName is named in every message ("gqlauth" when empty).
	AppName string
	// TemplatesDir, when set, holds templates that replace the embedded ones file by file.
	TemplatesDir string
	// Secret is the server secret; the key that seals queued tokens and codes is derived from it.
	Secret []byte
	// DevInbox, without SMTPURL, delivers every message to the development inbox.
	DevInbox bool
	// DevInboxStore keeps the development inbox; nil keeps it in this process's memory.
	DevInboxStore DevInboxStore
	Logger        *slog.Logger

	// Workers is how many messages one instance sends at once (default 10).
	Workers int
	// PollInterval is how often an instance looks for due messages (default 1 s).
	PollInterval time.Duration
	// SendTimeout bounds one delivery attempt, from the connection to the server's answer
	// (default 10 s).
	SendTimeout time.Duration
	// RescueAfter is how long after an attempt began its message is presumed orphaned by a dead
	// process and tried again (default 15 s; at least 1.5 × SendTimeout, so that a live attempt,
	// which ends by SendTimeout, is never taken for a dead one).
	RescueAfter time.Duration
	// Backoff is the wait before the retry that follows the attempt-th failed attempt (default:
	// 15 s doubling up to 1 h, with jitter).
	Backoff func(attempt int) time.Duration
	// GiveUpAfter is how long after it was queued a message stops being retried (default 24 h).
	GiveUpAfter time.Duration
}

// The timing of delivery (README, "Mail delivery guarantees"). The contract asks that after a
// restart due messages go out within a minute, and a message whose sender died mid-send is due
// again only once River's rescuer has seen its attempt run longer than RescueStuckJobsAfter. The
// rescuer runs on the leader only, at its election and then every 30 s (not configurable in River
// v0.51); a new leader is elected at most ~21 s after the old one died (a 15 s lease, bids every
// 5–6 s). So a message orphaned just before a restart is rescued at the latest RescueAfter + 30 s
// after it (or at the election, if later: ≤ 22 s), retried at once (worker.NextRetry), made
// available by the scheduler within its 5 s tick and fetched within PollInterval (1 s):
// 15 + 30 + 5 + 1 = 51 s, nine to spare for a loaded machine. RescueAfter must stay above the
// longest live attempt, SendTimeout (the SMTP dialer holds every attempt to it), with room for
// the attempt's result to be written: 10 s and 15 s. Ten seconds is ample for one message to a
// submission server; an attempt that runs out is retried 15 s later like any failure.
const (
	defaultSendTimeout = 10 * time.Second
	defaultRescueAfter = 15 * time.Second
)

const (
	queueName   = "mail"
	maxAttempts = 1000 // the age limit (GiveUpAfter) ends the retries, not the count
)

// Mailer queues and delivers mail. Enqueue works from construction on; Start makes this instance
// a sender too.
type Mailer struct {
	client   *river.Client[*sql.Tx]
	migrator *rivermigrate.Migrator[*sql.Tx]
	db       *sql.DB
	engine   Engine
	enabled  bool
	from     string
	msgIDDom string
	sealer   *sealer
	tmpl     *templates
	appName  string
	inbox    DevInboxStore
	log      *slog.Logger
	resolver resolverSlot
}

// New checks cfg (the SMTP URL, the sender, every template) and returns a Mailer whose outbox is
// in db, a pool of the given engine. On SQLite the pool must hold a single connection, as the
// store's does.
func New(db *sql.DB, engine Engine, cfg Config) (*Mailer, error) {
	if cfg.AppName == "" {
		cfg.AppName = "gqlauth"
	}
	if err := headerSafe(cfg.AppName, 100); err != nil {
		return nil, fmt.Errorf("APP_NAME: %w", err)
	}
	if len(cfg.Secret) < 16 {
		return nil, errors.New("mailer: the secret must be at least 16 bytes")
	}
	m := &Mailer{db: db, engine: engine, appName: cfg.AppName, log: cfg.Logger}
	if m.log == nil {
		m.log = slog.Default()
	}
	var send sendFunc
	switch {
	case cfg.SMTPURL != "":
		target, err := parseSMTPURL(cfg.SMTPURL)
		if err != nil {
			return nil, err
		}
		if cfg.From == "" {
			return nil, errors.New("MAIL_FROM: required with SMTP_URL")
		}
		if send, err = smtpSender(target, cfg.SendTimeout); err != nil {
			return nil, err
		}
	case cfg.DevInbox:
		m.inbox = cfg.DevInboxStore
		if m.inbox == nil {
			m.inbox = NewMemoryInbox(200)
		}
		send = m.deliverToInbox
	}
	m.enabled = send != nil
	if cfg.From == "" {
		cfg.From = "no-reply@localhost"
	}
	from, err := parseFrom(cfg.From)
	if err != nil {
		return nil, err
	}
	m.from, m.msgIDDom = from.String(), messageIDDomain(from.Address)
	if m.tmpl, err = loadTemplates(cfg.TemplatesDir, cfg.AppName); err != nil {
		return nil, err
	}
	if m.sealer, err = newSealer(cfg.Secret); err != nil {
		return nil, err
	}

	var driverErr error
	rcfg := riverConfig(cfg, m.log)
	w := &worker{m: m, send: send, backoff: cfg.Backoff, giveUpAfter: cmpOr(cfg.GiveUpAfter, 24*time.Hour), rescueAfter: rcfg.RescueStuckJobsAfter}
	if w.backoff == nil {
		w.backoff = defaultBackoff
	}
	river.AddWorker(rcfg.Workers, w)
	river.AddWorker(rcfg.Workers, &requestWorker{m: m, giveUpAfter: w.giveUpAfter})
	switch engine {
	case Postgres:
		// No LISTEN: the pool is database/sql's, so instances poll every PollInterval.
		driver := riverdatabasesql.New(db)
		m.client, driverErr = river.NewClient(driver, rcfg)
		if driverErr == nil {
			m.migrator, driverErr = rivermigrate.New(driver, &rivermigrate.Config{Logger: m.log})
		}
	case SQLite:
		driver := riversqlite.New(db)
		m.client, driverErr = river.NewClient(driver, rcfg)
		if driverErr == nil {
			m.migrator, driverErr = rivermigrate.New(driver, &rivermigrate.Config{Logger: m.log})
		}
	default:
		return nil, fmt.Errorf("mailer: unknown database engine %q", engine)
	}
	if driverErr != nil {
		return nil, fmt.Errorf("mailer: %w", driverErr)
	}
	return m, nil
}

func riverConfig(cfg Config, log *slog.Logger) *river.Config {
	sendTimeout := cmpOr(cfg.SendTimeout, defaultSendTimeout)
	poll := cmpOr(cfg.PollInterval, time.Second)
	return &river.Config{
		Logger:               log,
		Queues:               map[string]river.QueueConfig{queueName: {MaxWorkers: cmpOr(cfg.Workers, 10)}},
		Workers:              river.NewWorkers(),
		FetchPollInterval:    poll,
		FetchCooldown:        min(poll, river.FetchCooldownDefault),
		JobTimeout:           sendTimeout,
		RescueStuckJobsAfter: max(cmpOr(cfg.RescueAfter, defaultRescueAfter), sendTimeout+sendTimeout/2),
		MaxAttempts:          maxAttempts,
		// A sent message's row holds nothing secret in the clear, but nothing needs it after an
		// hour either; one given up on stays a week for an operator to look at.
		CompletedJobRetentionPeriod: time.Hour,
		CancelledJobRetentionPeriod: 7 * 24 * time.Hour,
		DiscardedJobRetentionPeriod: 7 * 24 * time.Hour,
	}
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Enabled reports whether queued messages go anywhere (an SMTP server or the development inbox).
// When they do not, Enqueue still checks a message and then drops it.
func (m *Mailer) Enabled() bool { return m.enabled }

// Migrate creates or updates River's tables; run it at start, with the store's migrations. On
// Postgres, instances starting together take turns on an advisory lock.
func (m *Mailer) Migrate(ctx context.Context) error {
	if m.engine == Postgres {
		conn, err := m.db.Conn(ctx)
		if err != nil {
			return fmt.Errorf("mailer: migrate: %w", err)
		}
		defer conn.Close()
		const key = "hashtext('gqlauth.river.migrate.' || current_schema())"
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock("+key+")"); err != nil {
			return fmt.Errorf("mailer: migrate: lock: %w", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock("+key+")")
	}
	_, err := m.migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	// Another process on the same file may have applied a version between this one's check and
	// its own attempt (each version is its own transaction): another attempt finds it applied.
	// Each lost race means one more version applied, so the attempts are bounded by River's
	// versions; once was not enough with four processes starting at once.
	for attempt := 0; err != nil && m.engine == SQLite && attempt < 20 && ctx.Err() == nil; attempt++ {
		_, err = m.migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	}
	if err != nil {
		return fmt.Errorf("mailer: migrate: %w", err)
	}
	return nil
}

// Start makes this instance deliver queued messages (its own and every other instance's) until
// Stop. Without an SMTP server or development inbox it does nothing.
func (m *Mailer) Start(ctx context.Context) error {
	if !m.enabled {
		return nil
	}
	if err := m.client.Start(ctx); err != nil {
		return fmt.Errorf("mailer: start: %w", err)
	}
	return nil
}

// Stop waits for the messages being sent to finish (until ctx ends; then they are cancelled and
// retried later, by this or another instance) and stops delivering.
func (m *Mailer) Stop(ctx context.Context) error {
	if !m.enabled {
		return nil
	}
	err := m.client.Stop(ctx)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		err = m.client.StopAndCancel(context.WithoutCancel(ctx))
	}
	return err
}

// Enqueue checks msg and queues it in tx: it is sent once tx commits, and never if tx rolls
// back. Its token or code is sealed before it is written. A refused message is an error wrapping
// ErrInvalid, and nothing is written.
func (m *Mailer) Enqueue(ctx context.Context, tx *sql.Tx, msg Message) error {
	if err := msg.validate(); err != nil {
		return err
	}
	if !m.enabled {
		return nil
	}
	args, err := m.seal(msg)
	if err != nil {
		return err
	}
	if _, err := m.client.InsertTx(ctx, tx, args, &river.InsertOpts{Queue: queueName, MaxAttempts: maxAttempts}); err != nil {
		return fmt.Errorf("mailer: enqueue: %w", err)
	}
	return nil
}

// Inbox returns the development inbox, newest first (nil when it is off).
func (m *Mailer) Inbox(ctx context.Context) ([]DevMessage, error) {
	if m.inbox == nil {
		return nil, nil
	}
	return m.inbox.List(ctx)
}
