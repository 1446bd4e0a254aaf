package store

import (
	"context"
	"strings"
)

// ExplainPrincipal returns the query plan of the principal query for a session, user and signing
// key: EXPLAIN on Postgres (on the pool the query runs on), EXPLAIN QUERY PLAN on SQLite.
func (db *DB) ExplainPrincipal(ctx context.Context, sessionID, userID, kid string) (string, error) {
	var lines []string
	if db.hotPool != nil {
		rows, err := db.hotPool.Query(ctx, "EXPLAIN "+principalQueryPG, sessionID, userID, kid)
		if err != nil {
			return "", err
		}
		defer rows.Close()
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				return "", err
			}
			lines = append(lines, line)
		}
		return strings.Join(lines, "\n"), rows.Err()
	}
	rows, err := db.root.DB.QueryContext(ctx, "EXPLAIN QUERY PLAN "+principalQuery, principalArgs(sessionID, userID, kid)...)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			return "", err
		}
		lines = append(lines, detail)
	}
	return strings.Join(lines, "\n"), rows.Err()
}

// PrincipalQueries returns the SQL of the queries a principal is read with (tests check that
// every table they read carries the cache's triggers).
func (db *DB) PrincipalQueries() []string {
	return []string{principalQuery, db.apiKeyPrincipalQuery(new(apiKeyWithUser), "x").String()}
}

// AfterCacheLoad makes f run between a principal's database read and its store in the cache.
func (db *DB) AfterCacheLoad(f func()) { db.cache.afterLoad = f }

// CachedPrincipals is how many principals the cache holds.
func (db *DB) CachedPrincipals() int {
	db.cache.mu.Lock()
	defer db.cache.mu.Unlock()
	return len(db.cache.entries)
}
