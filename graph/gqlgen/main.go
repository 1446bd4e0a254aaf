// Command gqlgen regenerates graph/ from schema.graphqls: gqlgen's own generator (the pinned
// version, `go tool gqlgen`'s code) with one plugin, sequentialQueries. Run it from the repository
// root: go run ./graph/gqlgen
//
// sequentialQueries resolves the root fields of a query one after another, as gqlgen already does
// for mutations, instead of starting a goroutine for each. gqlauth's root fields share one
// principal lookup per request and then only read, so they gain nothing from running side by side,
// while each goroutine grows a deep resolver stack from scratch: with ten root fields that was a
// third of the request's CPU (README, Performance).
package main

import (
	"fmt"
	"os"

	"github.com/99designs/gqlgen/api"
	"github.com/99designs/gqlgen/codegen"
	"github.com/99designs/gqlgen/codegen/config"
)

type sequentialQueries struct{}

func (sequentialQueries) Name() string { return "sequentialqueries" }

func (sequentialQueries) GenerateCode(data *codegen.Data) error {
	for _, o := range data.Objects {
		if data.Schema.Query != nil && o.Definition == data.Schema.Query {
			o.DisableConcurrency = true
			return nil
		}
	}
	return fmt.Errorf("sequentialqueries: no Query object in the schema")
}

func main() {
	cfg, err := config.LoadConfigFromDefaultLocations()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gqlgen:", err)
		os.Exit(2)
	}
	if err := api.Generate(cfg, api.AddPlugin(sequentialQueries{})); err != nil {
		fmt.Fprintln(os.Stderr, "gqlgen:", err)
		os.Exit(3)
	}
}
