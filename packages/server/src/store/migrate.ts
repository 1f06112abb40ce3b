import { TesseraError } from '@tessera/core';
import { type Kysely, type Migration, type MigrationProvider, Migrator } from 'kysely';
import type { StoreDialect } from './dialect.js';
import * as m0001 from './migrations/0001-initial.js';
import * as m0002 from './migrations/0002-project.js';
import * as m0003 from './migrations/0003-keys.js';
import * as m0004 from './migrations/0004-identity.js';
import * as m0005 from './migrations/0005-replicas.js';
import * as m0006 from './migrations/0006-auth.js';
import * as m0007 from './migrations/0007-sessions.js';
import * as m0008 from './migrations/0008-worker-owner.js';

type MigrationModule = { up(db: Kysely<unknown>, dialect: StoreDialect): Promise<void> };

/** Numbered migrations, in order. One set for every dialect. */
const MIGRATIONS: Record<string, MigrationModule> = {
  '0001-initial': m0001,
  '0002-project': m0002,
  '0003-keys': m0003,
  '0004-identity': m0004,
  '0005-replicas': m0005,
  '0006-auth': m0006,
  '0007-sessions': m0007,
  '0008-worker-owner': m0008,
};

class StaticProvider implements MigrationProvider {
  constructor(private readonly dialect: StoreDialect) {}
  async getMigrations(): Promise<Record<string, Migration>> {
    const out: Record<string, Migration> = {};
    for (const [name, mod] of Object.entries(MIGRATIONS)) out[name] = { up: (db) => mod.up(db, this.dialect) };
    return out;
  }
}

/** Brings the schema up to date. Safe to call from several replicas at once on PostgreSQL (Kysely locks). */
export async function migrateToLatest(db: Kysely<unknown>, dialect: StoreDialect): Promise<string[]> {
  const migrator = new Migrator({
    db,
    provider: new StaticProvider(dialect),
    migrationTableName: 'tessera_migrations',
    migrationLockTableName: 'tessera_migrations_lock',
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    throw new TesseraError(
      'ERR_INTERNAL',
      `database migration ${failed?.migrationName ?? ''} failed: ${(error as Error).message ?? String(error)}`,
      { cause: error },
    );
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}
