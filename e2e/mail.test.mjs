// The mail flows of the playground in a real Chromium (CONTRACT §11). With mailpit as the SMTP
// server: sign up with an address, "Forgot password?", the reset link read from mailpit's API and
// opened in the browser, a new password, sign in with it; and sign-in with a mailed code. Without
// SMTP: the development inbox panel, a verification link opened from it, sign-up under
// EMAIL_VERIFICATION_REQUIRED, and no panel when the server has no inbox. Needs GQLAUTH_BIN, Debian's chromium, and mailpit (MAILPIT, or
// `go env GOPATH`/bin/mailpit; under CI=true a missing mailpit fails the run).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launchChromium, textOf } from "./browser.mjs";
import { mailedLink, mailpitMissing, recipients, startMailpit } from "./mailpit.mjs";
import { freePort, startServer } from "./server.mjs";

const binary = process.env.GQLAUTH_BIN || "../gqlauth";
const noMailpit = mailpitMissing();
let browser;

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
});

// A server on a port chosen beforehand, named localhost: its mailed links (EMAIL_LINK_URL's
// default, http://localhost:<PORT>/) then point at the page the browser has open.
async function serverOnLocalhost(env) {
  const port = await freePort();
  return startServer(binary, { PORT: String(port), ...env }, { host: "localhost" });
}

async function gql(base, query, variables) {
  const res = await fetch(base + "/query", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ query, variables }),
  });
  return res.json();
}

const LOGIN = "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { user { username } } }";

async function signUp(page, username, password, email) {
  await page.click("#show-signup");
  await page.fill("#username", username);
  await page.fill("#password", password);
  await page.fill("#email", email);
  await page.click("#register");
}

async function signIn(page, username, password) {
  await page.fill("#username", username);
  await page.fill("#password", password);
  await page.click("#login");
}

test("mailpit: sign up, Forgot password?, open the mailed link, set a new password, sign in with it", { skip: noMailpit || false }, async () => {
  const mailpit = await startMailpit();
  const server = await serverOnLocalhost({ SMTP_URL: mailpit.smtpURL, MAIL_FROM: "gqlauth <no-reply@example.com>" });
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (err) => problems.push(String(err)));
    await page.goto(server.base + "/");
    await signUp(page, "ada", "correct horse battery", "ada@example.com");
    assert.match(await textOf(page, "#signed-in-as", /Signed in as/), /Signed in as ada \(USER\)/);
    assert.match(await textOf(page, "#email-status", /ada@example\.com/), /not verified/);
    await page.click("#logout");

    await page.click("#show-forgot");
    await page.fill("#email", "ada@example.com");
    await page.click("#request-reset");
    await textOf(page, "#auth-info", /a link to choose a new password is on its way/);

    const mail = await mailpit.waitFor((m) => recipients(m).includes("ada@example.com") && /Reset your .* password/.test(m.Subject));
    assert.equal(mail.From.Address, "no-reply@example.com");
    const link = mailedLink(mail, "reset_password");
    assert.ok(link.startsWith(server.base + "/#type=reset_password&token="), link);

    // The link, opened in a new tab like a mail client would: the token leaves the address bar,
    // and nothing changes until the new password is submitted.
    const tab = await context.newPage();
    tab.on("pageerror", (err) => problems.push(String(err)));
    await tab.goto(link);
    await tab.waitForSelector("#reset-panel #new-password");
    assert.equal(new URL(tab.url()).hash, "", "the token must leave the address bar");
    assert.equal((await gql(server.base, LOGIN, { u: "ada", p: "correct horse battery" })).data?.login.user.username, "ada",
      "opening the link changed the password");
    await tab.fill("#new-password", "a whole new secret");
    await tab.click("#reset-password");
    await textOf(tab, "#auth-info", /password is changed/);
    await signIn(tab, "ada", "a whole new secret");
    assert.match(await textOf(tab, "#signed-in-as", /Signed in as/), /Signed in as ada \(USER\)/);
    // A reset verifies the address it was sent to.
    assert.match(await textOf(tab, "#email-status", /ada@example\.com/), /✓/);
    const old = await gql(server.base, LOGIN, { u: "ada", p: "correct horse battery" });
    assert.equal(old.errors?.[0]?.extensions?.reason, "INVALID_CREDENTIALS");

    // The same link a second time: the page says it is used up.
    const again = await context.newPage();
    await again.goto(link);
    await again.fill("#new-password", "yet another secret");
    await again.click("#reset-password");
    assert.match(await textOf(again, "#auth-error", /link/), /does not work any more/);
    assert.equal(await again.locator("#reset-panel").count(), 0);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
    server.stop();
    mailpit.stop();
  }
});

