// A minimal typed gqlauth client for a single-page app. Operations are TypedDocumentNodes
// generated from the server's schema by graphql-codegen's client preset (npm run codegen), so a
// schema change that breaks them fails type-checking. Each carries its documentId, and the client
// sends only that (GraphQL over HTTP, trusted documents): the server, started with the generated
// manifest, runs these operations and nothing else. The client keeps tokens in memory, sends the
// access token as a Bearer header, and on TOKEN_EXPIRED refreshes once and retries the request.
import type { TypedDocumentNode } from "@graphql-typed-document-node/core";
import { createClient } from "graphql-ws";
import {
  BeginPasskeyRegistrationDocument, BeginPasskeySignInDocument, BeginPasskeyVerificationDocument,
  FinishPasskeyRegistrationDocument, FinishPasskeySignInDocument, FinishPasskeyVerificationDocument,
  CompleteIdentityLinkDocument, ExchangeAuthCodeDocument, LinkIdentityStartDocument, LoginDocument, LogoutDocument,
  ConfirmTotpDocument, EnrollTotpDocument, MeDocument, ReauthenticateDocument, RefreshDocument, RegisterDocument, RequestPasswordResetDocument, RequestSignInCodeDocument,
  ResetPasswordDocument, SecurityEventsDocument, SignInWithCodeDocument, VerifyEmailDocument, VerifyMfaDocument,
  type CompleteIdentityLinkMutation, type EnrollTotpMutation, type FinishPasskeyRegistrationMutation, type MeQuery, type SecurityEventsSubscription, type SignedInFragment,
} from "./gql/graphql.js";
import type { AuthErrorReason, AuthLevel, ErrorCode, LogoutScope } from "./generated/schema.js";

/** A GraphQL error as gqlauth sends it: extensions.code always, extensions.reason on auth failures. */
export class GqlAuthError extends Error {
  constructor(
    message: string,
    readonly code: ErrorCode,
    readonly reason?: AuthErrorReason,
    readonly field?: string,
  ) {
    super(message);
  }
}

/** A link the server mailed: `<EMAIL_LINK_URL>#type=<verify_email|reset_password>&token=<token>`. */
export interface MailLink {
  type: "verify_email" | "reset_password";
  token: string;
}

/**
 * Reads a mailed link's fragment (null when the URL carries none). A browser app calls it with
 * location.href when it starts, and removes the fragment at once (history.replaceState) before
 * using the token. Opening the link must change nothing by itself: verify on arrival, but a reset
 * waits for the new password the user types.
 */
export function readMailLink(url: string): MailLink | null {
  const params = new URLSearchParams(new URL(url).hash.replace(/^#/, ""));
  const type = params.get("type");
  const token = params.get("token");
  if (!token || (type !== "verify_email" && type !== "reset_password")) return null;
  return { type, token };
}

/**
 * The browser's half of a passkey ceremony: takes the server's options (WebAuthn's
 * PublicKeyCredential{Creation,Request}OptionsJSON) and returns the credential's toJSON().
 * browserPasskeys uses navigator.credentials; tests under Node pass a software authenticator.
 */
export interface PasskeyDevice {
  create(options: unknown): Promise<unknown>;
  get(options: unknown): Promise<unknown>;
}

export const browserPasskeys: PasskeyDevice = {
  async create(options) {
    const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options as PublicKeyCredentialCreationOptionsJSON);
    return ((await navigator.credentials.create({ publicKey })) as PublicKeyCredential).toJSON();
  },
  async get(options) {
    const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options as PublicKeyCredentialRequestOptionsJSON);
    return ((await navigator.credentials.get({ publicKey })) as PublicKeyCredential).toJSON();
  },
};

interface Response<T> {
  data?: T | null;
  errors?: { message: string; extensions?: { code?: ErrorCode; reason?: AuthErrorReason; field?: string } }[];
}

export class GqlAuthClient {
  private accessToken: string | null = null;
  private refreshToken: string | null = null;
  /** The session's level (AAL1: one factor, AAL2: two), from the last sign-in or step-up. */
  aal: AuthLevel | null = null;
  /**
   * True after a sign-in by one factor for a user who has a second: until verifyMfa (or a passkey
   * step-up) the server answers MFA_REQUIRED to all but me, logout and the second step.
   */
  mfaRequired = false;
  /** How many times the client refreshed on TOKEN_EXPIRED (for the example's output). */
  refreshes = 0;

