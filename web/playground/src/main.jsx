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
import React, { useCallback, useEffect, useRef, useState } from "react";
import { createRoot } from "react-dom/client";
import { GraphiQL } from "graphiql";
import { createClient } from "graphql-ws";
import { getOperationAST, parse } from "graphql";
import "graphiql/graphiql.css";
import "./playground.css";

const endpoint = "/query";

async function post(query, variables, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const res = await fetch(endpoint, { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  return res.json();
}

const PAYLOAD = "accessToken expiresIn refreshToken user { username role }";

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

function firstError(result) {
  const e = result.errors && result.errors[0];
  if (!e) return null;
  const ext = e.extensions || {};
  return ext.reason ? `${e.message} (${ext.reason})` : e.message;
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

const EXCHANGE = `mutation ExchangeAuthCode($c: String!, $v: String!) { exchangeAuthCode(code: $c, codeVerifier: $v) { ${PAYLOAD} } }`;

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
async function finishProviderReturn() {
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
    const result = await post(EXCHANGE, { c: code, v: verifier || "" });
    const err = firstError(result);
    return err ? { error: err } : { session: result.data.exchangeAuthCode };
  }
  if (await handOver({ linkCode, error })) {
    window.close();
    return { error: "The provider's answer went back to the window that started the link; you can close this one." };
  }
  if (linkCode) {
    // A wrong (empty) verifier uses any code up; a link code never signs anyone in.
    await post(EXCHANGE, { c: linkCode, v: "" }).catch(() => {});
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
    throw new Error(err || "the browser blocked the popup");
  }
  popup.location.href = result.data.linkIdentityStart;
  return verifier;
}

function AuthorizePanel({ session, setSession, notice, onLink, linkStatus }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [providers, setProviders] = useState([]);

  useEffect(() => {
    fetch("/auth/providers").then((r) => r.json()).then((body) => setProviders(body.providers || [])).catch(() => {});
  }, []);

  const signIn = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const result = await post(`mutation Login($u: String!, $p: String!) { login(username: $u, password: $p) { ${PAYLOAD} } }`, { u: username, p: password });
      const err = firstError(result);
      if (err) setError(err);
      else {
        setPassword("");
        setSession(result.data.login);
      }
    } catch (e) {
      setError(String(e));
    } finally {
      setBusy(false);
    }
  };

  const signOut = async () => {
    if (session) await post("mutation Logout { logout }", null, session.accessToken).catch(() => {});
    setSession(null);
  };

  if (session) {
    return (
      <div className="authorize" data-testid="authorize">
        <span id="signed-in-as">
          Signed in as <b>{session.user.username}</b> ({session.user.role})
        </span>
        <button id="logout" type="button" onClick={signOut}>Log out</button>
        {providers.map((name) => (
          <button key={name} type="button" className="provider" data-link-provider={name} onClick={() => onLink(name)}>
            Link {name}
          </button>
        ))}
        {linkStatus && <span id="link-status">{linkStatus}</span>}
      </div>
    );
  }
  return (
    <form className="authorize" data-testid="authorize" onSubmit={signIn}>
      <b>Authorize</b>
      <input id="username" autoComplete="username" placeholder="username" value={username} onChange={(e) => setUsername(e.target.value)} />
      <input id="password" type="password" autoComplete="current-password" placeholder="password" value={password} onChange={(e) => setPassword(e.target.value)} />
      <button id="login" type="submit" disabled={busy}>Sign in</button>
      {providers.map((name) => (
        <button key={name} type="button" className="provider" data-provider={name} onClick={() => startProviderSignIn(name)}>
          Sign in with {name}
        </button>
      ))}
      {(error || notice) && <span id="auth-error" className="error">{error || notice}</span>}
      <span className="hint">OAuth2 clients: password grant at <code>POST /oauth/token</code></span>
    </form>
  );
}

function App() {
  const [session, setSessionState] = useState(null);
  const sessionRef = useRef(null);
  const setSession = useCallback((s) => {
    sessionRef.current = s;
    setSessionState(s);
  }, []);
  const [notice, setNotice] = useState(null);
  const [linkStatus, setLinkStatus] = useState(null);
  // The link this window started: its provider and verifier, until the popup hands back the code.
  const pendingLink = useRef(null);

  // Back from a provider?
  useEffect(() => {
    finishProviderReturn()
      .then((outcome) => {
        if (outcome && outcome.session) setSession(outcome.session);
        if (outcome && outcome.error) setNotice(outcome.error);
      })
      .catch((e) => setNotice(String(e)));
  }, [setSession]);

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
      setLinkStatus(err ? `Linking ${pending.provider} failed: ${err}` : `Linked ${linked.provider} (${linked.subject})`);
    };
    return () => channel.close();
  }, []);

  // Signing out abandons a pending link: its code then finds no taker and is used up.
  useEffect(() => {
    if (!session) {
      pendingLink.current = null;
      setLinkStatus(null);
    }
  }, [session]);

  // Refresh 30 s before the access token expires; a failed refresh signs the panel out.
  useEffect(() => {
    if (!session) return undefined;
    const delay = Math.max(5, session.expiresIn - 30) * 1000;
    const timer = setTimeout(async () => {
      const result = await post(`mutation Refresh($r: String) { refresh(refreshToken: $r) { ${PAYLOAD} } }`, { r: session.refreshToken }).catch(() => ({ errors: [{}] }));
      setSession(result.errors ? null : result.data.refresh);
    }, delay);
    return () => clearTimeout(timer);
  }, [session, setSession]);

  // One socket per access token: a refresh or a sign-out closes the old one.
  const socketRef = useRef({ token: undefined, client: null });
  useEffect(() => () => socketRef.current.client && socketRef.current.client.dispose(), []);

  const fetcher = useCallback((params) => {
    const s = sessionRef.current;
    const token = s && s.accessToken;
    if (!isSubscription(params.query, params.operationName)) {
      return post(params.query, params.variables, token);
    }
    if (socketRef.current.token !== token || !socketRef.current.client) {
      if (socketRef.current.client) socketRef.current.client.dispose();
      socketRef.current = { token, client: socketFor(token) };
    }
    return socketRef.current.client.iterate({ query: params.query, variables: params.variables, operationName: params.operationName });
  }, []);

  return (
    <div className="playground">
      <AuthorizePanel session={session} setSession={setSession} notice={notice} onLink={onLink} linkStatus={linkStatus} />
      <div className="graphiql-host">
        <GraphiQL fetcher={fetcher} defaultQuery={"# Sign in above, then run:\n{ me { id username role } }\n"} />
      </div>
    </div>
  );
}

createRoot(document.getElementById("root")).render(<App />);
