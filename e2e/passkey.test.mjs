// Passkeys in a real Chromium with its virtual authenticator (the DevTools protocol's WebAuthn
// domain: a platform authenticator that holds discoverable credentials and verifies the user).
// The page is the server's own (http://localhost:<port>/, the RP ID localhost that the server
// takes when nothing is configured); what it runs is what an app runs: the options go through
// PublicKeyCredential.parseCreationOptionsFromJSON / parseRequestOptionsFromJSON, the answers
// through credential.toJSON(). Needs the server binary (GQLAUTH_BIN) and Debian's chromium.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { startServer, launchChromium } from "./server.mjs";

const binary = process.env.GQLAUTH_BIN || "../gqlauth";
let server;
let browser;
let origin;

// freePort asks the kernel for a port that is free now: the page's origin (and so the server's
// passkey origin, http://localhost:<PORT>) must be known before the server starts.
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

before(async () => {
  const port = await freePort();
  server = await startServer(binary, { PORT: String(port), HOST: "127.0.0.1" });
  origin = `http://localhost:${port}`;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  server?.stop();
});

// page opens the server's page with a virtual authenticator attached.
async function pageWithAuthenticator() {
  const page = await browser.newPage();
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2", ctap2Version: "ctap2_1", transport: "internal",
      hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
    },
  });
  await page.goto(origin + "/");
  return { page, cdp, authenticatorId };
}

// The app's side of it, run in the page: GraphQL over fetch and the WebAuthn calls.
async function inPage(page, fn, arg) {
  return page.evaluate(async ({ fnText, arg }) => {
    const gql = async (query, variables = {}, token = "") => {
      const res = await fetch("/query", {
        method: "POST",
        headers: { "Content-Type": "application/json", ...(token ? { Authorization: "Bearer " + token } : {}) },
        body: JSON.stringify({ query, variables }),
      });
      return res.json();
    };
    const create = async (options) => {
      const cred = await navigator.credentials.create({ publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options) });
      return cred.toJSON();
    };
    const get = async (options) => {
      const cred = await navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options) });
      return cred.toJSON();
    };
    // eslint-disable-next-line no-new-func
    return new Function("gql", "create", "get", "arg", `return (${fnText})(gql, create, get, arg);`)(gql, create, get, arg);
  }, { fnText: fn.toString(), arg });
}

const payload = "accessToken refreshToken aal mfaRequired user { username }";