test("mailpit: sign in with a code mailed to the address", { skip: noMailpit || false }, async () => {
  const mailpit = await startMailpit();
  const server = await serverOnLocalhost({ SMTP_URL: mailpit.smtpURL, MAIL_FROM: "gqlauth <no-reply@example.com>" });
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(server.base + "/");
    await signUp(page, "grace", "correct horse battery", "grace@example.com");
    await textOf(page, "#signed-in-as", /grace/);
    await page.click("#logout");

    await page.click("#show-code");
    await page.fill("#email", "grace@example.com");
    await page.click("#request-code");
    await page.waitForSelector("#sign-in-code");
    const mail = await mailpit.waitFor((m) => recipients(m).includes("grace@example.com") && /sign-in code/.test(m.Subject));
    const code = mail.Text.match(/\b(\d{6})\b/)[1];
    // A wrong code first: refused, and the form stays.
    await page.fill("#sign-in-code", code === "000000" ? "111111" : "000000");
    await page.click("#sign-in-with-code");
    await textOf(page, "#auth-error", /INVALID_CODE/);
    await page.fill("#sign-in-code", code);
    await page.click("#sign-in-with-code");
    assert.match(await textOf(page, "#signed-in-as", /Signed in as/), /Signed in as grace \(USER\)/);
  } finally {
    await context.close();
    server.stop();
    mailpit.stop();
  }
});

test("development inbox: the panel shows the verification mail and its link verifies the address", async () => {
  const server = await serverOnLocalhost({});
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(server.base + "/");
    await signUp(page, "lin", "correct horse battery", "lin@example.com");
    assert.match(await textOf(page, "#email-status", /lin@example\.com/), /not verified/);
    await page.click("#send-verification");
    await textOf(page, "#auth-info", /verification link was mailed to lin@example\.com/);

    await page.click("#mail-toggle");
    const link = page.locator(".mail-message", { hasText: "lin@example.com" }).locator("a.mail-link", { hasText: "#type=verify_email" });
    await link.waitFor({ timeout: 30000 });
    // Same page, new fragment: the session stays, the page verifies and clears the fragment.
    await link.click();
    await textOf(page, "#auth-info", /Your email address is verified/);
    assert.match(await textOf(page, "#email-status", /✓/), /lin@example\.com ✓/);
    assert.match(await page.textContent("#signed-in-as"), /Signed in as lin/);
    assert.equal(new URL(page.url()).hash, "");
  } finally {
    await context.close();
    server.stop();
  }
});

test("EMAIL_VERIFICATION_REQUIRED: sign-up asks for the mailed link, and after it the password signs in", async () => {
  const server = await serverOnLocalhost({ EMAIL_VERIFICATION_REQUIRED: "true" });
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(server.base + "/");
    await signUp(page, "mei", "correct horse battery", "mei@example.com");
    await textOf(page, "#auth-info", /Account created\. Open the link mailed to mei@example\.com/);
    assert.equal(await page.locator("#signed-in-as").count(), 0);
    // Signing in first: refused, and a fresh link is mailed (which voids the first).
    await signIn(page, "mei", "correct horse battery");
    await textOf(page, "#auth-error", /not verified yet\. A new link was mailed/);

    await page.click("#mail-toggle");
    await page.waitForFunction(() => document.querySelectorAll(".mail-message").length >= 2, null, { timeout: 30000 });
    await page.locator(".mail-message").first().locator("a.mail-link").click();
    await textOf(page, "#auth-info", /Your email address is verified/);
    await signIn(page, "mei", "correct horse battery");
    assert.match(await textOf(page, "#signed-in-as", /Signed in as/), /Signed in as mei \(USER\)/);
    assert.match(await textOf(page, "#email-status", /✓/), /mei@example\.com ✓/);
  } finally {
    await context.close();
    server.stop();
  }
});

test("development inbox off: the playground shows no inbox", async () => {
  const server = await startServer(binary, { MAIL_DEV_INBOX: "false" });
  const page = await browser.newPage();
  try {
    const inbox = page.waitForResponse((res) => res.url().endsWith("/dev/mail"));
    await page.goto(server.base + "/");
    assert.equal((await inbox).status(), 404);
    await page.waitForSelector("#username");
    await page.waitForTimeout(200);
    assert.equal(await page.locator("#mail-toggle").count(), 0);
  } finally {
    await page.close();
    server.stop();
  }
});
