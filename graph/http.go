package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/executor"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"gqlauth/account"
	"gqlauth/model"
	"gqlauth/web"
)

// The two response media types of the GraphQL-over-HTTP specification.
const (
	mediaJSON            = "application/json"
	mediaGraphQLResponse = "application/graphql-response+json"
)

// The frame of a response that carries only data.
var dataOpen, dataClose = []byte(`{"data":`), []byte(`}`)

// The Content-Type values of responses, built once (see securityHeaders).
var (
	contentTypeJSON            = []string{mediaJSON + "; charset=utf-8"}
	contentTypeGraphQLResponse = []string{mediaGraphQLResponse + "; charset=utf-8"}
)

// endpoint serves GraphQL over HTTP as the GraphQL-over-HTTP specification says: it negotiates
// the response media type, reads and checks the request (one JSON object, parameters of the right
// types, UTF-8, within the limits), and answers request errors with the status the media type
// calls for. gqlgen's executor runs what passes.
type endpoint struct {
	exec    *executor.Executor
	guard   *guard
	docs    *TrustedDocuments // nil: free-form queries only
	isAdmin func(context.Context) bool
	sockets *Sockets
}

func (e *endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if header(r.Header, "Upgrade") != "" {
		e.sockets.serve(w, r, e.exec)
		return
	}
	if r.Method == http.MethodOptions {
		w.Header().Set("Allow", "OPTIONS, GET, POST")
		w.WriteHeader(http.StatusOK)
		return
	}
	media, ok := negotiate(header(r.Header, "Accept"))
	if !ok {
		writeErrors(w, r, mediaJSON, http.StatusNotAcceptable, requestError(model.ErrorCodeGraphqlParseFailed,
			"none of the media types in Accept can be served; accept application/graphql-response+json or application/json"))
		return
	}
	defer func() {
		if p := recover(); p != nil {
			err := e.exec.PresentRecoveredError(r.Context(), p)
			var gqlErr *gqlerror.Error
			if !errors.As(err, &gqlErr) {
				gqlErr = requestError(model.ErrorCodeInternalServerError, "internal server error")
			}
			writeErrors(w, r, media, http.StatusInternalServerError, gqlErr)
		}
	}()

	req, status, gqlErr := e.read(w, r)
	if gqlErr == nil {
		status, gqlErr = e.resolveDocument(r.Context(), r.Method, req)
	}
	if gqlErr == nil && req.documentID == "" {
		// Trusted documents passed the same checks at start.
		status, gqlErr = e.guard.check(r.Context(), r.Method, req.params.Query)
	}
	if gqlErr != nil {
		if status == 0 {
			status = requestErrorStatus(media)
		}
		writeErrors(w, r, media, status, gqlErr)
		return
	}

	ctx := graphql.StartOperationTrace(r.Context())
	params := req.params
	params.Headers = r.Header
	params.ReadTime = graphql.TraceTiming{Start: graphql.Now(), End: graphql.Now()}
	rc, errs := e.exec.CreateOperationContext(ctx, params)
	if errs != nil {
		resp := e.exec.DispatchError(graphql.WithOperationContext(ctx, rc), errs)
		writeResponse(w, r, media, requestErrorStatus(media), resp, true)
		return
	}
	responses, ctx := e.exec.DispatchOperation(ctx, rc)
	writeResponse(w, r, media, http.StatusOK, responses(ctx), false)
}

// requestErrorStatus is the status of a request error (a document that does not parse or
// validate, variables that do not coerce, a limit): 200 in the legacy application/json media
// type, 400 in application/graphql-response+json.
func requestErrorStatus(media string) int {
	if media == mediaGraphQLResponse {
		return http.StatusBadRequest
	}
	return http.StatusOK
}

// request is a GraphQL request as read from HTTP.
type request struct {
	params     *graphql.RawParams
	documentID string // the trusted document asked for, if any
}

// postRequest is a POST's request, its parameters and the body they are decoded from, allocated
// together.
type postRequest struct {
	request
	params graphql.RawParams
	// The five parameters are all that is read (others are ignored, as the spec allows). A
	// missing parameter and a null one both leave "" or nil, which is what each means. The two
	// objects are kept as text and decoded on their own (see jsonObject): json.Unmarshal has no
	// UseNumber, and a json.Decoder for the whole body costs twice as much as Unmarshal.
	body struct {
		Query         string          `json:"query"`
		OperationName string          `json:"operationName"`
		DocumentID    string          `json:"documentId"`
		Variables     json.RawMessage `json:"variables"`
		Extensions    json.RawMessage `json:"extensions"`
	}
}

// bodyBuffers hold request bodies while they are read and decoded.
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// putBodyBuffer returns buf to the pool, unless a large body grew it: one request with a large
// body should not keep that memory for the life of the process.
func putBodyBuffer(buf *bytes.Buffer) {
	if buf.Cap() <= 64<<10 {
		buf.Reset()
		bodyBuffers.Put(buf)
	}
}

