// The example flow: login → me → (access token expires) → me again, which refreshes and retries →
// logout → me fails. Run it against a server with a short ACCESS_TOKEN_TTL to see the refresh.
import WebSocket from "ws";
import { GqlAuthClient, GqlAuthError, readMailLink, type PasskeyDevice } from "./client.js";

/** How an expected refusal is reported: "CODE/REASON". */
const outcome = (e: unknown) => (e instanceof GqlAuthError ? `${e.code}/${e.reason ?? ""}` : String(e));

export interface FlowResult {
  username: string;
  meAfterRefresh: string;
  refreshes: number;
  afterLogout: string;
}

export async function runFlow(baseURL: string, username: string, password: string, waitForExpiryMs: number): Promise<FlowResult> {
  const client = new GqlAuthClient(`${baseURL}/query`);
  const user = await client.login(username, password);
  const me = await client.me();
  if (me.id !== user.id) throw new Error("me is not the signed-in user");

  await new Promise((resolve) => setTimeout(resolve, waitForExpiryMs));
  const again = await client.me(); // TOKEN_EXPIRED → refresh → retry

  await client.logout();
  let afterLogout = "no error";
  try {
    await client.me();
  } catch (e) {
    afterLogout = e instanceof GqlAuthError ? `${e.code}/${e.reason ?? ""}` : String(e);
  }
  return { username: me.username, meAfterRefresh: again.username, refreshes: client.refreshes, afterLogout };
}

export interface RevocationResult {
  sawOwnSignIn: boolean;
  signedOutReason: string;
  signedIn: boolean;
}

// The live-session flow: a signed-in client watches its session over a socket; the same user signs
// in on another device (the client sees that event) and then logs out everywhere there. The server
// closes the first client's socket with 4401 SESSION_REVOKED and the client returns to the sign-in
// screen (here: resolves with the reason) without waiting for its access token to expire.
export async function runRevocationFlow(baseURL: string, username: string, password: string): Promise<RevocationResult> {
  const client = new GqlAuthClient(`${baseURL}/query`);
  await client.login(username, password);
  let sawOwnSignIn = false;
  let signedOut!: (reason: string) => void;
  const reason = new Promise<string>((resolve) => (signedOut = resolve));
  const stop = client.watchSession(signedOut, (event) => {
    sawOwnSignIn ||= event.type === "SIGN_IN";
  }, WebSocket);
  await new Promise((resolve) => setTimeout(resolve, 300)); // connected and subscribed

  const otherDevice = new GqlAuthClient(`${baseURL}/query`);
  await otherDevice.login(username, password);
  await new Promise((resolve) => setTimeout(resolve, 200));
  await otherDevice.logout("ALL");
  const signedOutReason = await reason;
  stop();
  return { sawOwnSignIn, signedOutReason, signedIn: client.signedIn };
}

/**
 * The provider sign-in flow: the client makes its PKCE pair and start URL, `browse` plays the
 * browser (to the provider, through its login, back to gqlauth's callback) and returns the URL it
 * ends on, and the client redeems the one-time code and calls me.
 */
export async function runProviderFlow(
  baseURL: string, provider: string, redirectTo: string, browse: (startURL: string) => Promise<string>,
): Promise<{ username: string; role: string }> {
  const { url, verifier } = await GqlAuthClient.beginProviderSignIn(baseURL, provider, redirectTo);
  const returnedTo = await browse(url);
  const client = new GqlAuthClient(`${baseURL}/query`);
  await client.completeProviderSignIn(returnedTo, verifier);
  const me = await client.me();
  return { username: me.username, role: me.role };
}

export interface LinkResult {
  /** What another session of the same user got for the code, though it had the verifier too. */
  otherSession: string;
  /** What the app that started no link did with a code it got: used it up. */
  notStartedHere: string;
  /** What the starting session then got for either code: both were used up. */
  startingSessionAfter: string[];
  /** The identity the starting session linked on a clean run. */
  linked: { provider: string; subject: string };
  identities: number;
}

