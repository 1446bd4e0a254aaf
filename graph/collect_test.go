package graph_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/transport"

	"gqlauth/graph"
	"gqlauth/model"
)

// TestSelections_CollectedAsTheSpecSays runs, through the generated executor (graph/gen rewrites
// its field collection and plain fields), selection sets that the fast path must hand to gqlgen:
// a response key selected twice (merged), a fragment spread, an inline fragment, @skip and
// @include, a deferred fragment, next to the plain sets it answers itself. The response must be the spec's, in the
// document's order. No database is involved.
func TestSelections_CollectedAsTheSpecSays(t *testing.T) {
	pass := func(ctx context.Context, _ any, next graphql.Resolver, _ model.Role, _ *model.AuthLevel) (any, error) {
		return next(ctx)
	}
	es := graph.NewExecutableSchema(graph.Config{
		Resolvers:  orderResolvers{},
		Directives: graph.DirectiveRoot{Auth: pass, Public: func(ctx context.Context, _ any, next graphql.Resolver) (any, error) { return next(ctx) }},
	})
	srv := handler.New(es)
	srv.AddTransport(transport.POST{})
	for _, c := range []struct{ name, query, want string }{
		{"plain", `{ me { role id } x: me { username } }`,
			`{"me":{"role":"USER","id":"u1"},"x":{"username":"u1"}}`},
		{"plain, five fields", `{ me { id username email role disabled } }`,
			`{"me":{"id":"u1","username":"u1","email":null,"role":"USER","disabled":false}}`},
		{"plain and typename", `{ me { __typename id } }`,
			`{"me":{"__typename":"User","id":"u1"}}`},
		{"merged", `{ a: me { id username } b: me { id } a: me { role id } }`,
			`{"a":{"id":"u1","username":"u1","role":"USER"},"b":{"id":"u1"}}`},
		{"merged below", `{ me { id i: id id } }`,
			`{"me":{"id":"u1","i":"u1"}}`},
		{"fragments", `query { me { ...F ... on User { username } ... { id } } } fragment F on User { role }`,
			`{"me":{"role":"USER","username":"u1","id":"u1"}}`},
		{"skip and include", `query($yes: Boolean!) { me { id @skip(if: true) username @include(if: $yes) role @include(if: false) } skipped: me @skip(if: $yes) { id } }`,
			`{"me":{"username":"u1"}}`},
		// The deferred field is null in the first payload and the group pending; over POST the
		// later payloads are not sent. graph/gen makes the object's deferred set only here.
		{"deferred", `{ me { id ... @defer(label: "later") { identities { provider } } } x: me { username } }`,
			`{"me":{"id":"u1","identities":null},"x":{"username":"u1"}},"hasNext":true`},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := `{"query":` + quote(c.query) + `,"variables":{"yes":true}}`
			req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, req)
			if got, want := strings.TrimSpace(rec.Body.String()), `{"data":`+c.want+`}`; got != want {
				t.Errorf("response\n got %s\nwant %s", got, want)
			}
		})
	}
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}
