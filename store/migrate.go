package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/migrate"
)

// migrations is the schema's history. Never edit an applied migration: append a new one.
// Each statement is written once for both dialects; %[1]s stands for the timestamp type, %[2]s
// for an auto-incrementing primary key and %[3]s for a byte string.
var migrations = []struct{ name, comment, sql string }{
	{"20261122000001", "users_sessions_settings", `
CREATE TABLE users (
	id            TEXT PRIMARY KEY,
	username      TEXT NOT NULL,
	email         TEXT,
	role          TEXT NOT NULL,
	disabled      BOOLEAN NOT NULL DEFAULT FALSE,
	password_hash TEXT NOT NULL,
	created_at    %[1]s NOT NULL
);
-- Usernames and emails are stored as given and unique ignoring case.
CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE TABLE sessions (
	id            TEXT PRIMARY KEY,
	user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	refresh_hash  TEXT NOT NULL,
	previous_hash TEXT,
	rotated_at    %[1]s,
	created_at    %[1]s NOT NULL,
	last_used_at  %[1]s NOT NULL,
	expires_at    %[1]s NOT NULL,
	revoked_at    %[1]s,
	user_agent    TEXT,
	client_id     TEXT
);
CREATE UNIQUE INDEX sessions_refresh_hash_key ON sessions (refresh_hash);
CREATE INDEX sessions_previous_hash_idx ON sessions (previous_hash);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
-- Server-generated secrets (the JWT key of the embedded database).
CREATE TABLE settings (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
`},
	{"20261122000002", "api_keys", `
CREATE TABLE api_keys (
	id           TEXT PRIMARY KEY,
	user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	name         TEXT NOT NULL,
	prefix       TEXT NOT NULL,
	secret_hash  TEXT NOT NULL,
	role         TEXT NOT NULL,
	created_at   %[1]s NOT NULL,
	last_used_at %[1]s,
	expires_at   %[1]s NOT NULL,
	revoked_at   %[1]s
);
CREATE UNIQUE INDEX api_keys_secret_hash_key ON api_keys (secret_hash);
CREATE INDEX api_keys_user_id_idx ON api_keys (user_id);
`},
	{"20261202000001", "session_generation", `
-- How many times the session's refresh token was rotated: how far back a replayed token may lie.
ALTER TABLE sessions ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
`},
	{"20261202000002", "audit_events", `
-- No foreign keys: the record of an event outlives what it is about. The id is a sequence that
-- is never reused (AUTOINCREMENT on SQLite), so it orders events and serves as the page cursor.
CREATE TABLE audit_events (
	id         %[2]s,
	at         %[1]s NOT NULL,
	type       TEXT NOT NULL,
	actor_id   TEXT,
	user_id    TEXT,
	session_id TEXT,
	ip         TEXT,
	user_agent TEXT,
	detail     TEXT
);
CREATE INDEX audit_events_user_id_idx ON audit_events (user_id, id);
CREATE INDEX audit_events_at_idx ON audit_events (at);
`},
	{"20261202000003", "signing_keys", `
-- Asymmetric keys that sign access tokens (JWT_ALG other than HS256). The private key is
-- encrypted by the server (AES-GCM under a key derived from JWT_SECRET) before it gets here.
CREATE TABLE signing_keys (
	kid          TEXT PRIMARY KEY,
	alg          TEXT NOT NULL,
	public_key   %[3]s NOT NULL,
	private_key  %[3]s NOT NULL,
	created_at   %[1]s NOT NULL,
	activates_at %[1]s NOT NULL,
	revoked_at   %[1]s
);
`},
	{"20261203000001", "identities", `
-- Accounts at OpenID Connect providers linked to users; at most one per provider and user.
CREATE TABLE identities (
	provider  TEXT NOT NULL,
	subject   TEXT NOT NULL,
	user_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	email     TEXT,
	linked_at %[1]s NOT NULL,
	PRIMARY KEY (provider, subject)
);
CREATE UNIQUE INDEX identities_user_provider_key ON identities (user_id, provider);
-- Sign-ins through a provider between start and callback (single use, ten minutes).
CREATE TABLE sign_in_flows (
	state_hash      TEXT PRIMARY KEY,
	provider        TEXT NOT NULL,
	nonce           TEXT NOT NULL,
	verifier        TEXT NOT NULL,
	redirect_to     TEXT NOT NULL,
	code_challenge  TEXT NOT NULL,
	link_user_id    TEXT,
	link_session_id TEXT,
	created_at      %[1]s NOT NULL,
	expires_at      %[1]s NOT NULL
);
CREATE INDEX sign_in_flows_expires_at_idx ON sign_in_flows (expires_at);
-- One-time codes that finished sign-ins hand the SPA (single use, sixty seconds).
CREATE TABLE auth_codes (
	code_hash      TEXT PRIMARY KEY,
	user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	provider       TEXT NOT NULL,
	code_challenge TEXT NOT NULL,
	created_at     %[1]s NOT NULL,
	expires_at     %[1]s NOT NULL
);
CREATE INDEX auth_codes_expires_at_idx ON auth_codes (expires_at);
`},
	{"20261210000001", "link_codes_email_verified_at", `
-- A link through a provider ends in a one-time code too, redeemable only by the session that
-- started it: the session, and the identity the code links (sign-in codes leave these null).
ALTER TABLE auth_codes ADD COLUMN link_session_id TEXT;
ALTER TABLE auth_codes ADD COLUMN subject TEXT;
ALTER TABLE auth_codes ADD COLUMN email TEXT;
-- When this server verified the user's address (null: never). Linking a provider identity by
-- email trusts only such addresses.
ALTER TABLE users ADD COLUMN email_verified_at %[1]s;
`},
	{"20261215000001", "dev_mail", `
-- The development inbox (MAIL_DEV_INBOX, GET /dev/mail): delivered messages in the clear, the
-- newest 200 kept, so that every instance shows the same inbox. Empty unless the inbox is on.
CREATE TABLE dev_mail (
	id        %[2]s,
	to_addr   TEXT NOT NULL,
	subject   TEXT NOT NULL,
	text_body TEXT NOT NULL,
	html_body TEXT NOT NULL,
	at        %[1]s NOT NULL
);
`},
	{"20261215000002", "mail_tokens", `
-- Tokens and codes mailed to an account (verify_email, …): only their HMAC under a server key,
-- single use, one live per account and purpose (a newer one deletes the older).
CREATE TABLE mail_tokens (
	token_hash TEXT PRIMARY KEY,
	user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	purpose    TEXT NOT NULL,
	email      TEXT NOT NULL,
	created_at %[1]s NOT NULL,
	expires_at %[1]s NOT NULL
);
CREATE INDEX mail_tokens_user_purpose_idx ON mail_tokens (user_id, purpose);
CREATE INDEX mail_tokens_expires_at_idx ON mail_tokens (expires_at);
`},
	{"20261216000001", "sign_in_codes", `
-- Six-digit sign-in codes (requestSignInCode), one live per address (a newer one replaces the
-- older): only their HMAC under a server key, with the address and purpose in the MAC. The
-- address may have no account yet (signInWithCode then signs up). tries counts wrong codes; the
-- fifth kills the code.
CREATE TABLE sign_in_codes (
	email_key  TEXT PRIMARY KEY,
	email      TEXT NOT NULL,
	code_hash  TEXT NOT NULL,
	tries      INTEGER NOT NULL DEFAULT 0,
	created_at %[1]s NOT NULL,
	expires_at %[1]s NOT NULL
);
CREATE INDEX sign_in_codes_expires_at_idx ON sign_in_codes (expires_at);
`},
	{"20261216000002", "mail_token_purpose_key", `
-- One token per account and purpose, enforced by a unique key, so that a newer token replaces the
-- older in one statement (INSERT … ON CONFLICT) even when requests race. Older duplicates are
-- deleted first, keeping the newest.
DELETE FROM mail_tokens WHERE EXISTS (
	SELECT 1 FROM mail_tokens AS newer WHERE newer.user_id = mail_tokens.user_id
	AND newer.purpose = mail_tokens.purpose
	AND (newer.created_at > mail_tokens.created_at OR (newer.created_at = mail_tokens.created_at AND newer.token_hash > mail_tokens.token_hash))
);
DROP INDEX mail_tokens_user_purpose_idx;
CREATE UNIQUE INDEX mail_tokens_user_purpose_key ON mail_tokens (user_id, purpose);
`},
	{"20261216000003", "sign_in_code_failures", `
-- Wrong sign-in codes per address across codes: failures in the window that began at
-- failures_since (store.MaxCodeFailures per store.CodeFailureWindow). A new code keeps them.
ALTER TABLE sign_in_codes ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sign_in_codes ADD COLUMN failures_since %[1]s;
`},
	{"20261217000001", "mfa", `
-- The session's assurance level (AAL1, AAL2: it only rises), the RFC 8176 methods it used
-- (space-separated) and when it last signed in or stepped up (REAUTH_WINDOW), read by the
-- principal query with the rest of the session row.
ALTER TABLE sessions ADD COLUMN aal TEXT NOT NULL DEFAULT 'AAL1';
ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT 'pwd';
ALTER TABLE sessions ADD COLUMN auth_time %[1]s;
UPDATE sessions SET auth_time = created_at;
-- How many second factors the user has (a confirmed TOTP, each passkey): kept by every factor
-- change in its own transaction, so that the principal query knows "the user has a second
-- factor" from the user row it loads anyway.
ALTER TABLE users ADD COLUMN mfa_factors INTEGER NOT NULL DEFAULT 0;
-- At most one TOTP secret per user: pending until confirmed. The secret is sealed (AES-GCM under
-- a key derived from JWT_SECRET). last_step is the latest time step accepted (moved only forward,
-- by a conditional update), so no step is ever accepted twice.
CREATE TABLE totp_factors (
	user_id      TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
	secret       %[3]s NOT NULL,
	created_at   %[1]s NOT NULL,
	confirmed_at %[1]s,
	last_step    BIGINT NOT NULL DEFAULT 0
);
-- Recovery codes: only an HMAC of each (under a key derived from JWT_SECRET), single use.
CREATE TABLE recovery_codes (
	user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	code_hash  TEXT NOT NULL,
	created_at %[1]s NOT NULL,
	used_at    %[1]s,
	PRIMARY KEY (user_id, code_hash)
);
-- Passkeys (WebAuthn credentials): what go-webauthn's webauthn.Credential holds, and a name.
CREATE TABLE webauthn_credentials (
	id               TEXT PRIMARY KEY,
	user_id          TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	name             TEXT NOT NULL,
	created_at       %[1]s NOT NULL,
	last_used_at     %[1]s,
	credential_id    %[3]s NOT NULL,
	public_key       %[3]s NOT NULL,
	attestation_type TEXT NOT NULL DEFAULT '',
	transports       TEXT NOT NULL DEFAULT '',
	aaguid           %[3]s,
	sign_count       BIGINT NOT NULL DEFAULT 0,
	clone_warning    BOOLEAN NOT NULL DEFAULT FALSE,
	attachment       TEXT NOT NULL DEFAULT '',
	user_present     BOOLEAN NOT NULL DEFAULT FALSE,
	user_verified    BOOLEAN NOT NULL DEFAULT FALSE,
	backup_eligible  BOOLEAN NOT NULL DEFAULT FALSE,
	backup_state     BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE UNIQUE INDEX webauthn_credentials_credential_id_key ON webauthn_credentials (credential_id);
CREATE INDEX webauthn_credentials_user_id_idx ON webauthn_credentials (user_id);
`},
	{"20261217000002", "api_key_aal", `
-- The assurance level of the session that minted each API key (§12): a key acts at most at this
-- level, so a key minted at AAL1 before the owner's first factor never acts at AAL2. Keys minted
-- before this column existed are taken at AAL1.
ALTER TABLE api_keys ADD COLUMN aal TEXT NOT NULL DEFAULT 'AAL1';
`},
	{"20261217000003", "totp_enrolment_session", `
-- The session that started a pending TOTP enrolment (§12): only it confirms the secret, and
-- another live session of the user cannot replace it. NULL for enrolments from before.
ALTER TABLE totp_factors ADD COLUMN session_id TEXT;
`},
	{"20261218000001", "webauthn_challenges", `
-- Begun passkey ceremonies (§12): go-webauthn's session data (JSON) until the ceremony is
-- finished — taking a row deletes it, so each works once, on whichever instance finishes it — or
-- expires. user_id and session_id bind a registration or step-up to the account and session
-- that began it; a sign-in has neither.
CREATE TABLE webauthn_challenges (
	id           TEXT PRIMARY KEY,
	kind         TEXT NOT NULL,
	user_id      TEXT REFERENCES users (id) ON DELETE CASCADE,
	session_id   TEXT,
	session_data TEXT NOT NULL,
	created_at   %[1]s NOT NULL,
	expires_at   %[1]s NOT NULL
);
CREATE INDEX webauthn_challenges_expires_at_idx ON webauthn_challenges (expires_at);
CREATE INDEX webauthn_challenges_user_id_idx ON webauthn_challenges (user_id);
`},
	{"20261219000001", "principal_cache", postgresOnly + `
-- The principal cache (docs/principal-cache.md). Every change to a row a principal is read from
-- announces itself on the schema's cache channel, whoever makes it; a transaction that changed
-- one ends with a numbered barrier (gqlauth_cache_commit, called by store.DB.Transact) and waits
-- until every instance holding a live lease has acknowledged that barrier.
CREATE TABLE cache_leases (
	instance_id TEXT PRIMARY KEY,
	expires_at  TIMESTAMPTZ NOT NULL,
	applied     BIGINT NOT NULL DEFAULT 0
);
CREATE SEQUENCE cache_barrier_seq;
CREATE FUNCTION gqlauth_cache_channel() RETURNS text LANGUAGE sql STABLE AS $$
	SELECT 'gqlauth_cache_' || current_schema()
$$;
CREATE FUNCTION gqlauth_cache_invalidate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_LEVEL = 'STATEMENT' THEN
		PERFORM pg_notify(gqlauth_cache_channel(), '* ' || TG_TABLE_NAME);
	ELSE
		PERFORM pg_notify(gqlauth_cache_channel(), TG_ARGV[0] || ' ' || OLD.id);
	END IF;
	PERFORM set_config('gqlauth.cache_dirty', 'on', true);
	RETURN NULL;
END
$$;
-- Barriers commit in the order of their numbers: the lock is held until the commit. A revoker's
-- barrier ("b n") is acknowledged by every instance; an instance's own heartbeat ("h n id") only
-- by that instance.
CREATE FUNCTION gqlauth_cache_barrier(heartbeat_of text DEFAULT '') RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
	PERFORM pg_advisory_xact_lock(hashtext('gqlauth.cache.' || current_schema()));
	n := nextval('cache_barrier_seq');
	IF heartbeat_of = '' THEN
		PERFORM pg_notify(gqlauth_cache_channel(), 'b ' || n);
	ELSE
		PERFORM pg_notify(gqlauth_cache_channel(), 'h ' || n || ' ' || heartbeat_of);
	END IF;
	PERFORM set_config('gqlauth.cache_dirty', '', true);
	RETURN n;
END
$$;
CREATE FUNCTION gqlauth_cache_commit() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
	IF coalesce(current_setting('gqlauth.cache_dirty', true), '') = 'on' THEN
		RETURN gqlauth_cache_barrier();
	END IF;
	RETURN 0;
END
$$;
CREATE TRIGGER sessions_cache_update AFTER UPDATE ON sessions FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION gqlauth_cache_invalidate('s');
CREATE TRIGGER sessions_cache_delete AFTER DELETE ON sessions FOR EACH ROW EXECUTE FUNCTION gqlauth_cache_invalidate('s');
CREATE TRIGGER sessions_cache_truncate AFTER TRUNCATE ON sessions FOR EACH STATEMENT EXECUTE FUNCTION gqlauth_cache_invalidate();
CREATE TRIGGER users_cache_update AFTER UPDATE ON users FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION gqlauth_cache_invalidate('u');
CREATE TRIGGER users_cache_delete AFTER DELETE ON users FOR EACH ROW EXECUTE FUNCTION gqlauth_cache_invalidate('u');
CREATE TRIGGER users_cache_truncate AFTER TRUNCATE ON users FOR EACH STATEMENT EXECUTE FUNCTION gqlauth_cache_invalidate();
CREATE TRIGGER api_keys_cache_update AFTER UPDATE ON api_keys FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION gqlauth_cache_invalidate('k');
CREATE TRIGGER api_keys_cache_delete AFTER DELETE ON api_keys FOR EACH ROW EXECUTE FUNCTION gqlauth_cache_invalidate('k');
CREATE TRIGGER api_keys_cache_truncate AFTER TRUNCATE ON api_keys FOR EACH STATEMENT EXECUTE FUNCTION gqlauth_cache_invalidate();
`},
	{"20261219000002", "principal_cache_hardened", postgresOnly + `
-- The principal cache's review (docs/principal-cache.md, "Faults found and fixed").
-- 1. The channel is named after the schema of the table written, not the writer's search_path,
--    and the trigger function calls only pg_catalog, schema-qualified: a write from a session
--    whose search_path names another schema first is announced on this schema's channel.
CREATE OR REPLACE FUNCTION gqlauth_cache_invalidate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_LEVEL = 'STATEMENT' THEN
		PERFORM pg_catalog.pg_notify('gqlauth_cache_' || TG_TABLE_SCHEMA, '* ' || TG_TABLE_NAME);
	ELSE
		PERFORM pg_catalog.pg_notify('gqlauth_cache_' || TG_TABLE_SCHEMA, TG_ARGV[0] || ' ' || OLD.id);
	END IF;
	PERFORM pg_catalog.set_config('gqlauth.cache_dirty', 'on', true);
	RETURN NULL;
END
$$;
-- 2. The barrier is drawn by its own autocommit statement, after the change it follows has
--    committed (store.DB.Transact), so it no longer serialises on an exclusive lock held until a
--    client's COMMIT. It takes the lock shared, and only for its own statement, so that it still
--    orders after a barrier of an older instance drawn inside its transaction
--    (gqlauth_cache_commit, kept for them); lock_timeout bounds the wait for such a one.
CREATE OR REPLACE FUNCTION gqlauth_cache_barrier(heartbeat_of text DEFAULT '') RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
	PERFORM set_config('lock_timeout', '2s', true);
	PERFORM pg_advisory_xact_lock_shared(hashtext('gqlauth.cache.' || current_schema()));
	n := nextval('cache_barrier_seq');
	IF heartbeat_of = '' THEN
		PERFORM pg_notify(gqlauth_cache_channel(), 'b ' || n);
	ELSE
		PERFORM pg_notify(gqlauth_cache_channel(), 'h ' || n || ' ' || heartbeat_of);
	END IF;
	RETURN n;
END
$$;
CREATE OR REPLACE FUNCTION gqlauth_cache_commit() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
	IF coalesce(current_setting('gqlauth.cache_dirty', true), '') = 'on' THEN
		PERFORM set_config('lock_timeout', '2s', true);
		PERFORM set_config('idle_in_transaction_session_timeout', '5s', true);
		PERFORM pg_advisory_xact_lock(hashtext('gqlauth.cache.' || current_schema()));
		n := nextval('cache_barrier_seq');
		PERFORM pg_notify(gqlauth_cache_channel(), 'b ' || n);
		PERFORM set_config('gqlauth.cache_dirty', '', true);
		RETURN n;
	END IF;
	RETURN 0;
END
$$;
-- 3. The triggers fire in every session_replication_role (replica: logical replication's apply,
--    pg_restore --disable-triggers, an operator's session so set).
ALTER TABLE sessions ENABLE ALWAYS TRIGGER sessions_cache_update;
ALTER TABLE sessions ENABLE ALWAYS TRIGGER sessions_cache_delete;
ALTER TABLE sessions ENABLE ALWAYS TRIGGER sessions_cache_truncate;
ALTER TABLE users ENABLE ALWAYS TRIGGER users_cache_update;
ALTER TABLE users ENABLE ALWAYS TRIGGER users_cache_delete;
ALTER TABLE users ENABLE ALWAYS TRIGGER users_cache_truncate;
ALTER TABLE api_keys ENABLE ALWAYS TRIGGER api_keys_cache_update;
ALTER TABLE api_keys ENABLE ALWAYS TRIGGER api_keys_cache_delete;
ALTER TABLE api_keys ENABLE ALWAYS TRIGGER api_keys_cache_truncate;
`},
	{"20261220000001", "principal_cache_signing_keys", postgresOnly + `
-- Signing keys join the tables a principal is read from (the principal query checks the token's
-- kid, issue #25): a key's revocation is announced on the cache channel ("j <kid>") and the
-- transaction that revoked it waits for every lease holder, as a logout does. signing_keys is
-- keyed by kid, not id: the function reads OLD.kid on that branch only (PL/pgSQL resolves a
-- record's field when the statement first runs, so the other tables never touch it).
CREATE OR REPLACE FUNCTION gqlauth_cache_invalidate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_LEVEL = 'STATEMENT' THEN
		PERFORM pg_catalog.pg_notify('gqlauth_cache_' || TG_TABLE_SCHEMA, '* ' || TG_TABLE_NAME);
	ELSIF TG_ARGV[0] = 'j' THEN
		PERFORM pg_catalog.pg_notify('gqlauth_cache_' || TG_TABLE_SCHEMA, 'j ' || OLD.kid);
	ELSE
		PERFORM pg_catalog.pg_notify('gqlauth_cache_' || TG_TABLE_SCHEMA, TG_ARGV[0] || ' ' || OLD.id);
	END IF;
	PERFORM pg_catalog.set_config('gqlauth.cache_dirty', 'on', true);
	RETURN NULL;
END
$$;
CREATE TRIGGER signing_keys_cache_update AFTER UPDATE ON signing_keys FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION gqlauth_cache_invalidate('j');
CREATE TRIGGER signing_keys_cache_delete AFTER DELETE ON signing_keys FOR EACH ROW EXECUTE FUNCTION gqlauth_cache_invalidate('j');
CREATE TRIGGER signing_keys_cache_truncate AFTER TRUNCATE ON signing_keys FOR EACH STATEMENT EXECUTE FUNCTION gqlauth_cache_invalidate();
ALTER TABLE signing_keys ENABLE ALWAYS TRIGGER signing_keys_cache_update;
ALTER TABLE signing_keys ENABLE ALWAYS TRIGGER signing_keys_cache_delete;
ALTER TABLE signing_keys ENABLE ALWAYS TRIGGER signing_keys_cache_truncate;
`},
}

