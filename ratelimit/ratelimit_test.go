package ratelimit_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"gqlauth/ratelimit"
	"gqlauth/store/storetest"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func TestMemory_CountsPerKeyAndWindow(t *testing.T) {
	clk := &clock{now: time.Unix(1_000_000, 0)}
	m := ratelimit.NewMemory(clk.Now)
	ctx := context.Background()
	for i := int64(1); i <= 3; i++ {
		if n, left, _ := m.Incr(ctx, "a", time.Minute); n != i || left != time.Minute {
			t.Fatalf("incr %d: got %d, %v", i, n, left)
		}
	}
	if n, _, _ := m.Incr(ctx, "b", time.Minute); n != 1 {
		t.Fatalf("other key: %d", n)
	}
	clk.mu.Lock()
	clk.now = clk.now.Add(30 * time.Second)
	clk.mu.Unlock()
	if n, left, _ := m.Count(ctx, "a"); n != 3 || left != 30*time.Second {
		t.Fatalf("count: %d %v", n, left)
	}
	clk.mu.Lock()
	clk.now = clk.now.Add(31 * time.Second)
	clk.mu.Unlock()
	if n, _, _ := m.Count(ctx, "a"); n != 0 {
		t.Fatalf("after the window: %d", n)
	}
	if n, _, _ := m.Incr(ctx, "a", time.Minute); n != 1 {
		t.Fatalf("new window: %d", n)
	}
	m.Reset(ctx, "a")
	if n, _, _ := m.Count(ctx, "a"); n != 0 {
		t.Fatalf("after reset: %d", n)
	}
}

func TestRedis_CountsAtomicallyAcrossClients(t *testing.T) {
	url := storetest.RedisURL(t)
	ctx := context.Background()
	prefix := fmt.Sprintf("gqlauth-test:%d:", time.Now().UnixNano())
	a, err := ratelimit.NewRedis(ctx, url, prefix)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, _ := ratelimit.NewRedis(ctx, url, prefix)
	defer b.Close()
	var wg sync.WaitGroup
	for _, c := range []*ratelimit.Redis{a, b} {
		for range 25 {
			wg.Add(1)
			go func() { defer wg.Done(); c.Incr(ctx, "k", time.Minute) }()
		}
	}
	wg.Wait()
	n, left, err := a.Count(ctx, "k")
	if err != nil || n != 50 || left <= 0 || left > time.Minute {
		t.Fatalf("count: %d %v %v", n, left, err)
	}
	if n, left, _ := b.Incr(ctx, "short", 50*time.Millisecond); n != 1 || left > 50*time.Millisecond {
		t.Fatalf("short window: %d %v", n, left)
	}
	time.Sleep(120 * time.Millisecond)
	if n, _, _ := a.Count(ctx, "short"); n != 0 {
		t.Fatalf("expired window still counts %d", n)
	}
	a.Reset(ctx, "k")
	if n, _, _ := b.Count(ctx, "k"); n != 0 {
		t.Fatalf("after reset: %d", n)
	}
}
