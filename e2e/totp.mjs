// TOTP codes as an authenticator app computes them, for tests that enrol one (RFC 6238 with the
// contract's parameters: SHA-1, six digits, 30-second steps).
import { createHmac } from "node:crypto";

/** Decodes an RFC 4648 base32 secret (as otpauth:// URIs carry it). */
function base32(secret) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of secret.replace(/=+$/, "").toUpperCase()) {
    const v = alphabet.indexOf(c);
    if (v < 0) throw new Error("not base32: " + secret);
    bits += v.toString(2).padStart(5, "0");
  }
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}

/** The current time step. */
export const step = () => Math.floor(Date.now() / 1000 / 30);

/** The code of a secret for a time step (default: now). */
export function totp(secret, counter = step()) {
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac("sha1", base32(secret)).update(msg).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const n = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return String(n).padStart(6, "0");
}

