// Opens the playground in a real Chromium, signs in through the Authorize panel, runs `me`,
// signs out and checks `me` fails. Needs the server binary (GQLAUTH_BIN) and Debian's chromium.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { startServer, launchChromium } from "./server.mjs";
import { startWithProvider } from "./provider.mjs";

const binary = process.env.GQLAUTH_BIN || "../gqlauth";
let server;
let browser;

before(async () => {
  server = await startServer(binary, { ADMIN_USERNAME: "root", ADMIN_PASSWORD: "correct horse battery" });
  browser = await launchChromium();
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

test("Link a provider: a popup goes through the provider and the window that started the link completes it", async () => {
  const env = await startWithProvider(binary, process.env.PROVIDER_BIN || "../oidc-provider", {
    ADMIN_USERNAME: "root", ADMIN_PASSWORD: "correct horse battery",
  });
  try {
    const page = await browser.newPage();
    await page.goto(env.base + "/");
    await page.fill("#username", "root");
    await page.fill("#password", "correct horse battery");
    await page.click("#login");
    await page.waitForSelector("#signed-in-as");

    const [popup] = await Promise.all([page.waitForEvent("popup"), page.click('button[data-link-provider="corp"]')]);
    const popupURLs = [];
    popup.on("framenavigated", (frame) => { if (frame === popup.mainFrame()) popupURLs.push(frame.url()); });
    const closed = popup.waitForEvent("close", { timeout: 20000 });
    await popup.waitForSelector("input#username[name=username]");
    await popup.fill("input#username", env.provider.username);
    await popup.fill("input#password", env.provider.password);
    await popup.click("button[type=submit]");
    await closed;
    const status = await page.waitForSelector("#link-status", { timeout: 15000 });
    assert.match(await status.textContent(), /^Linked corp \(sub-ada\)$/);
    assert.ok(popupURLs.some((u) => u.startsWith(env.base + "/?link_code=")), "the popup came back with a link code: " + popupURLs.join(" "));
    assert.ok(!popupURLs.some((u) => /eyJ|access_token|id_token|refresh/.test(u)), "no token in any URL");

    await runQuery(page, "{ me { username identities { provider subject } } }");
    const me = JSON.parse(await resultText(page, "identities"));
    assert.deepEqual(me.data.me, { username: "root", identities: [{ provider: "corp", subject: "sub-ada" }] });
    await page.close();
  } finally {
    env.stop();
  }
});

test("a link URL opened in someone else's browser links nothing: the page there uses the code up", async () => {
  const env = await startWithProvider(binary, process.env.PROVIDER_BIN || "../oidc-provider", {
    ADMIN_USERNAME: "root", ADMIN_PASSWORD: "correct horse battery",
  });
  const gql = async (query, variables, token) => {
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const res = await fetch(env.base + "/query", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
    return res.json();
  };
  try {
    // The attacker (root here) starts a link with their own session and verifier, and sends the
    // URL to the victim instead of opening it.
    const login = await gql('mutation { login(username: "root", password: "correct horse battery") { accessToken } }');
    const token = login.data.login.accessToken;
    const verifier = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");
    const challenge = Buffer.from(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier))).toString("base64url");
    const start = await gql("mutation($r: String!, $c: String!) { linkIdentityStart(provider: \"corp\", redirectTo: $r, codeChallenge: $c) }",
      { r: env.base + "/", c: challenge }, token);
    const linkURL = start.data.linkIdentityStart;

    // The victim's browser, signed in at the provider as ada, opens it.
    const victim = await browser.newContext();
    const page = await victim.newPage();
    const urls = [];
    page.on("framenavigated", (frame) => { if (frame === page.mainFrame()) urls.push(frame.url()); });
    const exchanged = page.waitForResponse((res) => res.url().endsWith("/query") && (res.request().postData() || "").includes("ExchangeAuthCode"), { timeout: 15000 });
    await page.goto(linkURL);
    await page.waitForSelector("input#username[name=username]");
    await page.fill("input#username", env.provider.username);
    await page.fill("input#password", env.provider.password);
    await page.click("button[type=submit]");
    const notice = await page.waitForSelector("#auth-error", { timeout: 15000 });
    assert.match(await notice.textContent(), /no window of this browser started it: nothing was linked/);
    const burn = await (await exchanged).json();
    assert.equal(burn.errors[0].extensions.reason, "INVALID_CREDENTIALS");
    assert.equal(new URL(page.url()).search, "", "the code must leave the address bar");

    // Even with the code (leaked from the victim's history, say), the attacker gets nothing.
    const landing = urls.find((u) => u.includes("link_code="));
    assert.ok(landing, "the victim's browser came back with a link code: " + urls.join(" "));
    const code = new URL(landing).searchParams.get("link_code");
    const redeemed = await gql("mutation($c: String!, $v: String!) { completeIdentityLink(code: $c, codeVerifier: $v) { provider } }",
      { c: code, v: verifier }, token);
    assert.equal(redeemed.errors[0].extensions.reason, "INVALID_CREDENTIALS");
    const me = await gql("{ me { identities { provider } } }", null, token);
    assert.deepEqual(me.data.me.identities, []);
    await victim.close();
  } finally {
    env.stop();
  }
});
