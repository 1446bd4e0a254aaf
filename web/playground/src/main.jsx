// GraphiQL with an Authorize panel, in the spirit of FastAPI's docs button: sign in with a
// username and password, and every GraphiQL request then carries `Authorization: Bearer …`. The
// access token is refreshed before it expires. Tokens live in this page's memory only: never in
// the URL, never in storage. Subscriptions run over a graphql-ws socket that authenticates with
// the same token (and is closed by the server, 4401, when the session ends). With OpenID Connect
// providers configured, a "Sign in with <provider>" button runs the SPA's PKCE leg: the verifier
// waits in sessionStorage while the browser is at the provider (it is useless without the one-time
// code, which only comes back here), and the code is removed from the address bar before use.
// Signed in, a "Link <provider>" button links a provider account to this one: the provider runs in
// a popup (leaving this page would end the session that must finish the link), the popup hands the
// one-time link code back to this window, and this window redeems it with completeIdentityLink.
// Mail (mail.jsx): sign-up with an address, "Forgot password?", sign-in codes, address
// verification, mailed links landing here, and the development inbox. Second factors
// (security.jsx): the second step of a sign-in, passkeys, an authenticator app, recovery codes.
import React, { useCallback, useEffect, useRef, useState } from "react";
import { createRoot } from "react-dom/client";
import { GraphiQL } from "graphiql";
import { createClient } from "graphql-ws";
import { getOperationAST, parse } from "graphql";
import "graphiql/graphiql.css";
import "./playground.css";

import { endpoint, firstError, GqlError, gql, loadFeatures, payloadFields, post } from "./api.js";
import { MailPanel, ResetPasswordForm, takeMailLink, useInbox } from "./mail.jsx";
import { passkeySignIn, ReauthPrompt, SecondStep, SecurityPanel } from "./security.jsx";

function isSubscription(query, operationName) {
  try {
    return getOperationAST(parse(query), operationName)?.operation === "subscription";
  } catch {
    return false; // let the server explain the syntax error
  }
}

// socketFor opens a graphql-ws client for one access token (a new token means a new socket).
function socketFor(token) {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + endpoint;
  return createClient({ url, lazy: true, retryAttempts: 0, connectionParams: () => (token ? { Authorization: "Bearer " + token } : {}) });
}

const VERIFIER_KEY = "gqlauth.pkce-verifier";