/**
 * Linking a provider account to a password account. `browse` plays the browser (to the provider,
 * its login, back through gqlauth's callback) and returns the URL it ends on. Only the session
 * that began the link can complete it: a code redeemed by another session — even the same user's,
 * even with the verifier — or by an app that started no link is used up and links nothing.
 */
export async function runLinkFlow(
  baseURL: string, username: string, password: string, provider: string, redirectTo: string,
  browse: (startURL: string) => Promise<string>,
): Promise<LinkResult> {
  const client = new GqlAuthClient(`${baseURL}/query`);
  await client.login(username, password);
  const otherDevice = new GqlAuthClient(`${baseURL}/query`);
  await otherDevice.login(username, password);

  let first = await client.beginIdentityLink(provider, redirectTo);
  const firstReturn = await browse(first.url);
  const otherSession = await otherDevice.completeIdentityLink(firstReturn, first.verifier).then(() => "linked", outcome);

  const second = await client.beginIdentityLink(provider, redirectTo);
  const secondReturn = await browse(second.url);
  const notStartedHere = await otherDevice.completeIdentityLink(secondReturn, null).then(() => "linked", outcome);

  const startingSessionAfter = [
    await client.completeIdentityLink(firstReturn, first.verifier).then(() => "linked", outcome),
    await client.completeIdentityLink(secondReturn, second.verifier).then(() => "linked", outcome),
  ];

  first = await client.beginIdentityLink(provider, redirectTo);
  const linked = await client.completeIdentityLink(await browse(first.url), first.verifier);
  const me = await client.me();
  return {
    otherSession, notStartedHere, startingSessionAfter,
    linked: { provider: linked.provider, subject: linked.subject }, identities: me.identities.length,
  };
}

/** Returns the text of the newest message to `to` of a kind (the app's user reads their mail). */
export type ReadMail = (to: string, kind: "reset_password" | "sign_in_code" | "verify_email") => Promise<string>;

