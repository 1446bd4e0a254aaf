package graph

import (
	"context"
	"fmt"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"gqlauth/account"
	"gqlauth/model"
)

// directives implements @auth, @public, @enrollsFactor and @recentAuth.
func directives(svc *account.Service) DirectiveRoot {
	return DirectiveRoot{
		// The check is memoized per request by the account rules, so a request pays one database
		// query however many guarded fields it resolves. Every operation on a socket goes through
		// it with credentials of its own (ws.go), so the level is checked there as on HTTP.
		Auth: func(ctx context.Context, _ any, next graphql.Resolver, role model.Role, aal *model.AuthLevel) (any, error) {
			g := account.Guard{Role: role, AAL: aal, Enrolment: marked(ctx, "enrollsFactor"), Recent: marked(ctx, "recentAuth")}
			if _, err := svc.Guard(ctx, g); err != nil {
				return nil, err
			}
			return next(ctx)
		},
		// @enrollsFactor and @recentAuth only mark a field; @auth reads the marks (marked), so
		// that one guard decides, whatever order the directives run in.
		EnrollsFactor: func(ctx context.Context, _ any, next graphql.Resolver) (any, error) {
			return next(ctx)
		},
		RecentAuth: func(ctx context.Context, _ any, next graphql.Resolver) (any, error) {
			return next(ctx)
		},
		Public: func(ctx context.Context, _ any, next graphql.Resolver) (any, error) {
			return next(ctx)
		},
	}
}

// authLevels are the AuthLevel values, one pointer each, for constAuthLevel.
var authLevels = func() map[string]*model.AuthLevel {
	m := make(map[string]*model.AuthLevel, len(model.AllAuthLevel))
	for _, l := range model.AllAuthLevel {
		m[string(l)] = &l
	}
	return m
}()

// constAuthLevel is the generated unmarshalOAuthLevel for a constant argument of a directive in
// the schema (@auth(aal: AAL1)), which graph/gen rewrites the generated code to call: the same
// level, without a new pointer on every field. The pointer is shared, so the directives must
// only read it (account.Guard does).
func (ec *executionContext) constAuthLevel(ctx context.Context, v string) (*model.AuthLevel, error) {
	if l, ok := authLevels[v]; ok {
		return l, nil
	}
	return ec.unmarshalOAuthLevel2ᚖgqlauthᚋmodelᚐAuthLevel(ctx, v)
}

// marked reports whether the field being resolved carries the marking directive name:
// @enrollsFactor (it enrols a second factor, so a user whose role needs one may call it before
// having any) or @recentAuth (it needs a recent authentication).
func marked(ctx context.Context, name string) bool {
	fc := graphql.GetFieldContext(ctx)
	return fc != nil && fc.Field.Definition != nil && fc.Field.Definition.Directives.ForName(name) != nil
}

// CheckGuards enforces "secure by default": every field of the root operation types carries
// exactly one of @auth or @public, so that a new root field can never be open by accident.
func CheckGuards(schema *ast.Schema) error {
	var bad []string
	for _, root := range []*ast.Definition{schema.Query, schema.Mutation, schema.Subscription} {
		if root == nil {
			continue
		}
		for _, f := range root.Fields {
			if strings.HasPrefix(f.Name, "__") {
				continue // introspection
			}
			n := 0
			for _, d := range f.Directives {
				if d.Name == "auth" || d.Name == "public" {
					n++
				}
			}
			if n != 1 {
				bad = append(bad, root.Name+"."+f.Name)
			}
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("schema: these root fields need exactly one of @auth or @public: %s", strings.Join(bad, ", "))
	}
	return nil
}
