// Runs the example client's flow under Node against a live gqlauth (GQLAUTH_BIN) whose access
// tokens expire after 2 s (plus the 5 s of clock skew the server tolerates), so the client has to
// refresh and retry.
import { test } from "node:test";
import assert from "node:assert/strict";
import { resolve } from "node:path";
import { startServer } from "../../../e2e/server.mjs";
import { startWithProvider, signInAtProvider } from "../../../e2e/provider.mjs";
import { GqlAuthClient } from "../dist/client.js";
import { totp } from "../../../e2e/totp.mjs";
import { SoftAuthenticator } from "../softauthn.mjs";
import { runCodeFlow, runFlow, runLinkFlow, runMfaFlow, runPasskeyFlow, runProviderFlow, runResetFlow, runRevocationFlow } from "../dist/flow.js";

// The server runs the client's trusted documents only: the manifest codegen wrote.
const manifest = resolve("src/gql/persisted-documents.json");

test("login → me → refresh on TOKEN_EXPIRED → retry → logout, by trusted documents only", async () => {
  const server = await startServer(process.env.GQLAUTH_BIN || "../../gqlauth", {
    ACCESS_TOKEN_TTL: "2s", ADMIN_USERNAME: "alice", ADMIN_PASSWORD: "correct horse battery",
    TRUSTED_DOCUMENTS: manifest, TRUSTED_DOCUMENTS_ONLY: "true",
  });
  try {
    const result = await runFlow(server.base, "alice", "correct horse battery", 7500);
    assert.deepEqual(result, {
      username: "alice",
      meAfterRefresh: "alice",
      refreshes: 1,
      afterLogout: "UNAUTHENTICATED/MISSING_TOKEN",
    });
    // The server really refuses anything else.
    const res = await fetch(`${server.base}/query`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ query: "{ __typename }" }),
    });
    assert.equal((await res.json()).errors[0].extensions.code, "PERSISTED_QUERY_REQUIRED");
  } finally {
    server.stop();
  }
});

test("a live session: the socket is closed with SESSION_REVOKED by a logout elsewhere, and the client signs out", async () => {
  const server = await startServer(process.env.GQLAUTH_BIN || "../../gqlauth", {
    ADMIN_USERNAME: "alice", ADMIN_PASSWORD: "correct horse battery",
    TRUSTED_DOCUMENTS: manifest, TRUSTED_DOCUMENTS_ONLY: "true",
  });
  try {
    const result = await runRevocationFlow(server.base, "alice", "correct horse battery");
    assert.deepEqual(result, { sawOwnSignIn: true, signedOutReason: "SESSION_REVOKED", signedIn: false });
  } finally {
    server.stop();
  }
});

test("sign in through the OpenID provider: PKCE on both legs, one-time code, by trusted documents only", async () => {
  const spa = "https://spa.example/signed-in";
  const env = await startWithProvider(process.env.GQLAUTH_BIN || "../../gqlauth", process.env.PROVIDER_BIN || "../../oidc-provider", {
    OIDC_REDIRECT_URLS: spa, TRUSTED_DOCUMENTS: manifest, TRUSTED_DOCUMENTS_ONLY: "true",
  });
  try {
    // The browser: gqlauth's start → the provider → its login form → gqlauth's callback → the SPA.
    const browse = async (startURL) => {
      const start = await fetch(startURL, { redirect: "manual" });
      assert.equal(start.status, 302);
      const callback = await signInAtProvider(start.headers.get("location"), env.provider.username, env.provider.password);
      const back = await fetch(callback, { redirect: "manual" });
      const landing = back.headers.get("location");
      assert.ok(landing.startsWith(spa + "?code="), landing);
      return landing;
    };
    const result = await runProviderFlow(env.base, "corp", spa, browse);
    assert.deepEqual(result, { username: "ada", role: "USER" });
  } finally {
    env.stop();
  }
});

test("link the provider to a password account: only the session that began the link completes it", async () => {
  const spa = "https://spa.example/settings";
  const env = await startWithProvider(process.env.GQLAUTH_BIN || "../../gqlauth", process.env.PROVIDER_BIN || "../../oidc-provider", {
    OIDC_REDIRECT_URLS: spa, TRUSTED_DOCUMENTS: manifest, TRUSTED_DOCUMENTS_ONLY: "true",
    ADMIN_USERNAME: "alice", ADMIN_PASSWORD: "correct horse battery",
  });
  try {
    const browse = async (startURL) => {
      const callback = await signInAtProvider(startURL, env.provider.username, env.provider.password);
      const back = await fetch(callback, { redirect: "manual" });
      const landing = back.headers.get("location");
      assert.ok(landing.startsWith(spa + "?link_code="), landing);
      return landing;
    };
    const result = await runLinkFlow(env.base, "alice", "correct horse battery", "corp", spa, browse);
    assert.deepEqual(result, {
      otherSession: "UNAUTHENTICATED/INVALID_CREDENTIALS",
      notStartedHere: "BAD_USER_INPUT/",
      startingSessionAfter: ["UNAUTHENTICATED/INVALID_CREDENTIALS", "UNAUTHENTICATED/INVALID_CREDENTIALS"],
      linked: { provider: "corp", subject: "sub-ada" },
      identities: 1,
    });
  } finally {
    env.stop();
  }
});

