package main

// The outbox's guarantees (CONTRACT §11, "Delivery"; README, "Mail delivery guarantees") shown on
// the running server: the real binary, started as a process of its own so that it can be killed
// with SIGKILL, mail requested through GraphQL, and a real SMTP server (internal/smtptest) in the
// test process. Every timing is the production one: the server has no knob for it.

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gqlauth/internal/smtptest"
	"gqlauth/store/storetest"
)

var serverBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// serverBinary builds the server with go build, once per test run, and returns its path.
func serverBinary(t *testing.T) string {
	t.Helper()
	serverBuild.once.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			serverBuild.err = fmt.Errorf("go is not on PATH: %v", err)
			return
		}
		if serverBuild.dir, err = os.MkdirTemp("", "gqlauth-bin-"); err != nil {
			serverBuild.err = err
			return
		}
		path := filepath.Join(serverBuild.dir, "gqlauth")
		if out, err := exec.Command(goBin, "build", "-o", path, ".").CombinedOutput(); err != nil {
			serverBuild.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		serverBuild.path = path
	})
	if serverBuild.err != nil {
		t.Fatal(serverBuild.err)
	}
	return serverBuild.path
}

// removeServerBinary deletes what serverBinary built; TestMain calls it after the tests.
func removeServerBinary() {
	if serverBuild.dir != "" {
		os.RemoveAll(serverBuild.dir)
	}
}

// serverProcess is the server binary running as a process of its own.
type serverProcess struct {
	t    *testing.T
	cmd  *exec.Cmd
	base string
	logs *syncBuffer
	done chan struct{}
}

