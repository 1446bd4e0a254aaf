package graph

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/executor"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/validator/core"
	"github.com/vektah/gqlparser/v2/validator/rules"

	"gqlauth/auth"
	"gqlauth/model"
)

// Options configure the GraphQL endpoint.
type Options struct {
	Logger        *slog.Logger      // nil means slog.Default()
	Metrics       *Metrics          // nil: no metrics
	Proxies       auth.Proxies      // whose X-Forwarded-For to believe
	Limits        QueryLimits       // zero value: DefaultQueryLimits()
	Introspection bool              // allow __schema / __type queries
	Debug         bool              // name suggestions ("did you mean …") in validation errors
	Trusted       *TrustedDocuments // nil: no trusted documents
	Sockets       SocketLimits      // zero value: DefaultSocketLimits()
	Origins       []string          // cross-site origins allowed to open WebSockets (CORS_ALLOWED_ORIGINS)
	AccessLog     AccessLog         // which requests are logged; "": all
}

// NewHandler returns the GraphQL endpoint: security headers, request log and metrics, the Bearer
// middleware, and GraphQL over HTTP with the query limits in front of gqlgen's executor. It
// refuses a schema with an unguarded root field, and trusted documents that do not check out.
func NewHandler(svc *auth.Service, tokens *auth.Tokens, opts Options) (http.Handler, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Limits == (QueryLimits{}) {
		opts.Limits = DefaultQueryLimits()
	}
	if opts.Sockets == (SocketLimits{}) {
		opts.Sockets = DefaultSocketLimits()
	}
	es := NewExecutableSchema(Config{Resolvers: &Resolver{Auth: svc}, Directives: directives(svc)})
	if err := CheckGuards(es.Schema()); err != nil {
		return nil, err
	}
	if err := CheckArgumentPlacement(es.Schema()); err != nil {
		return nil, err
	}
	validation := rules.NewDefaultRules
	if !opts.Debug {
		validation = rulesWithoutSuggestions
	}
	g := newGuard(opts.Limits, opts.Introspection)
	cache := &queryCache{rest: lru.New[*ast.QueryDocument](1000)}
	if opts.Trusted != nil {
		if err := opts.Trusted.check(es.Schema(), validation(), g); err != nil {
			return nil, err
		}
		cache.pinned = opts.Trusted.parsed
	}
	exec := executor.New(es)
	exec.SetQueryCache(cache)
	exec.SetParserTokenLimit(opts.Limits.MaxTokens)
	exec.SetDisableSuggestion(!opts.Debug)
	exec.SetDefaultRulesFn(validation)
	if opts.Introspection {
		exec.Use(extension.Introspection{})
	}
	// The complexity limit is the guard's (per document text, cached), not gqlgen's per-request
	// extension.
	live := newSockets(svc, tokens, opts.Sockets, opts.Origins)
	// One layer for both: every layer costs every operation a closure and a frame.
	exec.AroundOperations(func(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
		if socketFrom(ctx) != nil {
			return live.aroundOperation(ctx, next)
		}
		return aroundOperations(ctx, next)
	})
	exec.AroundRootFields(checkArguments)
	exec.AroundResponses(aroundResponses)
	exec.SetErrorPresenter(presentError(opts.Logger, opts.Metrics))
	exec.SetRecoverFunc(func(ctx context.Context, p any) error {
		opts.Logger.ErrorContext(ctx, "panic in resolver", "panic", p, "stack", string(debug.Stack()))
		return model.Internal()
	})
	e := &endpoint{exec: exec, guard: g, docs: opts.Trusted, sockets: live, isAdmin: func(ctx context.Context) bool {
		_, err := svc.Authorize(ctx, model.RoleAdmin)
		return err == nil
	}}
	exec.Use(socketGuard{e})
	var h http.Handler = e
	if opts.AccessLog == "" {
		opts.AccessLog = AccessLogAll
	}
	h = observe(opts.Logger, opts.Metrics, opts.AccessLog, h)
	h = auth.Middleware(tokens, opts.Proxies)(h)
	return securityHeaders(h), nil
}

// rulesWithoutSuggestions is the standard rule set with every rule that suggests names ("Did
// you mean …") swapped for its quiet twin: suggestions map the schema for anyone who misspells on
// purpose. gqlgen's SetDisableSuggestion swaps only the rules about fields.
func rulesWithoutSuggestions() *rules.Rules {
	rs := rules.NewDefaultRules()
	for _, quiet := range []core.Rule{
		rules.FieldsOnCorrectTypeRuleWithoutSuggestions,
		rules.KnownArgumentNamesRuleWithoutSuggestions,
		rules.KnownTypeNamesRuleWithoutSuggestions,
		rules.ScalarLeafsRuleWithoutSuggestions,
		rules.ValuesOfCorrectTypeRuleWithoutSuggestions,
	} {
		rs.RemoveRule(strings.TrimSuffix(quiet.Name, "WithoutSuggestions"))
		rs.AddRule(quiet.Name, quiet.RuleFunc)
	}
	return rs
}

// presentError maps errors onto errors[].extensions in one place: *model.Error by its fields,
// gqlgen's own request-level errors (parse, validation, complexity) with their code narrowed to
// the schema's ErrorCode values, anything else as INTERNAL_SERVER_ERROR with a message that
// reveals nothing (the cause is logged).
func presentError(log *slog.Logger, metrics *Metrics) graphql.ErrorPresenterFunc {
	return func(ctx context.Context, err error) *gqlerror.Error {
		gqlErr := graphql.DefaultErrorPresenter(ctx, err)
		var merr *model.Error
		switch {
		case errors.As(err, &merr):
		case gqlErr.Err == nil && gqlErr.Extensions["code"] != nil:
			code := model.ErrorCode(asString(gqlErr.Extensions["code"]))
			if !code.IsValid() {
				code = model.ErrorCodeGraphqlValidationFailed
			}
			gqlErr.Extensions = map[string]any{"code": code}
			return gqlErr
		default:
			log.ErrorContext(ctx, "unexpected error", "err", err, "path", gqlErr.Path.String())
			merr = model.Internal()
		}
		metrics.observeError(merr)
		gqlErr.Message = merr.Message
		gqlErr.Extensions = extensions(merr)
		return gqlErr
	}
}

func asString(v any) string {
	switch s := v.(type) {
	case string:
		return s
	case interface{ String() string }:
		return s.String()
	}
	return ""
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
