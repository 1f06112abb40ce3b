import type { Kysely } from 'kysely';

/**
 * Key rotation: a revoked key leaves the JWKS at once (`tessera keys rotate --revoke-current`), and
 * the JWKS and rotation checks look keys up by algorithm and expiry.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('signing_keys').addColumn('revoked_at', 'varchar(32)').execute();
  await db.schema.createIndex('issued_tokens_kid').on('issued_tokens').columns(['kid', 'expires_at']).execute();
}
