package graph

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/parser"
	"github.com/vektah/gqlparser/v2/validator"
	"github.com/vektah/gqlparser/v2/validator/rules"

	"gqlauth/model"
)

// TrustedDocuments are the operations a client declared ahead of time (graphql-codegen's client
// preset writes them with persistedDocuments): a manifest of {"sha256:<hex>": "<document>"}.
// Requests name one by documentId instead of sending its text.
type TrustedDocuments struct {
	byID map[string]string
	// queryOnly holds the ids of the documents that may run over GET.
	queryOnly map[string]bool
	// Only refuses free-form queries, except from a signed-in ADMIN.
	Only bool
	// parsed holds each document parsed and validated at start, so that requests for them skip
	// both.
	parsed map[string]*ast.QueryDocument
}

// ReadTrustedDocuments reads a manifest. The documents are checked when the handler is built.
func ReadTrustedDocuments(path string, only bool) (*TrustedDocuments, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("TRUSTED_DOCUMENTS: %w", err)
	}
	var byID map[string]string
	if err := json.Unmarshal(raw, &byID); err != nil {
		return nil, fmt.Errorf("TRUSTED_DOCUMENTS: %s is not a JSON object of document ids to documents: %w", path, err)
	}
	return &TrustedDocuments{byID: byID, Only: only}, nil
}

// check parses and validates every document against the schema and the limits, and checks each
// id against the hash of its text. The error names the first bad entry.
func (d *TrustedDocuments) check(schema *ast.Schema, validation *rules.Rules, g *guard) error {
	d.parsed = make(map[string]*ast.QueryDocument, len(d.byID))
	d.queryOnly = make(map[string]bool, len(d.byID))
	ids := make([]string, 0, len(d.byID))
	for id := range d.byID {
		ids = append(ids, id)
	}
	sort.Strings(ids) // the same entry is named first on every start
	for _, id := range ids {
		text := d.byID[id]
		bad := func(format string, args ...any) error {
			return fmt.Errorf("TRUSTED_DOCUMENTS: entry %q: %s", id, fmt.Sprintf(format, args...))
		}
		hexSum, ok := strings.CutPrefix(id, "sha256:")
		if !ok || len(hexSum) != 64 {
			return bad(`the id is not "sha256:" and 64 hex digits`)
		}
		if sum := sha256.Sum256([]byte(text)); !strings.EqualFold(hexSum, hex.EncodeToString(sum[:])) {
			return bad("the id is not the SHA-256 of the document")
		}
		if _, gqlErr := g.check(context.Background(), http.MethodPost, text); gqlErr != nil {
			return bad("%s", gqlErr.Message)
		}
		doc, err := parser.ParseQueryWithTokenLimit(&ast.Source{Input: text}, g.limits.MaxTokens)
		if err != nil {
			return bad("%v", err)
		}
		if errs := validator.ValidateWithRules(schema, doc, validation); len(errs) > 0 {
			return bad("%s", errs[0].Message)
		}
		d.parsed[text] = doc
		_, gqlErr := g.check(context.Background(), http.MethodGet, text)
		d.queryOnly[id] = gqlErr == nil
	}
	return nil
}

// lookup returns the text of a document id.
func (d *TrustedDocuments) lookup(id string) (string, bool) {
	if d == nil {
		return "", false
	}
	text, ok := d.byID[id]
	return text, ok
}

// queryCache is gqlgen's query cache with the trusted documents pinned in front: they were
// validated at start and are never evicted.
type queryCache struct {
	pinned map[string]*ast.QueryDocument
	rest   *lru.LRU[*ast.QueryDocument]
}

func (c *queryCache) Get(ctx context.Context, key string) (*ast.QueryDocument, bool) {
	if doc, ok := c.pinned[key]; ok {
		return doc, true
	}
	return c.rest.Get(ctx, key)
}

func (c *queryCache) Add(ctx context.Context, key string, value *ast.QueryDocument) {
	c.rest.Add(ctx, key, value)
}

var _ graphql.Cache[*ast.QueryDocument] = (*queryCache)(nil)

// resolveDocument replaces a documentId with its trusted text, and applies the only-trusted rule
// to free-form queries. It returns the status to refuse with (0: the media type's), or no error.
func (e *endpoint) resolveDocument(ctx context.Context, method string, req *request) (int, *gqlerror.Error) {
	if id := req.documentID; id != "" {
		text, ok := e.docs.lookup(id)
		switch {
		case !ok:
			return 0, requestError(model.ErrorCodePersistedQueryNotFound, "no trusted document has this documentId")
		case req.params.Query != "" && req.params.Query != text:
			// Never run free-form text that came along with an id: the request is ambiguous.
			return http.StatusBadRequest, requestError(model.ErrorCodeGraphqlParseFailed, "send documentId or query, not both")
		case method == http.MethodGet && !e.docs.queryOnly[id]:
			// GET requests are easy to forge (a link, an image), so they never change anything.
			return http.StatusMethodNotAllowed, requestError(model.ErrorCodeGraphqlValidationFailed,
				"GET runs queries only; send mutations as POST with Content-Type: application/json")
		}
		req.params.Query = text
		return 0, nil
	}
	if e.docs != nil && e.docs.Only && !e.isAdmin(ctx) {
		return 0, requestError(model.ErrorCodePersistedQueryRequired,
			"this server runs trusted documents only: send a documentId from the client's manifest")
	}
	return 0, nil
}
