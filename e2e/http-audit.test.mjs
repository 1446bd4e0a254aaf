// The GraphQL-over-HTTP specification's own audit suite (graphql-http's serverAudits), unmodified,
// against a live gqlauth: every audit, MUST, SHOULD and MAY alike, in both response media types
// (application/json and application/graphql-response+json), must come out "ok" — a warning fails.
import { test } from "node:test";
import assert from "node:assert/strict";
import { serverAudits } from "graphql-http";
import { startServer } from "./server.mjs";

test("graphql-http serverAudits: every item ok", async () => {
  const server = await startServer(process.env.GQLAUTH_BIN || "../gqlauth");
  try {
    const audits = serverAudits({ url: server.base + "/query" });
    const failures = [];
    const count = {};
    for (const audit of audits) {
      const result = await audit.fn();
      count[result.status] = (count[result.status] || 0) + 1;
      if (result.status !== "ok") failures.push(`${result.status} ${audit.id} ${audit.name}: ${result.reason}`);
    }
    console.log(`graphql-http ${audits.length} audits:`, count);
    assert.deepEqual(failures, []);
    assert.ok(audits.length >= 60, `only ${audits.length} audits ran`);
  } finally {
    server.stop();
  }
});
