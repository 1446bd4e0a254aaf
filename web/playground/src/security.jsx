// Second factors in the playground (CONTRACT §12): the second step of a sign-in, proving it is
// you again for sensitive changes (REAUTHENTICATION_REQUIRED), and a security panel to enrol and
// remove an authenticator app (TOTP, with its QR code drawn here) and passkeys, and to renew
// recovery codes. Every call goes through `call`, which sends the current access token.
import React, { useCallback, useEffect, useState } from "react";
import { QRCode } from "./qr.jsx";
import { createPasskey, getPasskey } from "./webauthn.js";

// passkeyAssertion runs one assertion ceremony: begin (a mutation named `begin`) gives the options,
// the browser's authenticator answers, finish (named `finish`) returns an AuthPayload.
async function passkeyAssertion(call, payload, begin, finish) {
  const cap = (name) => name[0].toUpperCase() + name.slice(1);
  const challenge = (await call(`mutation ${cap(begin)} { ${begin} { challengeId options } }`))[begin];
  const credential = await getPasskey(challenge.options);
  const data = await call(
    `mutation ${cap(finish)}($c: ID!, $cred: JSON!) { ${finish}(challengeId: $c, credential: $cred) { ${payload} } }`,
    { c: challenge.challengeId, cred: credential },
  );
  return data[finish];
}

/** Raises the session with a passkey (step-up); returns the new AuthPayload. */
export const passkeyStepUp = (call, payload) => passkeyAssertion(call, payload, "beginPasskeyVerification", "finishPasskeyVerification");

/** Signs in with a discoverable passkey alone; returns the AuthPayload. */
export const passkeySignIn = (call, payload) => passkeyAssertion(call, payload, "beginPasskeySignIn", "finishPasskeySignIn");

/** Raises the session with a TOTP or recovery code; returns the new AuthPayload. */
export async function codeStepUp(call, payload, code) {
  const data = await call(`mutation VerifyMfa($c: String!) { verifyMfa(code: $c) { ${payload} } }`, { c: code.trim() });
  return data.verifyMfa;
}

