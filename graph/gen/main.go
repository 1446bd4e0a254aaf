// Command gen regenerates graph/generated.go and model/models_gen.go from schema.graphqls: gqlgen's
// own `generate`, with gqlgen.yml's configuration, plus one plugin, sequentialQuery. It is run by
// `go generate ./graph/...` (the //go:generate line in graph/resolver.go) and must stay the only
// way the generated code is made, as CI checks. It must not change anything but the generated code.
package main

import (
	"fmt"
	"os"

	"github.com/99designs/gqlgen/api"
	"github.com/99designs/gqlgen/codegen"
	"github.com/99designs/gqlgen/codegen/config"
)

func main() {
	cfg, err := config.LoadConfigFromDefaultLocations() // finds gqlgen.yml above and enters its directory
	if err == nil {
		err = api.Generate(cfg, api.AddPlugin(sequentialQuery{}))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

// sequentialQuery makes the generated executor resolve the root fields of a query one after
// another on the request's goroutine, as it already does those of a mutation, instead of starting a
// goroutine for every root field but the first. gqlgen has no setting for it: its code generator
// keeps one flag per object, DisableConcurrency, set for Mutation only, and this plugin sets it for
// Query too before the code is written (a CodeGenerator runs between BuildData and GenerateCode).
//
// Why: a guarded root field is cheap once the request's principal is loaded (account.Authenticate
// loads it once per request), so the goroutines, their wait group and the contention of eleven
// fields on one sync.Once cost more than they save; a request with many root fields ran at half the
// rate of one with a single field. The trade: root fields that each wait on I/O of their own (an
// admin's `{ users sessions auditEvents }`) now wait one after another. Fields below the root
// keep gqlgen's concurrency, and the result — values, errors, nulls — is the same, as the spec
// asks of any execution order.
type sequentialQuery struct{}

func (sequentialQuery) Name() string { return "sequentialquery" }

func (sequentialQuery) GenerateCode(data *codegen.Data) error {
	if data.QueryRoot == nil {
		return fmt.Errorf("the schema has no Query type")
	}
	data.QueryRoot.DisableConcurrency = true
	return nil
}
