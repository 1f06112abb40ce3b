import type { Kysely } from 'kysely';
import type { StoreDialect } from '../dialect.js';

/**
 * Auth (issue #5): trust policies for federation, workers' identities and single-use join tokens,
 * RFC 7523 assertion `jti`s (replay), and the audit log. Nothing here holds a token or a secret:
 * join tokens are stored as SHA-256 hashes, workers' keys as public JWKs.
 */
export async function up(db: Kysely<unknown>, dialect: StoreDialect): Promise<void> {
  await db.schema
    .createTable('trust_policies')
    .addColumn('id', 'varchar(40)', (c) => c.primaryKey())
    .addColumn('name', 'varchar(200)', (c) => c.notNull().unique())
    .addColumn('issuer', 'varchar(2000)', (c) => c.notNull())
    .addColumn('audience', 'varchar(2000)', (c) => c.notNull())
    .addColumn('subject', 'varchar(2000)')
    .addColumn('condition', 'text')
    .addColumn('role', 'varchar(20)', (c) => c.notNull())
    .addColumn('workspace', 'varchar(200)')
    .addColumn('pool', 'varchar(200)')
    .addColumn('description', 'text')
    // Bumped by every change: access tokens name the version they were granted under.
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_by', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('trust_policies_issuer').on('trust_policies').columns(['issuer']).execute();

  await db.schema
    .createTable('worker_identities')
    .addColumn('id', 'varchar(40)', (c) => c.primaryKey())
    .addColumn('name', 'varchar(200)', (c) => c.notNull())
    .addColumn('pool', 'varchar(200)')
    // 'join-token' | 'federation'
    .addColumn('method', 'varchar(20)', (c) => c.notNull())
    .addColumn('public_jwk', 'text')
    .addColumn('jkt', 'varchar(64)')
    .addColumn('policy_id', 'varchar(40)')
    .addColumn('external_subject', 'varchar(2000)')
    .addColumn('join_token_id', 'varchar(40)')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('last_seen_at', 'varchar(32)')
    .addColumn('revoked_at', 'varchar(32)')
    .addColumn('revoked_by', 'text')
    .execute();
  await db.schema.createIndex('worker_identities_policy').on('worker_identities').columns(['policy_id', 'external_subject']).execute();

  await db.schema
    .createTable('join_tokens')
    .addColumn('id', 'varchar(40)', (c) => c.primaryKey())
    // SHA-256 hex of the token: the token itself is shown once and never stored.
    .addColumn('hash', 'varchar(64)', (c) => c.notNull().unique())
    .addColumn('pool', 'varchar(200)')
    .addColumn('name', 'varchar(200)')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('expires_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('used_at', 'varchar(32)')
    .addColumn('worker_id', 'varchar(40)')
    .execute();

  await db.schema
    .createTable('assertion_jtis')
    // SHA-256 hex of issuer + " " + jti: fixed length whatever the client sends.
    .addColumn('id', 'varchar(64)', (c) => c.primaryKey())
    .addColumn('expires_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('assertion_jtis_expires').on('assertion_jtis').columns(['expires_at']).execute();

  await db.schema
    .createTable('audit_events')
    .addColumn('id', dialect.autoIncrementType, (c) => dialect.autoIncrementColumn(c.primaryKey()))
    .addColumn('at', 'varchar(32)', (c) => c.notNull())
    .addColumn('principal', 'varchar(2000)', (c) => c.notNull())
    .addColumn('principal_kind', 'varchar(20)', (c) => c.notNull())
    .addColumn('action', 'varchar(100)', (c) => c.notNull())
    .addColumn('target', 'varchar(2000)')
    // 'success' | 'failure' | 'denied'
    .addColumn('result', 'varchar(20)', (c) => c.notNull())
    // JSON: reason, code, client address…; never a token or secret.
    .addColumn('detail', 'text')
    .execute();
  await db.schema.createIndex('audit_events_at').on('audit_events').columns(['at']).execute();
  await db.schema.createIndex('audit_events_action').on('audit_events').columns(['action', 'id']).execute();
}