// A code field and the buttons of a step-up, shared by the second step of a sign-in and the
// re-check of a sensitive change; `children` come first.
function StepUp({ has, call, payload, onSession, onError, idPrefix, children }) {
  const [code, setCode] = useState("");
  const [busy, setBusy] = useState(false);
  const run = async (fn) => {
    setBusy(true);
    onError(null);
    try {
      onSession(await fn());
      setCode("");
    } catch (e) {
      onError(e.message || String(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="step-up" onSubmit={(e) => { e.preventDefault(); run(() => codeStepUp(call, payload, code)); }}>
      {children}
      <input id={`${idPrefix}-code`} autoComplete="one-time-code" placeholder="authenticator or recovery code" value={code} onChange={(e) => setCode(e.target.value)} />
      <button id={`${idPrefix}-verify`} type="submit" disabled={busy || !code.trim()}>Verify</button>
      {has("beginPasskeyVerification") && (
        <button id={`${idPrefix}-passkey`} type="button" disabled={busy} onClick={() => run(() => passkeyStepUp(call, payload))}>Use a passkey</button>
      )}
    </form>
  );
}

/** The second step of a sign-in (mfaRequired): a code or a passkey raises the session to AAL2. */
export function SecondStep(props) {
  return (
    <StepUp {...props} idPrefix="mfa">
      <span id="mfa-required">Second step: </span>
    </StepUp>
  );
}

/**
 * The re-check that an operation answered REAUTHENTICATION_REQUIRED: the password
 * (reauthenticate), a code or a passkey renew the session's recent authentication, and the
 * operation is retried.
 */
export function ReauthPrompt({ has, call, payload, onSession, onCancel }) {
  const [password, setPassword] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const withPassword = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const data = await call(`mutation Reauthenticate($p: String!) { reauthenticate(password: $p) { ${payload} } }`, { p: password });
      setPassword("");
      onSession(data.reauthenticate);
    } catch (err) {
      setError(err.message || String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div id="reauth-panel" className="drawer">
      <b>Confirm it is you</b> <span className="hint">This change needs a recent sign-in.</span>
      <div className="row">
        {has("reauthenticate") && (
          <form onSubmit={withPassword}>
            <input id="reauth-password" type="password" autoComplete="current-password" placeholder="password" value={password} onChange={(e) => setPassword(e.target.value)} />
            <button id="reauth" type="submit" disabled={busy || !password}>Confirm</button>
          </form>
        )}
        <StepUp has={has} call={call} payload={payload} onSession={onSession} onError={setError} idPrefix="reauth">
          <span className="hint">or</span>
        </StepUp>
        <button type="button" onClick={onCancel}>Cancel</button>
      </div>
      {error && <span className="error">{error}</span>}
    </div>
  );
}

const MFA_STATUS = "{ me { mfa { totp recoveryCodesLeft passkeys { id name createdAt lastUsedAt } } } }";

/**
 * The security panel: the user's factors and what can be done with them. `guarded(fn)` runs fn
 * and, when the server asks for a recent sign-in first, asks for it and runs fn again.
 * `onEnrolled` is called after a factor is added (the session's level may have risen).
 */
export function SecurityPanel({ has, call, guarded, onEnrolled }) {
  const [status, setStatus] = useState(null);
  const [error, setError] = useState(null);
  const [enrollment, setEnrollment] = useState(null); // {secret, uri} while enrolling TOTP
  const [code, setCode] = useState("");
  const [codes, setCodes] = useState(null); // recovery codes, shown once
  const [passkeyName, setPasskeyName] = useState("");
  const [busy, setBusy] = useState(false);

  // Unreadable status (say, a role that must enrol first and may do nothing else): the controls
  // still show, as for a user without factors, next to the error.
  const load = useCallback(() => {
    call(MFA_STATUS).then((d) => setStatus(d.me.mfa), (e) => {
      setError(e.message);
      setStatus((s) => s || { totp: false, passkeys: [], recoveryCodesLeft: 0 });
    });
  }, [call]);
  useEffect(load, [load]);

  const act = async (fn) => {
    setBusy(true);
    setError(null);
    try {
      await guarded(fn);
    } catch (e) {
      setError(e.message || String(e));
    } finally {
      setBusy(false);
      load();
    }
  };

  const enrollTotp = () => act(async () => {
    setEnrollment((await call("mutation EnrollTotp { enrollTotp { secret uri } }")).enrollTotp);
  });
  const confirmTotp = (e) => {
    e.preventDefault();
    act(async () => {
      const data = await call("mutation ConfirmTotp($c: String!) { confirmTotp(code: $c) }", { c: code.trim() });
      setEnrollment(null);
      setCode("");
      if (data.confirmTotp.length > 0) setCodes(data.confirmTotp);
      await onEnrolled();
    });
  };
  const removeTotp = () => act(() => call("mutation RemoveTotp { removeTotp }"));
  const regenerate = () => act(async () => {
    setCodes((await call("mutation RegenerateRecoveryCodes { regenerateRecoveryCodes }")).regenerateRecoveryCodes);
  });
  const addPasskey = (e) => {
    e.preventDefault();
    act(async () => {
      const begin = (await call("mutation BeginPasskeyRegistration { beginPasskeyRegistration { challengeId options } }")).beginPasskeyRegistration;
      const credential = await createPasskey(begin.options);
      await call(
        "mutation FinishPasskeyRegistration($c: ID!, $n: String!, $cred: JSON!) { finishPasskeyRegistration(challengeId: $c, name: $n, credential: $cred) { id name } }",
        { c: begin.challengeId, n: passkeyName.trim() || "passkey", cred: credential },
      );
      setPasskeyName("");
      await onEnrolled();
    });
  };
  const removePasskey = (id) => act(() => call("mutation RemovePasskey($id: ID!) { removePasskey(id: $id) }", { id }));

  return (
    <div id="security-panel" className="drawer">
      <b>Security</b>
      {error && <span id="security-error" className="error"> {error}</span>}
      {codes && (
        <div id="recovery-codes-box" className="notice">
          Recovery codes, shown this once: keep them somewhere safe. Each works once instead of a code from the app.
          <ol id="recovery-codes">{codes.map((c) => <li key={c}><code>{c}</code></li>)}</ol>
          <button id="recovery-codes-done" type="button" onClick={() => setCodes(null)}>I have saved them</button>
        </div>
      )}
      {status && has("enrollTotp") && (
        <div className="row">
          Authenticator app: <b id="totp-status">{status.totp ? "on" : "off"}</b>
          {!status.totp && !enrollment && <button id="enroll-totp" type="button" disabled={busy} onClick={enrollTotp}>Set up</button>}
          {status.totp && <button id="remove-totp" type="button" disabled={busy} onClick={removeTotp}>Remove</button>}
          {" · "}Recovery codes left: <b id="recovery-codes-left">{status.recoveryCodesLeft}</b>
          {(status.totp || status.passkeys.length > 0) && (
            <button id="regenerate-codes" type="button" disabled={busy} onClick={regenerate}>New recovery codes</button>
          )}
        </div>
      )}
      {enrollment && (
        <form className="row enrollment" onSubmit={confirmTotp}>
          <QRCode id="totp-qr" text={enrollment.uri} />
          <div>
            Scan this with an authenticator app, or type the key: <code id="totp-secret">{enrollment.secret}</code>
            <div className="row">
              <input id="totp-code" autoComplete="one-time-code" inputMode="numeric" placeholder="6-digit code" value={code} onChange={(e) => setCode(e.target.value)} />
              <button id="confirm-totp" type="submit" disabled={busy || !code.trim()}>Turn on</button>
              <button type="button" onClick={() => setEnrollment(null)}>Cancel</button>
            </div>
          </div>
        </form>
      )}
      {status && has("beginPasskeyRegistration") && (
        <div className="row">
          Passkeys:
          {status.passkeys.length === 0 && <span className="hint">none</span>}
          {status.passkeys.map((p) => (
            <span key={p.id} className="passkey" data-passkey={p.name}>
              {p.name} <span className="hint">added {new Date(p.createdAt).toLocaleDateString()}{p.lastUsedAt ? `, used ${new Date(p.lastUsedAt).toLocaleString()}` : ""}</span>
              {has("removePasskey") && <button type="button" disabled={busy} onClick={() => removePasskey(p.id)}>Remove</button>}
            </span>
          ))}
          <form onSubmit={addPasskey}>
            <input id="passkey-name" placeholder="name (e.g. laptop)" value={passkeyName} onChange={(e) => setPasskeyName(e.target.value)} />
            <button id="add-passkey" type="submit" disabled={busy}>Add a passkey</button>
          </form>
        </div>
      )}
    </div>
  );
}
