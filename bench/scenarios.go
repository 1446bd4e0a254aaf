package main

// The scenarios: what each virtual user does in a loop, and how a scenario is run.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gqlauth/account"
)

// op is one kind of request a virtual user makes; it returns "" or an error code.
type op func(ctx context.Context, vu *virtualUser) string

func (env *environment) ops() map[string]op {
	meWide := "{ me { id username role }"
	for i := range 10 {
		meWide += fmt.Sprintf(" m%d: me { id }", i)
	}
	meWide += " }"
	// The compared scenarios send a constant body: it is marshalled once, and a response is
	// decoded only when it is not a plain success (see sendLean), so that the load generator,
	// which shares the machine's cores with the server and the recipe, spends as little as it
	// can per request, as an external generator such as wrk would.
	lean := func(path string, withToken, ceiling bool, q string) op {
		body, _ := json.Marshal(map[string]any{"query": q, "variables": nil})
		return func(ctx context.Context, vu *virtualUser) string {
			var (
				token  string
				header http.Header
			)
			if withToken {
				token = vu.access
			}
			if ceiling { // the ceiling handler is told the session and user to look up
				header = http.Header{"X-Session": {vu.sessionID}, "X-User": {vu.userID}}
			}
			return env.sendLean(ctx, path, token, header, body)
		}
	}
	return map[string]op{
		"ceiling":         lean("/ceiling", false, true, ""),
		"typename":        lean("/query", false, false, "{ __typename }"),
		"recipe-me":       lean("/recipe", true, false, "{ me { id username role } }"),
		"recipe-me-wide":  lean("/recipe", true, false, meWide),
		"recipe-typename": lean("/recipe", false, false, "{ __typename }"),
		"me":              lean("/query", true, false, "{ me { id username role } }"),
		"me-wide":         lean("/query", true, false, meWide),
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

// bcryptCeiling is the machine's login ceiling at the configured cost: cores ÷ one hash's time.
func (env *environment) bcryptCeiling() float64 {
	p, _ := account.NewPasswords(account.PasswordConfig{Cost: env.cost, Workers: 1})
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
		for _, r := range []*result{under, floodResult} {
			r.cpu, r.CPUPerRequestUs = 0, 0 // the process's CPU went to both loads at once
		}
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
		if strings.HasPrefix(name, "recipe") && !env.recipe {
			fmt.Printf("%s: needs the in-process server on Postgres (-database-url); skipped\n", name)
			return nil, nil
		}
		return []*result{env.load(ctx, name, env.users, o, d, false)}, nil
	}
}
