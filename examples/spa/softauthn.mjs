// A software passkey authenticator for the example's tests under Node, where there is no
// navigator.credentials: it answers PublicKeyCredentialCreationOptionsJSON and
// PublicKeyCredentialRequestOptionsJSON with what a browser's credential.toJSON() gives (ES256
// keys, "none" attestation, user presence and verification, a resident key per RP ID, a
// signature counter), for the origin it is told it runs at. A browser app passes
// navigator.credentials instead (see the client's passkey methods).
import { createHash, createSign, generateKeyPairSync, randomBytes } from "node:crypto";

const b64u = (buf) => Buffer.from(buf).toString("base64url");
const sha256 = (data) => createHash("sha256").update(data).digest();

// Just enough CBOR (RFC 8949) for an attestation object and a COSE key.
function head(major, n) {
  if (n < 24) return Buffer.from([(major << 5) | n]);
  if (n < 0x100) return Buffer.from([(major << 5) | 24, n]);
  if (n < 0x10000) return Buffer.from([(major << 5) | 25, n >> 8, n & 0xff]);
  const b = Buffer.alloc(5);
  b[0] = (major << 5) | 26;
  b.writeUInt32BE(n, 1);
  return b;
}

function cbor(value) {
  if (typeof value === "number") return value >= 0 ? head(0, value) : head(1, -1 - value);
  if (typeof value === "string") return Buffer.concat([head(3, Buffer.byteLength(value)), Buffer.from(value)]);
  if (Buffer.isBuffer(value)) return Buffer.concat([head(2, value.length), value]);
  const entries = value instanceof Map ? [...value] : Object.entries(value);
  return Buffer.concat([head(5, entries.length), ...entries.flatMap(([k, v]) => [cbor(k), cbor(v)])]);
}

const UP = 0x01, UV = 0x04, AT = 0x40;

export class SoftAuthenticator {
  constructor(origin) {
    this.origin = origin;
    this.credentials = []; // {id, rpId, userHandle, privateKey, counter}
  }

  clientData(type, challenge) {
    return Buffer.from(JSON.stringify({ type, challenge, origin: this.origin, crossOrigin: false }));
  }

  /** navigator.credentials.create() and toJSON(), for creation options as JSON. */
  async create(options) {
    const rpId = options.rp.id ?? new URL(this.origin).hostname;
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const jwk = publicKey.export({ format: "jwk" });
    const id = randomBytes(16);
    const cose = cbor(new Map([[1, 2], [3, -7], [-1, 1], [-2, Buffer.from(jwk.x, "base64url")], [-3, Buffer.from(jwk.y, "base64url")]]));
    const counter = Buffer.alloc(4);
    const idLength = Buffer.alloc(2);
    idLength.writeUInt16BE(id.length);
    const authData = Buffer.concat([sha256(rpId), Buffer.from([UP | UV | AT]), counter, Buffer.alloc(16), idLength, id, cose]);
    this.credentials.push({ id, rpId, userHandle: options.user.id, privateKey, counter: 0 });
    const clientDataJSON = this.clientData("webauthn.create", options.challenge);
    return {
      id: b64u(id), rawId: b64u(id), type: "public-key", authenticatorAttachment: "platform", clientExtensionResults: {},
      response: {
        clientDataJSON: b64u(clientDataJSON),
        attestationObject: b64u(cbor({ fmt: "none", attStmt: {}, authData })),
        transports: ["internal"],
      },
    };
  }

  /** navigator.credentials.get() and toJSON(), for request options as JSON (discoverable when allowCredentials is empty). */
  async get(options) {
    const rpId = options.rpId ?? new URL(this.origin).hostname;
    const allowed = (options.allowCredentials ?? []).map((c) => c.id);
    const cred = this.credentials.find((c) => c.rpId === rpId && (allowed.length === 0 || allowed.includes(b64u(c.id))));
    if (!cred) throw new Error("NotAllowedError: no passkey for " + rpId);
    cred.counter++;
    const counter = Buffer.alloc(4);
    counter.writeUInt32BE(cred.counter);
    const authenticatorData = Buffer.concat([sha256(rpId), Buffer.from([UP | UV]), counter]);
    const clientDataJSON = this.clientData("webauthn.get", options.challenge);
    const signature = createSign("SHA256").update(Buffer.concat([authenticatorData, sha256(clientDataJSON)])).sign(cred.privateKey);
    return {
      id: b64u(cred.id), rawId: b64u(cred.id), type: "public-key", authenticatorAttachment: "platform", clientExtensionResults: {},
      response: {
        clientDataJSON: b64u(clientDataJSON), authenticatorData: b64u(authenticatorData),
        signature: b64u(signature), userHandle: cred.userHandle,
      },
    };
  }
}