// Migrate applies the migrations that have not been applied yet. It is idempotent, and safe when
// several instances start at once on one Postgres database: they queue on an advisory lock, and
// each migration runs in one transaction together with the row that marks it applied. Bun's
// migrator keeps the bookkeeping table (bun_migrations).
func (db *DB) Migrate(ctx context.Context) error {
	if db.pg {
		conn, err := db.root.Conn(ctx)
		if err != nil {
			return wrap(err, "Migrate")
		}
		defer conn.Close()
		// Keyed by schema, so that databases in different schemas (tests) do not wait on each other.
		const key = "hashtext('gqlauth.migrate.' || current_schema())"
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock("+key+")"); err != nil {
			return wrap(err, "Migrate: lock")
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock("+key+")")
	}

	dialect := strings.NewReplacer("%[1]s", "TIMESTAMP", "%[2]s", "INTEGER PRIMARY KEY AUTOINCREMENT", "%[3]s", "BLOB")
	if db.pg {
		dialect = strings.NewReplacer("%[1]s", "TIMESTAMPTZ", "%[2]s", "BIGSERIAL PRIMARY KEY", "%[3]s", "BYTEA")
	}
	ms := migrate.NewMigrations()
	for _, m := range migrations {
		ms.Add(migrate.Migration{Name: m.name, Comment: m.comment})
	}
	migrator := migrate.NewMigrator(db.root, ms)
	if err := migrator.Init(ctx); err != nil {
		return wrap(err, "Migrate: init")
	}
	all, err := migrator.MigrationsWithStatus(ctx)
	if err != nil {
		return wrap(err, "Migrate: status")
	}
	pending := all.Unapplied()
	for i := range pending {
		m := &pending[i]
		m.GroupID = 1
		err := db.root.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			// Another instance may have applied it since the status was read: SQLite instances are
			// not behind the advisory lock, but this transaction holds SQLite's write lock.
			applied, err := tx.NewSelect().Table("bun_migrations").Where("name = ?", m.Name).Exists(ctx)
			if err != nil || applied {
				return err
			}
			script := migrationSQL(m.Name)
			if strings.HasPrefix(script, postgresOnly) && !db.pg {
				script = "" // recorded as applied, so that the history is one list
			}
			for _, stmt := range statements(dialect.Replace(script)) {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("%s: %w", m.Name, err)
				}
			}
			_, err = tx.NewInsert().Model(m).ModelTableExpr("bun_migrations").Exec(ctx)
			return err
		})
		if err != nil {
			return wrap(err, "Migrate")
		}
	}
	return nil
}

func migrationSQL(name string) string {
	for _, m := range migrations {
		if m.name == name {
			return m.sql
		}
	}
	return ""
}

// postgresOnly starts a migration that only Postgres runs (SQLite records it as applied).
const postgresOnly = "-- postgres only\n"

// statements splits a migration into statements, dropping comment lines, because not every driver
// accepts several statements in one Exec. A function body between $$ quotes stays whole.
func statements(script string) []string {
	var out, pieces []string
	for _, piece := range strings.Split(script, ";\n") {
		if len(pieces) > 0 && strings.Count(pieces[len(pieces)-1], "$$")%2 == 1 {
			pieces[len(pieces)-1] += ";\n" + piece
			continue
		}
		pieces = append(pieces, piece)
	}
	for _, stmt := range pieces {
		var b strings.Builder
		for _, line := range strings.Split(stmt, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(line), "--") {
				b.WriteString(line + "\n")
			}
		}
		if s := strings.TrimSpace(b.String()); s != "" {
			out = append(out, s)
		}
	}
	return out
}
