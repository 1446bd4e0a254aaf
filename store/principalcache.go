package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"gqlauth/model"
)

// The principal cache (docs/principal-cache.md has the argument). Principal and APIKeyPrincipal
// answer from memory while this instance holds a live lease and its invalidation channel is
// healthy; every change to sessions, users, api_keys or signing_keys is announced on that channel
// by triggers, and the transaction that made it returns only once every live lease holder
// acknowledged it (Transact → awaitBarrier).

// CacheConfig sets the lease of the principal cache. Zero values take the defaults.
type CacheConfig struct {
	// Lease is how long an acknowledgement keeps this instance's lease live on the database's
	// clock: the longest a revocation waits for an instance that died or froze. Default 2 s.
	Lease time.Duration
	// Renew is how often the instance sends a heartbeat barrier through its channel (and so renews
	// the lease when the heartbeat comes back). Default Lease/4.
	Renew time.Duration
	// Margin is how much earlier than the database this instance stops trusting its lease.
	// Default Lease/4.
	Margin time.Duration
	// OnError is told why the cache went off (the channel or the acker failed); it comes back on
	// by itself.
	OnError func(error)
	// MaxEntries bounds the principals kept (each about a kilobyte): a new one beyond it evicts
	// an arbitrary one, which is then read from the database again. Default 100,000.
	MaxEntries int
}

func (c CacheConfig) withDefaults() CacheConfig {
	if c.Lease <= 0 {
		c.Lease = 2 * time.Second
	}
	if c.Renew <= 0 {
		c.Renew = c.Lease / 4
	}
	if c.Margin <= 0 {
		c.Margin = c.Lease / 4
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = 100_000
	}
	return c
}

// principalCache holds the principals this instance has read, and the state that says whether
// it may answer from them.
type principalCache struct {
	cfg  CacheConfig
	id   string    // this instance's row in cache_leases
	base time.Time // the monotonic origin of deadline

	mu      sync.Mutex
	entries map[string]*cacheEntry
	index   map[string]map[string]struct{} // "s:"/"u:"/"k:"/"j:" + row id (kid) → entry keys
	// gen moves (under mu) with every invalidation and every change of state: an entry read from
	// the database is stored only if gen did not move while it was read.
	gen atomic.Uint64

	joined   atomic.Bool  // the channel is up and this instance's own join barrier came back
	deadline atomic.Int64 // since base: the lease ends here on this instance's monotonic clock

	wakeMu sync.Mutex
	wake   chan struct{} // closed (and replaced) on every acknowledgement heard

	afterLoad func() // tests: runs between a database read and its store
}

type cacheEntry struct {
	session *model.Session
	key     *model.APIKey
	user    *model.User
	ids     []string
	at      int64 // since base: when the database read that filled it began
}

// maxEntryAge bounds how long an entry is served, in defence in depth: an invalidation the
// triggers never sent (a write the design does not cover) is served for at most this long.
const maxEntryAge = 30 * time.Second

// CachePrincipals turns the principal cache on (Postgres only) and returns what runs it — the
// channel, the acknowledgements, the heartbeats — until ctx ends; joined, if not nil, is called
// each time the cache starts serving. Until run has joined, every principal is read from the
// database.
func (db *DB) CachePrincipals(cfg CacheConfig) (run func(ctx context.Context, joined func()), err error) {
	if !db.pg || db.listenConfig == nil {
		return nil, errors.New("the principal cache needs Postgres")
	}
	b := make([]byte, 12)
	rand.Read(b)
	c := &principalCache{cfg: cfg.withDefaults(), id: hex.EncodeToString(b), base: time.Now(),
		entries: map[string]*cacheEntry{}, index: map[string]map[string]struct{}{}, wake: make(chan struct{})}
	db.cache = c
	return func(ctx context.Context, joined func()) { db.runCache(ctx, c, joined) }, nil
}

