package web

// The GraphQL playground: GraphiQL with an Authorize panel, built from the npm packages pinned in
// playground/package-lock.json into playground/dist, and embedded in the binary so that it works
// offline and under a strict Content-Security-Policy.

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed playground/dist/playground.js playground/dist/playground.css
var dist embed.FS

// contentSecurityPolicy allows nothing from anywhere but this server. Inline styles are allowed
// because GraphiQL's editor sets them from script; inline scripts are not.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

const indexHTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gqlauth playground</title>
<link rel="stylesheet" href="/playground/playground.css?v=VERSION">
</head>
<body>
<div id="root"></div>
<script src="/playground/playground.js?v=VERSION"></script>
</body>
</html>
`

// Playground returns the handler for "/" (the page) and "/playground/" (its assets).
func Playground() http.Handler {
	assets, _ := fs.Sub(dist, "playground/dist")
	js, _ := fs.ReadFile(assets, "playground.js")
	sum := sha256.Sum256(js)
	page := strings.ReplaceAll(indexHTML, "VERSION", hex.EncodeToString(sum[:6]))
	files := http.StripPrefix("/playground/", http.FileServerFS(filesOnly{assets}))

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		secure(w)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write([]byte(page))
	})
	mux.HandleFunc("GET /playground/", func(w http.ResponseWriter, r *http.Request) {
		secure(w)
		// The URL carries the bundle's hash, so the assets can be cached for good.
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		files.ServeHTTP(w, r)
	})
	return mux
}

// filesOnly serves the files of an FS and nothing else: a directory does not exist, so
// http.FileServer answers 404 for it instead of listing what is embedded.
type filesOnly struct{ fs.FS }

func (f filesOnly) Open(name string) (fs.File, error) {
	file, err := f.FS.Open(name)
	if err != nil {
		return nil, err
	}
	if st, err := file.Stat(); err != nil || st.IsDir() {
		file.Close()
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return file, nil
}

func secure(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
}
