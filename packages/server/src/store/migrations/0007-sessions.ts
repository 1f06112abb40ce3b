import type { Kysely } from 'kysely';

/**
 * People's login (issue #5): sessions (browser cookie or CLI refresh handle) and logins in progress.
 *
 * Nothing here can be replayed by someone who reads the database: a session is found by the SHA-256
 * hash of its cookie or refresh handle; a login in progress by the hash of the browser's login cookie
 * (its PKCE verifier is derived from that cookie, not stored); the one-time code handed to the CLI is
 * stored as a hash; an IdP device code is encrypted under a key derived from the CLI's handle. No IdP
 * token is stored: the verified claims are kept instead, so role rules can be re-evaluated.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('sessions')
    .addColumn('id', 'varchar(40)', (c) => c.primaryKey())
    // 'browser' (cookie) | 'cli' (access + refresh tokens)
    .addColumn('kind', 'varchar(20)', (c) => c.notNull())
    // SHA-256 hex of the browser's session cookie; null for CLI sessions.
    .addColumn('secret_hash', 'varchar(64)', (c) => c.unique())
    // SHA-256 hex of the CLI's current refresh token, and of the one it replaced (reuse = theft).
    .addColumn('refresh_hash', 'varchar(64)', (c) => c.unique())
    .addColumn('previous_refresh_hash', 'varchar(64)')
    .addColumn('provider', 'varchar(200)', (c) => c.notNull())
    .addColumn('subject', 'varchar(2000)', (c) => c.notNull())
    .addColumn('person_id', 'varchar(2000)', (c) => c.notNull())
    .addColumn('label', 'varchar(2000)', (c) => c.notNull())
    // JSON: the IdP's verified claims (ID token + userinfo, protocol claims removed).
    .addColumn('claims', 'text', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('last_seen_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('expires_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('revoked_at', 'varchar(32)')
    .addColumn('revoked_reason', 'varchar(200)')
    .execute();
  await db.schema.createIndex('sessions_previous_refresh').on('sessions').columns(['previous_refresh_hash']).execute();
  await db.schema.createIndex('sessions_expires').on('sessions').columns(['expires_at']).execute();

  await db.schema
    .createTable('login_transactions')
    // SHA-256 hex of the browser's login cookie (or of the CLI's device handle).
    .addColumn('id', 'varchar(64)', (c) => c.primaryKey())
    // 'browser' | 'cli' (loopback redirect) | 'device'
    .addColumn('kind', 'varchar(20)', (c) => c.notNull())
    .addColumn('provider', 'varchar(200)', (c) => c.notNull())
    .addColumn('state', 'varchar(200)')
    .addColumn('nonce', 'varchar(200)')
    .addColumn('return_to', 'varchar(2000)')
    // CLI loopback login: where and how to hand the CLI its one-time code (RFC 8252 + PKCE).
    .addColumn('cli_redirect_uri', 'varchar(2000)')
    .addColumn('cli_code_challenge', 'varchar(200)')
    .addColumn('cli_state', 'varchar(2000)')
    .addColumn('cli_code_hash', 'varchar(64)', (c) => c.unique())
    .addColumn('session_id', 'varchar(40)')
    // Device login: the IdP's device code, AES-256-GCM under a key derived from the CLI's handle.
    .addColumn('device_secret', 'text')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('expires_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('login_transactions_expires').on('login_transactions').columns(['expires_at']).execute();
}