// jsonObject decodes raw, one JSON value, as an object; none or null is nil. ok is false when raw
// is another JSON type.
func jsonObject(raw json.RawMessage) (m map[string]any, ok bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, true
	}
	if raw[0] != '{' {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // as gqlgen does: integers beyond 2^53 stay exact
	if err := dec.Decode(&m); err != nil {
		return nil, false
	}
	return m, true
}

// header is h's first value of key, which must be in canonical form: Header.Get canonicalizes
// the key on every call.
func header(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// read reads the GraphQL request of a GET or POST. A malformed request is refused with 400 (413,
// 415, 405 where those say more) in either media type.
func (e *endpoint) read(w http.ResponseWriter, r *http.Request) (*request, int, *gqlerror.Error) {
	malformed := func(message string) (*request, int, *gqlerror.Error) {
		return nil, http.StatusBadRequest, requestError(model.ErrorCodeGraphqlParseFailed, message)
	}
	switch r.Method {
	case http.MethodPost:
		// Only JSON bodies: a cross-site HTML form or a text/plain fetch can send a "simple"
		// request without a CORS preflight, so accepting them would let any page log a visitor
		// in or out (CSRF). application/json always needs a preflight.
		if ct := header(r.Header, "Content-Type"); ct != "application/json" && mediaType(ct) != "application/json" {
			return nil, http.StatusUnsupportedMediaType, requestError(model.ErrorCodeGraphqlParseFailed,
				"send GraphQL requests as POST with Content-Type: application/json")
		}
		limit := e.guard.limits.MaxBodyBytes
		// Into a pooled buffer: nothing decoded from it refers to it (json copies strings and
		// RawMessages), so it is free again when read returns.
		buf := bodyBuffers.Get().(*bytes.Buffer)
		defer putBodyBuffer(buf)
		_, err := buf.ReadFrom(web.LimitBody(w, r, limit))
		body := buf.Bytes()
		if err != nil {
			if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
				return nil, http.StatusRequestEntityTooLarge, requestError(model.ErrorCodeGraphqlParseFailed, fmt.Sprintf("request body exceeds %d bytes", limit))
			}
			return malformed("could not read the request body")
		}
		switch {
		case !validJSONText(body):
			return malformed("the request body is not valid UTF-8 JSON text (RFC 8259 §8)")
		}
		if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] == '[' {
			return malformed("batched operations are not supported; send one operation per request")
		}
		trimmed := bytes.TrimSpace(body)
		if len(trimmed) == 0 || trimmed[0] != '{' {
			return malformed("the request body is not a JSON object")
		}
		// One pass into typed fields; a parameter of the wrong JSON type is named.
		p := &postRequest{}
		if err = json.Unmarshal(trimmed, &p.body); err != nil {
			// Unmarshal refuses trailing data after the object too.
			if typeErr := (*json.UnmarshalTypeError)(nil); errors.As(err, &typeErr) && typeErr.Field != "" {
				return malformed(typeErr.Field + " must be a string")
			}
			return malformed("the request body is not a JSON object")
		}
		p.params = graphql.RawParams{Query: p.body.Query, OperationName: p.body.OperationName}
		var ok bool
		if p.params.Variables, ok = jsonObject(p.body.Variables); !ok {
			return malformed("variables must be a JSON object")
		}
		if p.params.Extensions, ok = jsonObject(p.body.Extensions); !ok {
			return malformed("extensions must be a JSON object")
		}
		p.request = request{params: &p.params, documentID: p.body.DocumentID}
		if p.params.Query == "" && p.documentID == "" {
			return malformed("the request has no query")
		}
		return &p.request, 0, nil
	case http.MethodGet:
		values, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil || !validParams(values) {
			return malformed("the query string is not valid UTF-8 text")
		}
		req, message := decodeParams(func(name string) (json.RawMessage, bool) {
			if !values.Has(name) {
				return nil, false
			}
			v := values.Get(name)
			if name == "query" || name == "operationName" || name == "documentId" {
				quoted, _ := json.Marshal(v) // a plain string in the URL, a JSON string here
				return quoted, true
			}
			return json.RawMessage(v), true
		}, true)
		if message != "" {
			return malformed(message)
		}
		return req, 0, nil
	default:
		w.Header().Set("Allow", "OPTIONS, GET, POST")
		return nil, http.StatusMethodNotAllowed, requestError(model.ErrorCodeGraphqlParseFailed, "use POST (or GET for queries)")
	}
}

// mediaType is the media type of a Content-Type value, lower-cased, without parameters.
func mediaType(contentType string) string {
	mt, _, _ := mime.ParseMediaType(contentType)
	return mt
}

