import type { Kysely } from 'kysely';

/**
 * Several server replicas on one database (issue #6): each replica records that it is alive, owns the
 * signing keys it generated (their private halves exist only in its memory), and applies key
 * rotations requested for it or for every replica.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('replicas')
    .addColumn('id', 'varchar(100)', (c) => c.primaryKey())
    // Where it answers (for operators); the issuer URL is shared by every replica.
    .addColumn('url', 'text')
    .addColumn('host', 'text')
    .addColumn('pid', 'integer')
    .addColumn('started_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('last_seen_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('stopped_at', 'varchar(32)')
    .execute();

  // Null for keys made before replicas were recorded: nobody holds them any more.
  await db.schema.alterTable('signing_keys').addColumn('replica_id', 'varchar(100)').execute();
  await db.schema.createIndex('signing_keys_replica').on('signing_keys').columns(['replica_id']).execute();

  await db.schema
    .createTable('key_rotations')
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    // Orders requests; ISO time plus the id breaks ties.
    .addColumn('requested_at', 'varchar(32)', (c) => c.notNull())
    // Null: every replica rotates its own keys; otherwise only this replica (scheduled rotation).
    .addColumn('replica_id', 'varchar(100)')
    // JSON array of algorithms.
    .addColumn('algorithms', 'text', (c) => c.notNull())
    .addColumn('revoke_current', 'integer', (c) => c.notNull())
    // JSON StateCause-like { kind, id, label } of who asked.
    .addColumn('requested_by', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('key_rotations_requested').on('key_rotations').columns(['requested_at']).execute();
}
