// Second factors in the playground, in a real Chromium (CONTRACT §12). Passkeys with Chromium's
// virtual authenticator (CDP WebAuthn domain: CTAP2, internal transport, resident keys, user
// verification): register one, sign out, sign in with the passkey alone, at AAL2. TOTP: enrol from
// the secret the page shows (the codes computed here, RFC 6238), sign out, password then a fresh
// code; a recovery code works once. A re-check (REAUTHENTICATION_REQUIRED) asked for and passed.
// The page is served as http://localhost:<port> (the RP ID must be localhost, not an IP), with
// WEBAUTHN_RP_ID=localhost and WEBAUTHN_ORIGINS=http://localhost:<port>.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { launchChromium, resultText, runQuery, textOf } from "./browser.mjs";
import { freePort, startServer } from "./server.mjs";
import { step, totp } from "./totp.mjs";

const binary = process.env.GQLAUTH_BIN || "../gqlauth";
let browser;

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
});

async function mfaServer(env = {}) {
  const port = await freePort();
  return startServer(binary, {
    PORT: String(port), WEBAUTHN_RP_ID: "localhost", WEBAUTHN_ORIGINS: `http://localhost:${port}`, ...env,
  }, { host: "localhost" });
}

// The test's own check of its TOTP against RFC 6238's appendix B (SHA-1, 8 digits there: the last 6 here).
test("the test's TOTP matches RFC 6238's test vectors", () => {
  const secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"; // "12345678901234567890"
  assert.equal(totp(secret, Math.floor(59 / 30)), "287082");
  assert.equal(totp(secret, Math.floor(1111111109 / 30)), "081804");
  assert.equal(totp(secret, Math.floor(20000000000 / 30)), "353130");
});

async function signUp(page, username, password) {
  await page.click("#show-signup");
  await page.fill("#username", username);
  await page.fill("#password", password);
  await page.click("#register");
  await textOf(page, "#signed-in-as", new RegExp(`Signed in as ${username}`));
}

async function signIn(page, username, password) {
  await page.fill("#username", username);
  await page.fill("#password", password);
  await page.click("#login");
}

async function virtualAuthenticator(context, page) {
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: { protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true, isUserVerified: true },
  });
  return { credentials: async () => (await cdp.send("WebAuthn.getCredentials", { authenticatorId })).credentials };
}

test("passkey: register one in the playground, sign out, sign in with the passkey alone at AAL2, step up a password session with it, remove it", async () => {
  const server = await mfaServer();
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (err) => problems.push(String(err)));
    const authenticator = await virtualAuthenticator(context, page);
    await page.goto(server.base + "/");
    await signUp(page, "ada", "correct horse battery");
    assert.equal(await textOf(page, "#aal", /AAL/), "AAL1");

    await page.click("#security-toggle");
    await page.fill("#passkey-name", "laptop");
    await page.click("#add-passkey");
    await page.waitForSelector('.passkey[data-passkey="laptop"]');
    const creds = await authenticator.credentials();
    assert.equal(creds.length, 1);
    assert.equal(creds[0].isResidentCredential, true, "a discoverable credential");
    assert.equal(creds[0].rpId, "localhost");
    assert.equal(await textOf(page, "#aal", /AAL2/), "AAL2", "a first enrolment raises the session");

    await page.click("#logout");
    await page.click("#passkey-signin");
    assert.match(await textOf(page, "#signed-in-as", /Signed in as/), /Signed in as ada \(USER\)/);
    assert.equal(await textOf(page, "#aal", /AAL/), "AAL2");
    // A field that needs two factors always (and a recent sign-in) works for this session.
    await runQuery(page, "mutation { regenerateRecoveryCodes }");
    const codes = JSON.parse(await resultText(page, "regenerateRecoveryCodes"));
    assert.equal(codes.data.regenerateRecoveryCodes.length, 10);

    // The password alone is one factor: the page asks for the second step, and the passkey gives it.
    await page.click("#logout");
    await signIn(page, "ada", "correct horse battery");
    await page.waitForSelector("#mfa-pending");
    assert.equal(await textOf(page, "#aal", /AAL/), "AAL1");
    await runQuery(page, "mutation { regenerateRecoveryCodes }");
    const refused = JSON.parse(await resultText(page, "MFA_REQUIRED"));
    assert.equal(refused.errors[0].extensions.reason, "MFA_REQUIRED");
    await page.click("#mfa-passkey");
    assert.match(await textOf(page, "#signed-in-as", /Signed in as/), /Signed in as ada/);
    assert.equal(await textOf(page, "#aal", /AAL2/), "AAL2");

    // Removing it from the security panel (two factors and a recent sign-in: the step-up was one).
    await page.click("#security-toggle");
    await page.locator('.passkey[data-passkey="laptop"] button', { hasText: "Remove" }).click();
    await page.waitForFunction(() => document.querySelectorAll(".passkey").length === 0);
    assert.equal(await page.locator("#security-error").count(), 0);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
    server.stop();
  }
});

