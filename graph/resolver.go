// Package graph is the GraphQL layer: gqlgen's generated executor, thin resolvers that call the
// services on the Resolver, the @auth/@public directives, the error presenter, and the GraphQL
// transports (GraphQL over HTTP in http.go, graphql-ws in ws.go). It talks no SQL and holds no
// rules: those are account's. It is served behind the edge's credential middleware
// (web.Credentials), whose request state the rules read.
package graph

//go:generate go run ./gen

import (
	"gqlauth/account"
	"gqlauth/web"
)

// Resolver is the root resolver: the services the resolvers call, built in server.go. It holds no
// state of its own. A team that puts gqlauth in front of its data adds its own services here, as
// fields, and resolves its own fields with them.
type Resolver struct {
	Account *account.Service // the account and session rules
	SignIn  *web.SignIn      // provider sign-in (linkIdentityStart starts a flow); nil: no providers
}

var (
	_ QueryResolver    = (*queryResolver)(nil)
	_ MutationResolver = (*mutationResolver)(nil)
)
