package graph

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"unicode/utf8"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/parser"

	"gqlauth/account"
	"gqlauth/model"
)

// QueryLimits bound what one request may ask. Every limit refuses with a GraphQL error naming it.
type QueryLimits struct {
	MaxBodyBytes  int64 // the HTTP request body
	MaxQueryBytes int   // the query text
	MaxTokens     int   // lexer tokens in the query
	MaxDepth      int   // nesting of selection sets, fragments expanded
	MaxAliases    int   // aliased fields in the document
	MaxRootFields int   // fields of the operation's root selection, fragments expanded
	MaxComplexity int   // every field 1, a list field its size times its selection (see costLimit)
}

// DefaultQueryLimits fit every operation of the schema and GraphiQL's introspection query with
// room to spare, and nothing much bigger.
func DefaultQueryLimits() QueryLimits {
	return QueryLimits{
		MaxBodyBytes:  64 << 10,
		MaxQueryBytes: 16 << 10,
		MaxTokens:     2000,
		MaxDepth:      15,
		MaxAliases:    20,
		MaxRootFields: 20,
		MaxComplexity: 5000,
	}
}

// guard checks each request against the limits before gqlgen parses and validates it. It must
// come first: gqlparser's validator recurses without bound on some self-referencing fragment
// spreads (vektah/gqlparser#173), overflowing the goroutine stack, which is a fatal error that
// recover() cannot catch. So fragment cycles are refused here, on a document parsed with a token
// limit, and the validator never sees them.
type guard struct {
	limits        QueryLimits
	introspection bool
	// passed remembers queries that passed, so that a client's repeated operations are parsed once.
	passed *lru.LRU[struct{}]
}

func newGuard(limits QueryLimits, introspection bool) *guard {
	return &guard{limits: limits, introspection: introspection, passed: lru.New[struct{}](1000)}
}

// validParams reports whether every name and value of a GET request's parameters is UTF-8 text,
// with no lone surrogate escaped in the JSON ones (variables, extensions).
func validParams(params url.Values) bool {
	for name, values := range params {
		if !utf8.ValidString(name) {
			return false
		}
		for _, v := range values {
			if !validJSONText([]byte(v)) {
				return false
			}
		}
	}
	return true
}

// check returns why query is refused, with the HTTP status to refuse it with (0: the status of a
// request error in the response's media type), or a nil error.
func (g *guard) check(ctx context.Context, method, query string) (int, *gqlerror.Error) {
	const refused = 0
	if len(query) > g.limits.MaxQueryBytes {
		return refused, requestError(model.ErrorCodeGraphqlValidationFailed, fmt.Sprintf("query exceeds %d bytes", g.limits.MaxQueryBytes))
	}
	key := method + " " + query
	if _, ok := g.passed.Get(ctx, key); ok {
		return 0, nil
	}
	if hasSurrogateEscape(query) {
		return refused, requestError(model.ErrorCodeGraphqlParseFailed, `the query escapes a UTF-16 surrogate (\uD800–\uDFFF); send the character itself or use \u{…}`)
	}
	doc, err := parser.ParseQueryWithTokenLimit(&ast.Source{Input: query}, g.limits.MaxTokens)
	if err != nil {
		var gqlErr *gqlerror.Error
		if errors.As(err, &gqlErr) {
			gqlErr.Extensions = map[string]any{"code": model.ErrorCodeGraphqlParseFailed}
			return refused, gqlErr
		}
		return refused, requestError(model.ErrorCodeGraphqlParseFailed, err.Error())
	}
	if err := g.checkDocument(doc); err != nil {
		return refused, requestError(model.ErrorCodeGraphqlValidationFailed, err.Error())
	}
	if method == http.MethodGet {
		// GET requests are easy to forge (a link, an image), so they never change anything.
		for _, op := range doc.Operations {
			if op.Operation != ast.Query {
				return http.StatusMethodNotAllowed, requestError(model.ErrorCodeGraphqlValidationFailed,
					"GET runs queries only; send mutations as POST with Content-Type: application/json")
			}
		}
	}
	g.passed.Add(ctx, key, struct{}{})
	return 0, nil
}

