// Command bench is gqlauth's load harness: real HTTP keep-alive clients against a server it starts
// on a fresh database (SQLite, or Postgres with -database-url) or against a running one (-url).
//
//	go run ./bench -scenario me -c 64 -d 10s
//	go run ./bench -scenario all -c 64 -d 10s -database-url postgres://postgres@127.0.0.1:5432/test
//
// Scenarios: ceiling, recipe-typename, recipe-me (gqlgen's authentication recipe on the same
// schema and database: the yardstick), typename, me, me-wide, login, refresh, mix, flood, all. A response with
// GraphQL errors counts as an error, so a failing server cannot look fast. The summary states each
// target of #16 and #25 with its verdict; -fault-tests adds the principal cache's fault tests, so
// that one command shows them all:
//
//	go run ./bench -scenario recipe-typename,typename,recipe-me,me,me-wide -rounds 2 -c 64 -d 6s \
//	  -database-url postgres://postgres@127.0.0.1:5432/test -log-file /tmp/req.log -fault-tests
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"gqlauth/graph"
)

const password = "correct horse battery"

func main() {
	var (
		scenario    = flag.String("scenario", "me", "ceiling, recipe-typename, typename, recipe-me, me, me-wide, recipe-me-wide, login, refresh, mix, flood, a comma-separated list, all, or none")
		concurrency = flag.Int("c", 64, "virtual users (keep-alive connections)")
		duration    = flag.Duration("d", 10*time.Second, "duration of each scenario")
		target      = flag.String("url", "", "base URL of a running server (default: start one in-process)")
		databaseURL = flag.String("database-url", "", "Postgres URL for the in-process server (default: a temporary SQLite file)")
		cost        = flag.Int("bcrypt-cost", 10, "bcrypt cost of the in-process server")
		jsonOut     = flag.String("json", "bench-results/results.json", "where to write the results as JSON ('' for nowhere)")
		cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of the whole run (server and clients) to this file")
		scale       = flag.Bool("scale", false, "after the scenarios (-scenario none: instead of them), scale mode (Postgres): seed 100,000 users and 1,000,000 sessions, run me/refresh/login over distinct users and the sweep under load, print the query plans")
		open        = flag.Float64("open", 0, "after the closed loop, run typename, me and me-wide (and the recipe's) again at this fraction of their measured maximum rate as an open loop, for latency without coordinated omission (e.g. 0.5)")
		accessLog   = flag.String("access-log", "all", "ACCESS_LOG of the in-process server: all, errors or off")
		logFile     = flag.String("log-file", "/dev/null", "where the in-process server writes its log (a real file, so each write costs what it costs the server; 'discard' formats lines and writes nothing)")
		scaleN      = flag.Int("scale-users", 100_000, "-scale: how many users to seed (ten sessions each)")
		noCache     = flag.Bool("no-principal-cache", false, "run the in-process Postgres server with PRINCIPAL_CACHE=false (the cache is on by default, as in server.go)")
		rounds      = flag.Int("rounds", 1, "split each scenario's duration into this many rounds, interleaved with the other scenarios' (fairer ratios on a noisy machine)")
		faultTests  = flag.Bool("fault-tests", false, "after the scenarios, run the principal cache's fault tests (go test -count=1 -run '"+faultTestPattern+"' . in the source tree, TEST_DATABASE_URL from -database-url) and state their outcome with the targets")
	)
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	scaleUsers = max(*scaleN, 1)
	defaultAccessLog = graph.AccessLog(*accessLog)
	logPath = *logFile
	principalCache = !*noCache
	runFaults = *faultTests
	if err := run(*scenario, *concurrency, *duration, *rounds, *open, *scale, *target, *databaseURL, *cost, *jsonOut); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(scenario string, c int, d time.Duration, rounds int, open float64, scale bool, target, databaseURL string, cost int, jsonOut string) error {
	ctx := context.Background()
	env := &environment{concurrency: c, cost: cost, accessLog: defaultAccessLog, principalCache: principalCache}
	if target == "" {
		stop, err := env.startServer(ctx, databaseURL)
		if err != nil {
			return err
		}
		defer stop()
	} else if scale {
		return fmt.Errorf("-scale needs the in-process server (no -url)")
	} else {
		env.base = strings.TrimSuffix(target, "/")
	}
	env.client = newClient(c)
	if err := env.seed(ctx); err != nil {
		return err
	}

	names := strings.Split(scenario, ",")
	switch scenario {
	case "all":
		names = []string{"ceiling", "recipe-typename", "typename", "recipe-me", "me", "me-wide", "login", "refresh", "mix", "flood"}
	case "none":
		names = nil
	}
	// The scenarios compared with each other take turns in rounds (-rounds), so that drift on a
	// noisy machine hits all of them; the others (bcrypt-bound, or stateful) run once, whole.
	var compared, whole []string
	for _, name := range names {
		if slices.Contains(comparedScenarios, name) {
			compared = append(compared, name)
		} else {
			whole = append(whole, name)
		}
	}
	var results []*result
	byName := map[string]*result{}
	add := func(rs []*result) {
		for _, r := range rs {
			if prev := byName[r.Scenario]; prev != nil {
				prev.merge(r)
				continue
			}
			byName[r.Scenario] = r
			results = append(results, r)
		}
	}
	rounds = max(rounds, 1)
	for range rounds {
		for _, name := range compared {
			rs, err := env.run(ctx, name, d/time.Duration(rounds))
			if err != nil {
				return err
			}
			add(rs)
		}
	}
	// The process's memory after the compared scenarios: both servers and the load generator.
	rssNow, rssPeak := statusMB("VmRSS"), statusMB("VmHWM")
	if open > 0 {
		ops := env.ops()
		for _, name := range compared {
			closed := byName[name]
			if name == "ceiling" || closed == nil {
				continue
			}
			// A scenario and its recipe twin run at the same rate (the recipe's maximum), so that
			// their latencies compare at equal load.
			rate := open * closed.RequestsPerSec
			if twin := byName["recipe-"+strings.TrimPrefix(name, "recipe-")]; twin != nil {
				rate = open * twin.RequestsPerSec
			}
			label := fmt.Sprintf("open %.0f%%: %s", open*100, name)
			results = append(results, env.loadOpen(ctx, label, env.users, ops[name], d/2, rate))
		}
	}
	// After the open loop, which should run at the pace just measured.
	for _, name := range whole {
		rs, err := env.run(ctx, name, d)
		if err != nil {
			return err
		}
		add(rs)
	}
	if scale {
		if err := env.seedScale(ctx); err != nil {
			return err
		}
		rs, err := env.runScale(ctx, d)
		if err != nil {
			return err
		}
		results = append(results, rs...)
	}
	fmt.Println()
	for _, r := range results {
		r.print()
	}
	if slices.Contains(names, "login") {
		hash := env.bcryptCeiling()
		fmt.Printf("\nbcrypt ceiling at cost %d: %.1f logins/s (%d cores / %.1f ms per hash)\n", cost, hash, runtime.NumCPU(), 1000*float64(runtime.NumCPU())/hash)
		results = append(results, &result{Scenario: "bcrypt-ceiling", RequestsPerSec: hash})
	}
	// The fault tests start server processes of their own: after every measurement.
	var faults *faultResult
	if runFaults {
		faults = runFaultTests(databaseURL)
	}
	met, missed := printRatios(results)
	if len(compared) > 0 {
		fmt.Printf("%-44s %.0f MB (peak %.0f MB; server, recipe and load generator together)\n", "RSS after the compared scenarios", rssNow, rssPeak)
	}
	if faults != nil {
		if faults.print() {
			met++
		} else {
			missed++
		}
	}
	if met+missed > 0 {
		fmt.Printf("%-44s %d met, %d missed\n", "targets", met, missed)
	}
	if scale {
		if err := env.explain(ctx); err != nil {
			return err
		}
	}
	return writeJSON(jsonOut, c, d, databaseKind(databaseURL, target), results)
}

// defaultAccessLog is -access-log.
var defaultAccessLog = graph.AccessLogAll

// logPath is -log-file.
var logPath = "/dev/null"

// principalCache is -no-principal-cache's opposite.
var principalCache = true

// runFaults is -fault-tests.
var runFaults bool

// comparedScenarios are the ones whose ratios are targets; they run interleaved in rounds.
var comparedScenarios = []string{"ceiling", "recipe-typename", "typename", "recipe-me", "me", "me-wide", "recipe-me-wide"}

// newClient is the virtual users' keep-alive HTTP client.
func newClient(c int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns: c * 2, MaxIdleConnsPerHost: c * 2, MaxConnsPerHost: c * 2, IdleConnTimeout: time.Minute,
		DialContext: (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
	}}
}

// writeJSON writes the results where -json says (” for nowhere).
func writeJSON(path string, c int, d time.Duration, database string, results []*result) error {
	if path == "" {
		return nil
	}
	os.MkdirAll(dirOf(path), 0o755)
	b, _ := json.MarshalIndent(map[string]any{
		"concurrency": c, "duration": d.String(), "database": database, "cores": runtime.NumCPU(),
		"results": results,
	}, "", "  ")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return err
	}
	fmt.Printf("\nresults written to %s\n", path)
	return nil
}

func databaseKind(databaseURL, target string) string {
	switch {
	case target != "":
		return "remote " + target
	case databaseURL != "":
		return "postgres"
	}
	return "sqlite"
}

func dirOf(path string) string {
	if i := strings.LastIndex(path, "/"); i > 0 {
		return path[:i]
	}
	return "."
}