  constructor(private readonly endpoint: string) {}

  get signedIn(): boolean {
    return this.accessToken !== null;
  }

  /** Keeps a sign-in's tokens and returns its user. */
  private signedInAs(payload: SignedInFragment): SignedInFragment["user"] {
    this.accessToken = payload.accessToken;
    this.refreshToken = payload.refreshToken;
    this.aal = payload.aal;
    this.mfaRequired = payload.mfaRequired;
    return payload.user;
  }

  async login(username: string, password: string) {
    return this.signedInAs((await this.send(LoginDocument, { username, password })).login);
  }

  /**
   * Creates an account and signs it in. Under EMAIL_VERIFICATION_REQUIRED the server mails a
   * link instead and this throws FORBIDDEN / EMAIL_NOT_VERIFIED: open the link, then log in.
   */
  async register(username: string, password: string, email?: string) {
    return this.signedInAs((await this.send(RegisterDocument, { username, password, email: email ?? null })).register);
  }

  /** Uses a verify_email link's token: the address is verified (or, for a change, becomes the account's). */
  async verifyEmail(token: string): Promise<void> {
    await this.send(VerifyEmailDocument, { token });
  }

  /** "Forgot password?": always succeeds; an account with this address gets a reset_password link. */
  async requestPasswordReset(email: string): Promise<void> {
    await this.send(RequestPasswordResetDocument, { email });
  }

  /**
   * Sets a new password with a reset_password link's token. Every session of the account ends;
   * sign in with the new password afterwards. A refused password (BAD_USER_INPUT) leaves the
   * token usable; a used, expired or replaced one is UNAUTHENTICATED / INVALID_CODE.
   */
  async resetPassword(token: string, newPassword: string): Promise<void> {
    await this.send(ResetPasswordDocument, { token, newPassword });
  }

  /** Always succeeds: the address gets a six-digit code for signInWithCode. */
  async requestSignInCode(email: string): Promise<void> {
    await this.send(RequestSignInCodeDocument, { email });
  }

  /** Signs in with a mailed code (an address without an account gets one, when sign-up is on). */
  async signInWithCode(email: string, code: string) {
    return this.signedInAs((await this.send(SignInWithCodeDocument, { email, code })).signInWithCode);
  }

  /**
   * Step 1 of signing in through an OpenID Connect provider (the SPA's PKCE leg): makes a verifier
   * and its S256 challenge and returns the URL to send the browser to. Keep the verifier until the
   * browser comes back (a browser app: sessionStorage; it is useless without the one-time code).
   * redirectTo must be one of the server's OIDC_REDIRECT_URLS, exactly.
   */
  static async beginProviderSignIn(baseURL: string, provider: string, redirectTo: string): Promise<{ url: string; verifier: string }> {
    const { verifier, challenge } = await pkcePair();
    const query = new URLSearchParams({ redirect_to: redirectTo, code_challenge: challenge });
    return { url: `${baseURL}/auth/${encodeURIComponent(provider)}/start?${query}`, verifier };
  }

  /**
   * Step 4: the browser is back at redirectTo with ?code= (or ?error=, an RFC 6749 error code such
   * as access_denied or account_exists). Redeems the code once, with the verifier of step 1.
   * A browser app should remove the query from the address bar first (history.replaceState).
   */
  async completeProviderSignIn(returnedTo: string, verifier: string) {
    const params = new URL(returnedTo).searchParams;
    const error = params.get("error");
    if (error) throw new GqlAuthError(`sign-in through the provider failed: ${error}`, "UNAUTHENTICATED");
    const code = params.get("code");
    if (!code) throw new GqlAuthError("the return URL has neither code nor error", "BAD_USER_INPUT");
    return this.signedInAs((await this.send(ExchangeAuthCodeDocument, { code, codeVerifier: verifier })).exchangeAuthCode);
  }

  /**
   * Linking a provider account to the signed-in account, step 1: makes a PKCE pair and returns the
   * URL to send the browser to, with the verifier to keep. Only this session can finish the link
   * (a browser app keeps its session across the round trip, or runs the provider in a popup), and
   * nothing is linked until it does. redirectTo must be one of the server's OIDC_REDIRECT_URLS.
   */
  async beginIdentityLink(provider: string, redirectTo: string): Promise<{ url: string; verifier: string }> {
    const { verifier, challenge } = await pkcePair();
    const data = await this.request(LinkIdentityStartDocument, { provider, redirectTo, codeChallenge: challenge });
    return { url: data.linkIdentityStart, verifier };
  }

