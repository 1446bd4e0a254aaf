// Mail in the playground: the development inbox (GET /dev/mail, shown only when the server has
// it on and this browser is on the server's own machine), and the links mailed by the server,
// which land on this page as <page>#type=<verify_email|reset_password>&token=<token>.
import React, { useEffect, useState } from "react";

/**
 * takeMailLink reads a mailed link's fragment and removes it from the address bar (and so from
 * the history) at once, before anything is done with the token. It returns {type, token} or null.
 * Opening a link does nothing by itself: the page calls the mutation (verify on arrival, as the
 * contract expects; reset only once the user has typed a new password).
 */
export function takeMailLink() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const type = params.get("type");
  const token = params.get("token");
  if (!token) return null;
  history.replaceState(null, "", location.pathname + location.search);
  return type === "verify_email" || type === "reset_password" ? { type, token } : null;
}

/** The development inbox: null while unknown, false when the server has none (404), or a list. */
async function readInbox() {
  try {
    const res = await fetch("/dev/mail", { cache: "no-store" });
    if (!res.ok) return false;
    const body = await res.json();
    return Array.isArray(body) ? body : false;
  } catch {
    return false;
  }
}

/** useInbox polls the inbox every 2 s while `open`; it stays false when the server has none. */
export function useInbox(open) {
  const [inbox, setInbox] = useState(null);
  useEffect(() => {
    let stopped = false;
    const load = () => readInbox().then((m) => !stopped && setInbox(m));
    load();
    if (!open) return () => { stopped = true; };
    const timer = setInterval(load, 2000);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [open]);
  return inbox;
}

// Text with its http(s) URLs as links; anything else stays text (React escapes it).
function Linkified({ text }) {
  const parts = text.split(/(https?:\/\/[^\s<>"]+)/g);
  return parts.map((part, i) =>
    i % 2 === 1 ? <a key={i} className="mail-link" href={part}>{part}</a> : <React.Fragment key={i}>{part}</React.Fragment>,
  );
}

export function MailPanel({ inbox }) {
  return (
    <div id="mail-panel" className="drawer">
      <b>Development inbox</b> <span className="hint">(GET /dev/mail: what the server would have sent; links open here)</span>
      {inbox.length === 0 && <p className="hint">No mail yet.</p>}
      {inbox.map((m, i) => (
        <details key={m.at + i} className="mail-message" open={i === 0}>
          <summary>
            <span className="mail-to">{m.to}</span> — <span className="mail-subject">{m.subject}</span>{" "}
            <span className="hint">{new Date(m.at).toLocaleString()}</span>
          </summary>
          <pre className="mail-text"><Linkified text={m.text} /></pre>
        </details>
      ))}
    </div>
  );
}

/** The form a reset link opens: nothing is changed until the user submits a new password. */
export function ResetPasswordForm({ onSubmit, onCancel }) {
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    try {
      await onSubmit(password);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form id="reset-panel" className="drawer row" onSubmit={submit}>
      <b>Choose a new password</b>
      <input id="new-password" type="password" autoComplete="new-password" placeholder="new password" value={password} onChange={(e) => setPassword(e.target.value)} />
      <button id="reset-password" type="submit" disabled={busy || !password}>Set password</button>
      <button type="button" onClick={onCancel}>Cancel</button>
      <span className="hint">Setting it signs out every session of the account.</span>
    </form>
  );
}
