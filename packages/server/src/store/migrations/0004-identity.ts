import type { Kysely } from 'kysely';

/**
 * Run identity lifecycle (issue #3): workspace identity settings (the `sub` template), revoked run
 * identities, revoked and DPoP-bound issued tokens, and the DPoP proof replay window. Nothing here
 * holds a token or a credential: only ids, hashes and thumbprints.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('workspace_settings')
    .addColumn('workspace', 'varchar(200)', (c) => c.primaryKey())
    // JSON: { subTemplate?: string[] }
    .addColumn('identity', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_by', 'text', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('identity_revocations')
    .addColumn('flow_run_id', 'varchar(36)', (c) => c.primaryKey().references('flow_runs.id').onDelete('cascade'))
    .addColumn('revoked_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('revoked_by', 'text', (c) => c.notNull())
    .addColumn('reason', 'text')
    .execute();

  // One column per statement: SQLite's ALTER TABLE adds one at a time.
  await db.schema.alterTable('issued_tokens').addColumn('revoked_at', 'varchar(32)').execute();
  await db.schema.alterTable('issued_tokens').addColumn('cnf_jkt', 'varchar(64)').execute();

  await db.schema
    .createTable('dpop_proofs')
    // SHA-256 of jkt + jti, hex: fixed length whatever the client sends.
    .addColumn('id', 'varchar(64)', (c) => c.primaryKey())
    .addColumn('expires_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('dpop_proofs_expires').on('dpop_proofs').columns(['expires_at']).execute();
}
