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

	"gqlauth/e2e/oidcprovider"
)

// Fixed credentials of the test tool; printed so that tests need not repeat them.
const (
	clientID     = "gqlauth-e2e"
	clientSecret = "e2e-client-secret"
	username     = "ada@provider.test"
	password     = "provider-password"
)

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
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	handler, _ := oidcprovider.New(issuer, oidcprovider.Users{
		"sub-ada": {ID: "sub-ada", Username: username, Password: password, FirstName: "Ada", LastName: "Lovelace",
			Email: "ada@provider.test", EmailVerified: true},
	}, clientID, clientSecret, redirect, quiet)
	fmt.Printf("issuer=%s client_id=%s client_secret=%s username=%s password=%s\n", issuer, clientID, clientSecret, username, password)
	log.Fatal(http.Serve(ln, handler))
}
