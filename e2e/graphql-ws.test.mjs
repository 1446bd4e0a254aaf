// The unmodified graphql-ws client (the reference implementation of the graphql-transport-ws
// protocol) against a live gqlauth: it authenticates in connection_init, receives its own security
// events as they are committed, and its socket is closed with 4401 SESSION_REVOKED the moment its
// session is logged out — also while it is idle. It also sees the protocol's own close codes for
// the violations its options can provoke (4408, 4409, 4400); the others, which this client never
// commits, are checked with raw frames in graph/ws_test.go.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import { startServer } from "./server.mjs";

async function gql(base, query, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(`${base}/query`, { method: "POST", headers, body: JSON.stringify({ query }) });
  return (await res.json()).data;
}

const login = async (base) =>
  (await gql(base, `mutation { login(username: "root", password: "correct horse battery") { accessToken } }`)).login.accessToken;

test("graphql-ws: securityEvents, then the socket dies with its session", async () => {
  const server = await startServer(process.env.GQLAUTH_BIN || "../gqlauth", {
    ADMIN_USERNAME: "root", ADMIN_PASSWORD: "correct horse battery",
  });
  try {
    const token = await login(server.base);
    let closed;
    const closedEvent = new Promise((resolve) => (closed = resolve));
    const client = createClient({
      url: server.base.replace("http", "ws") + "/query",
      webSocketImpl: WebSocket,
      connectionParams: { Authorization: `Bearer ${token}` },
      retryAttempts: 0,
      on: { closed: (event) => closed(event) },
    });
    const events = [];
    let first;
    const firstEvent = new Promise((resolve) => (first = resolve));
    const subscribed = new Promise((resolve, reject) => {
      client.subscribe(
        { query: "subscription { securityEvents { type user { username } } }" },
        { next: (v) => { events.push(v); first(v); }, error: reject, complete: resolve },
      );
    });
    subscribed.catch(() => {}); // ends with the socket
    await new Promise((r) => setTimeout(r, 300)); // connected and subscribed
    await login(server.base); // a sign-in elsewhere: an event for root
    const event = await firstEvent;
    assert.equal(event.data.securityEvents.type, "SIGN_IN");
    assert.equal(event.data.securityEvents.user.username, "root");

    const started = Date.now();
    await gql(server.base, "mutation { logout }", token);
    const close = await closedEvent;
    assert.equal(close.code, 4401);
    assert.equal(close.reason, "SESSION_REVOKED");
    assert.ok(Date.now() - started < 1000, `closed ${Date.now() - started} ms after the logout`);
    client.dispose();
  } finally {
    server.stop();
  }
});

test("graphql-ws: a bad token is refused with 4401", async () => {
  const server = await startServer(process.env.GQLAUTH_BIN || "../gqlauth");
  try {
    let closed;
    const closedEvent = new Promise((resolve) => (closed = resolve));
    const client = createClient({
      url: server.base.replace("http", "ws") + "/query",
      webSocketImpl: WebSocket,
      connectionParams: { Authorization: "Bearer not.a.token" },
      retryAttempts: 0,
      lazy: false,
      onNonLazyError: () => {}, // the close event is what the test reads
      on: { closed: (event) => closed(event) },
    });
    const close = await closedEvent;
    assert.equal(close.code, 4401);
    assert.equal(close.reason, "INVALID_TOKEN");
    client.dispose();
  } finally {
    server.stop();
  }
});

// A client whose socket only closes: resolves with the close event.
function closingClient(server, options) {
  let closed;
  const closedEvent = new Promise((resolve) => (closed = resolve));
  const client = createClient({
    url: server.base.replace("http", "ws") + "/query",
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    on: { closed: (event) => closed(event) },
    ...options,
  });
  return { client, closedEvent };
}

const sink = { next: () => {}, error: () => {}, complete: () => {} };

test("graphql-ws: the protocol's close codes, never 1002", async (t) => {
  const server = await startServer(process.env.GQLAUTH_BIN || "../gqlauth", {
    ADMIN_USERNAME: "root", ADMIN_PASSWORD: "correct horse battery", WS_INIT_TIMEOUT: "300ms",
  });
  try {
    const token = await login(server.base);

    await t.test("4408 when connection_init does not come in time", { timeout: 10000 }, async () => {
      const { client, closedEvent } = closingClient(server, {
        lazy: false,
        onNonLazyError: () => {},
        connectionParams: () => new Promise((r) => setTimeout(() => r({ Authorization: `Bearer ${token}` }), 1500)),
      });
      const close = await closedEvent;
      assert.equal(close.code, 4408);
      assert.equal(close.reason, "Connection initialisation timeout");
      client.dispose();
    });

    await t.test("4409 for a subscription id in use", { timeout: 10000 }, async () => {
      const { client, closedEvent } = closingClient(server, {
        connectionParams: { Authorization: `Bearer ${token}` },
        generateID: () => "same",
      });
      const query = "subscription { securityEvents { type } }";
      client.subscribe({ query }, sink);
      await new Promise((r) => setTimeout(r, 300)); // the first one runs
      client.subscribe({ query }, sink);
      const close = await closedEvent;
      assert.equal(close.code, 4409);
      assert.equal(close.reason, "Subscriber for same already exists");
      client.dispose();
    });

    await t.test("4400 for a message that is not valid", { timeout: 10000 }, async () => {
      const { client, closedEvent } = closingClient(server, {
        connectionParams: { Authorization: `Bearer ${token}` },
        // The client validates each message, then serializes it with this replacer.
        jsonMessageReplacer: (key, value) => (key === "type" && value === "subscribe" ? "subscribe!" : value),
      });
      client.subscribe({ query: "{ me { id } }" }, sink);
      const close = await closedEvent;
      assert.equal(close.code, 4400);
      assert.equal(close.reason, "Invalid message received");
      client.dispose();
    });
  } finally {
    server.stop();
  }
});
