package graph_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	gqlclient "github.com/99designs/gqlgen/client"
	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/transport"

	"gqlauth/graph"
	"gqlauth/model"
)

// TestQueryRootFields_RunOneAfterAnotherInDocumentOrder shows what graph/gen's plugin does to
// the generated executor: the root fields of a query are resolved one after another, in the order
// of the document, none starting before the one before it has returned (gqlgen's stock code starts
// a goroutine for every root field but the first). Each field's @auth sleeps a little, so that
// fields run concurrently would overlap. The executor is the generated one with a recording @auth;
// no database is involved.
func TestQueryRootFields_RunOneAfterAnotherInDocumentOrder(t *testing.T) {
	var (
		mu       sync.Mutex
		inFlight int
		order    []string
		overlap  []string
	)
	auth := func(ctx context.Context, _ any, next graphql.Resolver, _ model.Role, _ *model.AuthLevel) (any, error) {
		alias := graphql.GetFieldContext(ctx).Field.Alias
		mu.Lock()
		inFlight++
		order = append(order, alias)
		if inFlight > 1 {
			overlap = append(overlap, alias)
		}
		mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		defer func() { mu.Lock(); inFlight--; mu.Unlock() }()
		return next(ctx)
	}
	es := graph.NewExecutableSchema(graph.Config{
		Resolvers:  orderResolvers{},
		Directives: graph.DirectiveRoot{Auth: auth, Public: func(ctx context.Context, _ any, next graphql.Resolver) (any, error) { return next(ctx) }},
	})
	srv := handler.New(es)
	srv.AddTransport(transport.POST{})
	c := gqlclient.New(srv)

	var want []string
	var q strings.Builder
	q.WriteString("{")
	for i := range 11 {
		alias := fmt.Sprintf("m%d", i)
		want = append(want, alias)
		fmt.Fprintf(&q, " %s: me { id }", alias)
	}
	q.WriteString(" }")
	var resp map[string]struct{ ID string }
	c.MustPost(q.String(), &resp)
	if len(resp) != 11 || resp["m10"].ID != "u1" {
		t.Fatalf("response: %+v", resp)
	}
	if len(overlap) > 0 {
		t.Errorf("root fields ran at the same time as another: %v (order %v)", overlap, order)
	}
	if strings.Join(order, " ") != strings.Join(want, " ") {
		t.Errorf("root fields ran in the order %v, want the document's %v", order, want)
	}
}

// orderResolvers resolves `me` only; the embedded (nil) interfaces stand for the rest.
type orderResolvers struct{ graph.ResolverRoot }

func (orderResolvers) Query() graph.QueryResolver { return orderQuery{} }

type orderQuery struct{ graph.QueryResolver }

func (orderQuery) Me(context.Context) (*model.User, error) {
	return &model.User{ID: "u1", Username: "u1", Role: model.RoleUser}, nil
}
