package main

// The report: one line per scenario, and the ratios that compare them.

import (
	"fmt"
	"sort"
	"strings"
)

func (r *result) print() {
	errs := "none"
	if len(r.Errors) > 0 {
		var parts []string
		for k, v := range r.Errors {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
		sort.Strings(parts)
		errs = strings.Join(parts, " ")
	}
	fmt.Printf("%-24s %9.0f req/s  p50 %7.2f ms  p95 %7.2f ms  p99 %7.2f ms  max %8.2f ms  errors: %s",
		r.Scenario, r.RequestsPerSec, r.P50Ms, r.P95Ms, r.P99Ms, r.MaxMs, errs)
	if r.RSSAt10sMB > 0 {
		fmt.Printf("  rss@10s %.0f MB, end %.0f MB", r.RSSAt10sMB, r.RSSEndMB)
	}
	if r.LostSessions != nil {
		fmt.Printf("  lost sessions: %d", *r.LostSessions)
	}
	fmt.Println()
}

// printRatios prints the figures the targets are stated in.
func printRatios(results []*result) {
	by := map[string]*result{}
	for _, r := range results {
		by[r.Scenario] = r
	}
	ratio := func(label, a, b string) {
		if by[a] != nil && by[b] != nil && by[b].RequestsPerSec > 0 {
			fmt.Printf("%-44s %.2f\n", label, by[a].RequestsPerSec/by[b].RequestsPerSec)
		}
	}
	fmt.Println()
	ratio("me / ceiling (req/s)", "me", "ceiling")
	ratio("me-wide / me (req/s)", "me-wide", "me")
	ratio("login / bcrypt ceiling (req/s)", "login", "bcrypt-ceiling")
	if a, u := by["flood: me alone"], by["flood: me under flood"]; a != nil && u != nil && a.P99Ms > 0 {
		fmt.Printf("%-44s %.2f\n", "me p99 under login flood / me p99 alone", u.P99Ms/a.P99Ms)
	}
}
