// Runs mailpit (an SMTP server that keeps what it receives and shows it through an HTTP API) on
// loopback ports of its own, for tests that read the mail gqlauth really sends over SMTP.
// MAILPIT names the binary (default: mailpit in `go env GOPATH`/bin, where .ci/run installs it).
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./server.mjs";

export function mailpitBinary() {
  if (process.env.MAILPIT) return process.env.MAILPIT;
  try {
    return join(execFileSync("go", ["env", "GOPATH"], { encoding: "utf8" }).trim(), "bin", "mailpit");
  } catch {
    return "mailpit";
  }
}

/**
 * mailpitMissing says why mailpit cannot run here, or returns null. Under CI=true a missing
 * mailpit is an error, never a skip: the tests that need it must run there.
 */
export function mailpitMissing() {
  const bin = mailpitBinary();
  if (existsSync(bin)) return null;
  const why = `mailpit is not installed at ${bin} (go install github.com/axllent/mailpit@v1.33.1, or set MAILPIT)`;
  if (process.env.CI === "true") throw new Error("FATAL under CI=true: " + why);
  return why;
}

export async function startMailpit() {
  const [smtpPort, httpPort] = [await freePort(), await freePort()];
  const dir = mkdtempSync(join(tmpdir(), "mailpit-"));
  const child = spawn(mailpitBinary(), [
    "--smtp", `127.0.0.1:${smtpPort}`, "--listen", `127.0.0.1:${httpPort}`,
    "--database", join(dir, "mailpit.db"), "--disable-version-check", "--quiet",
  ], { stdio: ["ignore", "ignore", "inherit"] });
  let exited = null;
  child.on("exit", (code) => { exited = code; });
  const api = `http://127.0.0.1:${httpPort}/api/v1`;
  const deadline = Date.now() + 20000;
  for (;;) {
    if (exited !== null) throw new Error(`mailpit exited with ${exited}`);
    const ok = await fetch(`${api}/messages`).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill("SIGTERM");
      throw new Error("mailpit did not answer within 20 s");
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  /** The full messages (Text, HTML, From, To, Subject, …) that match, newest first. */
  async function messages(match = () => true) {
    const list = await (await fetch(`${api}/messages`)).json();
    const out = [];
    for (const summary of list.messages || []) {
      const full = await (await fetch(`${api}/message/${summary.ID}`)).json();
      if (match(full)) out.push(full);
    }
    return out;
  }

  /** Waits (up to 60 s: the outbox delivers in the background) for a message that matches. */
  async function waitFor(match, timeout = 60000) {
    const until = Date.now() + timeout;
    for (;;) {
      const [found] = await messages(match);
      if (found) return found;
      if (Date.now() > until) throw new Error("no such message arrived at mailpit in time");
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  return { smtpURL: `smtp://127.0.0.1:${smtpPort}`, api, messages, waitFor, stop: () => child.kill("SIGTERM") };
}

/** The recipient addresses of a mailpit message. */
export const recipients = (m) => (m.To || []).map((t) => t.Address);

/** The first link of a message's text that carries `type` in its fragment. */
export function mailedLink(m, type) {
  const found = (m.Text || "").match(new RegExp(`https?://\\S+#type=${type}&token=[A-Za-z0-9_-]+`));
  if (!found) throw new Error(`no ${type} link in: ${m.Text}`);
  return found[0];
}
