package mailer_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"gqlauth/mailer"
	"gqlauth/store/storetest"
)

func notice(to string) mailer.Message { return mailer.Message{Kind: mailer.PasswordChanged, To: to} }

// messageIDs counts the messages the server got by Message-ID.
func messageIDs(got []received) map[string]int {
	ids := map[string]int{}
	for _, r := range got {
		ids[r.Header.Get("Message-Id")]++
	}
	return ids
}

func TestMailer_SMTPDownAtSendTimeDeliversOnceItIsBack(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		srv := startSMTP(t)
		srv.Stop()
		d := newDatabase(t, kind)
		db := d.open(t)
		m := newMailer(t, db, d.engine(), testConfig(srv), true)
		if err := enqueue(t, db, m, true, notice("ann@example.com")); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 10*time.Second, "two failed attempts", func() bool {
			_, attempts := jobStates(t, db)
			return len(attempts) == 1 && attempts[0] >= 2
		})
		srv.Restart()
		got := srv.WaitFor(t, 1, 10*time.Second)
		waitUntil(t, 10*time.Second, "the job to complete", func() bool {
			s, _ := jobStates(t, db)
			return s[0] == "completed"
		})
		if got = srv.Messages(); len(got) != 1 {
			t.Fatalf("%d messages after the outage, want 1", len(got))
		}
	})
}

func TestMailer_RefusedRecipientIsNotRetried(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		srv := startSMTP(t)
		srv.RejectTo(func(rcpt string) error {
			if rcpt == "nobody@example.com" {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			}
			return nil
		})
		d := newDatabase(t, kind)
		db := d.open(t)
		m := newMailer(t, db, d.engine(), testConfig(srv), true)
		if err := enqueue(t, db, m, true, notice("nobody@example.com")); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 10*time.Second, "the job to be cancelled", func() bool {
			s, _ := jobStates(t, db)
			return s[0] == "cancelled"
		})
		time.Sleep(300 * time.Millisecond)
		_, rcpts := srv.Commands()
		if _, attempts := jobStates(t, db); attempts[0] != 1 || rcpts != 1 {
			t.Fatalf("%d attempts, %d RCPT commands; want 1 and 1", attempts[0], rcpts)
		}
	})
}

func TestMailer_GivesUpAfterTheRetryLimit(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		srv := startSMTP(t)
		srv.Stop()
		d := newDatabase(t, kind)
		db := d.open(t)
		cfg := testConfig(srv)
		cfg.GiveUpAfter = time.Second
		m := newMailer(t, db, d.engine(), cfg, true)
		if err := enqueue(t, db, m, true, notice("ann@example.com")); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 15*time.Second, "the job to be given up", func() bool {
			s, _ := jobStates(t, db)
			return s[0] == "cancelled"
		})
		if _, attempts := jobStates(t, db); attempts[0] < 3 {
			t.Fatalf("given up after %d attempts, want retries within the limit", attempts[0])
		}
		srv.Restart()
		time.Sleep(500 * time.Millisecond)
		if n := len(srv.Messages()); n != 0 {
			t.Fatalf("%d messages sent after giving up", n)
		}
	})
}

func TestMailer_SlowSMTPNeverBlocksEnqueue(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		srv := startSMTP(t)
		defer srv.Hold()()
		d := newDatabase(t, kind)
		db := d.open(t)
		cfg := testConfig(srv)
		cfg.SendTimeout = 10 * time.Second
		cfg.RescueAfter = 20 * time.Second
		m := newMailer(t, db, d.engine(), cfg, true)
		if err := enqueue(t, db, m, true, notice("first@example.com")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-srv.InData():
		case <-time.After(10 * time.Second):
			t.Fatal("the first message never reached DATA")
		}
		// The SMTP server now holds a send open; queueing goes on at database speed.
		var slowest time.Duration
		for i := range 20 {
			start := time.Now()
			if err := enqueue(t, db, m, true, notice(fmt.Sprintf("u%d@example.com", i))); err != nil {
				t.Fatal(err)
			}
			slowest = max(slowest, time.Since(start))
		}
		if slowest > 500*time.Millisecond {
			t.Fatalf("an Enqueue took %s while SMTP was stalled", slowest)
		}
		if n := len(jobs(t, db)); n != 21 {
			t.Fatalf("%d jobs, want 21", n)
		}
	})
}

