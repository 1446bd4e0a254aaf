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

// plainSelection reports whether sel is a set that collectFields would answer itself (fields
// without directives, each response key once) of fields that plain accepts: the sets the
// marshallers graph/gen writes for plain fields only (_User_plain…) take, uncollected.
func plainSelection(sel ast.SelectionSet, plain func(name string) bool) bool {
	const most = 32 // the key check below is quadratic
	if len(sel) > most {
		return false
	}
	for i, s := range sel {
		f, ok := s.(*ast.Field)
		if !ok || len(f.Directives) > 0 || !plain(f.Name) {
			return false
		}
		for _, before := range sel[:i] {
			if before.(*ast.Field).Alias == f.Alias {
				return false
			}
		}
	}
	return true
}

// newPlainObject returns the object of the plain selection sel, whose values the caller sets,
// with room for a few of them in the same allocation: it is what graph/gen's marshallers of plain
// fields only return, without the FieldSet, collected fields and object a selection costs else.
func newPlainObject(sel ast.SelectionSet) *plainObject {
	o := &plainObject{sel: sel}
	if len(sel) <= len(o.small) {
		o.values = o.small[:len(sel)]
	} else {
		o.values = make([]graphql.Marshaler, len(sel))
	}
	return o
}

type plainObject struct {
	sel    ast.SelectionSet // of *ast.Field, each response key once (plainSelection)
	values []graphql.Marshaler
	small  [4]graphql.Marshaler
}

func (o *plainObject) MarshalGQL(w io.Writer) {
	io.WriteString(w, "{")
	for i, s := range o.sel {
		if i > 0 {
			io.WriteString(w, ",")
		}
		writeKey(w, s.(*ast.Field).Alias)
		o.values[i].MarshalGQL(w)
	}
	io.WriteString(w, "}")
}

// writeKey writes the response key key and its colon.
func writeKey(w io.Writer, key string) {
	if isName(key) { // a GraphQL name needs no escaping
		io.WriteString(w, `"`)
		io.WriteString(w, key)
		io.WriteString(w, `"`)
	} else {
		graphql.MarshalString(key).MarshalGQL(w)
	}
	io.WriteString(w, ":")
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
		writeKey(w, key)
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
