// Runs the example client's flow under Node against a live gqlauth (GQLAUTH_BIN) whose access
// tokens expire after 2 s (plus the 5 s of clock skew the server tolerates), so the client has to
// refresh and retry.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "../../../e2e/server.mjs";
import { runFlow } from "../dist/flow.js";

test("login → me → refresh on TOKEN_EXPIRED → retry → logout", async () => {
  const server = await startServer(process.env.GQLAUTH_BIN || "../../gqlauth", {
    ACCESS_TOKEN_TTL: "2s", ADMIN_USERNAME: "alice", ADMIN_PASSWORD: "correct horse battery",
  });
  try {
    const result = await runFlow(server.base, "alice", "correct horse battery", 7500);
    assert.deepEqual(result, {
      username: "alice",
      meAfterRefresh: "alice",
      refreshes: 1,
      afterLogout: "UNAUTHENTICATED/MISSING_TOKEN",
    });
  } finally {
    server.stop();
  }
});
