package mailer_test

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"gqlauth/mailer"
	"gqlauth/store/storetest"
)

func TestMailer_CommittedWhileNoInstanceRunsIsDeliveredOnStart(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		srv := startSMTP(t)
		d := newDatabase(t, kind)
		dbA := d.open(t)
		// The instance that queued the message died before sending it (it never started).
		a := newMailer(t, dbA, d.engine(), testConfig(srv), false)
		if err := enqueue(t, dbA, a, true, notice("ann@example.com")); err != nil {
			t.Fatal(err)
		}
		dbA.Close()
		time.Sleep(200 * time.Millisecond)
		if n := len(srv.Messages()); n != 0 {
			t.Fatalf("%d messages before any instance started", n)
		}
		dbB := d.open(t)
		newMailer(t, dbB, d.engine(), testConfig(srv), true)
		srv.WaitFor(t, 1, 10*time.Second)
		time.Sleep(300 * time.Millisecond)
		if n := len(srv.Messages()); n != 1 {
			t.Fatalf("%d messages, want 1", n)
		}
	})
}

// TestMailer_KilledDuringSendIsDeliveredOnceAfterRestart kills (SIGKILL) the process that is
// sending a message while the SMTP server holds it in DATA (so the server never accepted it),
// then starts another instance: the message is rescued and delivered exactly once, with the
// Message-ID it was queued with.
func TestMailer_KilledDuringSendIsDeliveredOnceAfterRestart(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		srv := startSMTP(t)
		release := srv.Hold()
		d := newDatabase(t, kind)
		db := d.open(t)
		m := newMailer(t, db, d.engine(), testConfig(srv), false)
		if err := enqueue(t, db, m, true, mailer.Message{Kind: mailer.ResetPassword, To: "ann@example.com", Link: resetLink, ExpiresIn: time.Hour}); err != nil {
			t.Fatal(err)
		}
		wantID := "<" + messageIDOf(t, db, kind) + ">"

		child := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		child.Env = append(os.Environ(), "MAILER_CHILD_KIND="+string(kind), "MAILER_CHILD_DSN="+d.dsn, "MAILER_CHILD_SMTP="+srv.URL())
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-srv.InData():
		case <-time.After(20 * time.Second):
			child.Process.Kill()
			t.Fatal("the child never reached DATA")
		}
		if err := child.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		child.Wait()
		release()
		if s, _ := jobStates(t, db); len(s) != 1 || s[0] != "running" {
			t.Fatalf("job states after the kill: %v, want [running]", s)
		}

		start := time.Now()
		// Failed attempts would wait an hour: the rescued one must not (the SMTP server did not
		// fail it, and the wait for the rescue was long enough).
		cfg := testConfig(srv)
		cfg.Backoff = func(int) time.Duration { return time.Hour }
		newMailer(t, db, d.engine(), cfg, true)
		got := srv.WaitFor(t, 1, 60*time.Second)
		t.Logf("%s: delivered %s after the restart", kind, time.Since(start).Round(100*time.Millisecond))
		waitUntil(t, 10*time.Second, "the job to complete", func() bool {
			s, _ := jobStates(t, db)
			return s[0] == "completed"
		})
		if got = srv.Messages(); len(got) != 1 || got[0].Header.Get("Message-Id") != wantID {
			t.Fatalf("%d messages (first Message-ID %q), want 1 with %q", len(got), got[0].Header.Get("Message-Id"), wantID)
		}
	})
}

// TestCrashChild is the process TestMailer_KilledDuringSendIsDeliveredOnceAfterRestart kills: an
// instance that delivers until it dies.
func TestCrashChild(t *testing.T) {
	kind := storetest.Kind(os.Getenv("MAILER_CHILD_KIND"))
	if kind == "" {
		t.Skip("run by TestMailer_KilledDuringSendIsDeliveredOnceAfterRestart")
	}
	db, err := openPool(kind, os.Getenv("MAILER_CHILD_DSN"))
	if err != nil {
		t.Fatal(err)
	}
	engine := mailer.SQLite
	if kind == storetest.Postgres {
		engine = mailer.Postgres
	}
	cfg := testConfig(nil)
	cfg.SMTPURL = os.Getenv("MAILER_CHILD_SMTP")
	m, err := mailer.New(db, engine, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Minute) // killed long before
}

func TestMailer_InstancesMigratingAtOnceAllSucceed(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		d := newDatabase(t, kind)
		errs := make(chan error, 4)
		for range 4 {
			m, err := mailer.New(d.open(t), d.engine(), testConfig(nil))
			if err != nil {
				t.Fatal(err)
			}
			go func() { errs <- m.Migrate(context.Background()) }()
		}
		for range 4 {
			if err := <-errs; err != nil {
				t.Fatalf("Migrate: %v", err)
			}
		}
	})
}
