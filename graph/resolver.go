// Package graph is the GraphQL layer: gqlgen's generated executor, thin resolvers that call the
// auth service, the @auth/@public directives and the error presenter.
package graph

//go:generate go tool gqlgen generate

import "gqlauth/account"

// Resolver is the root resolver. It holds no state of its own.
type Resolver struct {
	Auth *account.Service
}

var (
	_ QueryResolver    = (*queryResolver)(nil)
	_ MutationResolver = (*mutationResolver)(nil)
)
