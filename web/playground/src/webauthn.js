// The browser's half of the passkey ceremonies (WebAuthn Level 3): the server's options arrive as
// PublicKeyCredential{Creation,Request}OptionsJSON and the credential goes back as its toJSON().

function optionsJSON(options) {
  const o = typeof options === "string" ? JSON.parse(options) : options;
  return o && o.publicKey ? o.publicKey : o; // tolerate the {publicKey: …} wrapping of some libraries
}

function supported(method) {
  if (typeof PublicKeyCredential === "undefined" || typeof PublicKeyCredential[method] !== "function") {
    throw new Error(`this browser has no PublicKeyCredential.${method}: passkeys need a current browser`);
  }
}

/** Creates a passkey for beginPasskeyRegistration's options; returns the credential as JSON. */
export async function createPasskey(options) {
  supported("parseCreationOptionsFromJSON");
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(optionsJSON(options));
  const credential = await navigator.credentials.create({ publicKey });
  return credential.toJSON();
}

/** Asks for an assertion for beginPasskeySignIn's or beginPasskeyVerification's options. */
export async function getPasskey(options) {
  supported("parseRequestOptionsFromJSON");
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(optionsJSON(options));
  const credential = await navigator.credentials.get({ publicKey });
  return credential.toJSON();
}
