// Package ratelimit counts events per key in fixed time windows, in memory (one instance) or in
// Redis (shared by every instance). It must not know what it counts: the limits and their keys are
// account's.
package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Counter counts events per key in fixed windows that start at a key's first event.
type Counter interface {
	// Incr counts one event for key and returns the count in the current window and how long the
	// window has left.
	Incr(ctx context.Context, key string, window time.Duration) (count int64, left time.Duration, err error)
	// Count returns the count in key's current window without adding to it.
	Count(ctx context.Context, key string) (count int64, left time.Duration, err error)
	// Reset forgets key.
	Reset(ctx context.Context, key string) error
}

// Memory is a Counter for one process.
type Memory struct {
	mu      sync.Mutex
	windows map[string]*memWindow
	now     func() time.Time
	sweepAt time.Time
}

type memWindow struct {
	count int64
	end   time.Time
}

// NewMemory returns an empty in-memory Counter. now may be nil (time.Now).
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{windows: map[string]*memWindow{}, now: now}
}

func (m *Memory) Incr(_ context.Context, key string, window time.Duration) (int64, time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweep(now)
	w := m.windows[key]
	if w == nil || !now.Before(w.end) {
		w = &memWindow{end: now.Add(window)}
		m.windows[key] = w
	}
	w.count++
	return w.count, w.end.Sub(now), nil
}

func (m *Memory) Count(_ context.Context, key string) (int64, time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if w := m.windows[key]; w != nil && now.Before(w.end) {
		return w.count, w.end.Sub(now), nil
	}
	return 0, 0, nil
}

func (m *Memory) Reset(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.windows, key)
	return nil
}

// sweep drops ended windows once a minute, so that memory is bounded by the keys of the last
// window, not by every key ever seen.
func (m *Memory) sweep(now time.Time) {
	if now.Before(m.sweepAt) {
		return
	}
	for k, w := range m.windows {
		if !now.Before(w.end) {
			delete(m.windows, k)
		}
	}
	m.sweepAt = now.Add(time.Minute)
}

// Redis is a Counter shared by every instance that uses the same Redis.
type Redis struct {
	client *redis.Client
	prefix string
}

// NewRedis connects to the Redis at url (redis://…) and checks that it answers. Keys are prefixed
// with prefix.
func NewRedis(ctx context.Context, url, prefix string) (*Redis, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	client := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		client.Close()
		return nil, fmt.Errorf("unreachable: %w", err)
	}
	return &Redis{client: client, prefix: prefix}, nil
}

// Close closes the connection pool.
func (r *Redis) Close() error { return r.client.Close() }

// incr counts and starts the window's expiry at the first event, atomically.
var incr = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}`)

func (r *Redis) Incr(ctx context.Context, key string, window time.Duration) (int64, time.Duration, error) {
	res, err := incr.Run(ctx, r.client, []string{r.prefix + key}, window.Milliseconds()).Int64Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("ratelimit: redis: %w", err)
	}
	return res[0], time.Duration(res[1]) * time.Millisecond, nil
}

func (r *Redis) Count(ctx context.Context, key string) (int64, time.Duration, error) {
	pipe := r.client.Pipeline()
	get := pipe.Get(ctx, r.prefix+key)
	ttl := pipe.PTTL(ctx, r.prefix+key)
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return 0, 0, fmt.Errorf("ratelimit: redis: %w", err)
	}
	n, err := get.Int64()
	if err == redis.Nil {
		return 0, 0, nil
	}
	return n, ttl.Val(), err
}

func (r *Redis) Reset(ctx context.Context, key string) error {
	return r.client.Del(ctx, r.prefix+key).Err()
}
