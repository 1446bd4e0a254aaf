package main

// The closed-loop load: virtual users as fast as the server answers, and what they measure.

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
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
}

// load runs o on every user in users concurrently for d.
func (env *environment) load(ctx context.Context, name string, users []*virtualUser, o op, d time.Duration, watchRSS bool) *result {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		mu        sync.Mutex
		latencies []time.Duration
		errs      = map[string]int64{}
		wg        sync.WaitGroup
	)
	res := &result{Scenario: name}
	if watchRSS && d > 10*time.Second {
		go func() {
			select {
			case <-time.After(10 * time.Second):
				res.RSSAt10sMB = rssMB()
			case <-ctx.Done():
			}
		}()
	}
	start := time.Now()
	for _, vu := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			localErrs := map[string]int64{}
			for ctx.Err() == nil {
				t := time.Now()
				code := o(ctx, vu)
				if ctx.Err() != nil && code == "TRANSPORT" {
					break // cut off by the end of the run, not a failure
				}
				local = append(local, time.Since(t))
				if code != "" {
					localErrs[code]++
				}
			}
			mu.Lock()
			latencies = append(latencies, local...)
			for k, v := range localErrs {
				errs[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[min(len(latencies)-1, int(p*float64(len(latencies))))].Microseconds()) / 1000
	}
	res.Requests = len(latencies)
	res.RequestsPerSec = float64(len(latencies)) / elapsed.Seconds()
	res.P50Ms, res.P95Ms, res.P99Ms, res.MaxMs = pct(0.50), pct(0.95), pct(0.99), pct(1)
	res.Errors = errs
	if watchRSS {
		res.RSSEndMB = rssMB()
	}
	return res
}

func rssMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}