// uncachedKey marks a context whose principal reads must go to the database.
type uncachedKey struct{}

// Uncached returns ctx with the principal cache bypassed: a re-check prompted by an event reads
// the database, because the event may arrive before the cache's own invalidation does.
func Uncached(ctx context.Context) context.Context {
	return context.WithValue(ctx, uncachedKey{}, true)
}

func (db *DB) cacheFor(ctx context.Context) *principalCache {
	if db.cache == nil || ctx.Value(uncachedKey{}) != nil || db.committed != nil {
		return nil
	}
	return db.cache
}

func (c *principalCache) now() int64 { return int64(time.Since(c.base)) }

// serving reports whether this instance may answer from memory now.
func (c *principalCache) serving() bool {
	return c.joined.Load() && c.now() < c.deadline.Load()
}

// get returns a copy of the entry under key, if the cache may answer now.
func (c *principalCache) get(key string) (cacheEntry, bool) {
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if !ok || !c.serving() || c.now()-e.at > int64(maxEntryAge) { // judged after the lookup
		return cacheEntry{}, false
	}
	out := cacheEntry{user: copyOf(e.user), session: copyOf(e.session), key: copyOf(e.key)}
	return out, true
}

func copyOf[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// begin is taken before a database read whose result may be stored with put.
func (c *principalCache) begin() (uint64, bool) { return c.gen.Load(), c.serving() }

// put stores e under key if nothing was invalidated since begin returned gen.
func (c *principalCache) put(gen uint64, key string, e *cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen.Load() != gen || !c.serving() {
		return
	}
	if old, ok := c.entries[key]; ok {
		c.unindex(key, old)
	} else if len(c.entries) >= c.cfg.MaxEntries {
		// Forgetting is always safe; without a bound, memory would grow with every session ever
		// used on this instance until the sweep deletes it (second review). Map order is
		// random, so this evicts an arbitrary entry.
		for k, e := range c.entries {
			c.unindex(k, e)
			delete(c.entries, k)
			break
		}
	}
	stored := &cacheEntry{user: copyOf(e.user), session: copyOf(e.session), key: copyOf(e.key), ids: e.ids, at: e.at}
	c.entries[key] = stored
	for _, id := range e.ids {
		if c.index[id] == nil {
			c.index[id] = map[string]struct{}{}
		}
		c.index[id][key] = struct{}{}
	}
}

func (c *principalCache) unindex(key string, e *cacheEntry) {
	for _, id := range e.ids {
		delete(c.index[id], key)
		if len(c.index[id]) == 0 {
			delete(c.index, id)
		}
	}
}

// invalidate drops every entry read from the row named id ("s:…", "u:…", "k:…", "j:…").
func (c *principalCache) invalidate(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen.Add(1)
	for key := range c.index[id] {
		if e, ok := c.entries[key]; ok {
			c.unindex(key, e)
			delete(c.entries, key)
		}
	}
}

// off stops serving and forgets everything: the channel is down, or the lease lapsed.
func (c *principalCache) off() {
	c.joined.Store(false)
	c.clear()
}

// clear forgets every entry.
func (c *principalCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen.Add(1)
	c.entries = map[string]*cacheEntry{}
	c.index = map[string]map[string]struct{}{}
}

// heard wakes every revoker waiting for acknowledgements.
func (c *principalCache) heard() {
	c.wakeMu.Lock()
	close(c.wake)
	c.wake = make(chan struct{})
	c.wakeMu.Unlock()
}

func (c *principalCache) waitChan() <-chan struct{} {
	c.wakeMu.Lock()
	defer c.wakeMu.Unlock()
	return c.wake
}

// cachedPrincipal is TokenPrincipal through the cache. The entry is kept per signing key too:
// it says the key was unrevoked when it was read, and a change to the key's row drops it ("j:").
func (db *DB) cachedPrincipal(ctx context.Context, c *principalCache, sessionID, userID, kid string,
	load func() (*model.Session, *model.User, error)) (*model.Session, *model.User, error) {
	key := "S\x00" + sessionID + "\x00" + userID + "\x00" + kid
	if e, ok := c.get(key); ok {
		return e.session, e.user, nil
	}
	gen, ok := c.begin()
	at := c.now()
	sess, user, err := load()
	if c.afterLoad != nil {
		c.afterLoad()
	}
	if err == nil && ok {
		ids := []string{"s:" + sessionID, "u:" + userID}
		if kid != "" {
			ids = append(ids, "j:"+kid)
		}
		c.put(gen, key, &cacheEntry{session: sess, user: user, ids: ids, at: at})
	}
	return sess, user, err
}

// cachedKeyPrincipal is APIKeyPrincipal through the cache.
func (db *DB) cachedKeyPrincipal(ctx context.Context, c *principalCache, secretHash string,
	load func() (*model.APIKey, *model.User, error)) (*model.APIKey, *model.User, error) {
	key := "K\x00" + secretHash
	if e, ok := c.get(key); ok {
		return e.key, e.user, nil
	}
	gen, ok := c.begin()
	at := c.now()
	k, user, err := load()
	if err == nil && ok {
		c.put(gen, key, &cacheEntry{key: k, user: user, ids: []string{"k:" + k.ID, "u:" + k.UserID}, at: at})
	}
	return k, user, err
}

// cacheChannel is the schema's invalidation channel (see the migration principal_cache).
func (db *DB) cacheChannel(ctx context.Context) (string, error) {
	events, err := db.eventChannel(ctx)
	if err != nil {
		return "", err
	}
	return "gqlauth_cache_" + strings.TrimPrefix(events, "gqlauth_events_"), nil
}

// runCache keeps the cache's channel and lease until ctx ends, and gives the lease up then.
func (db *DB) runCache(ctx context.Context, c *principalCache, joined func()) {
	retry := 200 * time.Millisecond // doubled after each short-lived attempt, up to 5 s
	for ctx.Err() == nil {
		started := time.Now()
		err := db.cacheSession(ctx, c, joined)
		c.off()
		if ctx.Err() != nil {
			break
		}
		if c.cfg.OnError != nil {
			c.cfg.OnError(err)
		}
		if time.Since(started) > time.Minute {
			retry = 200 * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
		retry = min(2*retry, 5*time.Second)
	}
	// Leaving: nobody needs to wait for this instance any more.
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	db.root.ExecContext(bg, "DELETE FROM cache_leases WHERE instance_id = ?", c.id)
}

// cacheSession is one life of the channel: it returns when the listener or the acker fails.
func (db *DB) cacheSession(ctx context.Context, c *principalCache, joined func()) error {
	channel, err := db.cacheChannel(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	connect := func(role string) (*pgx.Conn, error) {
		cfg := db.listenConfig.Copy()
		cfg.RuntimeParams["application_name"] = "gqlauth-cache-" + role + " " + c.id // pg_stat_activity
		// A safety net: an acknowledgement or heartbeat that waits on a lock longer than a lease
		// fails, and the cache goes off until it has joined again.
		cfg.RuntimeParams["lock_timeout"] = strconv.FormatInt(c.cfg.Lease.Milliseconds(), 10)
		// Canceled (shutdown, or the other connection failed): break the connection at once.
		cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
			return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
		}
		return pgx.ConnectConfig(ctx, cfg)
	}
	listener, err := connect("listener")
	if err != nil {
		return err
	}
	defer listener.Close(context.WithoutCancel(ctx))
	acker, err := connect("acker")
	if err != nil {
		return err
	}
	defer acker.Close(context.WithoutCancel(ctx))
	c.off() // whatever was cached before this channel was listening may be stale
	if _, err := listener.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return err
	}
	received := make(chan int64, 1) // the newest barrier the listener has applied
	acked := make(chan error, 1)
	go func() {
		acked <- db.acknowledge(ctx, c, acker, received, joined)
		cancel() // the listener stops too
	}()
	err = db.applyInvalidations(ctx, c, listener, received)
	cancel()
	c.off()
	if ackErr := <-acked; ackErr != nil && !errors.Is(ackErr, context.Canceled) {
		err = ackErr // the acker failed first
	}
	return err // the deferred closes run once both goroutines are done with their connections
}

// applyInvalidations reads the channel, in order, until it fails: each row's entries are dropped,
// and each barrier is handed to the acker once everything before it has been applied.
func (db *DB) applyInvalidations(ctx context.Context, c *principalCache, listener *pgx.Conn, received chan int64) error {
	var latest int64
	for {
		n, err := listener.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		kind, id, _ := strings.Cut(n.Payload, " ")
		switch kind {
		case "s", "u", "k", "j": // a session, user, API key or signing key ("j": by its kid)
			c.invalidate(kind + ":" + id)
		case "*":
			c.clear() // a table was emptied
		case "a":
			c.heard()
		case "b", "h":
			// Another instance's heartbeat needs no acknowledgement from this one; the next
			// acknowledgement covers it.
			seq, whose, _ := strings.Cut(id, " ")
			n, err := strconv.ParseInt(seq, 10, 64)
			if err != nil {
				continue
			}
			latest = max(latest, n)
			if kind == "b" || whose == c.id {
				select { // keep only the newest: acknowledging it acknowledges every older one
				case <-received:
				default:
				}
				received <- latest
			}
		}
	}
}

// acknowledge owns the acker connection: it sends a barrier every Renew (the join barrier first,
// and again after a lapse), and acknowledges each barrier the listener has applied, which renews
// the lease. The cache serves once the join barrier is acknowledged.
func (db *DB) acknowledge(ctx context.Context, c *principalCache, acker *pgx.Conn, received <-chan int64, joined func()) error {
	defer c.off()
	lease := c.cfg.Lease.Milliseconds()
	barrier := func() (int64, error) {
		var n int64
		err := acker.QueryRow(ctx, "SELECT gqlauth_cache_barrier($1)", c.id).Scan(&n)
		return n, err
	}
	// Leases of instances long gone: nobody waits for them, but the table need not keep them.
	if _, err := acker.Exec(ctx, "DELETE FROM cache_leases WHERE expires_at < clock_timestamp() - interval '1 hour'"); err != nil {
		return err
	}
	join, err := barrier()
	if err != nil {
		return err
	}
	ticker := time.NewTicker(c.cfg.Renew)
	defer ticker.Stop()
	// rejoin starts over after a lapse: frozen, or the acknowledgements were too slow.
	rejoin := func() error {
		if c.joined.Load() && c.now() >= c.deadline.Load() {
			c.off()
		}
		if !c.joined.Load() && join == 0 {
			join, err = barrier()
		}
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
			if err := rejoin(); err != nil {
				return err
			}
			if _, err := barrier(); err != nil { // the heartbeat
				return err
			}
		case n := <-received:
			sent := c.now() // before rejoin judges the lease: a lapse in between is caught below
			if err := rejoin(); err != nil {
				return err
			}
			joining := !c.joined.Load() // nothing cached: an expired row may be taken up again
			prev := c.deadline.Load()
			// The database renews only a live lease (or the row of an instance that is joining,
			// which caches nothing yet): a revoker may already have stopped waiting for one that
			// ran out, so its late acknowledgement must not revive the entries it kept.
			tag, err := acker.Exec(ctx, `WITH up AS (
	INSERT INTO cache_leases (instance_id, expires_at, applied) VALUES ($1, clock_timestamp() + $2 * interval '1 millisecond', $3)
	ON CONFLICT (instance_id) DO UPDATE SET expires_at = EXCLUDED.expires_at, applied = greatest(cache_leases.applied, EXCLUDED.applied)
	WHERE cache_leases.expires_at > clock_timestamp() OR $4
	RETURNING 1)
SELECT pg_notify(gqlauth_cache_channel(), 'a') FROM up`, c.id, lease, n, joining)
			if err != nil {
				return err
			}
			renewed := tag.RowsAffected() > 0
			if !joining && (!renewed || c.now() >= prev) {
				// The lease ran out before this acknowledgement committed: a lapse. Start over.
				c.off()
				if err := rejoin(); err != nil {
					return err
				}
				continue
			}
			if !renewed {
				continue
			}
			c.deadline.Store(sent + int64(c.cfg.Lease-c.cfg.Margin))
			if join != 0 && n >= join {
				c.mu.Lock()
				c.gen.Add(1)
				c.joined.Store(true)
				c.mu.Unlock()
				join = 0
				if joined != nil {
					joined()
				}
			}
		}
	}
}

