// Command bench is gqlauth's load harness: real HTTP keep-alive clients against a server it starts
// on a fresh database (SQLite, or Postgres with -database-url) or against a running one (-url).
//
//	go run ./bench -scenario me -c 64 -d 10s
//	go run ./bench -scenario all -c 64 -d 10s -database-url postgres://postgres@127.0.0.1:5432/test
//
// Scenarios: ceiling, typename, me, me-wide, login, refresh, mix, flood, all. A response with
// GraphQL errors counts as an error, so a failing server cannot look fast.
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"gqlauth/auth"
	"gqlauth/graph"
	"gqlauth/model"
	"gqlauth/store"
)

const password = "correct horse battery"

func main() {
	var (
		scenario    = flag.String("scenario", "me", "ceiling, typename, me, me-wide, login, refresh, mix, flood or all")
		concurrency = flag.Int("c", 64, "virtual users (keep-alive connections)")
		duration    = flag.Duration("d", 10*time.Second, "duration of each scenario")
		target      = flag.String("url", "", "base URL of a running server (default: start one in-process)")
		databaseURL = flag.String("database-url", "", "Postgres URL for the in-process server (default: a temporary SQLite file)")
		cost        = flag.Int("bcrypt-cost", 10, "bcrypt cost of the in-process server")
		jsonOut     = flag.String("json", "bench-results/results.json", "where to write the results as JSON ('' for nowhere)")
		cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of the whole run (server and clients) to this file")
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
	if err := run(*scenario, *concurrency, *duration, *target, *databaseURL, *cost, *jsonOut); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(scenario string, c int, d time.Duration, target, databaseURL string, cost int, jsonOut string) error {
	ctx := context.Background()
	env := &environment{concurrency: c, cost: cost}
	if target == "" {
		stop, err := env.startServer(ctx, databaseURL)
		if err != nil {
			return err
		}
		defer stop()
	} else {
		env.base = strings.TrimSuffix(target, "/")
	}
	env.client = &http.Client{Transport: &http.Transport{
		MaxIdleConns: c * 2, MaxIdleConnsPerHost: c * 2, MaxConnsPerHost: c * 2, IdleConnTimeout: time.Minute,
		DialContext: (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
	}}
	if err := env.seed(ctx); err != nil {
		return err
	}

	names := []string{scenario}
	if scenario == "all" {
		names = []string{"ceiling", "typename", "me", "me-wide", "login", "refresh", "mix", "flood"}
	}
	var results []*result
	for _, name := range names {
		rs, err := env.run(ctx, name, d)
		if err != nil {
			return err
		}
		for _, r := range rs {
			r.print()
			results = append(results, r)
		}
	}
	if slices.Contains(names, "login") {
		hash := env.bcryptCeiling()
		fmt.Printf("\nbcrypt ceiling at cost %d: %.1f logins/s (%d cores / %.1f ms per hash)\n", cost, hash, runtime.NumCPU(), 1000*float64(runtime.NumCPU())/hash)
		results = append(results, &result{Scenario: "bcrypt-ceiling", RequestsPerSec: hash})
	}
	printRatios(results)
	if jsonOut != "" {
		os.MkdirAll(dirOf(jsonOut), 0o755)
		b, _ := json.MarshalIndent(map[string]any{
			"concurrency": c, "duration": d.String(), "database": databaseKind(databaseURL, target), "cores": runtime.NumCPU(),
			"results": results,
		}, "", "  ")
		if err := os.WriteFile(jsonOut, b, 0o644); err != nil {
			return err
		}
		fmt.Printf("\nresults written to %s\n", jsonOut)
	}
	return nil
}

// environment is the server under load and the users it was seeded with.
type environment struct {
	concurrency int
	cost        int
	base        string
	client      *http.Client
	db          *store.DB // in-process only: for the ceiling handler
	passwords   *auth.Passwords
	users       []*virtualUser
	mu          sync.Mutex
}

type virtualUser struct {
	username, userID, sessionID string
	access, refresh             string
}

// startServer runs gqlauth's GraphQL handler and a ceiling handler in this process.
func (env *environment) startServer(ctx context.Context, databaseURL string) (func(), error) {
	var (
		db  *store.DB
		err error
	)
	cleanup := func() {}
	if databaseURL != "" {
		// A fresh schema per run, so runs never see each other's rows.
		admin, err := store.OpenPostgres(ctx, databaseURL)
		if err != nil {
			return nil, err
		}
		schema := "bench_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
		if err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
			return nil, err
		}
		cleanup = func() { admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); admin.Close() }
		sep := "?"
		if strings.Contains(databaseURL, "?") {
			sep = "&"
		}
		db, err = store.OpenPostgres(ctx, databaseURL+sep+"search_path="+schema)
	} else {
		dir, _ := os.MkdirTemp("", "gqlauth-bench")
		cleanup = func() { os.RemoveAll(dir) }
		db, err = store.OpenSQLite(ctx, dir+"/bench.db")
	}
	if err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx); err != nil {
		return nil, err
	}
	env.db = db
	tokens, err := auth.NewTokens(auth.TokenConfig{Secret: []byte(auth.NewSecret()), Issuer: "gqlauth", Audience: "gqlauth", TTL: 15 * time.Minute})
	if err != nil {
		return nil, err
	}
	if env.passwords, err = auth.NewPasswords(auth.PasswordConfig{Cost: env.cost}); err != nil {
		return nil, err
	}
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + runtime.NumCPU()) // as server.go does for the bcrypt workers
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := auth.NewService(db, tokens, env.passwords, auth.ServiceConfig{
		RefreshTTL: 720 * time.Hour, ReuseInterval: 10 * time.Second, SignupEnabled: true, Logger: log,
		// No rate limits: the harness is one client IP doing what a crowd would.
	})
	gql, err := graph.NewHandler(svc, tokens, graph.Options{Logger: log, Introspection: true})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/query", gql)
	mux.HandleFunc("/ceiling", func(w http.ResponseWriter, r *http.Request) {
		// What any server must pay per guarded request: the directive's user/session query on the
		// same store and pool, and a small JSON body. No GraphQL, no JWT.
		sess, user, err := db.Principal(r.Context(), r.Header.Get("X-Session"), r.Header.Get("X-User"))
		if err != nil || !sess.Live(time.Now()) || user.Disabled {
			http.Error(w, `{"errors":[{"message":"ceiling query failed","extensions":{"code":"INTERNAL_SERVER_ERROR"}}]}`, 500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data":{"me":{"id":"`+user.ID+`","username":"`+user.Username+`","role":"`+string(user.Role)+`"}}}`)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	env.base = "http://" + ln.Addr().String()
	return func() { srv.Close(); db.Close(); cleanup() }, nil
}

// seed creates one user per virtual user and signs each in.
func (env *environment) seed(ctx context.Context) error {
	var hash string
	if env.db != nil {
		var err error
		if hash, err = env.passwords.Hash(ctx, password); err != nil {
			return err
		}
	}
	prefix := "bench" + uuid.NewString()[:6]
	env.users = make([]*virtualUser, env.concurrency)
	for i := range env.users {
		vu := &virtualUser{username: fmt.Sprintf("%s-%d", prefix, i)}
		if env.db != nil {
			// Straight into the store with one precomputed hash: seeding is not what is measured.
			u := &model.User{ID: uuid.Must(uuid.NewV7()).String(), Username: vu.username, Role: model.RoleUser, PasswordHash: hash, CreatedAt: time.Now().UTC()}
			if err := env.db.CreateUser(ctx, u); err != nil {
				return err
			}
		} else if _, err := env.graphql(ctx, "", `mutation($u: String!, $p: String!) { register(username: $u, password: $p) { accessToken } }`, map[string]any{"u": vu.username, "p": password}); err != nil {
			return fmt.Errorf("seed register: %w", err)
		}
		env.users[i] = vu
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(env.users))
	sem := make(chan struct{}, runtime.NumCPU())
	for _, vu := range env.users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			errs <- env.login(ctx, vu)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return fmt.Errorf("seed login: %w", err)
		}
	}
	return nil
}

type authPayload struct {
	AccessToken  string `json:"accessToken"`
	RefreshToken string `json:"refreshToken"`
	User         struct {
		ID string `json:"id"`
	} `json:"user"`
}

func (env *environment) login(ctx context.Context, vu *virtualUser) error {
	data, err := env.graphql(ctx, "", `mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken refreshToken user { id } } }`,
		map[string]any{"u": vu.username, "p": password})
	if err != nil {
		return err
	}
	var out struct{ Login authPayload }
	json.Unmarshal(data, &out)
	vu.access, vu.refresh, vu.userID = out.Login.AccessToken, out.Login.RefreshToken, out.Login.User.ID
	vu.sessionID = sessionID(vu.access)
	return nil
}

// sessionID reads the sid claim without verifying (the ceiling needs it as a header).
func sessionID(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	var claims struct {
		Sid string `json:"sid"`
	}
	b, _ := base64URL(parts[1])
	json.Unmarshal(b, &claims)
	return claims.Sid
}

// graphql sends one operation and returns data, or an error naming the first error code.
func (env *environment) graphql(ctx context.Context, token, query string, vars map[string]any) (json.RawMessage, error) {
	_, data, err := env.send(ctx, "/query", token, nil, query, vars)
	return data, err
}

// outcome is what one request produced: "" for success, else an error code.
func (env *environment) send(ctx context.Context, path, token string, header http.Header, query string, vars map[string]any) (string, json.RawMessage, error) {
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, env.base+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := env.client.Do(req)
	if err != nil {
		return "TRANSPORT", nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return "TRANSPORT", nil, err
	}
	var out struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Extensions struct {
				Code string `json:"code"`
			} `json:"extensions"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || res.StatusCode >= 500 {
		code := fmt.Sprintf("HTTP_%d", res.StatusCode)
		return code, nil, fmt.Errorf("%s: %.200s", code, raw)
	}
	if len(out.Errors) > 0 {
		code := out.Errors[0].Extensions.Code
		if code == "" {
			code = "UNKNOWN"
		}
		return code, out.Data, fmt.Errorf("%s", code)
	}
	return "", out.Data, nil
}

// op is one kind of request a virtual user makes; it returns "" or an error code.
type op func(ctx context.Context, vu *virtualUser) string

func (env *environment) ops() map[string]op {
	meWide := "{ me { id username role }"
	for i := range 10 {
		meWide += fmt.Sprintf(" m%d: me { id }", i)
	}
	meWide += " }"
	query := func(q string) op {
		return func(ctx context.Context, vu *virtualUser) string {
			code, _, _ := env.send(ctx, "/query", vu.access, nil, q, nil)
			return code
		}
	}
	return map[string]op{
		"ceiling": func(ctx context.Context, vu *virtualUser) string {
			code, _, _ := env.send(ctx, "/ceiling", "", http.Header{"X-Session": {vu.sessionID}, "X-User": {vu.userID}}, "", nil)
			return code
		},
		"typename": func(ctx context.Context, vu *virtualUser) string {
			code, _, _ := env.send(ctx, "/query", "", nil, "{ __typename }", nil)
			return code
		},
		"me":      query("{ me { id username role } }"),
		"me-wide": query(meWide),
		"login": func(ctx context.Context, vu *virtualUser) string {
			code, _, _ := env.send(ctx, "/query", "", nil, `mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }`,
				map[string]any{"u": vu.username, "p": password})
			return code
		},
		"refresh": func(ctx context.Context, vu *virtualUser) string {
			code, data, _ := env.send(ctx, "/query", "", nil, `mutation($r: String) { refresh(refreshToken: $r) { accessToken refreshToken } }`,
				map[string]any{"r": vu.refresh})
			if code == "" {
				var out struct{ Refresh authPayload }
				json.Unmarshal(data, &out)
				vu.access, vu.refresh = out.Refresh.AccessToken, out.Refresh.RefreshToken
			}
			return code
		},
	}
}

// run runs one scenario and returns its results (flood returns two: alone and under flood).
func (env *environment) run(ctx context.Context, name string, d time.Duration) ([]*result, error) {
	ops := env.ops()
	switch name {
	case "mix":
		var n atomic.Int64
		mix := func(ctx context.Context, vu *virtualUser) string {
			switch i := n.Add(1) % 50; {
			case i == 0: // 2 %
				return ops["login"](ctx, vu)
			case i <= 4: // 8 %
				return ops["refresh"](ctx, vu)
			default: // 90 %
				return ops["me"](ctx, vu)
			}
		}
		r := env.load(ctx, "mix", env.users, mix, d, true)
		// Every virtual user must still be able to refresh: no session was lost.
		lost := 0
		for _, vu := range env.users {
			if code := ops["refresh"](ctx, vu); code != "" {
				lost++
			}
		}
		r.LostSessions = &lost
		return []*result{r}, nil
	case "flood":
		half := max(len(env.users)/2, 1)
		alone := env.load(ctx, "flood: me alone", env.users[:half], ops["me"], d/2, false)
		var floodResult *result
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			floodResult = env.load(ctx, "flood: login flood", env.users[half:], ops["login"], d/2, false)
		}()
		under := env.load(ctx, "flood: me under flood", env.users[:half], ops["me"], d/2, false)
		wg.Wait()
		return []*result{alone, under, floodResult}, nil
	default:
		o, ok := ops[name]
		if !ok {
			return nil, fmt.Errorf("unknown scenario %q", name)
		}
		if name == "ceiling" && env.db == nil {
			fmt.Println("ceiling: needs the in-process server (no -url); skipped")
			return nil, nil
		}
		return []*result{env.load(ctx, name, env.users, o, d, false)}, nil
	}
}

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

// bcryptCeiling is the machine's login ceiling at the configured cost: cores ÷ one hash's time.
func (env *environment) bcryptCeiling() float64 {
	p, _ := auth.NewPasswords(auth.PasswordConfig{Cost: env.cost, Workers: 1})
	ctx := context.Background()
	hash, _ := p.Hash(ctx, password)
	const n = 10
	start := time.Now()
	for range n {
		p.Match(ctx, hash, password)
	}
	per := time.Since(start) / n
	return float64(runtime.NumCPU()) / per.Seconds()
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

func base64URL(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