test("register a passkey, sign out, sign in with it alone, step up a password session", async () => {
  const { page, cdp, authenticatorId } = await pageWithAuthenticator();

  const registered = await inPage(page, async (gql, create, get, payload) => {
    const reg = await gql(`mutation { register(username: "ann", password: "correct horse battery") { accessToken } }`);
    const token = reg.data.register.accessToken;
    const begin = await gql(`mutation { beginPasskeyRegistration { challengeId options } }`, {}, token);
    const credential = await create(begin.data.beginPasskeyRegistration.options);
    const finish = await gql(`mutation($c: ID!, $n: String!, $k: JSON!) { finishPasskeyRegistration(challengeId: $c, name: $n, credential: $k) { id name } }`,
      { c: begin.data.beginPasskeyRegistration.challengeId, n: "Chromium", k: credential }, token);
    await gql(`mutation { logout }`, {}, token);
    return { finish, options: begin.data.beginPasskeyRegistration.options };
  }, payload);
  assert.equal(registered.finish.errors, undefined, JSON.stringify(registered.finish.errors));
  assert.equal(registered.finish.data.finishPasskeyRegistration.name, "Chromium");
  assert.equal(registered.options.rp.id, "localhost");
  assert.equal(registered.options.authenticatorSelection.userVerification, "required");

  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  assert.equal(credentials.length, 1);
  assert.equal(credentials[0].isResidentCredential, true, "a discoverable credential");

  const signedIn = await inPage(page, async (gql, create, get, payload) => {
    const begin = await gql(`mutation { beginPasskeySignIn { challengeId options } }`);
    const assertion = await get(begin.data.beginPasskeySignIn.options);
    return gql(`mutation($c: ID!, $k: JSON!) { finishPasskeySignIn(challengeId: $c, credential: $k) { ${payload} } }`,
      { c: begin.data.beginPasskeySignIn.challengeId, k: assertion });
  }, payload);
  assert.equal(signedIn.errors, undefined, JSON.stringify(signedIn.errors));
  assert.equal(signedIn.data.finishPasskeySignIn.user.username, "ann");
  assert.equal(signedIn.data.finishPasskeySignIn.aal, "AAL2");
  assert.equal(signedIn.data.finishPasskeySignIn.mfaRequired, false);

  const steppedUp = await inPage(page, async (gql, create, get, payload) => {
    const login = await gql(`mutation { login(username: "ann", password: "correct horse battery") { ${payload} } }`);
    const token = login.data.login.accessToken;
    const begin = await gql(`mutation { beginPasskeyVerification { challengeId options } }`, {}, token);
    const assertion = await get(begin.data.beginPasskeyVerification.options);
    const finish = await gql(`mutation($c: ID!, $k: JSON!) { finishPasskeyVerification(challengeId: $c, credential: $k) { ${payload} } }`,
      { c: begin.data.beginPasskeyVerification.challengeId, k: assertion }, token);
    return { login: login.data.login, finish };
  }, payload);
  assert.equal(steppedUp.login.aal, "AAL1");
  assert.equal(steppedUp.login.mfaRequired, true);
  assert.equal(steppedUp.finish.errors, undefined, JSON.stringify(steppedUp.finish.errors));
  assert.equal(steppedUp.finish.data.finishPasskeyVerification.aal, "AAL2");

  // The authenticator's counter went up at each use, and the server took each.
  const after = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  assert.ok(after.credentials[0].signCount >= 2, `sign count ${after.credentials[0].signCount}`);
  await page.close();
});

test("an authenticator that cannot verify the user is refused", async () => {
  const { page, cdp, authenticatorId } = await pageWithAuthenticator();
  const result = await inPage(page, async (gql, create, get, payload) => {
    const reg = await gql(`mutation { register(username: "bob", password: "correct horse battery") { accessToken } }`);
    const token = reg.data.register.accessToken;
    const begin = await gql(`mutation { beginPasskeyRegistration { challengeId options } }`, {}, token);
    const credential = await create(begin.data.beginPasskeyRegistration.options);
    await gql(`mutation($c: ID!, $n: String!, $k: JSON!) { finishPasskeyRegistration(challengeId: $c, name: $n, credential: $k) { id } }`,
      { c: begin.data.beginPasskeyRegistration.challengeId, n: "key", k: credential }, token);
    return "registered";
  }, payload);
  assert.equal(result, "registered");
  // From now on the authenticator answers without verifying the user (a PIN it skipped).
  await cdp.send("WebAuthn.setUserVerified", { authenticatorId, isUserVerified: false });
  const refused = await inPage(page, async (gql, create, get, payload) => {
    const begin = await gql(`mutation { beginPasskeySignIn { challengeId options } }`);
    try {
      const assertion = await get(begin.data.beginPasskeySignIn.options);
      return gql(`mutation($c: ID!, $k: JSON!) { finishPasskeySignIn(challengeId: $c, credential: $k) { ${payload} } }`,
        { c: begin.data.beginPasskeySignIn.challengeId, k: assertion });
    } catch (e) {
      return { browserRefused: String(e.name) };
    }
  }, payload);
  // Either the browser itself refuses (userVerification "required" cannot be met) or the server
  // does: never a session.
  if (refused.browserRefused) {
    assert.equal(refused.browserRefused, "NotAllowedError");
  } else {
    assert.equal(refused.errors?.[0]?.extensions?.reason, "INVALID_CODE", JSON.stringify(refused));
  }
  await page.close();
});
