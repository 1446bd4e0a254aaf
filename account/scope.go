package account

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"gqlauth/model"
	"gqlauth/store"
)

// A scope is what the fields of one GraphQL response share beyond the request's credentials: the
// identities loaded for its users, and, below a mutation that signs someone in, who the caller
// now is. The GraphQL layer opens one per response of a query or subscription event
// (WithResponseScope) and one per root field of a mutation (WithMutationScope): mutation root
// fields run one after another, and each must see what the ones before it wrote.
type scope struct {
	// issuing: a payload issued here makes its user the caller of the fields below (mutations only).
	issuing bool
	issued  atomic.Pointer[Principal]

	identities identityBatch
}

type scopeKey struct{}

// scopeContext is a context carrying a scope, in one allocation (every response opens one).
type scopeContext struct {
	context.Context
	scope
}

func (c *scopeContext) Value(key any) any {
	if key == (scopeKey{}) {
		return &c.scope
	}
	return c.Context.Value(key)
}

// WithResponseScope returns ctx with a scope for one response.
func WithResponseScope(ctx context.Context) context.Context {
	return &scopeContext{Context: ctx}
}

// WithMutationScope returns ctx with a scope for one root field of a mutation.
func WithMutationScope(ctx context.Context) context.Context {
	return &scopeContext{Context: ctx, scope: scope{issuing: true}}
}

// WithEventScope returns ctx with a scope for one response of a subscription, that is for one
// delivered event, and with fresh credentials for it: the token verified again and the caller
// loaded again, by the first field of the response that asks (once for the response, and not at
// all when none asks). A subscription runs for hours; the caller it started with may have been
// demoted since, and a field visible to "the user themself or an admin" (identities) must show
// what a fresh request would at that event, never what the caller could see when it started.
func (s *Service) WithEventScope(ctx context.Context) context.Context {
	if ra := fromContext(ctx); ra != nil {
		ctx = context.WithValue(ctx, ctxKey{}, s.renew(ra))
	}
	return WithResponseScope(ctx)
}

func scopeFrom(ctx context.Context) *scope {
	sc, _ := ctx.Value(scopeKey{}).(*scope)
	return sc
}

// issue records that the field in ctx has just issued an AuthPayload to p's user, on p's new
// session: from now on, every field below it resolves for that user. The user inside a payload is
// the caller, whatever credentials (none, or someone else's) the request came with, so its
// "the user themself or an admin" fields — identities today, any such field tomorrow — work in
// the response of the very mutation that signed them in.
func issue(ctx context.Context, p *Principal) {
	if sc := scopeFrom(ctx); sc != nil && sc.issuing {
		sc.issued.Store(p)
		if ra := fromContext(ctx); ra != nil {
			ra.issued.Store(true)
		}
	}
}

// issuedTo returns the principal a payload of the mutation field in ctx was issued to, or nil.
// Requests that issued none (nearly all) pay one atomic load, not a walk of ctx.
func issuedTo(ctx context.Context, ra *Request) *Principal {
	if ra != nil && !ra.issued.Load() {
		return nil
	}
	if sc := scopeFrom(ctx); sc != nil {
		return sc.issued.Load()
	}
	return nil
}

// identityBatch loads User.identities for all the users of a response together: a response that
// shows a hundred users asks the database once, not a hundred times. gqlgen resolves the users'
// identities fields concurrently; the first to ask loads, for an admin (who may see every user's
// identities), those of every user the response shows (noted by the resolvers that return users,
// before their fields are resolved) and of every user asked for meanwhile; the others wait for that
// load. Nothing is cached beyond the scope.
type identityBatch struct {
	mu      sync.Mutex
	shown   []string                     // users the response shows, not loaded yet
	asked   map[string]bool              // users asked for while a load was running
	loaded  map[string][]*model.Identity // by user id
	running *identityLoad
}

type identityLoad struct {
	users map[string]bool
	done  chan struct{}
	err   error
}

// maxBatch bounds the users of one query (SQLite allows 32,766 parameters, Postgres 65,535).
const maxBatch = 1000

// showUsers notes users that the response in ctx is about to show, so that the first load of
// identities includes them.
func showUsers(ctx context.Context, users ...*model.User) {
	sc := scopeFrom(ctx)
	if sc == nil {
		return
	}
	b := &sc.identities
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, u := range users {
		if u != nil {
			b.shown = append(b.shown, u.ID)
		}
	}
}

// load returns userID's identities. all says whether the caller may see every user's identities
// (an admin), so that the users the response shows are loaded along.
func (b *identityBatch) load(ctx context.Context, db *store.DB, userID string, all bool) ([]*model.Identity, error) {
	b.mu.Lock()
	for {
		if ids, ok := b.loaded[userID]; ok {
			b.mu.Unlock()
			return ids, nil
		}
		l := b.running
		if l == nil {
			break
		}
		if !l.users[userID] {
			if b.asked == nil {
				b.asked = map[string]bool{}
			}
			b.asked[userID] = true
		}
		b.mu.Unlock()
		select {
		case <-l.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if l.err != nil && l.users[userID] {
			return nil, l.err
		}
		b.mu.Lock()
	}
	l := &identityLoad{users: map[string]bool{userID: true}, done: make(chan struct{})}
	for id := range b.asked {
		l.users[id] = true
	}
	clear(b.asked)
	if all {
		for _, id := range b.shown {
			if _, ok := b.loaded[id]; !ok {
				l.users[id] = true
			}
		}
		b.shown = nil
	}
	b.running = l
	b.mu.Unlock()

	users := make([]string, 0, len(l.users))
	for id := range l.users {
		users = append(users, id)
	}
	slices.Sort(users) // a stable statement text for the database's caches
	found := map[string][]*model.Identity{}
	for chunk := range slices.Chunk(users, maxBatch) {
		byUser, err := db.IdentitiesOfUsers(ctx, chunk)
		if err != nil {
			l.err = err
			break
		}
		for id, ids := range byUser {
			found[id] = ids
		}
	}

	b.mu.Lock()
	if l.err == nil {
		if b.loaded == nil {
			b.loaded = make(map[string][]*model.Identity, len(users))
		}
		for _, id := range users {
			ids := found[id]
			if ids == nil {
				ids = []*model.Identity{}
			}
			b.loaded[id] = ids
		}
	}
	b.running = nil
	close(l.done)
	ids := b.loaded[userID]
	b.mu.Unlock()
	return ids, l.err
}

// MaxIdentitiesPerUser is the most identities a user has: one per configured provider (and at
// least one, for an identity of a provider since removed from the configuration).
func (s *Service) MaxIdentitiesPerUser() int { return max(len(s.cfg.Providers), 1) }