// maxBarrierWait bounds a revoker's wait. A holder renews its lease only by acknowledging
// barriers in order, so the wait ends within one lease of the last acknowledgement of a holder
// that stopped; this bound is only reached if the database itself misbehaves.
// It is shorter than the HTTP server's WriteTimeout (30 s), so that the client is told
// ErrRevocationUnconfirmed rather than losing its connection.
const maxBarrierWait = 10 * time.Second

// ErrRevocationUnconfirmed is returned by a transaction that committed a change to a principal
// but could not confirm that every instance caching principals had dropped it.
var ErrRevocationUnconfirmed = errors.New("store: the change is committed, but not confirmed by every instance")

// cacheBarrier draws a barrier after a committed change to a principal's row and waits until
// every live lease holder has acknowledged it. The barrier is its own autocommit statement, drawn
// after the change committed: no lock is held across a round trip of this instance, so a frozen
// or cut-off instance holds up nobody beyond its lease. Order holds without a lock: the change's
// invalidations entered the notification queue before its COMMIT, which came before the barrier's
// number was drawn, which came before the barrier's own notification (docs/principal-cache.md).
func (db *DB) cacheBarrier(ctx context.Context) error {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), maxBarrierWait)
	defer cancel()
	var n int64
	if err := db.root.QueryRowContext(bctx, "SELECT gqlauth_cache_barrier()").Scan(&n); err != nil {
		return fmt.Errorf("%w: %w", ErrRevocationUnconfirmed, wrap(err, "cacheBarrier"))
	}
	return db.awaitBarrier(ctx, n)
}