func (g *guard) checkDocument(doc *ast.QueryDocument) error {
	fragments := map[string]*ast.FragmentDefinition{}
	for _, f := range doc.Fragments {
		fragments[f.Name] = f
	}
	// Fragment cycles first: every walk below expands fragments and relies on there being none.
	state := map[string]int{} // 1: on the current path, 2: done
	var visit func(name string) error
	visit = func(name string) error {
		f := fragments[name]
		if f == nil || state[name] == 2 {
			return nil
		}
		if state[name] == 1 {
			return fmt.Errorf("fragment %q spreads itself", name)
		}
		state[name] = 1
		for _, spread := range spreads(f.SelectionSet) {
			if err := visit(spread); err != nil {
				return err
			}
		}
		state[name] = 2
		return nil
	}
	for _, f := range doc.Fragments {
		if err := visit(f.Name); err != nil {
			return err
		}
	}

	aliases, introspects := 0, false
	inspect := func(set ast.SelectionSet) {
		walk(set, func(f *ast.Field) {
			if f.Alias != "" && f.Alias != f.Name {
				aliases++
			}
			introspects = introspects || f.Name == "__schema" || f.Name == "__type"
		})
	}
	for _, op := range doc.Operations {
		inspect(op.SelectionSet)
	}
	for _, f := range doc.Fragments {
		inspect(f.SelectionSet)
	}
	if introspects && !g.introspection {
		return errors.New("introspection is disabled on this server; the schema is served at /schema.graphql")
	}
	if aliases > g.limits.MaxAliases {
		return fmt.Errorf("query has %d aliases; at most %d are allowed", aliases, g.limits.MaxAliases)
	}

	depthMemo, fieldsMemo := map[string]int{}, map[string]int{}
	for _, op := range doc.Operations {
		if d := depth(op.SelectionSet, fragments, depthMemo); d > g.limits.MaxDepth {
			return fmt.Errorf("query is nested %d levels deep; at most %d are allowed", d, g.limits.MaxDepth)
		}
		if n := rootFields(op.SelectionSet, fragments); n > g.limits.MaxRootFields {
			return fmt.Errorf("operation has %d root fields; at most %d are allowed", n, g.limits.MaxRootFields)
		}
		// Every field counts 1 here, and at least 1 in costLimit, which counts lists by their size
		// once the variables are known: this refuses early what that would refuse anyway, and
		// bounds that count's work (it expands fragments without memo).
		if n := expandedFields(op.SelectionSet, fragments, fieldsMemo); n > g.limits.MaxComplexity {
			return fmt.Errorf("operation has complexity at least %d; at most %d is allowed", n, g.limits.MaxComplexity)
		}
	}
	return nil
}

// expandedFields counts the fields of set with fragments expanded (memoized): a fragment spread
// twice counts twice. It is computed once per document text with the other limits.
func expandedFields(set ast.SelectionSet, fragments map[string]*ast.FragmentDefinition, memo map[string]int) int {
	total := 0
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			total += 1 + expandedFields(s.SelectionSet, fragments, memo)
		case *ast.InlineFragment:
			total += expandedFields(s.SelectionSet, fragments, memo)
		case *ast.FragmentSpread:
			c, ok := memo[s.Name]
			if !ok {
				if f := fragments[s.Name]; f != nil {
					c = expandedFields(f.SelectionSet, fragments, memo)
				}
				memo[s.Name] = c
			}
			total += c
		}
		if total > 1<<30 { // fragments can multiply; stop counting long before overflow
			return total
		}
	}
	return total
}

// spreads lists the fragments a selection set spreads, at any depth (inline fragments included).
func spreads(set ast.SelectionSet) []string {
	var out []string
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			out = append(out, spreads(s.SelectionSet)...)
		case *ast.InlineFragment:
			out = append(out, spreads(s.SelectionSet)...)
		case *ast.FragmentSpread:
			out = append(out, s.Name)
		}
	}
	return out
}

// walk calls fn for every field written in set, not following fragment spreads.
func walk(set ast.SelectionSet, fn func(*ast.Field)) {
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			fn(s)
			walk(s.SelectionSet, fn)
		case *ast.InlineFragment:
			walk(s.SelectionSet, fn)
		}
	}
}

// depth is the nesting depth of set with fragments expanded (memoized per fragment).
func depth(set ast.SelectionSet, fragments map[string]*ast.FragmentDefinition, memo map[string]int) int {
	deepest := 0
	for _, sel := range set {
		d := 0
		switch s := sel.(type) {
		case *ast.Field:
			d = 1 + depth(s.SelectionSet, fragments, memo)
		case *ast.InlineFragment:
			d = depth(s.SelectionSet, fragments, memo)
		case *ast.FragmentSpread:
			var ok bool
			if d, ok = memo[s.Name]; !ok {
				if f := fragments[s.Name]; f != nil {
					d = depth(f.SelectionSet, fragments, memo)
				}
				memo[s.Name] = d
			}
		}
		deepest = max(deepest, d)
	}
	return deepest
}

