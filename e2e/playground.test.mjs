// Opens the playground in a real Chromium, signs in through the Authorize panel, runs `me`,
// signs out and checks `me` fails. Needs the server binary (GQLAUTH_BIN) and Debian's chromium.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";
import { startServer } from "./server.mjs";
import { startWithProvider } from "./provider.mjs";

const binary = process.env.GQLAUTH_BIN || "../gqlauth";
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
let server;
let browser;

before(async () => {
  server = await startServer(binary, { ADMIN_USERNAME: "root", ADMIN_PASSWORD: "correct horse battery" });
  browser = await chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  server?.stop();
});

async function runQuery(page, query) {
  await page.evaluate((q) => {
    document.querySelector(".graphiql-query-editor .CodeMirror").CodeMirror.setValue(q);
  }, query);
  await page.click(".graphiql-execute-button");
}

async function resultText(page, contains) {
  const handle = await page.waitForFunction((needle) => {
    const cm = document.querySelector(".graphiql-response .CodeMirror");
    const text = cm ? cm.CodeMirror.getValue() : "";
    return text.includes(needle) ? text : false;
  }, contains, { timeout: 15000 });
  return handle.jsonValue();
}

test("sign in with the Authorize panel, run me, sign out", async () => {
  const page = await browser.newPage();
  const problems = [];
  page.on("console", (msg) => { if (msg.type() === "error") problems.push(msg.text()); });
  page.on("pageerror", (err) => problems.push(String(err)));
  const outside = [];
  page.on("request", (req) => { if (!req.url().startsWith(server.base) && !req.url().startsWith("data:")) outside.push(req.url()); });

  await page.goto(server.base + "/");
  await page.waitForSelector("#username");
  await page.fill("#username", "root");
  await page.fill("#password", "correct horse battery");
  await page.click("#login");
  const who = await page.waitForSelector("#signed-in-as");
  assert.match(await who.textContent(), /Signed in as root \(ADMIN\)/);

  await runQuery(page, "{ me { username role } }");
  const signedIn = JSON.parse(await resultText(page, "username"));
  assert.deepEqual(signedIn.data.me, { username: "root", role: "ADMIN" });

  mkdirSync("artifacts", { recursive: true });
  await page.screenshot({ path: "artifacts/playground.png", fullPage: true });

  await page.click("#logout");
  await page.waitForSelector("#login");
  await runQuery(page, "{ me { username role } }");
  const signedOut = JSON.parse(await resultText(page, "UNAUTHENTICATED"));
  assert.equal(signedOut.errors[0].extensions.code, "UNAUTHENTICATED");
  assert.equal(signedOut.data, null);

  assert.deepEqual(outside, [], "the playground must not load anything from elsewhere");
  assert.deepEqual(problems.filter((p) => /Content Security Policy|Refused/.test(p)), [], "CSP violations");
  await page.close();
});

test("the Authorize panel refreshes the access token before it expires", async () => {
  const short = await startServer(binary, { ADMIN_USERNAME: "root", ADMIN_PASSWORD: "correct horse battery", ACCESS_TOKEN_TTL: "6s" });
  const page = await browser.newPage();
  try {
    await page.goto(short.base + "/");
    await page.fill("#username", "root");
    await page.fill("#password", "correct horse battery");
    const refreshed = page.waitForResponse(
      (res) => res.url().endsWith("/query") && (res.request().postData() || "").includes("mutation Refresh"),
      { timeout: 15000 },
    );
    await page.click("#login");
    await page.waitForSelector("#signed-in-as");
    const body = await (await refreshed).json();
    assert.ok(body.data.refresh.accessToken, "the refresh succeeded");
    // Past the first token's lifetime (and the server's 5 s of tolerated skew), me still works.
    await page.waitForTimeout(6000);
    await runQuery(page, "{ me { username } }");
    const result = JSON.parse(await resultText(page, "username"));
    assert.equal(result.data.me.username, "root");
  } finally {
    await page.close();
    short.stop();
  }
});

test("a subscription runs over a socket with the Authorize token and shows events as they happen", async () => {
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (err) => problems.push(String(err)));
  await page.goto(server.base + "/");
  await page.waitForSelector("#username");
  await page.fill("#username", "root");
  await page.fill("#password", "correct horse battery");
  await page.click("#login");
  await page.waitForSelector("#signed-in-as");

  await runQuery(page, "subscription { securityEvents { type user { username } } }");
  await page.waitForTimeout(500); // the socket is open and subscribed
  // A sign-in elsewhere: the event appears in the result pane.
  await fetch(server.base + "/query", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ query: 'mutation { login(username: "root", password: "correct horse battery") { accessToken } }' }),
  });
  const shown = JSON.parse(await resultText(page, "SIGN_IN"));
  assert.equal(shown.data.securityEvents.type, "SIGN_IN");
  assert.equal(shown.data.securityEvents.user.username, "root");
  assert.deepEqual(problems, []);
  await page.close();
});

test("Sign in with a provider: the button runs the PKCE leg and the playground ends signed in", async () => {
  const env = await startWithProvider(binary, process.env.PROVIDER_BIN || "../oidc-provider");
  try {
    const page = await browser.newPage();
    const urls = [];
    page.on("framenavigated", (frame) => { if (frame === page.mainFrame()) urls.push(frame.url()); });
    await page.goto(env.base + "/");
    await page.click('button[data-provider="corp"]');
    // The provider's own login page (zitadel's example form).
    await page.waitForSelector("input#username[name=username]");
    assert.ok(page.url().startsWith(env.provider.issuer), page.url());
    await page.fill("input#username", env.provider.username);
    await page.fill("input#password", env.provider.password);
    await page.click("button[type=submit]");
    const who = await page.waitForSelector("#signed-in-as", { timeout: 15000 });
    assert.match(await who.textContent(), /Signed in as ada \(USER\)/);
    assert.equal(new URL(page.url()).search, "", "the one-time code must leave the address bar");
    assert.ok(urls.some((u) => u.startsWith(env.base + "/?code=")), "it came back with a code");
    assert.ok(!urls.some((u) => /eyJ|access_token|id_token|refresh/.test(u)), "no token in any URL: " + urls.join(" "));

    await runQuery(page, "{ me { username role identities { provider } } }");
    const me = JSON.parse(await resultText(page, "identities"));
    assert.deepEqual(me.data.me, { username: "ada", role: "USER", identities: [{ provider: "corp" }] });
    await page.close();
  } finally {
    env.stop();
  }
});
