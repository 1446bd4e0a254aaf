// Command gen regenerates graph/generated.go and model/models_gen.go from schema.graphqls: gqlgen's
// own `generate`, with gqlgen.yml's configuration, plus one plugin, leanExec. It is run by
// `go generate ./graph/...` (the //go:generate line in graph/resolver.go) and must stay the only
// way the generated code is made, as CI checks. It must not change anything but the generated code.
package main

import (
	"bytes"
	"fmt"
	"go/format"
	"os"
	"slices"
	"strings"

	"github.com/99designs/gqlgen/api"
	"github.com/99designs/gqlgen/codegen"
	"github.com/99designs/gqlgen/codegen/config"
)

func main() {
	cfg, err := config.LoadConfigFromDefaultLocations() // finds gqlgen.yml above and enters its directory
	if err == nil {
		p := &leanExec{}
		if err = api.Generate(cfg, api.AddPlugin(p)); err == nil {
			err = p.rewrite(cfg.Exec.Filename)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

// leanExec trims the per-field cost of gqlgen's generated executor, which a request with many
// fields pays many times over (a request with eleven root fields ran at two thirds of the rate of
// one with a single field). gqlgen's templates are fixed, so the plugin does what its API allows
// (GenerateCode, between BuildData and the templates) and then rewrites a few of the generated
// functions, each matched exactly: a gqlgen upgrade that changes their shape fails `go generate`
// instead of being rewritten wrongly. The result — values, errors, nulls, paths — is the same.
//
//   - Query's root fields run one after another on the request's goroutine, as a mutation's do,
//     instead of a goroutine for every root field but the first. gqlgen has no setting for it: its
//     code generator keeps one flag per object, DisableConcurrency, set for Mutation only; the
//     plugin sets it for Query too. A guarded root field is cheap once the request's principal is
//     loaded (account.Authenticate loads it once per request), so the goroutines, their wait
//     group and the contention of eleven fields on one sync.Once cost more than they save. The
//     trade: root fields that each wait on I/O of their own (an admin's `{ users sessions
//     auditEvents }`) now wait one after another. Fields below the root keep gqlgen's concurrency.
//   - A plain field (a struct field, no resolver, arguments or directives) of a builtin scalar
//     other than Float, or of an enum, is marshalled at once: no field context, closures, panic
//     guard or middleware chain. Nothing can fail there (those marshallers raise no error; a
//     non-null one is of a Go type that cannot be nil) and the schema has no field middleware
//     (graph.NewHandler registers no field interceptor and the schema no FIELD directive; the
//     plugin refuses a schema with one), so nothing would read the context.
//   - Selection sets are collected by graph.collectFields, which answers the common set (plain
//     fields, no fragments, no directives, each response key once) with one allocation and hands
//     the rest to graphql.CollectFields.
//   - An object's deferred group (@defer) is processed only when it has one: gqlgen builds the
//     object's response path for it every time, two allocations per object.
//   - An object is written to the response by graph.objectJSON, which writes what gqlgen's
//     FieldSet writes without an iterator, a copy of each field and a map per object.
//   - An object of which only plain fields are selected (`me { id }`) is marshalled by a function
//     of its own (_User_plain…), into one graph.plainObject: no FieldSet, which such a selection
//     never needs (nothing runs concurrently or is deferred, and no value can null the object).
//   - An object's deferred set is made only when one of its fields is deferred; the root
//     resolvers (Query, User…) and the constant AuthLevel arguments of @auth are made once, not
//     on every field (graph/resolver.go, graph/directives.go).
type leanExec struct {
	plain []plainField
}

// plainField is a field the rewrite marshals at once.
type plainField struct {
	object, field, goField, marshal string
}

func (*leanExec) Name() string { return "leanexec" }

func (p *leanExec) GenerateCode(data *codegen.Data) error {
	if data.QueryRoot == nil {
		return fmt.Errorf("the schema has no Query type")
	}
	data.QueryRoot.DisableConcurrency = true
	if len(data.AllDirectives.LocationDirectives("FIELD")) > 0 {
		return fmt.Errorf("a FIELD directive runs on every field: the plain-field rewrite would skip it")
	}
	for _, o := range data.Objects {
		if o.Root || o.Stream {
			continue
		}
		for _, f := range o.Fields {
			if plain(f) {
				p.plain = append(p.plain, plainField{o.Name, f.Name, f.GoFieldName, f.TypeReference.MarshalFunc()})
			}
		}
	}
	return nil
}

// plain reports whether f can be marshalled without gqlgen's field machinery.
func plain(f *codegen.Field) bool {
	t := f.TypeReference
	if f.IsResolver || !f.IsVariable() || len(f.Args) > 0 || f.HasDirectives() || f.Batch || t.IsSlice() {
		return false
	}
	if t.GQL.NonNull && t.IsNilable() {
		return false // a nil would be a "must not be null" error at the field's path
	}
	switch t.Definition.Kind {
	case "ENUM":
		return true
	case "SCALAR":
		return slices.Contains([]string{"ID", "String", "Boolean", "Int"}, t.Definition.Name) // Float refuses NaN
	}
	return false
}

// deferredGroup is what the templates end every object's marshaller with.
const deferredGroup = `	atomic.AddInt32(&ec.Deferred, int32(min(len(deferLabelToView), math.MaxInt32)))

	ec.ProcessDeferredGroup(graphql.DeferredGroup{
		Defers:   deferLabelToView,
		Path:     graphql.GetPath(ctx),
		FieldSet: deferredFieldSet,
		Context:  ctx,
	})
`

func (p *leanExec) rewrite(filename string) error {
	src, err := os.ReadFile(filename)
	if err != nil {
		return err
	}
	code := string(src)
	for _, f := range p.plain {
		if code, err = f.rewrite(code); err != nil {
			return err
		}
	}
	end := deferredGroup + "\n\treturn out\n}\n"
	if n := strings.Count(code, end); n == 0 || n != strings.Count(code, deferredGroup) {
		return fmt.Errorf("%s: objects do not end as the rewrite knows: gqlgen's object template changed", filename)
	}
	code = strings.ReplaceAll(code, end, "\tif len(deferLabelToView) > 0 {\n"+deferredGroup+"\t}\n\n\treturn objectJSON(out, fields)\n}\n")
	if code, err = lazyDeferred(filename, code); err != nil {
		return err
	}
	if code, err = sharedRoots(filename, code); err != nil {
		return err
	}
	if code, err = constAuthLevels(filename, code); err != nil {
		return err
	}
	const collect = "graphql.CollectFields(ec.OperationContext, sel, "
	if !strings.Contains(code, collect) {
		return fmt.Errorf("%s: no CollectFields call: gqlgen's object template changed", filename)
	}
	code = strings.ReplaceAll(code, collect, "collectFields(ec.OperationContext, sel, ")
	if code, err = plainObjects(filename, code, p.plain); err != nil {
		return err
	}
	out, err := format.Source([]byte(code))
	if err != nil {
		return fmt.Errorf("%s: rewritten code: %w", filename, err)
	}
	return os.WriteFile(filename, out, 0o644)
}

// rewrite replaces f's resolver function in code with one that marshals the struct field at once.
func (f plainField) rewrite(code string) (string, error) {
	head := fmt.Sprintf("func (ec *executionContext) _%s_%s(ctx context.Context, field graphql.CollectedField, obj ", f.object, f.field)
	start := strings.Index(code, head)
	if start < 0 {
		return "", fmt.Errorf("%s.%s: no resolver function", f.object, f.field)
	}
	open := start + strings.Index(code[start:], "{\n") + 2
	end := open + strings.Index(code[open:], "\n}\n")
	want := fmt.Sprintf(`	return graphql.ResolveField(
		ctx,
		ec.OperationContext,
		field,
		func(ctx context.Context, field graphql.CollectedField) (*graphql.FieldContext, error) {
			return ec.fieldContext_%[1]s_%[2]s(ctx, field)
		},
		func(ctx context.Context) (any, error) {
			return obj.%[3]s, nil
		},
		nil,
		func(ctx context.Context, selections ast.SelectionSet, v `, f.object, f.field, f.goField)
	body := code[open:end]
	if !strings.HasPrefix(body, want) || !bytes.Contains([]byte(body), []byte("return ec."+f.marshal+"(ctx, selections, v)\n")) {
		return "", fmt.Errorf("%s.%s: the resolver function is not of the shape the rewrite knows:\n%s", f.object, f.field, body)
	}
	lean := fmt.Sprintf("\t// A plain field (graph/gen: leanExec).\n\treturn ec.%s(ctx, field.Selections, obj.%s)", f.marshal, f.goField)
	return code[:open] + lean + code[end:], nil
}

// lazyDeferred makes an object's deferred field set and its map of deferred labels when a field
// of the object is deferred, not for every object marshalled: two allocations an object. Until
// then the set is nil and the map empty, which the rest of the marshaller only reads (the group
// at its end runs only when the map has a label).
func lazyDeferred(filename, code string) (string, error) {
	const (
		set   = "\tdeferredFieldSet := graphql.NewFieldSet(nil)\n\tdeferLabelToView := make(map[string]*graphql.FieldSetView)\n"
		use   = "\t\t\tif field.IsDeferred() {\n\t\t\t\tdeferredFieldSet.AddField(field)\n"
		early = "\tvar deferredFieldSet *graphql.FieldSet\n\tvar deferLabelToView map[string]*graphql.FieldSetView\n"
		late  = "\t\t\tif field.IsDeferred() {\n\t\t\t\tif deferredFieldSet == nil {\n\t\t\t\t\tdeferredFieldSet = graphql.NewFieldSet(nil)\n\t\t\t\t\tdeferLabelToView = make(map[string]*graphql.FieldSetView)\n\t\t\t\t}\n\t\t\t\tdeferredFieldSet.AddField(field)\n"
	)
	if strings.Count(code, "deferredFieldSet := ") != strings.Count(code, set) || strings.Count(code, "deferredFieldSet.AddField(") != strings.Count(code, use) {
		return "", fmt.Errorf("%s: deferred field sets are not made or used as the rewrite knows: gqlgen's object template changed", filename)
	}
	// A closure that captured the variable itself, now assigned after its declaration, would
	// move it to the heap: the closure takes the set it was made with.
	const (
		closure = "return innerFunc(ctx, deferredFieldSet)"
		copied  = "deferred := deferredFieldSet\n\t\t\t\tdeferredFieldSet.Concurrently("
	)
	if strings.Count(code, closure) != strings.Count(code, use) || strings.Count(code, "deferredFieldSet.Concurrently(") != strings.Count(code, use) {
		return "", fmt.Errorf("%s: deferred fields are not run as the rewrite knows: gqlgen's object template changed", filename)
	}
	code = strings.ReplaceAll(code, closure, "return innerFunc(ctx, deferred)")
	code = strings.ReplaceAll(code, "deferredFieldSet.Concurrently(", copied)
	return strings.ReplaceAll(strings.ReplaceAll(code, set, early), use, late), nil
}

// sharedRoots has the generated code take the root resolvers (Query, Mutation, User…) of a
// graph.Resolver from resolverQuery and its kin (graph/resolver.go), which make each once per
// Resolver, instead of from gqlgen's generated getters, which make one for every field resolved.
// Another ResolverRoot is still asked each time. A type that gains resolvers keeps gqlgen's getter
// (one allocation per field) until it gets its own function there and its name in the list below.
func sharedRoots(filename, code string) (string, error) {
	n := 0
	for _, root := range []string{"Query", "Mutation", "Subscription", "User"} {
		call := "ec.Resolvers." + root + "()"
		n += strings.Count(code, call)
		code = strings.ReplaceAll(code, call, "resolver"+root+"(ec.Resolvers)")
	}
	if n == 0 {
		return "", fmt.Errorf("%s: root resolvers are not called as the rewrite knows: gqlgen's template changed", filename)
	}
	return code, nil
}

// constAuthLevels has a directive's constant AuthLevel argument (@auth(aal: AAL1)) taken from
// constAuthLevel, which unmarshals each level once, instead of allocating it again on every
// field (graph/directives.go). The directives only read it.
func constAuthLevels(filename, code string) (string, error) {
	const call = `ec.unmarshalOAuthLevel2ᚖgqlauthᚋmodelᚐAuthLevel(ctx, "`
	if !strings.Contains(code, call) {
		return "", fmt.Errorf("%s: no constant AuthLevel argument: the schema or gqlgen's directive template changed", filename)
	}
	return strings.ReplaceAll(code, call, `ec.constAuthLevel(ctx, "`), nil
}

// plainObjects gives every object with plain fields a marshaller for a selection of those
// fields only, which the object's own marshaller tries first: the values are the ones the plain
// fields' rewritten resolvers give, written by graph.plainObject. A plain selection
// (graph.plainSelection: fields without directives, each response key once) is its own
// collected fields, so it is not collected. Any other selection (another field, __typename, a
// fragment) goes on to gqlgen's marshaller as before.
func plainObjects(filename, code string, plain []plainField) (string, error) {
	var objects []string
	byObject := map[string][]plainField{}
	for _, f := range plain {
		if byObject[f.object] == nil {
			objects = append(objects, f.object)
		}
		byObject[f.object] = append(byObject[f.object], f)
	}
	var extra strings.Builder
	for _, o := range objects {
		head := fmt.Sprintf("func (ec *executionContext) _%s(ctx context.Context, sel ast.SelectionSet, obj ", o)
		start := strings.Index(code, head)
		if start < 0 || strings.Count(code, head) != 1 {
			return "", fmt.Errorf("%s: %s: no single object marshaller", filename, o)
		}
		typ, rest, ok := strings.Cut(code[start+len(head):], ") graphql.Marshaler {\n")
		collect := fmt.Sprintf("\tfields := collectFields(ec.OperationContext, sel, %sImplementors)\n", lcFirst(o))
		if !ok || strings.Contains(typ, "\n") || !strings.HasPrefix(rest, collect) {
			return "", fmt.Errorf("%s: %s: the object marshaller does not begin as the rewrite knows: gqlgen's object template changed", filename, o)
		}
		at := len(code) - len(rest)
		code = code[:at] + fmt.Sprintf("\tif m := ec._%s_plain(ctx, sel, obj); m != nil {\n\t\treturn m\n\t}\n", o) + code[at:]

		fields := byObject[o]
		names := make([]string, len(fields))
		for i, f := range fields {
			names[i] = fmt.Sprintf("%q", f.field)
		}
		fmt.Fprintf(&extra, "\n// _%[1]s_plain is _%[1]s for a selection of its plain fields only (graph/gen: leanExec); nil\n// for any other selection.\n", o)
		fmt.Fprintf(&extra, "func (ec *executionContext) _%s_plain(ctx context.Context, sel ast.SelectionSet, obj %s) graphql.Marshaler {\n", o, typ)
		fmt.Fprintf(&extra, "\tif !plainSelection(sel, func(name string) bool {\n\t\tswitch name {\n\t\tcase %s:\n\t\t\treturn true\n\t\t}\n\t\treturn false\n\t}) {\n\t\treturn nil\n\t}\n", strings.Join(names, ", "))
		extra.WriteString("\to := newPlainObject(sel)\n\tfor i, s := range sel {\n\t\tswitch field := s.(*ast.Field); field.Name {\n")
		for _, f := range fields {
			fmt.Fprintf(&extra, "\t\tcase %q:\n\t\t\to.values[i] = ec.%s(ctx, field.SelectionSet, obj.%s)\n", f.field, f.marshal, f.goField)
		}
		extra.WriteString("\t\t}\n\t}\n\treturn o\n}\n")
	}
	return code + extra.String(), nil
}

// lcFirst is gqlgen's lcFirst, for the names of the implementors' lists.
func lcFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}
