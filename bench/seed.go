package main

// Seeding: users signed in before a scenario runs, and the GraphQL calls they make.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"gqlauth/model"
)

// seed creates one user per virtual user and signs each in.
func (env *environment) seed(ctx context.Context) error {
	var hash string
	if env.db != nil {
		var err error
		if hash, err = env.passwords.Hash(ctx, password); err != nil {
			return err
		}
	}
	prefix := "bench" + uuid.NewString()[:6]
	env.users = make([]*virtualUser, env.concurrency)
	for i := range env.users {
		vu := &virtualUser{username: fmt.Sprintf("%s-%d", prefix, i)}
		if env.db != nil {
			// Straight into the store with one precomputed hash: seeding is not what is measured.
			u := &model.User{ID: uuid.Must(uuid.NewV7()).String(), Username: vu.username, Role: model.RoleUser, PasswordHash: hash, CreatedAt: time.Now().UTC()}
			if err := env.db.CreateUser(ctx, u); err != nil {
				return err
			}
		} else if _, err := env.graphql(ctx, "", `mutation($u: String!, $p: String!) { register(username: $u, password: $p) { accessToken } }`, map[string]any{"u": vu.username, "p": password}); err != nil {
			return fmt.Errorf("seed register: %w", err)
		}
		env.users[i] = vu
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(env.users))
	sem := make(chan struct{}, runtime.NumCPU())
	for _, vu := range env.users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			errs <- env.login(ctx, vu)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return fmt.Errorf("seed login: %w", err)
		}
	}
	return nil
}

type authPayload struct {
	AccessToken  string `json:"accessToken"`
	RefreshToken string `json:"refreshToken"`
	User         struct {
		ID string `json:"id"`
	} `json:"user"`
}

func (env *environment) login(ctx context.Context, vu *virtualUser) error {
	data, err := env.graphql(ctx, "", `mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken refreshToken user { id } } }`,
		map[string]any{"u": vu.username, "p": password})
	if err != nil {
		return err
	}
	var out struct{ Login authPayload }
	json.Unmarshal(data, &out)
	vu.access, vu.refresh, vu.userID = out.Login.AccessToken, out.Login.RefreshToken, out.Login.User.ID
	vu.sessionID = sessionID(vu.access)
	return nil
}

// sessionID reads the sid claim without verifying (the ceiling needs it as a header).
func sessionID(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	var claims struct {
		Sid string `json:"sid"`
	}
	b, _ := base64URL(parts[1])
	json.Unmarshal(b, &claims)
	return claims.Sid
}

// graphql sends one operation and returns data, or an error naming the first error code.
func (env *environment) graphql(ctx context.Context, token, query string, vars map[string]any) (json.RawMessage, error) {
	_, data, err := env.send(ctx, "/query", token, nil, query, vars)
	return data, err
}

// outcome is what one request produced: "" for success, else an error code.
func (env *environment) send(ctx context.Context, path, token string, header http.Header, query string, vars map[string]any) (string, json.RawMessage, error) {
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	var buf bytes.Buffer // not pooled: the data returned points into it
	status, raw, err := env.post(ctx, path, token, header, body, &buf)
	if err != nil {
		return "TRANSPORT", nil, err
	}
	return answer(status, raw)
}

// sendLean is send for a constant, marshalled body whose answer only needs checking: a 200 whose
// body is JSON data without "errors" is a success without decoding it; anything else is decoded
// as send decodes it, for its error code.
func (env *environment) sendLean(ctx context.Context, path, token string, header http.Header, body []byte) string {
	buf := leanBuffers.Get().(*bytes.Buffer)
	defer leanBuffers.Put(buf)
	status, raw, err := env.post(ctx, path, token, header, body, buf)
	if err != nil {
		return "TRANSPORT"
	}
	if status == http.StatusOK && bytes.HasPrefix(raw, []byte(`{"data":{`)) && !bytes.Contains(raw, []byte(`"errors"`)) {
		return ""
	}
	if code, _, _ := answer(status, raw); code != "" {
		return code
	}
	return "NO_DATA" // a 200 that is neither plain data nor errors is not a success either
}

// post sends body to path as a GraphQL POST and reads the answer into buf (emptied first).
func (env *environment) post(ctx context.Context, path, token string, header http.Header, body []byte, buf *bytes.Buffer) (int, []byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, env.base+path, bytes.NewReader(body))
	req.Header["Content-Type"] = []string{"application/json"}
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header["Authorization"] = []string{"Bearer " + token}
	}
	res, err := env.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	buf.Reset()
	if _, err := buf.ReadFrom(res.Body); err != nil {
		return 0, nil, err
	}
	return res.StatusCode, buf.Bytes(), nil
}

// answer reads a GraphQL response: "" and its data, or the first error's code (HTTP_<status> for
// a body that is not JSON or a 5xx).
func answer(status int, raw []byte) (string, json.RawMessage, error) {
	var out struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Extensions struct {
				Code string `json:"code"`
			} `json:"extensions"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || status >= 500 {
		code := fmt.Sprintf("HTTP_%d", status)
		return code, nil, fmt.Errorf("%s: %.200s", code, raw)
	}
	if len(out.Errors) > 0 {
		code := out.Errors[0].Extensions.Code
		if code == "" {
			code = "UNKNOWN"
		}
		return code, out.Data, fmt.Errorf("%s", code)
	}
	return "", out.Data, nil
}

var leanBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func base64URL(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