// decodeParams reads the request parameters through get, checking each one's JSON type:
// query, operationName and documentId strings; variables and extensions objects; the last three
// may be null. fromURL says that an empty variables or extensions parameter means none.
func decodeParams(get func(name string) (json.RawMessage, bool), fromURL bool) (*request, string) {
	params := &graphql.RawParams{}
	str := func(name string, nullable bool, dst *string) string {
		raw, ok := get(name)
		if !ok || (nullable && string(raw) == "null") {
			return ""
		}
		if json.Unmarshal(raw, dst) != nil {
			return fmt.Sprintf("%s must be a string", name)
		}
		return ""
	}
	object := func(name string, dst *map[string]any) string {
		raw, ok := get(name)
		if !ok || string(raw) == "null" || (fromURL && len(raw) == 0) {
			return ""
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber() // as gqlgen does: integers beyond 2^53 stay exact
		if err := dec.Decode(dst); err != nil || *dst == nil || dec.More() {
			return fmt.Sprintf("%s must be a JSON object", name)
		}
		return ""
	}
	var documentID string
	for _, message := range []string{
		str("query", false, &params.Query),
		str("operationName", true, &params.OperationName),
		str("documentId", true, &documentID),
		object("variables", &params.Variables),
		object("extensions", &params.Extensions),
	} {
		if message != "" {
			return nil, message
		}
	}
	if params.Query == "" && documentID == "" {
		return nil, "the request has no query"
	}
	return &request{params: params, documentID: documentID}, ""
}

// negotiate picks the response media type for an Accept header: the acceptable one with the
// higher quality; on a tie application/json, unless application/graphql-response+json was named
// exactly (a client that names it knows it). No header means application/json. ok is false when
// neither is acceptable.
func negotiate(accept string) (media string, ok bool) {
	switch accept {
	case "", "*/*", mediaJSON: // what most clients send, answered without parsing
		return mediaJSON, true
	case mediaGraphQLResponse:
		return mediaGraphQLResponse, true
	}
	if strings.TrimSpace(accept) == "" {
		return mediaJSON, true
	}
	// For each candidate: the quality of the most specific range that matches it.
	var q, specificity [2]float64
	candidates := [2]string{mediaJSON, mediaGraphQLResponse}
	for part := range strings.SplitSeq(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		quality := 1.0
		if v, ok := params["q"]; ok {
			if quality, err = strconv.ParseFloat(v, 64); err != nil || quality < 0 || quality > 1 {
				continue
			}
		}
		for i, c := range candidates {
			s := 0.0
			switch mt {
			case c:
				s = 3
			case "application/*":
				s = 2
			case "*/*":
				s = 1
			}
			if s > specificity[i] {
				q[i], specificity[i] = quality, s
			}
		}
	}
	switch {
	case q[0] <= 0 && q[1] <= 0:
		return "", false
	case q[1] > q[0] || (q[1] == q[0] && specificity[1] == 3):
		return mediaGraphQLResponse, true
	default:
		return mediaJSON, true
	}
}

// writeResponse writes a GraphQL response. A request error in application/graphql-response+json
// has no data entry at all (the request never executed); application/json keeps "data": null.
//
// It is where the resource server's RFC 6750 challenge is decided: the resolvers have run, so
// the request's credential has been checked both on its face (signature, expiry) and, if a
// guarded field asked, against the database (a revoked session or API key): either failure
// adds WWW-Authenticate: Bearer error="invalid_token", before the headers go out.
func writeResponse(w http.ResponseWriter, r *http.Request, media string, status int, resp *graphql.Response, requestError bool) {
	if req := account.RequestFrom(r.Context()); req != nil && req.CredentialRejected() {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	contentType := contentTypeJSON
	if media == mediaGraphQLResponse {
		contentType = contentTypeGraphQLResponse
	}
	w.Header()["Content-Type"] = contentType
	w.WriteHeader(status)
	if resp != nil && !requestError && len(resp.Errors) == 0 && len(resp.Extensions) == 0 && resp.Label == "" && resp.Path == nil && resp.HasNext == nil && len(resp.Data) > 0 {
		// The common case, written as is: gqlgen's marshalers produced Data as valid JSON, and
		// encoding/json would only validate and copy it again. Three writes into net/http's
		// buffer instead of a copy into a new slice.
		w.Write(dataOpen)
		w.Write(resp.Data)
		w.Write(dataClose)
		return
	}
	var body any = resp
	if requestError && media == mediaGraphQLResponse {
		body = struct {
			Errors     gqlerror.List  `json:"errors"`
			Extensions map[string]any `json:"extensions,omitempty"`
		}{resp.Errors, resp.Extensions}
	}
	b, err := json.Marshal(body)
	if err != nil {
		panic(fmt.Errorf("marshal response: %w", err))
	}
	w.Write(b)
}

// writeErrors writes a response that carries only request-level errors, presented here (the
// executor never saw the request).
func writeErrors(w http.ResponseWriter, r *http.Request, media string, status int, errs ...*gqlerror.Error) {
	if info := infoFrom(r.Context()); info != nil && len(errs) > 0 {
		info.errorCode = asString(errs[0].Extensions["code"])
	}
	writeResponse(w, r, media, status, &graphql.Response{Errors: errs}, true)
}

var _ http.Handler = (*endpoint)(nil)
