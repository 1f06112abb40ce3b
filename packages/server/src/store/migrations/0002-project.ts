import type { Kysely } from 'kysely';

/** Deployments belong to a project; its name is a claim of their runs' tokens. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable('deployments')
    .addColumn('project', 'varchar(200)', (c) => c.notNull().defaultTo('default'))
    .execute();
}
