package main

// Scale mode (-scale): the cost as the data grows. It seeds 100,000 users and 1,000,000 sessions
// with COPY, then measures me on one session against me over 10,000 distinct sessions, refresh
// and login over distinct users, and me while the session sweep deletes the expired 40 % of the
// sessions; it prints the plans of the principal and refresh queries at that size.

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"gqlauth/model"
	"gqlauth/token"
)

// scaleData is the seeded population the scale scenarios draw from.
type scaleData struct {
	users    int
	sessions int
	live     []*virtualUser // distinct users, each with one live session of its own (10,000)
	next     atomic.Int64
}

// The population: scaleUsers users (-scale-users), ten sessions each, the first session of up to
// 10,000 of them driven by the scenarios.
var scaleUsers = 100_000

const scaleSessionsPerUser = 10

func scaleLive() int { return min(10_000, scaleUsers) }

// seedScale fills the in-process Postgres database with COPY. Every user has the benchmark
// password (one bcrypt hash, as seeding is not what is measured) and ten sessions: the first is
// live and named by a token pair kept for the first 10,000 users, the next five live, the last
// four expired an hour ago (the sweep's work).
func (env *environment) seedScale(ctx context.Context) error {
	if env.dsn == "" {
		return fmt.Errorf("-scale needs the in-process server on Postgres (-database-url)")
	}
	start := time.Now()
	hash, err := env.passwords.Hash(ctx, password)
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, env.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	now := time.Now().UTC()
	data := &scaleData{users: scaleUsers, sessions: scaleUsers * scaleSessionsPerUser}
	users := make([]*model.User, scaleUsers)
	prefix := "scale" + uuid.NewString()[:6]
	userRows := make([][]any, scaleUsers)
	for i := range users {
		u := &model.User{ID: uuid.Must(uuid.NewV7()).String(), Username: fmt.Sprintf("%s-%d", prefix, i), Role: model.RoleUser, PasswordHash: hash, CreatedAt: now}
		users[i] = u
		userRows[i] = []any{u.ID, u.Username, nil, string(u.Role), false, u.PasswordHash, u.CreatedAt}
	}
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"users"}, []string{"id", "username", "email", "role", "disabled", "password_hash", "created_at"}, pgx.CopyFromRows(userRows)); err != nil {
		return fmt.Errorf("copy users: %w", err)
	}
	userRows = nil
	i, j := 0, 0
	source := pgx.CopyFromFunc(func() ([]any, error) {
		if i == len(users) {
			return nil, nil
		}
		u := users[i]
		id := uuid.Must(uuid.NewV7()).String()
		refresh := token.NewRefreshToken(id)
		expires := now.Add(720 * time.Hour)
		if j >= 6 {
			expires = now.Add(-time.Hour)
		}
		if j == 0 && i < scaleLive() {
			access, err := env.tokens.Issue(u, id)
			if err != nil {
				return nil, err
			}
			data.live = append(data.live, &virtualUser{username: u.Username, userID: u.ID, sessionID: id, access: access, refresh: refresh})
		}
		row := []any{id, u.ID, token.HashRefreshToken(refresh), now, now, expires, 0}
		if j++; j == scaleSessionsPerUser {
			i, j = i+1, 0
		}
		return row, nil
	})
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"sessions"}, []string{"id", "user_id", "refresh_hash", "created_at", "last_used_at", "expires_at", "generation"}, source); err != nil {
		return fmt.Errorf("copy sessions: %w", err)
	}
	if _, err := conn.Exec(ctx, "ANALYZE users; ANALYZE sessions"); err != nil {
		return err
	}
	env.scale = data
	fmt.Printf("scale: seeded %d users and %d sessions with COPY in %.1f s\n", scaleUsers, data.sessions, time.Since(start).Seconds())
	return nil
}

// scaleOps are the scale mode's own operations.
func (env *environment) scaleOps() map[string]op {
	ops := env.ops()
	pick := func() *virtualUser {
		return env.scale.live[int(env.scale.next.Add(1))%len(env.scale.live)]
	}
	return map[string]op{
		// me on each virtual user's own session (as in the normal mode), for comparison.
		"me": ops["me"],
		// me over 10,000 distinct sessions and users, round robin.
		"me-10k": func(ctx context.Context, _ *virtualUser) string {
			code, _, _ := env.send(ctx, "/query", pick().access, nil, "{ me { id username role } }", nil)
			return code
		},
		// login over distinct users (bcrypt-bound; it shows the lookup stays flat).
		"login-distinct": func(ctx context.Context, _ *virtualUser) string {
			return ops["login"](ctx, pick())
		},
	}
}