  /**
   * Step 2: the browser is back at redirectTo with ?link_code= (or ?error=, e.g. account_exists when
   * the provider account is linked to someone else). Redeems the code with this session and the
   * verifier of step 1, which links the identity. Pass verifier null when this app started no
   * link: the URL was then opened by someone it was sent to, the code is used up here, and nothing
   * is linked. A browser app should remove the query from the address bar first.
   */
  async completeIdentityLink(returnedTo: string, verifier: string | null): Promise<CompleteIdentityLinkMutation["completeIdentityLink"]> {
    const params = new URL(returnedTo).searchParams;
    const error = params.get("error");
    if (error) throw new GqlAuthError(`linking the provider failed: ${error}`, "BAD_USER_INPUT");
    const code = params.get("link_code");
    if (!code) throw new GqlAuthError("the return URL has neither link_code nor error", "BAD_USER_INPUT");
    if (verifier === null) {
      await this.useUp(code);
      throw new GqlAuthError("this app started no link: the code was used up and nothing was linked", "BAD_USER_INPUT");
    }
    return (await this.request(CompleteIdentityLinkDocument, { code, codeVerifier: verifier })).completeIdentityLink;
  }

  /** Uses up a one-time code this app did not ask for: any code dies on a wrong (here empty) verifier. */
  private async useUp(code: string): Promise<void> {
    try {
      if (this.signedIn) await this.send(CompleteIdentityLinkDocument, { code, codeVerifier: "" });
      else await this.send(ExchangeAuthCodeDocument, { code, codeVerifier: "" });
    } catch {
      // refused, as intended
    }
  }

  /** The second step of a sign-in: a code from the authenticator app, or a recovery code. */
  async verifyMfa(code: string) {
    return this.signedInAs((await this.request(VerifyMfaDocument, { code })).verifyMfa);
  }

  /** Renews the session's recent sign-in (REAUTHENTICATION_REQUIRED) with the password. */
  async reauthenticate(password: string) {
    return this.signedInAs((await this.request(ReauthenticateDocument, { password })).reauthenticate);
  }

  /** Starts an authenticator-app enrolment: show `uri` as a QR code (drawn locally) and `secret` as text. */
  async enrollTotp(): Promise<EnrollTotpMutation["enrollTotp"]> {
    return (await this.request(EnrollTotpDocument, {})).enrollTotp;
  }

  /**
   * Turns the app on with its first code. Returns the ten recovery codes (show them once) when the
   * user had none. A first factor raises this session to AAL2 and ends the user's other sessions.
   */
  async confirmTotp(code: string): Promise<string[]> {
    const codes = (await this.request(ConfirmTotpDocument, { code })).confirmTotp;
    this.aal = "AAL2";
    return codes;
  }

  /** Registers a passkey for the signed-in user (a first factor raises the session to AAL2). */
  async addPasskey(name: string, device: PasskeyDevice = browserPasskeys): Promise<FinishPasskeyRegistrationMutation["finishPasskeyRegistration"]> {
    const { challengeId, options } = (await this.request(BeginPasskeyRegistrationDocument, {})).beginPasskeyRegistration;
    const credential = await device.create(options);
    const passkey = (await this.request(FinishPasskeyRegistrationDocument, { challengeId, name, credential })).finishPasskeyRegistration;
    this.aal = "AAL2";
    return passkey;
  }

  /** Signs in with a discoverable passkey alone: no username, no password, and AAL2 at once. */
  async signInWithPasskey(device: PasskeyDevice = browserPasskeys) {
    const { challengeId, options } = (await this.send(BeginPasskeySignInDocument, {})).beginPasskeySignIn;
    const credential = await device.get(options);
    return this.signedInAs((await this.send(FinishPasskeySignInDocument, { challengeId, credential })).finishPasskeySignIn);
  }

  /** The second step (or a step-up) with a passkey: raises this session to AAL2. */
  async verifyWithPasskey(device: PasskeyDevice = browserPasskeys) {
    const { challengeId, options } = (await this.request(BeginPasskeyVerificationDocument, {})).beginPasskeyVerification;
    const credential = await device.get(options);
    return this.signedInAs((await this.request(FinishPasskeyVerificationDocument, { challengeId, credential })).finishPasskeyVerification);
  }

  async me(): Promise<MeQuery["me"]> {
    return (await this.request(MeDocument, {})).me;
  }