// The user's mailbox in these tests: the server's development inbox (GET /dev/mail, on with the
// embedded database, loopback clients only), polled until the message arrives.
function devInbox(base) {
  const kinds = { reset_password: /#type=reset_password&/, verify_email: /#type=verify_email&/, sign_in_code: /\b\d{6}\b/ };
  return async (to, kind) => {
    for (let i = 0; i < 240; i++) {
      const mails = await (await fetch(`${base}/dev/mail`)).json();
      const mail = mails.find((m) => m.to === to && kinds[kind].test(m.text));
      if (mail) return mail.text;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`no ${kind} mail to ${to} arrived`);
  };
}

test("Forgot password?: the mailed link's token sets a new password once, by trusted documents only", async () => {
  const server = await startServer(process.env.GQLAUTH_BIN || "../../gqlauth", {
    TRUSTED_DOCUMENTS: manifest, TRUSTED_DOCUMENTS_ONLY: "true",
  });
  try {
    await new GqlAuthClient(`${server.base}/query`).register("rosa", "correct horse battery", "rosa@example.com");
    const result = await runResetFlow(server.base, "rosa", "rosa@example.com", "correct horse battery", "a whole new secret", devInbox(server.base));
    assert.deepEqual(result, {
      refusedPassword: "BAD_USER_INPUT/",
      reused: "UNAUTHENTICATED/INVALID_CODE",
      oldPassword: "UNAUTHENTICATED/INVALID_CREDENTIALS",
      username: "rosa",
      emailVerified: true,
    });
  } finally {
    server.stop();
  }
});

test("sign in with a mailed code: a wrong code is refused, the mailed one signs in, by trusted documents only", async () => {
  const server = await startServer(process.env.GQLAUTH_BIN || "../../gqlauth", {
    TRUSTED_DOCUMENTS: manifest, TRUSTED_DOCUMENTS_ONLY: "true",
  });
  try {
    await new GqlAuthClient(`${server.base}/query`).register("sol", "correct horse battery", "sol@example.com");
    const result = await runCodeFlow(server.base, "sol@example.com", devInbox(server.base));
    assert.deepEqual(result, { wrongCode: "UNAUTHENTICATED/INVALID_CODE", username: "sol", email: "sol@example.com", emailVerified: true });
  } finally {
    server.stop();
  }
});

test("an authenticator app as second factor: enrol, then password and a recovery code on another device, by trusted documents only", async () => {
  const server = await startServer(process.env.GQLAUTH_BIN || "../../gqlauth", {
    ADMIN_USERNAME: "alice", ADMIN_PASSWORD: "correct horse battery",
    TRUSTED_DOCUMENTS: manifest, TRUSTED_DOCUMENTS_ONLY: "true",
  });
  try {
    const result = await runMfaFlow(server.base, "alice", "correct horse battery", (secret) => totp(secret));
    assert.deepEqual(result, {
      recoveryCodes: 10,
      afterPassword: { aal: "AAL1", mfaRequired: true, me: "alice" },
      wrongCode: "UNAUTHENTICATED/INVALID_CODE",
      afterSecondStep: { aal: "AAL2", mfaRequired: false },
      reusedRecoveryCode: "UNAUTHENTICATED/INVALID_CODE",
    });
  } finally {
    server.stop();
  }
});

test("passkeys: register one, sign in with it alone at AAL2, and use it as the second step, by trusted documents only", async () => {
  // The app's origin, as a browser would report it in clientDataJSON; the RP ID is its host.
  const origin = "https://app.example.com";
  const server = await startServer(process.env.GQLAUTH_BIN || "../../gqlauth", {
    ADMIN_USERNAME: "alice", ADMIN_PASSWORD: "correct horse battery",
    WEBAUTHN_RP_ID: "app.example.com", WEBAUTHN_ORIGINS: origin,
    TRUSTED_DOCUMENTS: manifest, TRUSTED_DOCUMENTS_ONLY: "true",
  });
  try {
    const stranger = new SoftAuthenticator(origin);
    await stranger.create({ rp: { id: "app.example.com" }, user: { id: "c3RyYW5nZXI" }, challenge: "AAAA" });
    const result = await runPasskeyFlow(server.base, "alice", "correct horse battery", new SoftAuthenticator(origin), stranger);
    assert.deepEqual(result, {
      passkey: "laptop",
      signedIn: { username: "alice", aal: "AAL2", mfaRequired: false },
      afterPassword: { aal: "AAL1", mfaRequired: true },
      afterPasskeyStep: { aal: "AAL2", mfaRequired: false },
      stranger: "UNAUTHENTICATED/INVALID_CODE",
    });
  } finally {
    server.stop();
  }
});