// startProcess runs the server binary in dir (where the embedded database lives) with vars on
// top of a test environment, waits until it listens, and stops it (SIGTERM) when the test ends
// unless it was killed before.
func startProcess(t *testing.T, dir string, vars ...string) *serverProcess {
	t.Helper()
	cmd := exec.Command(serverBinary(t))
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	for kv := range slices.Chunk(append([]string{"PORT", "0", "LOG_FORMAT", "json", "BCRYPT_COST", "10", "DATABASE_MAX_CONNS", strconv.Itoa(storetest.MaxConns)}, vars...), 2) {
		cmd.Env = append(cmd.Env, kv[0]+"="+kv[1])
	}
	p := &serverProcess{t: t, cmd: cmd, logs: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("server log:\n%s", p.logs.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for p.base == "" {
		for _, line := range strings.Split(p.logs.String(), "\n") {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" && rec.Addr != "" {
				p.base = "http://" + strings.Replace(rec.Addr, "[::]", "127.0.0.1", 1)
			}
		}
		select {
		case <-p.done:
			t.Fatalf("the server exited at start:\n%s", p.logs.String())
		default:
		}
		if p.base == "" && time.Now().After(deadline) {
			t.Fatalf("the server did not listen within a minute:\n%s", p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// kill ends the process with SIGKILL: no shutdown, nothing finished.
func (p *serverProcess) kill() {
	p.t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		p.t.Fatal(err)
	}
	<-p.done
}

// mailEnv is the environment of a server on a fresh database of kind that sends through srv, and
// how to open that database; a SQLite database is dir's embedded one.
func mailEnv(t *testing.T, kind storetest.Kind, dir string, srv *smtptest.Server) (vars []string, outbox *outboxDB) {
	t.Helper()
	vars, driver, dsn := databaseVars(t, kind)
	if kind == storetest.SQLite {
		dsn = "file:" + filepath.Join(dir, dsn) + "?_pragma=busy_timeout(10000)"
	}
	vars = append(vars, "JWT_SECRET", strings.Repeat("k", 32), "SMTP_URL", srv.URL(), "MAIL_FROM", "Acme <no-reply@acme.example>",
		"RATE_LIMIT_PER_IP", "0", "PUBLIC_URL", "https://auth.acme.example",
		// Signing up many users at once queues bcrypt; on a loaded CI machine the default 2 s queue
		// timeout answers TOO_MANY_REQUESTS, which is not what these tests are about.
		"BCRYPT_QUEUE_TIMEOUT", "60s")
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// River keeps args as SQLite's binary JSONB, and the errors as a JSON array on SQLite, a
	// jsonb[] on Postgres.
	columns := "json(args), coalesce(json_array_length(errors), 0)"
	if kind == storetest.Postgres {
		columns = "args, coalesce(array_length(errors, 1), 0)"
	}
	return vars, &outboxDB{db, columns}
}

// outboxDB reads the outbox of a server's database.
type outboxDB struct {
	db      *sql.DB
	columns string // the SQL giving a row's args as JSON text and the number of its errors
}

// queuedMail is one row of the outbox (River's job table).
type queuedMail struct {
	State     string
	Attempt   int
	MessageID string
	Errors    int
}

// outbox reads the outbox's messages in the order they were queued (nil before River's tables exist);
// the queued requests a sender resolves into messages (requestPasswordReset…) are not messages.
func outbox(t *testing.T, db *outboxDB) []queuedMail {
	t.Helper()
	rows, err := db.db.Query("SELECT state, attempt, " + db.columns + " FROM river_job WHERE kind = 'gqlauth.mail' ORDER BY id")
	if err != nil {
		if strings.Contains(err.Error(), "river_job") {
			return nil
		}
		t.Fatal(err)
	}
	defer rows.Close()
	var out []queuedMail
	for rows.Next() {
		var (
			q    queuedMail
			args []byte
		)
		if err := rows.Scan(&q.State, &q.Attempt, &args, &q.Errors); err != nil {
			t.Fatal(err)
		}
		var a struct {
			MessageID string `json:"message_id"`
		}
		if err := json.Unmarshal(args, &a); err != nil {
			t.Fatalf("river_job.args %q: %v", args, err)
		}
		q.MessageID = "<" + a.MessageID + ">"
		out = append(out, q)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitOutbox polls the outbox until cond holds, and fails past timeout.
func waitOutbox(t *testing.T, db *outboxDB, timeout time.Duration, what string, cond func([]queuedMail) bool) []queuedMail {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		q := outbox(t, db)
		if cond(q) {
			return q
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; outbox %+v", timeout, what, q)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// call posts a GraphQL request and returns its answer and how long it took; it does not fail the
// test, so that goroutines may use it.
func call(base, token, query string) (map[string]any, time.Duration, error) {
	body, _ := json.Marshal(map[string]string{"query": query})
	req, _ := http.NewRequest(http.MethodPost, base+"/query", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	start := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer res.Body.Close()
	var out map[string]any
	err = json.NewDecoder(res.Body).Decode(&out)
	took := time.Since(start)
	if err == nil && out["errors"] != nil {
		err = fmt.Errorf("%s: %v", query, out["errors"])
	}
	return out, took, err
}

// registerUsers registers n users with addresses u0@example.com… through the servers in turn,
// four at a time, and returns their access tokens.
func registerUsers(t *testing.T, n int, bases ...string) []string {
	t.Helper()
	tokens := make([]string, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			out, _, err := call(bases[i%len(bases)], "", fmt.Sprintf(`mutation { register(username: "user%d", password: "correct horse battery", email: "u%d@example.com") { accessToken } }`, i, i))
			if err != nil {
				errs[i] = err
				return
			}
			tokens[i], _ = out["data"].(map[string]any)["register"].(map[string]any)["accessToken"].(string)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return tokens
}

// sendVerification asks for a verification mail for the token's user and returns how long the
// mutation took.
func sendVerification(t *testing.T, base, token string) time.Duration {
	t.Helper()
	out, took, err := call(base, token, `mutation { sendEmailVerification }`)
	if err != nil || out["data"].(map[string]any)["sendEmailVerification"] != true {
		t.Fatalf("sendEmailVerification: %v %v", out, err)
	}
	return took
}

// exactlyOnce checks that the SMTP server got each queued message exactly once: one copy of each
// Message-ID in the outbox and nothing else.
func exactlyOnce(t *testing.T, got []smtptest.Message, queued []queuedMail) {
	t.Helper()
	ids := map[string]int{}
	for _, m := range got {
		ids[m.MessageID()]++
	}
	for _, q := range queued {
		if ids[q.MessageID] != 1 {
			t.Errorf("message %s was received %d times, want once", q.MessageID, ids[q.MessageID])
		}
		delete(ids, q.MessageID)
	}
	if len(ids) != 0 || len(got) != len(queued) {
		t.Fatalf("%d messages received for %d queued; not queued: %v", len(got), len(queued), ids)
	}
}

// sentOnceEach waits for n messages to be received and recorded as sent, waits a quiet period
// for a wrong extra one, and checks that each was received once, on its first attempt.
func sentOnceEach(t *testing.T, srv *smtptest.Server, db *outboxDB, n int) {
	t.Helper()
	srv.WaitFor(t, n, 60*time.Second)
	queued := waitOutbox(t, db, 30*time.Second, "every message to be recorded as sent", func(q []queuedMail) bool {
		return len(q) == n && !slices.ContainsFunc(q, func(m queuedMail) bool { return m.State != "completed" })
	})
	time.Sleep(quietPeriod)
	exactlyOnce(t, srv.Messages(), queued)
	for _, q := range queued {
		if q.Attempt != 1 {
			t.Errorf("message %s took %d attempts, want 1", q.MessageID, q.Attempt)
		}
	}
}

// quietPeriod is how long a test waits after the last expected delivery for a wrong extra one:
// several of the outbox's 1 s polls and a scheduler tick.
const quietPeriod = 6 * time.Second

// eachKind runs f on each database, in parallel: these tests mostly wait.
func eachKind(t *testing.T, f func(t *testing.T, kind storetest.Kind)) {
	for _, kind := range storetest.Kinds(t) {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			f(t, kind)
		})
	}
}

func TestMailDelivery_TwoInstancesSendEachMessageOnce(t *testing.T) {
	eachKind(t, func(t *testing.T, kind storetest.Kind) {
		srv := smtptest.Start(t)
		dir := t.TempDir()
		vars, db := mailEnv(t, kind, dir, srv)
		a := startProcess(t, dir, vars...)
		b := startProcess(t, dir, vars...)
		const users = 30
		tokens := registerUsers(t, users, a.base, b.base)

		// Each user asks for a verification link on one instance and a reset link on the other,
		// all at once.
		var wg sync.WaitGroup
		errs := make(chan error, 2*users)
		for i, tok := range tokens {
			first, second := a.base, b.base
			if i%2 == 1 {
				first, second = second, first
			}
			wg.Go(func() {
				if _, _, err := call(first, tok, `mutation { sendEmailVerification }`); err != nil {
					errs <- err
				}
			})
			wg.Go(func() {
				if _, _, err := call(second, "", fmt.Sprintf(`mutation { requestPasswordReset(email: "u%d@example.com") }`, i)); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		sentOnceEach(t, srv, db, 2*users)
		perRecipient := map[string][]string{}
		for _, m := range srv.Messages() {
			perRecipient[strings.Join(m.To, ",")] = append(perRecipient[strings.Join(m.To, ",")], m.Subject)
		}
		for i := range users {
			subjects := perRecipient[fmt.Sprintf("u%d@example.com", i)]
			sort.Strings(subjects)
			if len(subjects) != 2 || subjects[0] == subjects[1] {
				t.Errorf("u%d@example.com got %q, want one verification and one reset", i, subjects)
			}
		}
	})
}

func TestMailDelivery_KilledBeforeSendingDeliversOnceAfterRestart(t *testing.T) {
	eachKind(t, func(t *testing.T, kind storetest.Kind) {
		srv := smtptest.Start(t)
		srv.Stop() // refuses connections: the message cannot leave before the kill
		dir := t.TempDir()
		vars, db := mailEnv(t, kind, dir, srv)
		first := startProcess(t, dir, vars...)
		tok := registerUsers(t, 1, first.base)[0]
		sendVerification(t, first.base, tok)
		queued := waitOutbox(t, db, 30*time.Second, "a failed attempt", func(q []queuedMail) bool {
			return len(q) == 1 && q[0].State == "retryable" && q[0].Errors == 1
		})
		first.kill()
		srv.Restart()

		restarted := time.Now()
		startProcess(t, dir, vars...)
		got := srv.WaitFor(t, 1, 60*time.Second)
		t.Logf("%s: delivered %s after the restart", kind, got[0].At.Sub(restarted).Round(100*time.Millisecond))
		waitOutbox(t, db, 30*time.Second, "the message to be recorded as sent", func(q []queuedMail) bool {
			return len(q) == 1 && q[0].State == "completed"
		})
		time.Sleep(quietPeriod)
		exactlyOnce(t, srv.Messages(), queued)
	})
}

func TestMailDelivery_SMTPDownTheRequestAnswersAndTheMailGoesOutOnceItIsBack(t *testing.T) {
	eachKind(t, func(t *testing.T, kind storetest.Kind) {
		srv := smtptest.Start(t)
		srv.Stop()
		dir := t.TempDir()
		vars, db := mailEnv(t, kind, dir, srv)
		p := startProcess(t, dir, vars...)
		tok := registerUsers(t, 1, p.base)[0]
		if took := sendVerification(t, p.base, tok); took > time.Second {
			t.Fatalf("sendEmailVerification took %s with the SMTP server down", took)
		}
		answered := time.Now()
		queued := waitOutbox(t, db, 30*time.Second, "a failed attempt", func(q []queuedMail) bool {
			return len(q) == 1 && q[0].Errors >= 1
		})
		srv.Restart()
		back := time.Since(answered)
		got := srv.WaitFor(t, 1, 60*time.Second)
		// The contract: a failed attempt is retried within 30 seconds at first.
		after := got[0].At.Sub(answered)
		t.Logf("%s: delivered %s after the request, with the SMTP server back %s after it", kind, after.Round(100*time.Millisecond), back.Round(100*time.Millisecond))
		if after > 30*time.Second {
			t.Errorf("delivered %s after the request, want the retry within 30 s", after)
		}
		time.Sleep(quietPeriod)
		exactlyOnce(t, srv.Messages(), queued)
	})
}

func TestMailDelivery_SlowSMTPNeverBlocksARequest(t *testing.T) {
	eachKind(t, func(t *testing.T, kind storetest.Kind) {
		srv := smtptest.Start(t)
		const stall = 6 * time.Second // under the 10 s send timeout: slow, but each send succeeds
		srv.SlowData(stall)
		dir := t.TempDir()
		vars, db := mailEnv(t, kind, dir, srv)
		p := startProcess(t, dir, vars...)
		const users = 15
		tokens := registerUsers(t, users, p.base)
		sendVerification(t, p.base, tokens[0])
		select {
		case <-srv.InData():
		case <-time.After(30 * time.Second):
			t.Fatal("the first message never reached DATA")
		}
		// The SMTP server now stalls a send; the other requests are timed one after the other.
		var took []time.Duration
		for _, tok := range tokens[1:] {
			took = append(took, sendVerification(t, p.base, tok))
		}
		slices.Sort(took)
		median, slowest := took[len(took)/2], took[len(took)-1]
		t.Logf("%s: sendEmailVerification while SMTP stalls DATA for %s: median %s, slowest %s", kind, stall,
			median.Round(time.Millisecond), slowest.Round(time.Millisecond))
		if slowest > time.Second || median > 250*time.Millisecond {
			t.Fatalf("sendEmailVerification while SMTP stalls: median %s, slowest %s; want well under a second", median, slowest)
		}
		// A slow but live send is neither timed out nor rescued: one attempt each.
		sentOnceEach(t, srv, db, users)
	})
}

// TestMailDelivery_KilledMidSendIsResentWithinAMinuteOfTheRestart kills the server (SIGKILL)
// while the SMTP server holds its message in DATA, never accepting it, and starts it again at
// once: River's rescuer must find the orphaned attempt and the message go out, once, with its
// Message-ID, within the contract's minute (README, "Mail delivery guarantees", for the sum).
func TestMailDelivery_KilledMidSendIsResentWithinAMinuteOfTheRestart(t *testing.T) {
	eachKind(t, func(t *testing.T, kind storetest.Kind) {
		srv := smtptest.Start(t)
		release := srv.Hold()
		defer release()
		dir := t.TempDir()
		vars, db := mailEnv(t, kind, dir, srv)
		first := startProcess(t, dir, vars...)
		tok := registerUsers(t, 1, first.base)[0]
		sendVerification(t, first.base, tok)
		select {
		case <-srv.InData():
		case <-time.After(30 * time.Second):
			t.Fatal("the message never reached DATA")
		}
		first.kill()
		release()
		queued := outbox(t, db)
		if len(queued) != 1 || queued[0].State != "running" {
			t.Fatalf("outbox after the kill: %+v, want one running message", queued)
		}

		restarted := time.Now()
		startProcess(t, dir, vars...)
		got := srv.WaitFor(t, 1, 75*time.Second)
		took := got[0].At.Sub(restarted)
		t.Logf("%s: resent %s after the restart", kind, took.Round(100*time.Millisecond))
		if took > time.Minute {
			t.Errorf("resent %s after the restart, want within a minute", took)
		}
		waitOutbox(t, db, 30*time.Second, "the message to be recorded as sent", func(q []queuedMail) bool {
			return len(q) == 1 && q[0].State == "completed"
		})
		time.Sleep(quietPeriod)
		exactlyOnce(t, srv.Messages(), queued)
	})
}

// TestOutbox_ThroughputThroughTheServer measures messages per second from the first request to
// the SMTP server's accepting the last message: 100 sendEmailVerification mutations, one after
// the other, on the server binary with its production settings (1 s poll, ten sends at a time).
// graph's TestOutbox_ThroughputWithTestPolling is the same with the tests' 50 ms poll.
func TestOutbox_ThroughputThroughTheServer(t *testing.T) {
	if testing.Short() {
		t.Skip("a measurement")
	}
	eachKind(t, func(t *testing.T, kind storetest.Kind) {
		srv := smtptest.Start(t)
		dir := t.TempDir()
		vars, db := mailEnv(t, kind, dir, srv)
		p := startProcess(t, dir, vars...)
		const n = 100
		tokens := registerUsers(t, n, p.base)
		start := time.Now()
		for _, tok := range tokens {
			sendVerification(t, p.base, tok)
		}
		queued := time.Since(start)
		got := srv.WaitFor(t, n, 60*time.Second)
		took := got[n-1].At.Sub(start)
		t.Logf("%s: %d messages requested in %s, delivered in %s: %.0f messages/s", kind, n, queued.Round(time.Millisecond),
			took.Round(time.Millisecond), float64(n)/took.Seconds())
		sentOnceEach(t, srv, db, n)
	})
}