// awaitBarrier returns once no instance holds a live lease without having acknowledged barrier n.
func (db *DB) awaitBarrier(ctx context.Context, n int64) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), maxBarrierWait)
	defer cancel()
	delay := time.Millisecond
	for {
		var wake <-chan struct{}
		if db.cache != nil {
			wake = db.cache.waitChan() // before the query: an ack heard after it still wakes us
		}
		var behind int
		err := db.root.QueryRowContext(ctx,
			"SELECT count(*) FROM cache_leases WHERE applied < ? AND expires_at > clock_timestamp()", n).Scan(&behind)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrRevocationUnconfirmed, wrap(err, "awaitBarrier"))
		}
		if behind == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %d instance(s) still behind", ErrRevocationUnconfirmed, behind)
		case <-wake:
		case <-time.After(delay):
		}
		delay = min(2*delay, 20*time.Millisecond)
	}
}

// CacheInstance names this instance's lease row and, in pg_stat_activity, its cache connections
// ("gqlauth-cache-listener <id>", "gqlauth-cache-acker <id>"); "" with the cache off.
func (db *DB) CacheInstance() string {
	if db.cache == nil {
		return ""
	}
	return db.cache.id
}

// CacheServing reports whether this instance answers principals from memory now (tests).
func (db *DB) CacheServing() bool { return db.cache != nil && db.cache.serving() }
