// Command oidc-provider runs zitadel/oidc's example OpenID provider (pkg/op, its example storage
// and login form) for the browser and client tests: the same provider the Go tests run in
// process, as a separate program that a Node test can start. It is a test tool, not a product.
//
// Environment: REDIRECT_URI, the one callback the client "gqlauth-e2e" may use. It listens on a
// free port of 127.0.0.1 and prints "issuer=<URL>" once it serves.
package main

import (
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
)

// Fixed credentials of the test tool; printed so that tests need not repeat them.
const (
	clientID     = "gqlauth-e2e"
	clientSecret = "e2e-client-secret"
	username     = "ada@provider.test"
	password     = "provider-password"
)

type users map[string]*storage.User

func (u users) GetUserByID(id string) *storage.User { return u[id] }
func (u users) GetUserByUsername(name string) *storage.User {
	for _, user := range u {
		if user.Username == name {
			return user
		}
	}
	return nil
}
func (u users) ExampleClientID() string { return storage.ServiceUserID }

func main() {
	redirect := os.Getenv("REDIRECT_URI")
	if redirect == "" {
		log.Fatal("REDIRECT_URI is required")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	store := storage.NewStorageWithClients(users{
		"sub-ada": {ID: "sub-ada", Username: username, Password: password, FirstName: "Ada", LastName: "Lovelace",
			Email: "ada@provider.test", EmailVerified: true},
	}, map[string]*storage.Client{clientID: storage.WebClient(clientID, clientSecret, redirect)})
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	handler := exampleop.SetupServer(issuer, store, quiet, false)
	fmt.Printf("issuer=%s client_id=%s client_secret=%s username=%s password=%s\n", issuer, clientID, clientSecret, username, password)
	log.Fatal(http.Serve(ln, handler))
}
