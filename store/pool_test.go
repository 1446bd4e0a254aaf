package store_test

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/store/storetest"
)

// An instance must not open more Postgres connections for its queries than DATABASE_MAX_CONNS
// says, however many requests wait: past the server's max_connections every new connection
// fails (CI once failed so, two instances of the old 48-connection pools on a default Postgres).
func TestOpenPostgres_OpensAtMostMaxConnsUnderLoad(t *testing.T) {
	if !slices.Contains(storetest.Kinds(t), storetest.Postgres) {
		t.Skip("TEST_DATABASE_URL not set")
	}
	for _, maxConns := range []int{store.MinMaxConns, 9} {
		app := "pooltest_" + uuid.NewString()[:8]
		ctx := context.Background()
		db := openMigrated(t, maxConns, app)
		admin, err := sql.Open("pgx", os.Getenv("TEST_DATABASE_URL"))
		if err != nil {
			t.Fatal(err)
		}

		// Both pools busy at once: slow queries on the general pool, the principal query in a
		// loop on its own pool, from far more goroutines than connections.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if i%2 == 0 {
						db.Exec(ctx, "SELECT pg_sleep(0.05)")
					} else {
						db.Principal(ctx, uuid.NewString(), uuid.NewString())
					}
				}
			}()
		}
		most := 0
		for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			var n int
			if err := admin.QueryRow("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&n); err != nil {
				t.Fatal(err)
			}
			most = max(most, n)
		}
		close(stop)
		wg.Wait()
		db.Close()
		admin.Close()
		// At least two connections show that the load was concurrent; the migration's and the
		// cache's own connections are not open here.
		if most > maxConns || most < 2 {
			t.Fatalf("DATABASE_MAX_CONNS=%d: %d connections open at most", maxConns, most)
		}
		t.Logf("DATABASE_MAX_CONNS=%d: at most %d connections open", maxConns, most)
	}
}

// openMigrated opens a fresh schema with a pool of maxConns, as application appName when set
// (so that its backends can be counted); the caller closes it.
func openMigrated(t *testing.T, maxConns int, appName string) *store.DB {
	t.Helper()
	u, err := url.Parse(os.Getenv("TEST_DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", storetest.NewName(t, storetest.Postgres))
	if appName != "" {
		q.Set("application_name", appName)
	}
	u.RawQuery = q.Encode()
	db, err := store.OpenPostgres(context.Background(), u.String(), maxConns)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(context.Background()); err != nil {
		db.Close()
		t.Fatal(err)
	}
	return db
}

// A transaction recording its first audit event on a fresh instance must not need a second
// connection: with every connection of a small pool held by such transactions (and the event
// listener starting beside them, as at a server's start), that wait was a deadlock that no
// request deadline ended (review of DATABASE_MAX_CONNS).
func TestRecordEvent_FirstEventsWithEveryConnectionHeldDoNotDeadlock(t *testing.T) {
	if !slices.Contains(storetest.Kinds(t), storetest.Postgres) {
		t.Skip("TEST_DATABASE_URL not set")
	}
	for _, withListener := range []bool{false, true} {
		ctx := context.Background()
		db := openMigrated(t, store.MinMaxConns, "")
		listenCtx, stopListening := context.WithCancel(ctx)
		general := store.MinMaxConns - 1 // the general pool at MinMaxConns (see poolSplit)
		var held, started sync.WaitGroup
		held.Add(general)
		started.Add(1)
		errs := make(chan error, general)
		for i := range general {
			go func() {
				txCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				errs <- db.Transact(txCtx, func(tx *store.Tx) error {
					var one int
					err := tx.QueryRow(txCtx, "SELECT 1", &one) // holds one of the connections
					held.Done()
					if err != nil {
						return err
					}
					held.Wait()
					if i == 0 {
						if withListener {
							go db.ListenForEvents(listenCtx, nil, nil)
							time.Sleep(200 * time.Millisecond)
						}
						started.Done()
					}
					started.Wait()
					return tx.RecordEvent(txCtx, &model.AuditEvent{At: time.Now().UTC(), Type: model.AuditEventTypeSignIn})
				})
			}()
		}
		for range general {
			if err := <-errs; err != nil {
				t.Errorf("listener %v: a transaction failed: %v", withListener, err)
			}
		}
		stopListening()
		db.Close()
	}
}