func TestMailer_TwoInstancesSendEachMessageOnce(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		srv := startSMTP(t)
		d := newDatabase(t, kind)
		dbA, dbB := d.open(t), d.open(t)
		a := newMailer(t, dbA, d.engine(), testConfig(srv), true)
		newMailer(t, dbB, d.engine(), testConfig(srv), true)
		const n = 50
		for i := range n {
			if err := enqueue(t, dbA, a, true, notice(fmt.Sprintf("u%d@example.com", i))); err != nil {
				t.Fatal(err)
			}
		}
		srv.WaitFor(t, n, 30*time.Second)
		time.Sleep(500 * time.Millisecond)
		got := srv.Messages()
		ids := messageIDs(got)
		if len(got) != n || len(ids) != n {
			t.Fatalf("%d messages with %d distinct Message-IDs, want %d and %d", len(got), len(ids), n, n)
		}
		var instances int
		if err := dbA.QueryRow("SELECT count(DISTINCT attempted_by) FROM river_job").Scan(&instances); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d messages sent by %d instances", kind, n, instances)
	})
}

// TestOutbox_Throughput measures messages per second from commit to the SMTP server's accepting
// them: 200 messages committed in one transaction, one instance, ten sends at a time.
func TestOutbox_Throughput(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		srv := startSMTP(t)
		d := newDatabase(t, kind)
		db := d.open(t)
		m := newMailer(t, db, d.engine(), testConfig(srv), true)
		const n = 200
		msgs := make([]mailer.Message, n)
		for i := range msgs {
			msgs[i] = mailer.Message{Kind: mailer.SignInCode, To: fmt.Sprintf("u%d@example.com", i), Code: "123456", ExpiresIn: time.Minute}
		}
		start := time.Now()
		if err := enqueue(t, db, m, true, msgs...); err != nil {
			t.Fatal(err)
		}
		queued := time.Since(start)
		srv.WaitFor(t, n, 60*time.Second)
		took := time.Since(start)
		if ids := messageIDs(srv.Messages()); len(ids) != n {
			t.Fatalf("%d distinct messages", len(ids))
		}
		t.Logf("%s: %d messages queued in %s, delivered in %s: %.0f messages/s", kind, n, queued.Round(time.Millisecond),
			took.Round(time.Millisecond), float64(n)/took.Seconds())
	})
}

// TestMailer_AttemptEndsBySendTimeoutWhereverTheServerStalls holds one attempt against a server
// slow to answer EHLO and then stalled in DATA: the attempt must end by SendTimeout as a whole
// (go-mail's own timeout, renewed for each phase, would let it run on), since RescueAfter takes
// an attempt older than that for one whose process died.
func TestMailer_AttemptEndsBySendTimeoutWhereverTheServerStalls(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		srv := startSMTP(t)
		const sendTimeout = 3 * time.Second
		srv.SlowEHLO(sendTimeout * 4 / 5)
		defer srv.Hold()()
		d := newDatabase(t, kind)
		db := d.open(t)
		cfg := testConfig(srv)
		cfg.SendTimeout, cfg.RescueAfter = sendTimeout, 0
		cfg.Backoff = func(int) time.Duration { return time.Hour } // one attempt only
		m := newMailer(t, db, d.engine(), cfg, true)
		start := time.Now()
		if err := enqueue(t, db, m, true, notice("ann@example.com")); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 20*time.Second, "the attempt to end", func() bool {
			s, _ := jobStates(t, db)
			return s[0] == "retryable"
		})
		took := time.Since(start)
		t.Logf("%s: the attempt ended %s after the commit", kind, took.Round(10*time.Millisecond))
		if took > sendTimeout+time.Second {
			t.Fatalf("the attempt ended %s after the commit, want about SendTimeout (%s)", took, sendTimeout)
		}
	})
}
