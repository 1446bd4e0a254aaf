// Starts the test OpenID provider (e2e/oidcprovider/cmd/oidc-provider: zitadel/oidc's example
// provider) and a gqlauth binary that signs in through it as "corp", on one free port known to both.
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { freePort, startServer } from "./server.mjs";

export async function startWithProvider(binary, providerBinary, env = {}) {
  const port = await freePort();
  const publicURL = `http://127.0.0.1:${port}`;
  const child = spawn(resolve(providerBinary), [], {
    env: { ...process.env, REDIRECT_URI: `${publicURL}/auth/corp/callback` },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const provider = await new Promise((done, fail) => {
    let out = "";
    const timer = setTimeout(() => fail(new Error("provider did not start: " + out)), 30000);
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const line = out.split("\n").find((l) => l.startsWith("issuer="));
      if (line) {
        clearTimeout(timer);
        done(Object.fromEntries(line.trim().split(" ").map((kv) => kv.split(/=(.*)/s).slice(0, 2))));
      }
    });
    child.on("error", fail);
  });
  let server;
  try {
    server = await startServer(binary, {
      PORT: String(port), PUBLIC_URL: publicURL, OIDC_PROVIDERS: "corp",
      OIDC_CORP_ISSUER: provider.issuer, OIDC_CORP_CLIENT_ID: provider.client_id,
      OIDC_CORP_CLIENT_SECRET: provider.client_secret, ...env,
    });
  } catch (e) {
    child.kill("SIGTERM");
    throw e;
  }
  return { base: server.base, provider, stop: () => { server.stop(); child.kill("SIGTERM"); } };
}

// signInAtProvider plays a cookie-less browser at the provider: it follows the authorization URL
// to the login form, submits the credentials, and returns the provider's redirect to gqlauth's
// callback.
export async function signInAtProvider(authURL, username, password) {
  let res = await fetch(authURL, { redirect: "manual" });
  const login = new URL(res.headers.get("location"), authURL);
  const id = login.searchParams.get("authRequestID");
  res = await fetch(new URL("/login/username", authURL), {
    method: "POST", redirect: "manual",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ username, password, id }),
  });
  const next = new URL(res.headers.get("location"), authURL);
  res = await fetch(next, { redirect: "manual" });
  if (res.status !== 302) throw new Error(`provider did not redirect back: ${res.status}`);
  return res.headers.get("location");
}
