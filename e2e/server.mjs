// Starts a gqlauth binary on a free port in a fresh directory and returns its base URL.
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export async function startServer(binary, env = {}) {
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
        resolve(`http://127.0.0.1:${m[1]}`);
      }
    });
    child.on("error", reject);
    child.on("exit", (code) => reject(new Error(`server exited with ${code}: ${out}`)));
  });
  return { base, stop: () => child.kill("SIGTERM") };
}

// launchChromium starts Debian's chromium (CHROMIUM overrides the path) headless, with nothing
// that would talk to the network on its own.
export async function launchChromium() {
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}