// rootFields counts the fields of an operation's root selection, fragments expanded.
func rootFields(set ast.SelectionSet, fragments map[string]*ast.FragmentDefinition) int {
	n := 0
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			n++
		case *ast.InlineFragment:
			n += rootFields(s.SelectionSet, fragments)
		case *ast.FragmentSpread:
			if f := fragments[s.Name]; f != nil {
				n += rootFields(f.SelectionSet, fragments)
			}
		}
	}
	return n
}

func requestError(code model.ErrorCode, message string) *gqlerror.Error {
	return &gqlerror.Error{Message: message, Extensions: map[string]any{"code": code}}
}

// costLimit refuses an operation whose complexity exceeds the limit: every field costs 1 plus its
// selection, and a list field its selection times the number of items it may return — what its
// `first` or `limit` asks for (the variables' values included), or the list's cap (listCosts). So
// 20 aliases of a 100-event page cost what 2,000 events do. It runs once the document is
// validated and the variables coerced, before any resolver.
type costLimit struct {
	es  graphql.ExecutableSchema
	max int
}

var _ interface {
	graphql.OperationContextMutator
	graphql.HandlerExtension
} = &costLimit{}

func (*costLimit) ExtensionName() string { return "CostLimit" }

func (c *costLimit) Validate(es graphql.ExecutableSchema) error {
	c.es = es
	return nil
}

func (c *costLimit) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if n := c.cost(ctx, oc.Operation.SelectionSet, oc.Variables, map[string]int{}); n > c.max {
		return requestError(model.ErrorCodeGraphqlValidationFailed, fmt.Sprintf("operation has complexity %d; at most %d is allowed", n, c.max))
	}
	return nil
}

// cost is the complexity of set: a field costs what its function in the ComplexityRoot says (at
// its costliest implementation's, for a field of an interface), and never less than 1 plus its
// selection. It is gqlgen's complexity.Calculate, but counting each fragment once however often it
// is spread, and without decoding the arguments of fields that take none (an allocation per field).
func (c *costLimit) cost(ctx context.Context, set ast.SelectionSet, vars map[string]any, memo map[string]int) int {
	total := 0
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			child := c.cost(ctx, s.SelectionSet, vars, memo)
			n := 1 + child
			if s.Definition != nil && s.ObjectDefinition != nil {
				var args map[string]any
				if len(s.Definition.Arguments) > 0 {
					args = s.ArgumentMap(vars)
				}
				objects := []*ast.Definition{s.ObjectDefinition}
				if s.ObjectDefinition.IsAbstractType() {
					objects = c.es.Schema().GetPossibleTypes(s.ObjectDefinition)
				}
				for _, o := range objects {
					if custom, ok := c.es.Complexity(ctx, o.Name, s.Name, child, args); ok && custom > n {
						n = custom
					}
				}
			}
			total += n
		case *ast.InlineFragment:
			total += c.cost(ctx, s.SelectionSet, vars, memo)
		case *ast.FragmentSpread:
			n, ok := memo[s.Name]
			if !ok && s.Definition != nil {
				n = c.cost(ctx, s.Definition.SelectionSet, vars, memo)
				memo[s.Name] = n
			}
			total += n
		}
		if total > 1<<40 { // long past any limit; stop before overflow
			return total
		}
	}
	return total
}

// Lists without a cap of their own (sessions, signing keys) count as this many items.
const uncappedListSize = 50

// listCosts are the complexity functions of the list fields: 1 plus the selection's cost times
// the most items the list may hold.
func listCosts(svc *account.Service) ComplexityRoot {
	items := func(n int) func(int) int {
		return func(child int) int { return 1 + n*child }
	}
	page := func(asked, least, most int) func(int) int {
		return items(min(max(asked, least), most))
	}
	var c ComplexityRoot
	// A page counts at least one item: limit 0 answers [] and costs what one user does.
	c.Query.Users = func(child, limit, _ int) int { return page(limit, 1, account.MaxPageSize)(child) }
	c.Query.AuditEvents = func(child, first int, _, _ *string, _ []model.AuditEventType) int {
		return page(first, 1, account.MaxAuditPage)(child)
	}
	c.Query.SecurityEvents = func(child, first int, _ *string) int { return page(first, 1, account.MaxAuditPage)(child) }
	c.Query.Sessions = items(uncappedListSize)
	c.Query.SigningKeys = items(uncappedListSize)
	c.Query.APIKeys = items(account.MaxAPIKeysPerUser)
	c.User.Identities = items(svc.MaxIdentitiesPerUser())
	return c
}
