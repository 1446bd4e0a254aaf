package graph

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"gqlauth/model"
)

// Text that reaches a resolver is valid UTF-8 and free of NUL, whatever the field: Postgres text
// cannot hold NUL (the query would fail as an internal error), and text that decoders silently
// repair (invalid bytes, lone UTF-16 surrogates, both turned into U+FFFD) would let different
// inputs compare equal, such as two passwords. So such input is refused at the edge:
//   - a request body that is not UTF-8, or whose JSON escapes a lone surrogate: 400 (the guard);
//   - a GraphQL string literal escaping any surrogate (gqlparser turns even a valid pair into two
//     U+FFFD): a parse error (the guard);
//   - an argument value with NUL in it, however it got there (a JSON "\u0000", a GraphQL
//     "\u0000"): BAD_USER_INPUT naming the argument, before the field's directive or resolver runs.

// validJSONText reports whether body is UTF-8 and its JSON string escapes encode no lone UTF-16
// surrogate (RFC 8259 §8.1 and §8.2). It does not otherwise check that body is JSON.
func validJSONText(body []byte) bool {
	if !utf8.Valid(body) {
		return false
	}
	inString := false
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c == '"':
			inString = !inString
		case c == '\\' && inString && i+1 < len(body):
			i++
			if body[i] != 'u' {
				continue
			}
			r, ok := hex4(body, i+1)
			if !ok {
				continue // not JSON; the decoder says so
			}
			i += 4
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return false // a low surrogate without a high one before it
			case r >= 0xD800 && r <= 0xDBFF:
				// A high surrogate must be followed at once by an escaped low surrogate.
				if i+2 >= len(body) || body[i+1] != '\\' || body[i+2] != 'u' {
					return false
				}
				low, ok := hex4(body, i+3)
				if !ok || low < 0xDC00 || low > 0xDFFF {
					return false
				}
				i += 6
			}
		}
	}
	return true
}

// hasSurrogateEscape reports whether a GraphQL document escapes a UTF-16 surrogate (\uD800 to
// \uDFFF) anywhere.
func hasSurrogateEscape(query string) bool {
	for i := strings.Index(query, `\u`); i >= 0; {
		if r, ok := hex4([]byte(query[i+2:min(i+6, len(query))]), 0); ok && r >= 0xD800 && r <= 0xDFFF {
			return true
		}
		next := strings.Index(query[i+2:], `\u`)
		if next < 0 {
			break
		}
		i += 2 + next
	}
	return false
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[at : at+4] {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// checkArguments is root-field middleware that refuses a root field whose arguments hold text
// with NUL or invalid UTF-8, at any depth (lists, input objects), naming the argument, before its
// directive or resolver runs. Credentials are the exception: a malformed username, password or
// refresh token fails exactly like a wrong one (INVALID_CREDENTIALS, INVALID_REFRESH_TOKEN), which
// the service sees to without a lookup. It runs per root field, not per field: only root fields
// take arguments (CheckArgumentPlacement keeps it so), and a middleware on every field cost wide
// queries a tenth of their time.
func checkArguments(ctx context.Context, next graphql.RootResolver) graphql.Marshaler {
	rfc := graphql.GetRootFieldContext(ctx)
	if rfc == nil || rfc.Field.Field == nil || len(rfc.Field.Arguments) == 0 || rfc.Field.ObjectDefinition == nil ||
		credentials[rfc.Field.ObjectDefinition.Name+"."+rfc.Field.Name] {
		return next(ctx)
	}
	var vars map[string]any
	if oc := graphql.GetOperationContext(ctx); oc != nil {
		vars = oc.Variables
	}
	for name, value := range rfc.Field.ArgumentMap(vars) {
		if !cleanText(reflect.ValueOf(value)) {
			// The error belongs to the field, as a resolver's error would.
			fc := &graphql.FieldContext{Parent: graphql.GetFieldContext(ctx), Object: rfc.Field.ObjectDefinition.Name, Field: rfc.Field}
			graphql.AddError(graphql.WithFieldContext(ctx, fc), model.BadInput(name, name+" must be valid UTF-8 text without NUL characters"))
			return graphql.Null
		}
	}
	return next(ctx)
}

// CheckArgumentPlacement refuses a schema with arguments on fields other than those of the root
// types: checkArguments looks at root fields only.
func CheckArgumentPlacement(schema *ast.Schema) error {
	var bad []string
	for name, def := range schema.Types {
		if strings.HasPrefix(name, "__") || def == schema.Query || def == schema.Mutation || def == schema.Subscription {
			continue
		}
		for _, f := range def.Fields {
			if len(f.Arguments) > 0 {
				bad = append(bad, name+"."+f.Name)
			}
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("schema: arguments are checked on root fields only; these fields take arguments: %s (move the check in graph/text.go to field middleware first)", strings.Join(bad, ", "))
	}
	return nil
}

// credentials lists the fields whose credential arguments the service checks itself.
var credentials = map[string]bool{"Mutation.login": true, "Mutation.refresh": true}

func cleanText(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		s := v.String()
		return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
	case reflect.Pointer, reflect.Interface:
		return v.IsNil() || cleanText(v.Elem())
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if !cleanText(v.Index(i)) {
				return false
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if !cleanText(it.Key()) || !cleanText(it.Value()) {
				return false
			}
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if !cleanText(v.Field(i)) {
				return false
			}
		}
	}
	return true
}
