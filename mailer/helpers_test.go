package mailer_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"gqlauth/mailer"
	"gqlauth/store/storetest"
)

// received is one message as the test SMTP server got it.
type received struct {
	From    string
	To      []string
	Header  mail.Header
	Text    string
	HTML    string
	RawData []byte
}

// smtpServer is a real SMTP server (emersion/go-smtp) on a loopback port that records every
// message it accepts. It can be stopped and started again on the same address, refuse
// recipients, and hold messages in DATA.
type smtpServer struct {
	t    testing.TB
	addr string
	srv  *smtp.Server
	ln   net.Listener

	mu       sync.Mutex
	msgs     []received
	rejectTo func(rcpt string) error
	hold     chan struct{} // when set, DATA waits for it to close, then fails
	inData   chan struct{} // gets a value whenever a session reaches DATA
	rcpts    int
	mails    int
	// user and pass, when set, must be given with AUTH PLAIN before MAIL.
	user, pass string
}

func startSMTP(t testing.TB) *smtpServer {
	t.Helper()
	s := &smtpServer{t: t, inData: make(chan struct{}, 1000)}
	s.listen("127.0.0.1:0")
	t.Cleanup(s.stop)
	return s
}

func (s *smtpServer) listen(addr string) {
	s.t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatalf("smtp listen: %v", err)
	}
	s.addr = ln.Addr().String()
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{s: s}, nil }))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	s.mu.Lock()
	s.srv, s.ln = srv, ln
	s.mu.Unlock()
	go srv.Serve(ln)
}

func (s *smtpServer) stop() {
	s.mu.Lock()
	srv, ln := s.srv, s.ln
	s.mu.Unlock()
	ln.Close() // Serve may not have registered it yet
	srv.Close()
}

func (s *smtpServer) restart() { s.listen(s.addr) }

func (s *smtpServer) url() string { return "smtp://" + s.addr }

func (s *smtpServer) messages() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.msgs...)
}

// waitFor waits until the server holds n messages, and fails past timeout.
func (s *smtpServer) waitFor(t testing.TB, n int, timeout time.Duration) []received {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := s.messages()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the SMTP server got %d messages in %s, want %d", len(got), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type session struct {
	s      *smtpServer
	from   string
	to     []string
	authed bool
}

func (x *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (x *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != x.s.user || pass != x.s.pass {
			return smtp.ErrAuthFailed
		}
		x.authed = true
		return nil
	}), nil
}

func (x *session) Reset()        { x.from, x.to = "", nil }
func (x *session) Logout() error { return nil }
func (x *session) Mail(from string, _ *smtp.MailOptions) error {
	x.s.mu.Lock()
	x.s.mails++
	needAuth := x.s.user != ""
	x.s.mu.Unlock()
	if needAuth && !x.authed {
		return smtp.ErrAuthRequired
	}
	x.from = from
	return nil
}

func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.s.mu.Lock()
	x.s.rcpts++
	reject := x.s.rejectTo
	x.s.mu.Unlock()
	if reject != nil {
		if err := reject(to); err != nil {
			return err
		}
	}
	x.to = append(x.to, to)
	return nil
}

func (x *session) Data(r io.Reader) error {
	x.s.inData <- struct{}{}
	x.s.mu.Lock()
	hold := x.s.hold
	x.s.mu.Unlock()
	if hold != nil {
		<-hold
		return &smtp.SMTPError{Code: 451, Message: "held"}
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	msg := received{From: x.from, To: x.to, RawData: raw}
	parsed, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		x.s.t.Errorf("unparsable message: %v", err)
		return err
	}
	msg.Header = parsed.Header
	msg.Text, msg.HTML = bodies(x.s.t, parsed)
	x.s.mu.Lock()
	x.s.msgs = append(x.s.msgs, msg)
	x.s.mu.Unlock()
	return nil
}

// bodies returns the decoded text/plain and text/html parts of a multipart/alternative message.
func bodies(t testing.TB, m *mail.Message) (text, html string) {
	mediaType, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/alternative" {
		t.Errorf("Content-Type %q, want multipart/alternative", m.Header.Get("Content-Type"))
		return "", ""
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		var r io.Reader = p
		if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			r = quotedprintable.NewReader(p)
		}
		b, _ := io.ReadAll(r)
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		switch ct {
		case "text/plain":
			text = string(b)
		case "text/html":
			html = string(b)
		}
	}
	return text, html
}

