// The example flow: login → me → (access token expires) → me again, which refreshes and retries →
// logout → me fails. Run it against a server with a short ACCESS_TOKEN_TTL to see the refresh.
import { GqlAuthClient, GqlAuthError } from "./client.js";

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
