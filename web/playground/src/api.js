// The playground's GraphQL calls outside GraphiQL: one POST per operation, errors thrown with the
// server's extensions (code, reason), and the server's features read from its SDL so that a
// control appears only when the server has the field behind it.

export const endpoint = "/query";

export async function post(query, variables, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const res = await fetch(endpoint, { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  return res.json();
}

/** A GraphQL error as gqlauth sends it; `reason` is extensions.reason on auth failures. */
export class GqlError extends Error {
  constructor(message, code, reason) {
    super(reason ? `${message} (${reason})` : message);
    this.code = code;
    this.reason = reason;
  }
}

export function firstError(result) {
  const e = result.errors && result.errors[0];
  if (!e) return null;
  const ext = e.extensions || {};
  return new GqlError(e.message, ext.code, ext.reason);
}

/** Runs one operation and returns its data, or throws its first error as a GqlError. */
export async function gql(query, variables, token) {
  const result = await post(query, variables, token);
  const err = firstError(result);
  if (err) throw err;
  return result.data;
}

/**
 * Reads the server's schema (GET /schema.graphql, served whether or not introspection is on) and
 * returns has(name): whether a field or argument of that name is declared. A server without a
 * feature (say, sign-in codes) then shows no button for it, instead of one that fails.
 */
export async function loadFeatures() {
  const sdl = await fetch("/schema.graphql").then((r) => (r.ok ? r.text() : "")).catch(() => "");
  return (name) => new RegExp(`\\b${name}\\s*[(:]`).test(sdl);
}

/** The fields the playground keeps of a sign-in; mfa adds the level and the second-step flag. */
export function payloadFields(has) {
  const user = "user { id username role email" + (has("emailVerified") ? " emailVerified" : "") + " }";
  return "accessToken expiresIn refreshToken " + user + (has("mfaRequired") ? " aal mfaRequired" : "");
}
