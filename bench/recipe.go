package main

// The yardstick: the same `me` served the way gqlgen's authentication recipe builds it
// (https://gqlgen.com/recipes/authentication/) — middleware that verifies the JWT and puts its
// claims in the context, an @auth directive that loads the user and session in one query, and
// gqlgen's stock handler — on the same schema, database, users and tokens as gqlauth, with none of
// gqlauth's hardening, logs or metrics. Every run reports gqlauth against it.

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/vektah/gqlparser/v2/ast"

	"gqlauth/graph"
	"gqlauth/model"
)

// recipePoolSize is the recipe's pool: 16, the size gqlauth's principal-query pool had when the
// recipe was first measured against it. gqlauth's default is smaller now (store.DefaultMaxConns),
// so a comparison gives the recipe at least as many connections for the session query as gqlauth.
const recipePoolSize = 16

// recipePool is the recipe's pgx pool.
func recipePool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns, cfg.MinConns = recipePoolSize, 0
	return pgxpool.NewWithConfig(ctx, cfg)
}

type recipeClaimsKey struct{}
type recipeUserKey struct{}

// recipeMiddleware is the recipe's middleware: a valid Bearer token puts its claims in the
// context; anything else passes through unauthenticated.
func recipeMiddleware(secret []byte, next http.Handler) http.Handler {
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if ok {
			claims := jwt.MapClaims{}
			if _, err := parser.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return secret, nil }); err == nil {
				r = r.WithContext(context.WithValue(r.Context(), recipeClaimsKey{}, claims))
			}
		}
		next.ServeHTTP(w, r)
	})
}

// recipeHandler is the recipe's GraphQL handler over gqlauth's generated schema, with its own
// resolvers and directive; pool has the same size as gqlauth's.
func recipeHandler(pool *pgxpool.Pool, secret []byte) http.Handler {
	auth := func(ctx context.Context, obj any, next graphql.Resolver, role model.Role, _ *model.AuthLevel) (any, error) {
		claims, _ := ctx.Value(recipeClaimsKey{}).(jwt.MapClaims)
		if claims == nil {
			return nil, errors.New("access denied")
		}
		sid, _ := claims["sid"].(string)
		sub, _ := claims["sub"].(string)
		u := &model.User{}
		var expires time.Time
		var revoked *time.Time
		err := pool.QueryRow(ctx, `SELECT u.id, u.username, u.role, u.disabled, s.expires_at, s.revoked_at
			FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1 AND s.user_id = $2`, sid, sub).
			Scan(&u.ID, &u.Username, &u.Role, &u.Disabled, &expires, &revoked)
		if err != nil || u.Disabled || revoked != nil || time.Now().After(expires) || !u.Role.Satisfies(role) {
			return nil, errors.New("access denied")
		}
		return next(context.WithValue(ctx, recipeUserKey{}, u))
	}
	public := func(ctx context.Context, obj any, next graphql.Resolver) (any, error) { return next(ctx) }
	es := graph.NewExecutableSchema(graph.Config{
		Resolvers:  recipeResolvers{},
		Directives: graph.DirectiveRoot{Auth: auth, Public: public, EnrollsFactor: public},
	})
	// What handler.NewDefaultServer sets up, as the docs show it.
	srv := handler.New(es)
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})
	srv.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	srv.Use(extension.Introspection{})
	return recipeMiddleware(secret, srv)
}

// recipeResolvers implements `me` only; nothing else is called. The embedded (nil) interface
// stands for every other resolver, so that a type added to the schema needs nothing here (README,
// "Add your own field").
type recipeResolvers struct{ graph.ResolverRoot }

func (recipeResolvers) Query() graph.QueryResolver { return recipeQuery{} }

type recipeQuery struct{ graph.QueryResolver }

func (recipeQuery) Me(ctx context.Context) (*model.User, error) {
	return ctx.Value(recipeUserKey{}).(*model.User), nil
}
