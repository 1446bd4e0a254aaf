// Starts a gqlauth binary on a free port in a fresh directory and returns its base URL.
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

// Browser tests import launchChromium from here too (the passkey branch's e2e/passkey.test.mjs).
export { launchChromium } from "./browser.mjs";

/** A TCP port free on loopback right now, for a process that must know its port before it starts. */
export function freePort() {
  return new Promise((done, fail) => {
    const srv = createServer().listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => done(port));
    });
    srv.on("error", fail);
  });
}

/**
 * startServer runs the binary with env (PORT 0 unless given) and resolves once it listens.
 * host names the server in `base`: "localhost" for pages whose origin must be a secure context
 * named localhost (WebAuthn's RP ID, the links the server mails by default).
 */
export async function startServer(binary, env = {}, { host = "127.0.0.1" } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "gqlauth-e2e-"));
  const child = spawn(resolve(binary), [], {
    cwd: dir,
    env: { ...process.env, PORT: "0", ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const base = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error("server did not start: " + out)), 30000);
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(/msg=listening addr=\S*:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve(`http://${host}:${m[1]}`);
      }
    });
    child.on("error", reject);
    child.on("exit", (code) => reject(new Error(`server exited with ${code}: ${out}`)));
  });
  return { base, stop: () => child.kill("SIGTERM") };
}
