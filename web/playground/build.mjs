// Bundles the playground into dist/ (committed and embedded by the Go binary with go:embed), so
// that `go run .` serves a working GraphiQL with no network access and under a strict CSP.
// Rebuild after changing src/ or the lock file: npm ci && npm run build
import { build } from "esbuild";

await build({
  entryPoints: ["src/main.jsx"],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  outfile: "dist/playground.js",
  loader: { ".js": "jsx" },
  jsx: "automatic",
  define: { "process.env.NODE_ENV": '"production"' },
  legalComments: "none",
  logLevel: "warning",
});
