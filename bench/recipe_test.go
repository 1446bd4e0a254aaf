package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkRecipeHandler is the recipe's handler alone for { __typename }, to compare with
// graph's BenchmarkHandler/typename: the per-request CPU of gqlgen as its docs set it up.
func BenchmarkRecipeHandler(b *testing.B) {
	h := recipeHandler(nil, []byte("benchmark-secret-of-at-least-32-bytes"))
	body := []byte(`{"query":"{ __typename }"}`)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/recipe", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Body.String())
		}
	}
}
