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
	fmt.Printf("%-24s %9.0f req/s  p50 %7.2f ms  p95 %7.2f ms  p99 %7.2f ms  p99.9 %7.2f ms  max %8.2f ms  errors: %s",
		r.Scenario, r.RequestsPerSec, r.P50Ms, r.P95Ms, r.P99Ms, r.P999Ms, r.MaxMs, errs)
	if r.CPUPerRequestUs > 0 {
		fmt.Printf("  cpu %.0f µs/req", r.CPUPerRequestUs)
	}
	if r.RSSAt10sMB > 0 {
		fmt.Printf("  rss@10s %.0f MB, end %.0f MB", r.RSSAt10sMB, r.RSSEndMB)
	}
	if r.QueriesPerRequest != nil {
		fmt.Printf("  db queries/req %.3f", *r.QueriesPerRequest)
	}
	if r.TargetRate > 0 {
		fmt.Printf("  (open loop at %.0f req/s)", r.TargetRate)
	}
	if r.LostSessions != nil {
		fmt.Printf("  lost sessions: %d", *r.LostSessions)
	}
	fmt.Println()
}

// printRatios prints the figures the targets are stated in, each target with its verdict, and
// returns how many were met and missed.
func printRatios(results []*result) (met, missed int) {
	by := map[string]*result{}
	for _, r := range results {
		by[r.Scenario] = r
	}
	ratio := func(label, a, b string) {
		if by[a] != nil && by[b] != nil && by[b].RequestsPerSec > 0 {
			fmt.Printf("%-44s %.2f\n", label, by[a].RequestsPerSec/by[b].RequestsPerSec)
		}
	}
	// target prints a figure with the target next to it (#16, #25), so one run shows them
	// all.
	target := func(label string, got float64, op string, want float64) {
		ok := (op == ">=" && got >= want) || (op == "<=" && got <= want)
		verdict := "met"
		if ok {
			met++
		} else {
			verdict = "MISSED"
			missed++
		}
		fmt.Printf("%-44s %.2f   (target %s %.2f: %s)\n", label, got, op, want, verdict)
	}
	rps := func(a, b string) (float64, bool) {
		if by[a] == nil || by[b] == nil || by[b].RequestsPerSec == 0 {
			return 0, false
		}
		return by[a].RequestsPerSec / by[b].RequestsPerSec, true
	}
	fmt.Println()
	// #25: with the principal cache a guarded read costs no database round trip, so it must
	// double the recipe, which pays one; without it, it must keep up with the recipe.
	if v, ok := rps("me", "recipe-me"); ok {
		if principalCache {
			target("me / recipe me (req/s), principal cache on", v, ">=", 2.0)
		} else {
			target("me / recipe me (req/s), -no-principal-cache", v, ">=", 0.95)
		}
	}
	if principalCache {
		for _, name := range []string{"me", "me-wide"} {
			if r := by[name]; r != nil && r.QueriesPerRequest != nil && r.Requests > 0 {
				// "≈ 0": the cache's misses (a first request per session) and the lease's
				// renewals, well under one query per hundred requests.
				target("db queries per guarded request ("+name+", cached)", *r.QueriesPerRequest, "<=", 0.01)
			}
		}
	}
	if v, ok := rps("typename", "recipe-typename"); ok {
		target("typename / recipe typename (req/s)", v, ">=", 0.95)
	}
	if a, b := by["me"], by["recipe-me"]; a != nil && b != nil && b.P99Ms > 0 {
		target("me p99 / recipe me p99", a.P99Ms/b.P99Ms, "<=", 1.0)
	}
	if v, ok := rps("me-wide", "me"); ok {
		target("me-wide / me (req/s)", v, ">=", 0.85)
	}
	for _, pair := range [][2]string{{"typename", "recipe-typename"}, {"me", "recipe-me"}, {"me-wide", "me"}} {
		if a, b := by[pair[0]], by[pair[1]]; a != nil && b != nil && b.CPUPerRequestUs > 0 {
			fmt.Printf("%-44s %.2f\n", "cpu per request: "+pair[0]+" / "+pair[1], a.CPUPerRequestUs/b.CPUPerRequestUs)
		}
	}
	if v, ok := rps("scale: me-10k", "scale: me (one session each)"); ok {
		target("me over 10,000 sessions / me on own session", v, ">=", 0.9)
	}
	if a, b := by["scale: me-10k during sweep"], by["scale: me-10k"]; a != nil && b != nil && b.P99Ms > 0 {
		target("me-10k p99 during the sweep / without", a.P99Ms/b.P99Ms, "<=", 2)
	}
	for _, r := range results {
		if rest, ok := strings.CutPrefix(r.Scenario, "open "); ok && strings.HasSuffix(rest, ": me") {
			if recipe := by[strings.TrimSuffix(r.Scenario, "me")+"recipe-me"]; recipe != nil && recipe.P99Ms > 0 {
				fmt.Printf("%-44s %.2f / %.2f\n", "open loop: me p99 / recipe p99, p99.9", r.P99Ms/recipe.P99Ms, r.P999Ms/max(recipe.P999Ms, 0.001))
			}
		}
	}
	ratio("me / ceiling (req/s)", "me", "ceiling")
	ratio("login / bcrypt ceiling (req/s)", "login", "bcrypt-ceiling")
	if a, u := by["flood: me alone"], by["flood: me under flood"]; a != nil && u != nil && a.P99Ms > 0 {
		fmt.Printf("%-44s %.2f\n", "me p99 under login flood / me p99 alone", u.P99Ms/a.P99Ms)
	}
	return met, missed
}
