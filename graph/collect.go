package graph

import (
	"io"
	"slices"

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

// objectJSON returns the object out, whose fields are fields, as the JSON object the response
// holds (graph/gen rewrites the generated marshallers to return it). It writes what
// graphql.FieldSet's own MarshalGQL writes — the fields in order, a response key already written
// skipped — without its iterator, its copy of every field and its map of written keys.
func objectJSON(out *graphql.FieldSet, fields []graphql.CollectedField) graphql.Marshaler {
	return &object{values: out.Values, fields: fields}
}

// newPlainObject returns an object of fields whose values the caller sets, with room for a few
// of them in the same allocation: the marshallers graph/gen writes for selections of plain fields
// only (_User_plain…), which would otherwise pay for a FieldSet they never need.
func newPlainObject(fields []graphql.CollectedField) *plainObject {
	o := &plainObject{}
	o.fields = fields
	if len(fields) <= len(o.small) {
		o.values = o.small[:len(fields)]
	} else {
		o.values = make([]graphql.Marshaler, len(fields))
	}
	return o
}

type plainObject struct {
	object
	small [4]graphql.Marshaler
}

type object struct {
	values []graphql.Marshaler
	fields []graphql.CollectedField
}

func (o *object) MarshalGQL(w io.Writer) {
	const most = 32 // above, the written keys are looked up in a map
	var written map[string]bool
	if len(o.fields) > most {
		written = make(map[string]bool, len(o.fields))
	}
	io.WriteString(w, "{")
	for i := range o.fields {
		key := o.fields[i].Alias
		if written != nil {
			if written[key] {
				continue
			}
			written[key] = true
		} else if slices.ContainsFunc(o.fields[:i], func(f graphql.CollectedField) bool { return f.Alias == key }) {
			continue
		}
		if i > 0 {
			io.WriteString(w, ",")
		}
		if isName(key) { // a GraphQL name needs no escaping
			io.WriteString(w, `"`)
			io.WriteString(w, key)
			io.WriteString(w, `"`)
		} else {
			graphql.MarshalString(key).MarshalGQL(w)
		}
		io.WriteString(w, ":")
		o.values[i].MarshalGQL(w)
	}
	io.WriteString(w, "}")
}

// isName reports whether s is of the characters of a GraphQL name, which JSON writes as they are.
func isName(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}
