// Package graph is the GraphQL layer: gqlgen's generated executor, thin resolvers that call the
// services on the Resolver, the @auth/@public directives, the error presenter, and the GraphQL
// transports (GraphQL over HTTP in http.go, graphql-ws in ws.go). It talks no SQL and holds no
// rules: those are account's. It is served behind the edge's credential middleware
// (web.Credentials), whose request state the rules read.
package graph

//go:generate go run ./gen

import (
	"sync/atomic"

	"gqlauth/account"
	"gqlauth/web"
)

// Resolver is the root resolver: the services the resolvers call, built in server.go. It holds no
// state of its own. A team that puts gqlauth in front of its data adds its own services here, as
// fields, and resolves its own fields with them.
type Resolver struct {
	Account *account.Service // the account and session rules
	SignIn  *web.SignIn      // provider sign-in (linkIdentityStart starts a flow); nil: no providers

	roots roots
}

// roots are a Resolver's root resolvers, each made once: gqlgen's generated getters
// (r.Query() …) make a new one for every field resolved, and a request with many fields paid an
// allocation for each. graph/gen rewrites the generated executor to take them from
// resolverQuery and its kin. A copied Resolver (NewHandler copies one) has the original's roots,
// whose embedded Resolver is then not itself, so each one is checked and made again for the copy.
type roots struct {
	query, mutation, subscription, user atomic.Value
}

// root returns the resolver in slot if it is r's (owner tells), else one made by newRoot, kept
// in slot. Two first calls at once may each make one; they are equal, and either is kept.
func root[T any](r *Resolver, slot *atomic.Value, owner func(*T) *Resolver, newRoot func() *T) *T {
	if v, _ := slot.Load().(*T); v != nil && owner(v) == r {
		return v
	}
	v := newRoot()
	slot.Store(v)
	return v
}

// resolverQuery is root.Query(), made once for a *Resolver; the others are alike.
func resolverQuery(rr ResolverRoot) QueryResolver {
	if r, ok := rr.(*Resolver); ok {
		return root(r, &r.roots.query, func(q *queryResolver) *Resolver { return q.Resolver }, func() *queryResolver { return &queryResolver{r} })
	}
	return rr.Query()
}

func resolverMutation(rr ResolverRoot) MutationResolver {
	if r, ok := rr.(*Resolver); ok {
		return root(r, &r.roots.mutation, func(m *mutationResolver) *Resolver { return m.Resolver }, func() *mutationResolver { return &mutationResolver{r} })
	}
	return rr.Mutation()
}

func resolverSubscription(rr ResolverRoot) SubscriptionResolver {
	if r, ok := rr.(*Resolver); ok {
		return root(r, &r.roots.subscription, func(s *subscriptionResolver) *Resolver { return s.Resolver }, func() *subscriptionResolver { return &subscriptionResolver{r} })
	}
	return rr.Subscription()
}

func resolverUser(rr ResolverRoot) UserResolver {
	if r, ok := rr.(*Resolver); ok {
		return root(r, &r.roots.user, func(u *userResolver) *Resolver { return u.Resolver }, func() *userResolver { return &userResolver{r} })
	}
	return rr.User()
}
