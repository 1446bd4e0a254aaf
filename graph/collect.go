package graph

import (
	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
)

// collectFields is graphql.CollectFields for the generated executor (graph/gen rewrites its calls
// to this). gqlgen collects every selection set afresh for each object it marshals — a key hashed,
// a map, two locks and a copy of every field's sub-selection — and caches the result per
// operation by the address of the set, which misses for each aliased copy of a field. The common
// set is plain fields without directives, fragments or a repeated response key; its collected
// fields are the fields themselves, in order, so that is what it answers, with one allocation. Any
// other set (fragments, @skip, @include, @defer, fields to merge) goes to gqlgen.
func collectFields(oc *graphql.OperationContext, sel ast.SelectionSet, satisfies []string) []graphql.CollectedField {
	const most = 32 // the key check below is quadratic
	if len(sel) > most {
		return graphql.CollectFields(oc, sel, satisfies)
	}
	for i, s := range sel {
		f, ok := s.(*ast.Field)
		if !ok || len(f.Directives) > 0 {
			return graphql.CollectFields(oc, sel, satisfies)
		}
		for _, before := range sel[:i] {
			if before.(*ast.Field).Alias == f.Alias {
				return graphql.CollectFields(oc, sel, satisfies)
			}
		}
	}
	fields := make([]graphql.CollectedField, len(sel))
	for i, s := range sel {
		f := s.(*ast.Field)
		fields[i] = graphql.CollectedField{Field: f, IsNonDeferrable: true}
		if len(f.SelectionSet) > 0 {
			fields[i].Selections = f.SelectionSet
		}
	}
	return fields
}
