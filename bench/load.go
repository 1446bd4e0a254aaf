package main

// The closed-loop load: virtual users as fast as the server answers, and what they measure.

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// result is one scenario's figures.
type result struct {
	Scenario       string           `json:"scenario"`
	Requests       int              `json:"requests"`
	RequestsPerSec float64          `json:"requestsPerSec"`
	P50Ms          float64          `json:"p50Ms"`
	P95Ms          float64          `json:"p95Ms"`
	P99Ms          float64          `json:"p99Ms"`
	MaxMs          float64          `json:"maxMs"`
	Errors         map[string]int64 `json:"errors"`
	RSSAt10sMB     float64          `json:"rssAt10sMB,omitempty"`
	RSSEndMB       float64          `json:"rssEndMB,omitempty"`
	LostSessions   *int             `json:"lostSessions,omitempty"`
	P999Ms         float64          `json:"p999Ms,omitempty"`
	TargetRate     float64          `json:"targetRate,omitempty"` // open loop: the fixed arrival rate
	// CPUPerRequestUs is the whole process's CPU time (server, recipe and load generator) per
	// request: unlike req/s and latency, it hardly moves when other processes compete for the cores.
	CPUPerRequestUs float64 `json:"cpuPerRequestUs,omitempty"`
	// QueriesPerRequest is the in-process server's database queries per request (the principal
	// cache makes it ~0 for guarded reads).
	QueriesPerRequest *float64 `json:"queriesPerRequest,omitempty"`
	queries           int64

	latencies []time.Duration // sorted
	elapsed   time.Duration
	cpu       time.Duration
}

// merge adds another run of the same scenario (an interleaved round) to r.
func (r *result) merge(o *result) {
	r.latencies = append(r.latencies, o.latencies...)
	r.elapsed += o.elapsed
	r.cpu += o.cpu
	r.queries += o.queries
	for k, v := range o.Errors {
		if r.Errors == nil {
			r.Errors = map[string]int64{}
		}
		r.Errors[k] += v
	}
	r.summarize()
}

// summarize computes the figures from the latencies.
func (r *result) summarize() {
	sort.Slice(r.latencies, func(i, j int) bool { return r.latencies[i] < r.latencies[j] })
	pct := func(p float64) float64 {
		if len(r.latencies) == 0 {
			return 0
		}
		return float64(r.latencies[min(len(r.latencies)-1, int(p*float64(len(r.latencies))))].Microseconds()) / 1000
	}
	r.Requests = len(r.latencies)
	r.RequestsPerSec = float64(r.Requests) / r.elapsed.Seconds()
	if r.QueriesPerRequest != nil && r.Requests > 0 {
		q := float64(r.queries) / float64(r.Requests)
		r.QueriesPerRequest = &q
	}
	r.P50Ms, r.P95Ms, r.P99Ms, r.P999Ms, r.MaxMs = pct(0.50), pct(0.95), pct(0.99), pct(0.999), pct(1)
	if r.Requests > 0 {
		r.CPUPerRequestUs = float64(r.cpu.Microseconds()) / float64(r.Requests)
	}
}

// processCPU is the CPU time (user and system) this process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// load runs o on every user in users concurrently for d.
func (env *environment) load(ctx context.Context, name string, users []*virtualUser, o op, d time.Duration, watchRSS bool) *result {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		all tally
		wg  sync.WaitGroup
	)
	res := &result{Scenario: name}
	if watchRSS && d > 10*time.Second {
		go func() {
			select {
			case <-time.After(10 * time.Second):
				res.RSSAt10sMB = statusMB("VmRSS")
			case <-ctx.Done():
			}
		}()
	}
	start, cpu := time.Now(), processCPU()
	queriesBefore := env.queries.n.Load()
	for _, vu := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine tally
			for ctx.Err() == nil {
				t := time.Now()
				code := o(ctx, vu)
				if ctx.Err() != nil && code == "TRANSPORT" {
					break // cut off by the end of the run, not a failure
				}
				mine.record(time.Since(t), code)
			}
			all.add(&mine)
		}()
	}
	wg.Wait()
	res.elapsed, res.cpu = time.Since(start), processCPU()-cpu
	if env.db != nil {
		res.queries = env.queries.n.Load() - queriesBefore
		res.QueriesPerRequest = new(float64)
	}
	res.latencies, res.Errors = all.latencies, all.errs
	res.summarize()
	if watchRSS {
		res.RSSEndMB = statusMB("VmRSS")
	}
	return res
}

// statusMB is a memory figure of this process from /proc/self/status (VmRSS: now; VmHWM: peak).
func statusMB(field string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(rest), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}

// loadOpen sends o at a fixed rate for d, whatever the server's pace (an open loop): each
// request's latency counts from when it was due, not from when a worker got to it, so time spent
// queued behind a slow response is measured instead of omitted (no coordinated omission).
func (env *environment) loadOpen(ctx context.Context, name string, users []*virtualUser, o op, d time.Duration, rate float64) *result {
	interval := time.Duration(float64(time.Second) / rate)
	total := int(d / interval)
	due := make(chan time.Time, total)
	var (
		all tally
		wg  sync.WaitGroup
	)
	// Workers: more than the closed loop's users, so that the server, not the pool, is what a
	// request waits for; each has a user to act as.
	for w := range len(users) * 4 {
		vu := users[w%len(users)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine tally
			for t := range due {
				code := o(ctx, vu)
				mine.record(time.Since(t), code)
			}
			all.add(&mine)
		}()
	}
	start := time.Now()
	for i := range total {
		t := start.Add(time.Duration(i) * interval)
		if wait := time.Until(t); wait > 0 {
			time.Sleep(wait)
		}
		due <- t
	}
	close(due)
	wg.Wait()
	res := &result{Scenario: name, elapsed: time.Since(start), latencies: all.latencies, Errors: all.errs, TargetRate: rate}
	res.summarize()
	return res
}

// tally is what requests measured: each worker keeps its own and adds it to the run's at the end.
type tally struct {
	mu        sync.Mutex
	latencies []time.Duration
	errs      map[string]int64
}

// record notes one request's latency and its error code ("" for none).
func (t *tally) record(latency time.Duration, code string) {
	t.latencies = append(t.latencies, latency)
	if code != "" {
		if t.errs == nil {
			t.errs = map[string]int64{}
		}
		t.errs[code]++
	}
}

// add merges a worker's tally into t.
func (t *tally) add(o *tally) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.latencies = append(t.latencies, o.latencies...)
	for k, v := range o.errs {
		if t.errs == nil {
			t.errs = map[string]int64{}
		}
		t.errs[k] += v
	}
}
