package graph_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/vektah/gqlparser/v2/ast"

	"gqlauth/store/storetest"
)

// Enum values are case-sensitive (issue 21, item 8): a value in the wrong case, in a variable or
// written in the document, is refused as input the schema does not accept, never run into an
// INTERNAL_SERVER_ERROR. Every enum of the schema that some argument takes is tried, so a future
// one is too.

// otherCase is v with its letters' case flipped: sign_in for SIGN_IN.
func otherCase(v string) string {
	if lower := strings.ToLower(v); lower != v {
		return lower
	}
	return strings.ToUpper(v)
}

// placeholder is a literal of type t that validates (its value does not matter: the request is
// refused before it runs).
func placeholder(t *ast.Type) string {
	if t.Elem != nil {
		return "[" + placeholder(t.Elem) + "]"
	}
	switch def := schema.Types[t.NamedType]; {
	case def.Kind == ast.Enum:
		return def.EnumValues[0].Name
	case t.NamedType == "Int":
		return "1"
	case t.NamedType == "Boolean":
		return "false"
	default:
		return `"0190f4e0-0000-7000-8000-000000000000"`
	}
}

// enumArgument is one argument of a root field whose type is (a list of) an enum.
type enumArgument struct {
	op    string // query, mutation
	field *ast.FieldDefinition
	arg   *ast.ArgumentDefinition
	enum  *ast.Definition
}

func enumArguments() []enumArgument {
	var out []enumArgument
	for op, root := range map[string]*ast.Definition{"query": schema.Query, "mutation": schema.Mutation} {
		for _, f := range root.Fields {
			for _, a := range f.Arguments {
				if def := schema.Types[a.Type.Name()]; def.Kind == ast.Enum {
					out = append(out, enumArgument{op, f, a, def})
				}
			}
		}
	}
	return out
}

// document calls the argument's field with the argument set to value (a literal or $v), and the
// field's other required arguments set to placeholders.
func (e enumArgument) document(variable, value string) string {
	args := []string{e.arg.Name + ": " + value}
	for _, a := range e.field.Arguments {
		if a != e.arg && a.Type.NonNull && a.DefaultValue == nil {
			args = append(args, a.Name+": "+placeholder(a.Type))
		}
	}
	selection := ""
	if def := schema.Types[e.field.Type.Name()]; def.Kind == ast.Object {
		selection = " { __typename }"
	}
	return fmt.Sprintf("%s%s { %s(%s)%s }", e.op, variable, e.field.Name, strings.Join(args, ", "), selection)
}

func TestEnums_WrongCaseIsRefusedAsInputAndWritesNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		var logs syncBuffer
		s := newServer(t, kind, withLogs(&logs))
		admin := s.signedInAdmin(t)
		s.signedInUser(t, "alice")

		covered := map[string]bool{}
		type attempt struct {
			name string
			c    call
		}
		var attempts []attempt
		for _, e := range enumArguments() {
			covered[e.enum.Name] = true
			wrong := otherCase(e.enum.EnumValues[len(e.enum.EnumValues)-1].Name)
			var value any = wrong
			literal := wrong
			if e.arg.Type.Elem != nil {
				value, literal = []any{wrong}, "["+wrong+"]"
			}
			at := e.field.Name + "." + e.arg.Name + "=" + wrong
			attempts = append(attempts,
				attempt{at + "/variable", call{Query: e.document("($v: "+e.arg.Type.String()+")", "$v"), Variables: map[string]any{"v": value}}},
				attempt{at + "/literal", call{Query: e.document("", literal)}},
				attempt{at + "/variable's default", call{Query: e.document("($v: "+e.arg.Type.String()+" = "+literal+")", "$v")}},
			)
		}
		for _, want := range []string{"Role", "LogoutScope", "AuditEventType"} {
			if !covered[want] {
				t.Errorf("no argument takes %s", want)
			}
		}
		// A field before the refused one writes nothing either: the operation is refused as a whole.
		attempts = append(attempts, attempt{"after a field that writes", call{
			Query:     `mutation($s: LogoutScope!) { createApiKey(name: "k") { secret } logout(scope: $s) }`,
			Variables: map[string]any{"s": "others"},
		}})

		before := s.snapshot(t)
		events, _ := s.DB.DumpTable(context.Background(), "audit_events")
		for _, a := range attempts {
			t.Run(a.name, func(t *testing.T) {
				a.c.Token = admin.AccessToken
				r := s.do(t, a.c)
				if len(r.Errors) != 1 {
					t.Fatalf("%s: errors %+v", a.c.Query, r.Errors)
				}
				switch e := r.Errors[0]; e.Extensions.Code {
				case "GRAPHQL_VALIDATION_FAILED":
					if r.Data != nil {
						t.Fatalf("a request error with data %s", r.Data)
					}
				case "BAD_USER_INPUT":
					if e.Extensions.Field == "" {
						t.Fatalf("BAD_USER_INPUT without field: %+v", e)
					}
				default:
					t.Fatalf("%s: got %s (%q), want BAD_USER_INPUT or GRAPHQL_VALIDATION_FAILED", a.c.Query, e.Extensions.Code, e.Message)
				}
			})
		}
		if after := s.snapshot(t); after != before {
			t.Errorf("rows changed:\nbefore %s\nafter  %s", before, after)
		}
		if after, _ := s.DB.DumpTable(context.Background(), "audit_events"); len(after) != len(events) {
			t.Errorf("%d audit events written", len(after)-len(events))
		}
		if strings.Contains(logs.String(), "unexpected error") {
			t.Errorf("the log has an unexpected error: %s", logs.String())
		}
	})
}