function base64url(bytes) {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// startProviderSignIn makes a PKCE pair, keeps the verifier for the return, and leaves for the
// provider through the server's start URL. The playground itself (origin + "/") is the return URL.
async function startProviderSignIn(name) {
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem(VERIFIER_KEY, verifier);
  const query = new URLSearchParams({ redirect_to: location.origin + "/", code_challenge: base64url(digest) });
  location.assign(`/auth/${encodeURIComponent(name)}/start?${query}`);
}

const exchange = (payload) => `mutation ExchangeAuthCode($c: String!, $v: String!) { exchangeAuthCode(code: $c, codeVerifier: $v) { ${payload} } }`;

// Links run in a popup that returns to this page's URL. The window that started the link holds
// the session and the verifier in memory; the popup hands it the outcome over this channel.
const LINK_CHANNEL = "gqlauth.link";

// handOver offers a link's outcome to the window of this browser that started a link, and
// resolves to whether one took it (within 1.5 s).
function handOver(outcome) {
  return new Promise((resolve) => {
    if (typeof BroadcastChannel === "undefined") return resolve(false);
    const channel = new BroadcastChannel(LINK_CHANNEL);
    const id = base64url(crypto.getRandomValues(new Uint8Array(16)));
    const done = (taken) => {
      clearTimeout(timer);
      channel.close();
      resolve(taken);
    };
    const timer = setTimeout(() => done(false), 1500);
    channel.onmessage = (e) => e.data && e.data.type === "link-ack" && e.data.id === id && done(true);
    channel.postMessage({ type: "link-return", id, ...outcome });
  });
}

// finishProviderReturn handles the return from a provider; the parameters leave the address bar
// at once. ?code= (a sign-in) is exchanged with the kept verifier. ?link_code= goes to the window
// that started the link; if no window of this browser did, the link URL was opened by someone
// who did not start it (perhaps sent by someone who wants this provider account linked to
// theirs), and the code is used up here so that it can never be redeemed. ?error= belongs to a
// sign-in started in this tab, or else to a link.
async function finishProviderReturn(payload) {
  const params = new URLSearchParams(location.search);
  const code = params.get("code");
  const linkCode = params.get("link_code");
  const error = params.get("error");
  if (!code && !linkCode && !error) return null;
  history.replaceState(null, "", location.pathname);
  const verifier = sessionStorage.getItem(VERIFIER_KEY);
  sessionStorage.removeItem(VERIFIER_KEY);
  if (code || (error && verifier)) {
    if (error) return { error: `Sign-in through the provider failed: ${error}` };
    const result = await post(exchange(payload), { c: code, v: verifier || "" });
    const err = firstError(result);
    return err ? { error: err.message } : { session: result.data.exchangeAuthCode };
  }
  if (await handOver({ linkCode, error })) {
    window.close();
    return { error: "The provider's answer went back to the window that started the link; you can close this one." };
  }
  if (linkCode) {
    // A wrong (empty) verifier uses any code up; a link code never signs anyone in.
    await post(exchange("accessToken"), { c: linkCode, v: "" }).catch(() => {});
    return { error: "A provider link came back here, but no window of this browser started it: nothing was linked." };
  }
  return { error: `Sign-in through the provider failed: ${error}` };
}

// startLink opens the popup at once (a popup opened after an await may be blocked), asks for the
// link's URL with a fresh PKCE pair and sends the popup there. It returns the verifier.
async function startLink(name, token) {
  const popup = window.open("", "gqlauth-link", "popup,width=520,height=680");
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const result = await post(
    "mutation LinkIdentityStart($p: String!, $r: String!, $c: String!) { linkIdentityStart(provider: $p, redirectTo: $r, codeChallenge: $c) }",
    { p: name, r: location.origin + "/", c: base64url(digest) }, token,
  ).catch((e) => ({ errors: [{ message: String(e) }] }));
  const err = firstError(result);
  if (err || !popup) {
    if (popup) popup.close();
    throw new Error(err ? err.message : "the browser blocked the popup");
  }
  popup.location.href = result.data.linkIdentityStart;
  return verifier;
}

// SignedOut is the Authorize bar before sign-in: a username and password, or one of the mail
// flows (create an account, forgot password, a sign-in code), a passkey, or a provider.
function SignedOut({ has, payload, providers, onSession, say }) {
  const [mode, setMode] = useState("signin");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [email, setEmail] = useState("");
  const [code, setCode] = useState("");
  const [codeSent, setCodeSent] = useState(false);
  const [busy, setBusy] = useState(false);

  const run = async (fn) => {
    setBusy(true);
    say(null);
    try {
      await fn();
    } catch (e) {
      say({ error: e.message || String(e) });
    } finally {
      setBusy(false);
    }
  };
  const show = (m) => {
    setMode(m);
    setCodeSent(false);
    setCode("");
    say(null);
  };

  const signIn = async () => {
    try {
      const data = await gql(`mutation Login($u: String!, $p: String!) { login(username: $u, password: $p) { ${payload} } }`, { u: username, p: password });
      setPassword("");
      onSession(data.login);
    } catch (e) {
      if (e.reason !== "EMAIL_NOT_VERIFIED") throw e;
      say({ error: "This account's address is not verified yet. A new link was mailed to it (unless many were this hour): open it, then sign in." });
    }
  };
  const signUp = async () => {
    try {
      const data = await gql(`mutation Register($u: String!, $p: String!, $e: String) { register(username: $u, password: $p, email: $e) { ${payload} } }`,
        { u: username, p: password, e: email.trim() || null });
      setPassword("");
      onSession(data.register);
    } catch (e) {
      if (e.reason !== "EMAIL_NOT_VERIFIED") throw e;
      setMode("signin");
      setPassword("");
      say({ info: `Account created. Open the link mailed to ${email.trim()} to verify the address, then sign in.` });
    }
  };
  const requestReset = async () => {
    await gql("mutation RequestPasswordReset($e: String!) { requestPasswordReset(email: $e) }", { e: email.trim() });
    say({ info: `If an account has the address ${email.trim()}, a link to choose a new password is on its way.` });
  };
  const requestCode = async () => {
    await gql("mutation RequestSignInCode($e: String!) { requestSignInCode(email: $e) }", { e: email.trim() });
    setCodeSent(true);
    say({ info: `A six-digit code is on its way to ${email.trim()}.` });
  };
  const signInWithCode = async () => {
    const data = await gql(`mutation SignInWithCode($e: String!, $c: String!) { signInWithCode(email: $e, code: $c) { ${payload} } }`,
      { e: email.trim(), c: code.trim() });
    onSession(data.signInWithCode);
  };
  const submit = (event) => {
    event.preventDefault();
    const actions = { signin: signIn, signup: signUp, forgot: requestReset, code: codeSent ? signInWithCode : requestCode };
    run(actions[mode]);
  };
  const submitButton = {
    signin: ["login", "Sign in"],
    signup: ["register", "Create account"],
    forgot: ["request-reset", "Mail me a link"],
    code: codeSent ? ["sign-in-with-code", "Sign in"] : ["request-code", "Mail me a code"],
  }[mode];

  return (
    <form className="authorize" data-testid="authorize" onSubmit={submit}>
      <b>Authorize</b>
      {(mode === "signin" || mode === "signup") && (
        <>
          <input id="username" autoComplete="username" placeholder="username" value={username} onChange={(e) => setUsername(e.target.value)} />
          <input id="password" type="password" autoComplete={mode === "signup" ? "new-password" : "current-password"} placeholder="password" value={password} onChange={(e) => setPassword(e.target.value)} />
        </>
      )}
      {mode !== "signin" && (
        <input id="email" type="email" autoComplete="email" placeholder={mode === "signup" ? "email (optional)" : "email"} required={mode !== "signup"}
          value={email} onChange={(e) => setEmail(e.target.value)} readOnly={mode === "code" && codeSent} />
      )}
      {mode === "code" && codeSent && (
        <input id="sign-in-code" autoComplete="one-time-code" inputMode="numeric" placeholder="6-digit code" value={code} onChange={(e) => setCode(e.target.value)} />
      )}
      <button id={submitButton[0]} type="submit" disabled={busy}>{submitButton[1]}</button>
      {mode === "signin" ? (
        <>
          <button id="show-signup" type="button" className="link" onClick={() => show("signup")}>Create account</button>
          <button id="show-forgot" type="button" className="link" onClick={() => show("forgot")}>Forgot password?</button>
          {has("requestSignInCode") && <button id="show-code" type="button" className="link" onClick={() => show("code")}>Sign in with a code</button>}
          {has("beginPasskeySignIn") && (
            <button id="passkey-signin" type="button" disabled={busy} onClick={() => run(async () => onSession(await passkeySignIn(gql, payload)))}>
              Sign in with a passkey
            </button>
          )}
          {providers.map((name) => (
            <button key={name} type="button" className="provider" data-provider={name} onClick={() => startProviderSignIn(name)}>
              Sign in with {name}
            </button>
          ))}
        </>
      ) : (
        <button id="show-signin" type="button" className="link" onClick={() => show("signin")}>Back to sign-in</button>
      )}
      <span className="hint">OAuth2 clients: password grant at <code>POST /oauth/token</code></span>
    </form>
  );
}

// SignedIn is the Authorize bar of a session: who, the address and its verification, the second
// step while the session still needs it, provider links, and sign-out.
function SignedIn({ session, has, call, payload, providers, onSession, onSignOut, say, onLink, linkStatus }) {
  const { user } = session;
  const sendVerification = async () => {
    say(null);
    try {
      await call("mutation SendEmailVerification { sendEmailVerification }");
      say({ info: `A verification link was mailed to ${user.email}.` });
    } catch (e) {
      say({ error: e.message });
    }
  };
  return (
    <div className="authorize" data-testid="authorize">
      {session.mfaRequired ? (
        <>
          <span id="mfa-pending">Password accepted for <b>{user.username}</b>.</span>
          <SecondStep has={has} call={call} payload={payload} onSession={onSession} onError={(e) => say(e && { error: e })} />
        </>
      ) : (
        <span id="signed-in-as">
          Signed in as <b>{user.username}</b> ({user.role})
        </span>
      )}
      {session.aal && <span id="aal" className="badge" title="authentication level of this session">{session.aal}</span>}
      {user.email && user.emailVerified === false && (
        <>
          <span id="email-status" className="warn">{user.email}: not verified</span>
          {has("sendEmailVerification") && <button id="send-verification" type="button" onClick={sendVerification}>Verify email</button>}
        </>
      )}
      {user.email && user.emailVerified === true && <span id="email-status" className="hint">{user.email} ✓</span>}
      <button id="logout" type="button" onClick={onSignOut}>Log out</button>
      {!session.mfaRequired && providers.map((name) => (
        <button key={name} type="button" className="provider" data-link-provider={name} onClick={() => onLink(name)}>
          Link {name}
        </button>
      ))}
      {linkStatus && <span id="link-status">{linkStatus}</span>}
    </div>
  );
}

const INVALID_LINK = "This link does not work any more (used, expired, or replaced by a newer one)";

function App() {
  const [has, setHas] = useState(null);
  const payload = has && payloadFields(has);
  const [session, setSessionState] = useState(null);
  const sessionRef = useRef(null);
  const setSession = useCallback((s) => {
    sessionRef.current = s;
    setSessionState(s);
  }, []);
  const [message, setMessage] = useState(null); // {error} or {info}
  const [providers, setProviders] = useState([]);
  const [linkStatus, setLinkStatus] = useState(null);
  const [resetToken, setResetToken] = useState(null);
  const [reauth, setReauth] = useState(null); // {retry, resolve, reject} while a change waits for it
  const [mailOpen, setMailOpen] = useState(false);
  const [securityOpen, setSecurityOpen] = useState(false);
  const inbox = useInbox(mailOpen);
  // The link this window started: its provider and verifier, until the popup hands back the code.
  const pendingLink = useRef(null);

  const call = useCallback((query, variables) => gql(query, variables, sessionRef.current && sessionRef.current.accessToken), []);

  // A mailed link: verification happens on arrival; a reset waits for the new password.
  const openMailLink = useCallback(async () => {
    const link = takeMailLink();
    if (!link) return;
    if (link.type === "reset_password") {
      setResetToken(link.token);
      setMessage({ info: "Choose a new password for your account." });
      return;
    }
    setMessage({ info: "Verifying your email address…" });
    try {
      await gql("mutation VerifyEmail($t: String!) { verifyEmail(token: $t) }", { t: link.token });
      setMessage({ info: "Your email address is verified." });
    } catch (e) {
      setMessage({ error: e.reason === "INVALID_CODE" ? `${INVALID_LINK}: ask for a new one.` : e.message });
      return;
    }
    if (sessionRef.current) {
      const me = await call("query Me { me { email emailVerified } }").catch(() => null);
      const s = sessionRef.current;
      if (me && s) setSession({ ...s, user: { ...s.user, ...me.me } });
    }
  }, [call, setSession]);

  // At the start: the server's features, a return from a provider, a mailed link; links opened
  // later from the inbox (same page, new fragment) arrive as hashchange.
  useEffect(() => {
    openMailLink();
    window.addEventListener("hashchange", openMailLink);
    fetch("/auth/providers").then((r) => r.json()).then((body) => setProviders(body.providers || [])).catch(() => {});
    loadFeatures()
      .then((h) => {
        setHas(() => h);
        return finishProviderReturn(payloadFields(h));
      })
      .then((outcome) => {
        if (outcome && outcome.session) setSession(outcome.session);
        if (outcome && outcome.error) setMessage({ error: outcome.error });
      })
      .catch((e) => setMessage({ error: String(e) }));
    return () => window.removeEventListener("hashchange", openMailLink);
  }, [openMailLink, setSession]);

  const resetPassword = async (newPassword) => {
    setMessage(null);
    try {
      await gql("mutation ResetPassword($t: String!, $p: String!) { resetPassword(token: $t, newPassword: $p) }", { t: resetToken, p: newPassword });
    } catch (e) {
      if (e.reason === "INVALID_CODE") {
        setResetToken(null);
        setMessage({ error: `${INVALID_LINK}: ask for a new one with "Forgot password?".` });
      } else {
        setMessage({ error: e.message }); // a refused password leaves the link usable
      }
      return;
    }
    setResetToken(null);
    setSession(null); // every session of the account was revoked
    setMessage({ info: "Your password is changed and every session of the account is signed out: sign in with the new password." });
  };

  // guarded runs fn and, when the server wants a recent sign-in first, asks for it and runs fn
  // again; the promise settles with the retry (or rejects when the user cancels).
  const guarded = useCallback((fn) => fn().catch((e) => {
    if (!(e instanceof GqlError) || e.reason !== "REAUTHENTICATION_REQUIRED") throw e;
    return new Promise((resolve, reject) => setReauth({ retry: fn, resolve, reject }));
  }), []);
  const reauthenticated = (s) => {
    setSession(s);
    const pending = reauth;
    setReauth(null);
    if (pending && pending.retry) pending.retry().then(pending.resolve, pending.reject);
    else setMessage({ info: "Confirmed: run the operation again." });
  };
  const cancelReauth = useCallback(() => {
    setReauth((pending) => {
      if (pending && pending.reject) pending.reject(new Error("cancelled: the change needs a recent sign-in"));
      return null;
    });
  }, []);

  // After a factor is added the session is at AAL2 (a first enrolment raises it).
  const enrolled = useCallback(async () => {
    const s = sessionRef.current;
    if (s && s.aal) setSession({ ...s, aal: "AAL2", mfaRequired: false });
  }, [setSession]);

  const signOut = async () => {
    const s = sessionRef.current;
    if (s) await post("mutation Logout { logout }", null, s.accessToken).catch(() => {});
    setSession(null);
  };

  const onLink = useCallback(async (name) => {
    const s = sessionRef.current;
    setLinkStatus(null);
    try {
      pendingLink.current = { provider: name, verifier: await startLink(name, s && s.accessToken) };
    } catch (e) {
      pendingLink.current = null;
      setLinkStatus(`Linking ${name} failed: ${e.message}`);
    }
  }, []);

  // The popup's answer to a link this window started: redeemed with this session and verifier.
  useEffect(() => {
    if (typeof BroadcastChannel === "undefined") return undefined;
    const channel = new BroadcastChannel(LINK_CHANNEL);
    channel.onmessage = async (e) => {
      const pending = pendingLink.current;
      const s = sessionRef.current;
      if (!e.data || e.data.type !== "link-return" || !pending || !s) return;
      pendingLink.current = null;
      channel.postMessage({ type: "link-ack", id: e.data.id });
      if (e.data.error) {
        setLinkStatus(`Linking ${pending.provider} failed: ${e.data.error}`);
        return;
      }
      const result = await post(
        "mutation CompleteIdentityLink($c: String!, $v: String!) { completeIdentityLink(code: $c, codeVerifier: $v) { provider subject } }",
        { c: e.data.linkCode, v: pending.verifier }, s.accessToken,
      ).catch((err) => ({ errors: [{ message: String(err) }] }));
      const err = firstError(result);
      const linked = !err && result.data.completeIdentityLink;
      setLinkStatus(err ? `Linking ${pending.provider} failed: ${err.message}` : `Linked ${linked.provider} (${linked.subject})`);
    };
    return () => channel.close();
  }, []);

  // Signing out abandons a pending link (its code then finds no taker and is used up), a pending
  // re-check and the security panel.
  useEffect(() => {
    if (!session) {
      pendingLink.current = null;
      setLinkStatus(null);
      setSecurityOpen(false);
      cancelReauth();
    }
  }, [session, cancelReauth]);

  // Refresh 30 s before the access token expires; a failed refresh signs the panel out.
  useEffect(() => {
    if (!session || !payload) return undefined;
    const delay = Math.max(5, session.expiresIn - 30) * 1000;
    const timer = setTimeout(async () => {
      const result = await post(`mutation Refresh($r: String) { refresh(refreshToken: $r) { ${payload} } }`, { r: session.refreshToken }).catch(() => ({ errors: [{}] }));
      setSession(result.errors ? null : result.data.refresh);
    }, delay);
    return () => clearTimeout(timer);
  }, [session, payload, setSession]);

  // One socket per access token: a refresh or a sign-out closes the old one.
  const socketRef = useRef({ token: undefined, client: null });
  useEffect(() => () => socketRef.current.client && socketRef.current.client.dispose(), []);

  const fetcher = useCallback((params) => {
    const s = sessionRef.current;
    const token = s && s.accessToken;
    if (!isSubscription(params.query, params.operationName)) {
      return post(params.query, params.variables, token).then((result) => {
        const err = firstError(result);
        if (err && err.reason === "REAUTHENTICATION_REQUIRED" && token) setReauth((pending) => pending || { retry: null });
        return result;
      });
    }
    if (socketRef.current.token !== token || !socketRef.current.client) {
      if (socketRef.current.client) socketRef.current.client.dispose();
      socketRef.current = { token, client: socketFor(token) };
    }
    return socketRef.current.client.iterate({ query: params.query, variables: params.variables, operationName: params.operationName });
  }, []);

  if (!has) return <div className="playground"><div className="bar">Loading…</div></div>;
  const canSecure = has("enrollTotp") || has("beginPasskeyRegistration");
  return (
    <div className="playground">
      <div className="bar">
        {session ? (
          <SignedIn session={session} has={has} call={call} payload={payload} providers={providers} onSession={setSession}
            onSignOut={signOut} say={setMessage} onLink={onLink} linkStatus={linkStatus} />
        ) : (
          <SignedOut has={has} payload={payload} providers={providers} onSession={setSession} say={setMessage} />
        )}
        {session && !session.mfaRequired && canSecure && (
          <button id="security-toggle" type="button" className={securityOpen ? "on" : ""} onClick={() => setSecurityOpen(!securityOpen)}>Security</button>
        )}
        {Array.isArray(inbox) && (
          <button id="mail-toggle" type="button" className={mailOpen ? "on" : ""} onClick={() => setMailOpen(!mailOpen)}>Inbox</button>
        )}
      </div>
      {message && (
        <div className="messages">
          {message.error && <span id="auth-error" className="error">{message.error}</span>}
          {message.info && <span id="auth-info">{message.info}</span>}
          <button type="button" className="link" aria-label="dismiss" onClick={() => setMessage(null)}>×</button>
        </div>
      )}
      {resetToken && <ResetPasswordForm onSubmit={resetPassword} onCancel={() => { setResetToken(null); setMessage(null); }} />}
      {reauth && session && <ReauthPrompt has={has} call={call} payload={payload} onSession={reauthenticated} onCancel={cancelReauth} />}
      {securityOpen && session && <SecurityPanel has={has} call={call} guarded={guarded} onEnrolled={enrolled} />}
      {mailOpen && Array.isArray(inbox) && <MailPanel inbox={inbox} />}
      <div className="graphiql-host">
        <GraphiQL fetcher={fetcher} defaultQuery={"# Sign in above, then run:\n{ me { id username role } }\n"} />
      </div>
    </div>
  );
}

createRoot(document.getElementById("root")).render(<App />);
