package store_test

import (
	"context"
	"regexp"
	"testing"

	"gqlauth/store/storetest"
)

// TestPrincipalCache_EveryTableAPrincipalIsReadFromIsWatched reads the principal queries' FROM and
// JOIN clauses and checks that each table has the cache's three triggers (update, delete,
// truncate): a column added to the principal from a new table must bring its triggers along.
func TestPrincipalCache_EveryTableAPrincipalIsReadFromIsWatched(t *testing.T) {
	if !contains(storetest.Kinds(t), storetest.Postgres) {
		t.Skip("TEST_DATABASE_URL not set")
	}
	db := storetest.Open(t, storetest.Postgres)
	tables := map[string]bool{}
	for _, q := range db.PrincipalQueries() {
		for _, m := range regexp.MustCompile(`(?i)\b(?:FROM|JOIN)\s+"?(\w+)"?`).FindAllStringSubmatch(q, -1) {
			tables[m[1]] = true
		}
	}
	if !tables["sessions"] || !tables["users"] || !tables["api_keys"] {
		t.Fatalf("tables read: %v; the test no longer reads the principal queries", tables)
	}
	for table := range tables {
		var n int
		err := db.QueryRow(context.Background(), `SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relname = '`+table+`' AND c.relnamespace = current_schema()::regnamespace AND t.tgfoid = 'gqlauth_cache_invalidate'::regproc`, &n)
		if err != nil {
			t.Fatal(err)
		}
		if n != 3 {
			t.Errorf("%s has %d of the principal cache's triggers, want 3 (update, delete, truncate)", table, n)
		}
	}
}

func contains[T comparable](xs []T, x T) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
