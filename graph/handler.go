package graph

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"reflect"
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

	"gqlauth/account"
	"gqlauth/model"
	"gqlauth/web"
)

// Options configure the GraphQL endpoint.
type Options struct {
	Logger        *slog.Logger      // nil means slog.Default()
	Metrics       *Metrics          // nil: no metrics
	Limits        QueryLimits       // zero value: DefaultQueryLimits()
	Introspection bool              // allow __schema / __type queries
	Debug         bool              // name suggestions ("did you mean …") in validation errors
	Trusted       *TrustedDocuments // nil: no trusted documents
	Sockets       SocketLimits      // zero value: DefaultSocketLimits()
	Origins       []string          // cross-site origins allowed to open WebSockets (CORS_ALLOWED_ORIGINS)
	AccessLog     AccessLog         // which requests are logged; "": all
}

// Handler is the GraphQL endpoint (an http.Handler) and the registry of its open WebSockets.
type Handler struct {
	http.Handler
	// Sockets are the open WebSockets by user, which committed audit events re-check: see
	// WireEvents (graph/events.go), the one place the event path is laid.
	Sockets *Sockets
}

// NewHandler returns the GraphQL endpoint of the resolvers res: security headers, request log and
// metrics, and GraphQL over HTTP and graphql-ws with the query limits in front of gqlgen's
// executor. It must be served behind web.Credentials, which reads each request's credentials. It
// refuses a schema with an unguarded root field, and trusted documents that do not check out.
func NewHandler(res *Resolver, opts Options) (*Handler, error) {
	svc := res.Account
	if res.SignIn == nil { // no provider sign-in: linkIdentityStart refuses every provider
		withSignIn := *res
		withSignIn.SignIn = web.NewSignIn(svc, nil)
		res = &withSignIn
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Limits == (QueryLimits{}) {
		opts.Limits = DefaultQueryLimits()
	}
	if opts.Sockets == (SocketLimits{}) {
		opts.Sockets = DefaultSocketLimits()
	}
	es := NewExecutableSchema(Config{Resolvers: res, Directives: directives(svc), Complexity: listCosts(svc)})
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
	exec.Use(enumVariables{es.Schema()})
	exec.Use(&costLimit{max: opts.Limits.MaxComplexity})
	live := newSockets(svc, opts.Sockets, opts.Origins)
	// One layer for both: every layer costs every operation a closure and a frame.
	exec.AroundOperations(func(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
		if socketFrom(ctx) != nil {
			return live.aroundOperation(ctx, next)
		}
		return aroundOperations(ctx, next)
	})
	exec.AroundRootFields(aroundRootFields)
	exec.AroundResponses(func(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
		// One scope per response: the identities of its users are loaded together. A response of
		// a subscription (one event) also loads its caller afresh, so that no event is resolved
		// for the caller as they were when the subscription started.
		if graphql.HasOperationContext(ctx) {
			if op := graphql.GetOperationContext(ctx).Operation; op != nil && op.Operation == ast.Subscription {
				return aroundResponses(svc.WithEventScope(ctx), next)
			}
		}
		return aroundResponses(account.WithResponseScope(ctx), next)
	})
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
	return &Handler{Handler: securityHeaders(h), Sockets: live}, nil
}

// aroundRootFields gives each root field of a mutation a scope of its own (account.WithMutationScope):
// mutation root fields run one after another, each seeing what the ones before it wrote, and the
// payload one issues makes its user the caller below that field only. Then it checks the
// field's arguments.
func aroundRootFields(ctx context.Context, next graphql.RootResolver) graphql.Marshaler {
	if oc := graphql.GetOperationContext(ctx); oc != nil && oc.Operation != nil && oc.Operation.Operation == ast.Mutation {
		ctx = account.WithMutationScope(ctx)
	}
	return checkArguments(ctx, next)
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
// the schema's ErrorCode values, an argument the generated code could not decode as
// BAD_USER_INPUT naming it, anything else as INTERNAL_SERVER_ERROR with a message that reveals
// nothing (the cause is logged).
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
		case argumentOf(ctx, gqlErr) != "":
			// Input that passed validation and still failed to decode (enumVariables closes the one
			// way known) is the client's input all the same, never an internal error. The error
			// belongs to the field, as a resolver's would.
			name := argumentOf(ctx, gqlErr)
			merr = model.BadInput(name, name+": "+gqlErr.Message)
			gqlErr.Path = graphql.GetFieldContext(ctx).Path()
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

// argumentOf names the argument err is about when err was raised decoding the arguments of the
// field in ctx, and is "" otherwise: such an error's path goes past the field's own, into one of
// its arguments (a resolver's error has the field's path).
func argumentOf(ctx context.Context, err *gqlerror.Error) string {
	fc := graphql.GetFieldContext(ctx)
	if fc == nil || fc.Field.Field == nil || fc.Field.Definition == nil {
		return ""
	}
	field := fc.Path()
	if len(err.Path) <= len(field) {
		return ""
	}
	for i := range field {
		if field[i] != err.Path[i] {
			return ""
		}
	}
	name, ok := err.Path[len(field)].(ast.PathName)
	if !ok || fc.Field.Definition.Arguments.ForName(string(name)) == nil {
		return ""
	}
	return string(name)
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
	if e.RequiredAAL != "" {
		ext["requiredAal"] = e.RequiredAAL
	}
	if e.RetryAfter > 0 {
		ext["retryAfter"] = e.RetryAfter
	}
	return ext
}

// enumVariables holds the enum values in an operation's variables to the schema's spelling.
// gqlparser's coercion of variables compares enum values ignoring case (strings.EqualFold in
// validator/vars.go), gqlgen's generated decoders compare them exactly, as the spec says: "others"
// for a LogoutScope passed validation and then failed in the decoder, an unexpected error. So every
// enum value in the variables, at any depth (lists, input objects), must name a value of its enum
// exactly, or the operation is refused before it runs, as gqlparser refuses a value that is no
// value of the enum in any case. (A value written in the document is held to the case by the
// validator already.)
type enumVariables struct{ schema *ast.Schema }

var _ interface {
	graphql.OperationContextMutator
	graphql.HandlerExtension
} = enumVariables{}

func (enumVariables) ExtensionName() string                   { return "EnumVariables" }
func (enumVariables) Validate(graphql.ExecutableSchema) error { return nil }

func (e enumVariables) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	for _, v := range oc.Operation.VariableDefinitions {
		if err := e.check(v.Type, oc.Variables[v.Variable], ast.Path{ast.PathName("variable"), ast.PathName(v.Variable)}); err != nil {
			return err
		}
	}
	return nil
}

func (e enumVariables) check(t *ast.Type, v any, path ast.Path) *gqlerror.Error {
	if v == nil {
		return nil
	}
	at := func(p ast.PathElement) ast.Path { return append(path[:len(path):len(path)], p) }
	if t.Elem != nil {
		if list := reflect.ValueOf(v); list.Kind() == reflect.Slice {
			for i := range list.Len() {
				if err := e.check(t.Elem, list.Index(i).Interface(), at(ast.PathIndex(i))); err != nil {
					return err
				}
			}
			return nil
		}
		return e.check(t.Elem, v, path) // one value stands for a list of one
	}
	switch def := e.schema.Types[t.NamedType]; def.Kind {
	case ast.Enum:
		if s, ok := v.(string); !ok || def.EnumValues.ForName(s) == nil {
			err := gqlerror.ErrorPathf(path, "%v is not a valid %s", v, def.Name)
			err.Extensions = map[string]any{"code": model.ErrorCodeGraphqlValidationFailed}
			return err
		}
	case ast.InputObject:
		if fields, ok := v.(map[string]any); ok {
			for _, f := range def.Fields {
				if err := e.check(f.Type, fields[f.Name], at(ast.PathName(f.Name))); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