test("TOTP: enrol from the secret shown, sign out, password and a fresh code; a recovery code works once", async () => {
  const server = await mfaServer();
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(server.base + "/");
    await signUp(page, "grace", "correct horse battery");
    await page.click("#security-toggle");
    assert.equal(await textOf(page, "#totp-status", /o/), "off");
    await page.click("#enroll-totp");
    const secret = (await textOf(page, "#totp-secret", /^[A-Z2-7]+=*$/)).trim();
    assert.ok(await page.locator("#totp-qr path").count(), "a QR code is drawn");
    mkdirSync("artifacts", { recursive: true });
    await page.screenshot({ path: "artifacts/totp-enrolment.png" });
    const enrolledAt = step();
    await page.fill("#totp-code", totp(secret, enrolledAt));
    await page.click("#confirm-totp");
    await page.waitForSelector("#recovery-codes li");
    const recovery = await page.locator("#recovery-codes li").allTextContents();
    assert.equal(recovery.length, 10);
    await page.click("#recovery-codes-done");
    assert.equal(await textOf(page, "#totp-status", /on/), "on");
    assert.equal(await textOf(page, "#aal", /AAL2/), "AAL2");

    // Password, then a code of a later time step (the enrolment's step cannot be used again).
    await page.click("#logout");
    await signIn(page, "grace", "correct horse battery");
    await page.waitForSelector("#mfa-pending");
    assert.equal(await page.locator("#signed-in-as").count(), 0);
    while (step() <= enrolledAt) await page.waitForTimeout(250);
    await page.fill("#mfa-code", totp(secret));
    await page.click("#mfa-verify");
    assert.match(await textOf(page, "#signed-in-as", /Signed in as/), /Signed in as grace/);
    assert.equal(await textOf(page, "#aal", /AAL2/), "AAL2");

    // A recovery code instead of the app, once.
    for (const expectation of ["works", "refused"]) {
      await page.click("#logout");
      await signIn(page, "grace", "correct horse battery");
      await page.waitForSelector("#mfa-pending");
      await page.fill("#mfa-code", recovery[0]);
      await page.click("#mfa-verify");
      if (expectation === "works") await textOf(page, "#signed-in-as", /Signed in as grace/);
      else await textOf(page, "#auth-error", /INVALID_CODE/);
    }
  } finally {
    await context.close();
    server.stop();
  }
});

test("a change that needs a recent sign-in asks for the password and then goes through", async () => {
  const server = await mfaServer({ REAUTH_WINDOW: "2s" });
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(server.base + "/");
    await signUp(page, "lin", "correct horse battery");
    await page.waitForTimeout(2500); // past REAUTH_WINDOW
    await page.click("#security-toggle");
    await page.click("#enroll-totp");
    await page.waitForSelector("#reauth-panel");
    await page.fill("#reauth-password", "correct horse battery");
    await page.click("#reauth");
    await page.waitForSelector("#totp-secret");
    assert.equal(await page.locator("#reauth-panel").count(), 0);
  } finally {
    await context.close();
    server.stop();
  }
});

test("MFA_REQUIRED_ROLES: an admin without a factor can only enrol, and after enrolling everything works", async () => {
  const server = await mfaServer({ ADMIN_USERNAME: "root", ADMIN_PASSWORD: "correct horse battery", MFA_REQUIRED_ROLES: "ADMIN" });
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(server.base + "/");
    await signIn(page, "root", "correct horse battery");
    await textOf(page, "#signed-in-as", /Signed in as root/);
    await runQuery(page, "{ users { username } }");
    const refused = JSON.parse(await resultText(page, "MFA_REQUIRED"));
    assert.equal(refused.errors[0].extensions.reason, "MFA_REQUIRED");

    await page.click("#security-toggle");
    await page.click("#enroll-totp");
    const secret = (await textOf(page, "#totp-secret", /^[A-Z2-7]+=*$/)).trim();
    await page.fill("#totp-code", totp(secret));
    await page.click("#confirm-totp");
    await page.waitForSelector("#recovery-codes li");
    assert.equal(await textOf(page, "#aal", /AAL2/), "AAL2");
    await runQuery(page, "{ users { username } }");
    const users = JSON.parse(await resultText(page, '"users"'));
    assert.deepEqual(users.data.users, [{ username: "root" }]);
  } finally {
    await context.close();
    server.stop();
  }
});