function linkIn(text: string) {
  const url = text.match(/https?:\/\/\S+#\S+/)?.[0];
  const link = url ? readMailLink(url) : null;
  if (!link) throw new Error("no mailed link in: " + text);
  return link;
}

export interface ResetResult {
  /** What a too-short new password got; the link still worked after it. */
  refusedPassword: string;
  /** What the same link got a second time. */
  reused: string;
  /** What the old password got afterwards. */
  oldPassword: string;
  username: string;
  /** A reset verifies the address it was mailed to. */
  emailVerified: boolean;
}

/**
 * "Forgot password?": the app asks for a reset link, the user opens it (the app reads the token
 * from the link's fragment), chooses a new password, and signs in with it.
 */
export async function runResetFlow(
  baseURL: string, username: string, email: string, oldPassword: string, newPassword: string, readMail: ReadMail,
): Promise<ResetResult> {
  const app = new GqlAuthClient(`${baseURL}/query`);
  await app.requestPasswordReset(email);
  const link = linkIn(await readMail(email, "reset_password"));
  if (link.type !== "reset_password") throw new Error("not a reset link: " + link.type);
  const refusedPassword = await app.resetPassword(link.token, "short").then(() => "changed", outcome);
  await app.resetPassword(link.token, newPassword);
  const reused = await app.resetPassword(link.token, newPassword + "!").then(() => "changed", outcome);
  const old = await app.login(username, oldPassword).then(() => "signed in", outcome);
  await app.login(username, newPassword);
  const me = await app.me();
  return { refusedPassword, reused, oldPassword: old, username: me.username, emailVerified: me.emailVerified };
}

export interface CodeResult {
  wrongCode: string;
  username: string;
  email: string | null;
  emailVerified: boolean;
}

/** Sign-in with a mailed code: ask for it, a wrong try is refused, the right one signs in. */
export async function runCodeFlow(baseURL: string, email: string, readMail: ReadMail): Promise<CodeResult> {
  const app = new GqlAuthClient(`${baseURL}/query`);
  await app.requestSignInCode(email);
  const code = (await readMail(email, "sign_in_code")).match(/\b(\d{6})\b/)?.[1];
  if (!code) throw new Error("no code in the mail");
  const wrongCode = await app.signInWithCode(email, code === "000000" ? "111111" : "000000").then(() => "signed in", outcome);
  await app.signInWithCode(email, code);
  const me = await app.me();
  return { wrongCode, username: me.username, email: me.email ?? null, emailVerified: me.emailVerified };
}

export interface MfaResult {
  recoveryCodes: number;
  /** After the password alone: the level and whether the second step is due. */
  afterPassword: { aal: string | null; mfaRequired: boolean; me: string };
  wrongCode: string;
  afterSecondStep: { aal: string | null; mfaRequired: boolean };
  /** The same recovery code on another sign-in. */
  reusedRecoveryCode: string;
}

/**
 * An authenticator app as a second factor: enrol it (the app computes codes from the secret),
 * then sign in on another device with the password and a recovery code as the second step. A
 * recovery code works once. `code(secret)` plays the authenticator app.
 */
export async function runMfaFlow(
  baseURL: string, username: string, password: string, code: (secret: string) => string,
): Promise<MfaResult> {
  const device = new GqlAuthClient(`${baseURL}/query`);
  await device.login(username, password);
  const { secret } = await device.enrollTotp();
  const recovery = await device.confirmTotp(code(secret));

  const other = new GqlAuthClient(`${baseURL}/query`);
  await other.login(username, password);
  const afterPassword = { aal: other.aal, mfaRequired: other.mfaRequired, me: (await other.me()).username };
  const wrongCode = await other.verifyMfa("000000").then(() => "verified", outcome);
  await other.verifyMfa(recovery[0]!);
  const afterSecondStep = { aal: other.aal, mfaRequired: other.mfaRequired };

  const third = new GqlAuthClient(`${baseURL}/query`);
  await third.login(username, password);
  const reusedRecoveryCode = await third.verifyMfa(recovery[0]!).then(() => "verified", outcome);
  return { recoveryCodes: recovery.length, afterPassword, wrongCode, afterSecondStep, reusedRecoveryCode };
}

export interface PasskeyResult {
  passkey: string;
  /** A passkey sign-in: who, at which level. */
  signedIn: { username: string; aal: string | null; mfaRequired: boolean };
  /** The password alone, then the passkey as the second step. */
  afterPassword: { aal: string | null; mfaRequired: boolean };
  afterPasskeyStep: { aal: string | null; mfaRequired: boolean };
  /** A passkey this server never registered. */
  stranger: string;
}

/**
 * Passkeys: register one while signed in with the password, then sign in with the passkey alone
 * (no username: a discoverable credential), and use it as the second step after a password.
 * `device` is the user's authenticator; `stranger` one whose passkey this server does not know.
 */
export async function runPasskeyFlow(
  baseURL: string, username: string, password: string, device: PasskeyDevice, stranger: PasskeyDevice,
): Promise<PasskeyResult> {
  const laptop = new GqlAuthClient(`${baseURL}/query`);
  await laptop.login(username, password);
  const passkey = await laptop.addPasskey("laptop", device);

  const phone = new GqlAuthClient(`${baseURL}/query`);
  const user = await phone.signInWithPasskey(device);
  const signedIn = { username: user.username, aal: phone.aal, mfaRequired: phone.mfaRequired };

  const desktop = new GqlAuthClient(`${baseURL}/query`);
  await desktop.login(username, password);
  const afterPassword = { aal: desktop.aal, mfaRequired: desktop.mfaRequired };
  await desktop.verifyWithPasskey(device);
  const afterPasskeyStep = { aal: desktop.aal, mfaRequired: desktop.mfaRequired };

  const other = await new GqlAuthClient(`${baseURL}/query`).signInWithPasskey(stranger).then(() => "signed in", outcome);
  return { passkey: passkey.name, signedIn, afterPassword, afterPasskeyStep, stranger: other };
}
