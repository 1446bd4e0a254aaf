package store_test

import (
	"context"
	"sync"
	"testing"

	"gqlauth/store/storetest"
)

func TestMigrate_ConcurrentInstancesAndRerunsAreSafe(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		name := storetest.NewName(t, kind)
		const instances = 4
		errs := make([]error, instances)
		var wg sync.WaitGroup
		for i := range instances {
			db := storetest.OpenShared(t, kind, name)
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = db.Migrate(context.Background())
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("instance %d: %v", i, err)
			}
		}
		db := storetest.OpenShared(t, kind, name)
		if err := db.Migrate(context.Background()); err != nil {
			t.Fatalf("re-run: %v", err)
		}
		if n, err := db.CountUsers(context.Background()); err != nil || n != 0 {
			t.Fatalf("users table after migrations: %d, %v", n, err)
		}
	})
}