// database is a fresh database of one engine that several handles (instances) may open.
type database struct {
	kind storetest.Kind
	dsn  string // a file path for SQLite, a postgres:// URL with its own search_path
}

func newDatabase(t *testing.T, kind storetest.Kind) database {
	t.Helper()
	if kind == storetest.SQLite {
		// Not t.TempDir(): a test's name may put a % into the path, which the file: URI reads.
		dir, err := os.MkdirTemp("", "mailer-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		return database{kind: kind, dsn: dir + "/mail.db"}
	}
	schema := storetest.NewName(t, kind)
	u, err := url.Parse(os.Getenv("TEST_DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return database{kind: kind, dsn: u.String()}
}

func (d database) engine() mailer.Engine {
	if d.kind == storetest.Postgres {
		return mailer.Postgres
	}
	return mailer.SQLite
}

// open opens a pool configured as the store configures its own (store.OpenSQLite and
// store.OpenPostgres): one connection with immediate transactions on SQLite, pgx's exec mode
// through database/sql on Postgres.
func (d database) open(t testing.TB) *sql.DB {
	t.Helper()
	db, err := openPool(d.kind, d.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func openPool(kind storetest.Kind, dsn string) (*sql.DB, error) {
	if kind == storetest.Postgres {
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, err
		}
		cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
		db := stdlib.OpenDB(*cfg)
		db.SetMaxOpenConns(32)
		return db, db.Ping()
	}
	db, err := sql.Open("sqlite", "file:"+dsn+"?_pragma=foreign_keys(1)&_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return db, db.Ping()
}

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// testConfig is a configuration with short waits, sending to srv (if not nil).
func testConfig(srv *smtpServer) mailer.Config {
	cfg := mailer.Config{
		From: "Acme <no-reply@acme.example>", AppName: "Acme", Secret: testSecret, Logger: testLogger(),
		PollInterval: 50 * time.Millisecond, SendTimeout: 2 * time.Second, RescueAfter: 3 * time.Second,
		Backoff: func(int) time.Duration { return 100 * time.Millisecond },
	}
	if srv != nil {
		cfg.SMTPURL = srv.url()
	}
	return cfg
}

func testLogger() *slog.Logger {
	if os.Getenv("MAILER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newMailer builds a migrated Mailer on db; started is whether it also delivers (stopped when
// the test ends).
func newMailer(t testing.TB, db *sql.DB, engine mailer.Engine, cfg mailer.Config, started bool) *mailer.Mailer {
	t.Helper()
	m, err := mailer.New(db, engine, cfg)
	if err != nil {
		t.Fatalf("mailer.New: %v", err)
	}
	if err := m.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if started {
		if err := m.Start(context.Background()); err != nil {
			t.Fatalf("Start: %v", err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			m.Stop(ctx)
		})
	}
	return m
}

// enqueue queues msgs in one transaction and commits it (or rolls it back).
func enqueue(t testing.TB, db *sql.DB, m *mailer.Mailer, commit bool, msgs ...mailer.Message) error {
	t.Helper()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range msgs {
		if err := m.Enqueue(ctx, tx, msg); err != nil {
			tx.Rollback()
			return err
		}
	}
	if !commit {
		return tx.Rollback()
	}
	return tx.Commit()
}

// jobs returns the outbox's rows as text: every column of river_job, in id order.
func jobs(t testing.TB, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query("SELECT * FROM river_job ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for i, v := range vals {
			if raw, ok := v.([]byte); ok {
				v = string(raw)
			}
			fmt.Fprintf(&b, "%s=%v ", cols[i], v)
		}
		out = append(out, b.String())
	}
	return out
}

// jobStates returns each job's state and attempt count, in id order.
func jobStates(t testing.TB, db *sql.DB) (states []string, attempts []int) {
	t.Helper()
	rows, err := db.Query("SELECT state, attempt FROM river_job ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		var a int
		if err := rows.Scan(&s, &a); err != nil {
			t.Fatal(err)
		}
		states, attempts = append(states, s), append(attempts, a)
	}
	return states, attempts
}

// waitUntil polls cond every 20 ms until it holds, and fails past timeout.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
