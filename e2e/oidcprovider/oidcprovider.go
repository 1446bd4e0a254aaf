// Package oidcprovider is a real OpenID provider for tests: zitadel/oidc's op package with its
// example storage and login form, serving one confidential client and the users given. The Go
// tests run it in process; its program, cmd/oidc-provider, runs it for the browser and SPA tests.
package oidcprovider

import (
	"log/slog"
	"net/http"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
)

// Users is the provider's user store (storage.UserStore), by id; a user's subject is its id.
type Users map[string]*storage.User

func (u Users) GetUserByID(id string) *storage.User { return u[id] }
func (u Users) GetUserByUsername(name string) *storage.User {
	for _, user := range u {
		if user.Username == name {
			return user
		}
	}
	return nil
}
func (u Users) ExampleClientID() string { return storage.ServiceUserID }

// New returns the provider's handler for issuer, with one client that may redirect only to
// redirectURI, and its storage (whose signing key tests may use). log nil keeps the example's
// default logging.
func New(issuer string, users Users, clientID, clientSecret, redirectURI string, log *slog.Logger) (http.Handler, *storage.Storage) {
	store := storage.NewStorageWithClients(users, map[string]*storage.Client{
		clientID: storage.WebClient(clientID, clientSecret, redirectURI),
	})
	return exampleop.SetupServer(issuer, store, log, false), store
}
