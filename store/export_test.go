package store

// PrincipalQueries returns the SQL of the queries a principal is read with (tests check that
// every table they read carries the cache's triggers).
func (db *DB) PrincipalQueries() []string {
	return []string{principalQuery, db.apiKeyPrincipalQuery(new(apiKeyWithUser), "x").String()}
}

// AfterCacheLoad makes f run between a principal's database read and its store in the cache.
func (db *DB) AfterCacheLoad(f func()) { db.cache.afterLoad = f }
