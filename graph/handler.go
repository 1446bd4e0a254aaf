package graph

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"gqlauth/auth"
	"gqlauth/model"
)

// NewHandler returns the GraphQL endpoint: Bearer middleware in front of gqlgen. It refuses a
// schema with an unguarded root field.
func NewHandler(svc *auth.Service, tokens *auth.Tokens, log *slog.Logger) (http.Handler, error) {
	es := NewExecutableSchema(Config{Resolvers: &Resolver{Auth: svc}, Directives: directives(svc)})
	if err := CheckGuards(es.Schema()); err != nil {
		return nil, err
	}
	srv := handler.New(es)
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.GET{}) // runs queries only; gqlgen refuses mutations over GET
	srv.AddTransport(transport.POST{})
	srv.Use(extension.Introspection{})
	srv.SetErrorPresenter(presentError(log))
	srv.SetRecoverFunc(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in resolver", "panic", p, "stack", string(debug.Stack()))
		return model.Internal()
	})
	return auth.Middleware(tokens)(srv), nil
}

// presentError maps errors onto errors[].extensions in one place: *model.Error by its fields,
// gqlgen's own parse and validation errors as they are, anything else as INTERNAL_SERVER_ERROR
// with a message that reveals nothing (the cause is logged).
func presentError(log *slog.Logger) graphql.ErrorPresenterFunc {
	return func(ctx context.Context, err error) *gqlerror.Error {
		gqlErr := graphql.DefaultErrorPresenter(ctx, err)
		var merr *model.Error
		if errors.As(err, &merr) {
			gqlErr.Message = merr.Message
			gqlErr.Extensions = extensions(merr)
			return gqlErr
		}
		if code, _ := gqlErr.Extensions["code"].(string); gqlErr.Err == nil && code != "" {
			return gqlErr
		}
		log.ErrorContext(ctx, "unexpected error", "err", err, "path", gqlErr.Path.String())
		internal := model.Internal()
		gqlErr.Message = internal.Message
		gqlErr.Extensions = extensions(internal)
		return gqlErr
	}
}

func extensions(e *model.Error) map[string]any {
	ext := map[string]any{"code": e.Code}
	if e.Reason != "" {
		ext["reason"] = e.Reason
	}
	if e.Field != "" {
		ext["field"] = e.Field
	}
	if e.RequiredRole != "" {
		ext["requiredRole"] = e.RequiredRole
	}
	if e.RetryAfter > 0 {
		ext["retryAfter"] = e.RetryAfter
	}
	return ext
}