// runScale runs the scale scenarios and returns their results.
func (env *environment) runScale(ctx context.Context, d time.Duration) ([]*result, error) {
	ops := env.scaleOps()
	var results []*result
	// Two virtual users on one session would see each other's rotation as a replay: refresh gives
	// each its own slice of the sessions.
	ops["refresh-distinct"] = env.disjoint(env.ops())
	// me and me-10k take turns in four rounds each, so that drift on a noisy machine hits both.
	var me, me10k *result
	for range 4 {
		a := env.load(ctx, "scale: me (one session each)", env.users, ops["me"], d/4, false)
		b := env.load(ctx, "scale: me-10k", env.users, ops["me-10k"], d/4, false)
		if me == nil {
			me, me10k = a, b
		} else {
			me.merge(a)
			me10k.merge(b)
		}
	}
	results = append(results, me, me10k)
	for _, name := range []string{"refresh-distinct", "login-distinct"} {
		results = append(results, env.load(ctx, "scale: "+name, env.users, ops[name], d, false))
	}
	// The sweep under load: me over 10,000 sessions before and while the sweep deletes the
	// 400,000 expired sessions in batches of 1,000.
	var swept atomic.Int64
	var sweepTime atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(d / 10) // let the load reach its pace first
		t := time.Now()
		n, err := env.svc.SweepSessions(ctx)
		if err != nil {
			fmt.Println("sweep failed:", err)
		}
		swept.Store(int64(n))
		sweepTime.Store(int64(time.Since(t)))
	}()
	during := env.load(ctx, "scale: me-10k during sweep", env.users, ops["me-10k"], d, false)
	<-done
	fmt.Printf("scale: the sweep deleted %d expired sessions in %.1f s while me-10k ran\n", swept.Load(), time.Duration(sweepTime.Load()).Seconds())
	results = append(results, during)
	return results, nil
}

// disjoint gives each virtual user its own slice of the live sessions for refresh, so that no
// two users ever present the same chain.
func (env *environment) disjoint(ops map[string]op) op {
	var assigned atomic.Int64
	slices := map[*virtualUser]*[]*virtualUser{}
	per := max(len(env.scale.live)/max(len(env.users), 1), 1)
	for _, vu := range env.users {
		k := (int(assigned.Add(1)) - 1) % (len(env.scale.live) / per)
		own := env.scale.live[k*per : (k+1)*per]
		slices[vu] = &own
	}
	var turn atomic.Int64
	return func(ctx context.Context, vu *virtualUser) string {
		own := *slices[vu]
		return ops["refresh"](ctx, own[int(turn.Add(1))%len(own)])
	}
}

// explain prints the plans of the principal query and of the refresh's row lock on one of the
// seeded sessions, as run on the seeded data.
func (env *environment) explain(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, env.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	vu := env.scale.live[len(env.scale.live)/2]
	for _, q := range []struct{ name, sql string }{
		{"principal query (every guarded request)", `SELECT s.expires_at, s.revoked_at, u.id, u.username, u.email, u.role, u.disabled, u.password_hash, u.created_at
FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1 AND s.user_id = $2`},
		{"refresh: the session row lock", `SELECT * FROM sessions AS session LEFT JOIN users AS "user" ON "user".id = session.user_id
WHERE session.id = $1 LIMIT 1 FOR UPDATE OF session`},
	} {
		args := []any{vu.sessionID, vu.userID}
		if strings.Count(q.sql, "$") == 1 {
			args = args[:1]
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "+q.sql, args...)
		if err != nil {
			tx.Rollback(ctx)
			return err
		}
		fmt.Printf("\nEXPLAIN ANALYZE, %s, %d users / %d sessions:\n", q.name, env.scale.users, env.scale.sessions)
		for rows.Next() {
			var line string
			rows.Scan(&line)
			fmt.Println("  " + line)
		}
		rows.Close()
		tx.Rollback(ctx)
	}
	return nil
}
