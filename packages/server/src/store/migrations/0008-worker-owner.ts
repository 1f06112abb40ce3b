import type { Kysely } from 'kysely';

/**
 * Who polls as each worker id: the principal (`principalId`) whose poll first used it. A poll with a
 * worker id another principal owns is refused, so one worker cannot heartbeat, claim or have runs
 * declared lost as another. Null for rows written before this column existed: the next poll adopts them.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('workers').addColumn('owner', 'varchar(2100)').execute();
}