  async logout(scope: LogoutScope = "CURRENT"): Promise<void> {
    try {
      await this.request(LogoutDocument, { scope });
    } finally {
      this.accessToken = this.refreshToken = null;
    }
  }

  /**
   * Opens a socket that lives exactly as long as the session: the server closes it with 4401 the
   * moment the session ends (a logout on another device, a replayed refresh token, a password
   * change, a disabled account). Then the client forgets its tokens and calls onSignedOut with the
   * reason — the app's "back to the sign-in screen". When only the access token expired
   * (TOKEN_EXPIRED), it refreshes and opens a new socket instead. Returns a function that closes it.
   * webSocketImpl is the WebSocket class where there is no global one (Node: the ws package).
   */
  watchSession(
    onSignedOut: (reason: string) => void,
    onEvent: (event: SecurityEventsSubscription["securityEvents"]) => void = () => {},
    webSocketImpl?: unknown,
  ): () => void {
    let stopped = false;
    const client = createClient({
      url: this.endpoint.replace(/^http/, "ws"),
      webSocketImpl,
      lazy: false,
      onNonLazyError: () => {}, // the close is handled below
      retryAttempts: 0,
      connectionParams: () => ({ Authorization: `Bearer ${this.accessToken}` }),
      on: {
        closed: (event) => {
          const { code, reason } = event as { code: number; reason: string };
          if (stopped || code !== 4401) return;
          if (reason === "TOKEN_EXPIRED" && this.refreshToken !== null) {
            this.refresh().then(
              () => { stop = this.watchSession(onSignedOut, onEvent, webSocketImpl); },
              () => onSignedOut("SESSION_REVOKED"),
            );
            return;
          }
          this.accessToken = this.refreshToken = null;
          onSignedOut(reason);
        },
      },
    });
    const documentId = (SecurityEventsDocument as { __meta__?: { hash?: string } }).__meta__?.hash;
    client.subscribe<SecurityEventsSubscription>(
      { query: "", extensions: { documentId } },
      { next: (v) => v.data && onEvent(v.data.securityEvents), error: () => {}, complete: () => {} },
    );
    let stop = () => {
      stopped = true;
      void client.dispose();
    };
    return () => stop();
  }

  /** Runs an operation; on TOKEN_EXPIRED it refreshes the tokens once and retries. */
  async request<T, V extends Record<string, unknown>>(doc: TypedDocumentNode<T, V>, variables: V): Promise<T> {
    try {
      return await this.send(doc, variables);
    } catch (e) {
      if (!(e instanceof GqlAuthError) || e.reason !== "TOKEN_EXPIRED" || this.refreshToken === null) throw e;
      await this.refresh();
      return this.send(doc, variables);
    }
  }

  async refresh(): Promise<void> {
    this.refreshes++;
    try {
      const data = await this.send(RefreshDocument, { refreshToken: this.refreshToken });
      this.accessToken = data.refresh.accessToken;
      this.refreshToken = data.refresh.refreshToken;
    } catch (e) {
      this.accessToken = this.refreshToken = null; // the session is over: sign in again
      throw e;
    }
  }

  private async send<T, V>(doc: TypedDocumentNode<T, V>, variables: V): Promise<T> {
    const headers: Record<string, string> = {
      "Content-Type": "application/json",
      // The GraphQL-over-HTTP media type: a request error is a 400 with no data, not a 200.
      Accept: "application/graphql-response+json, application/json;q=0.9",
    };
    if (this.accessToken) headers.Authorization = `Bearer ${this.accessToken}`;
    const documentId = (doc as { __meta__?: { hash?: string } }).__meta__?.hash;
    if (!documentId) throw new Error("the document has no documentId: run npm run codegen");
    const res = await fetch(this.endpoint, { method: "POST", headers, body: JSON.stringify({ documentId, variables }) });
    const body = (await res.json()) as Response<T>;
    const err = body.errors?.[0];
    if (err) {
      const ext = err.extensions ?? {};
      throw new GqlAuthError(err.message, ext.code ?? "INTERNAL_SERVER_ERROR", ext.reason, ext.field);
    }
    if (!body.data) throw new GqlAuthError("empty response", "INTERNAL_SERVER_ERROR");
    return body.data;
  }
}

async function pkcePair(): Promise<{ verifier: string; challenge: string }> {
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const challenge = base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier))));
  return { verifier, challenge };
}

function base64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
