/**
 * The dialect layer: the only place that knows which database is underneath. Everything else
 * writes portable Kysely queries and asks this object for the few things that differ.
 */

import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { TesseraError } from '@tessera/core';
import { type ColumnDefinitionBuilder, Kysely, PostgresDialect, type SelectQueryBuilder, SqliteDialect } from 'kysely';
import type { Database } from './schema.js';

/** A column type as Kysely's schema builder takes it. */
type ColumnType = Parameters<ReturnType<Kysely<unknown>['schema']['createTable']>['addColumn']>[1];

export interface StoreDialect {
  readonly name: 'sqlite' | 'postgres';
  readonly autoIncrementType: ColumnType;
  autoIncrementColumn(c: ColumnDefinitionBuilder): ColumnDefinitionBuilder;
  /** Adds `FOR UPDATE SKIP LOCKED` where the database has it (claims); SQLite serialises writers instead. */
  // biome-ignore lint/suspicious/noExplicitAny: generic over any select
  lockForClaim<QB extends SelectQueryBuilder<Database, any, any>>(qb: QB): QB;
}

const sqliteDialect: StoreDialect = {
  name: 'sqlite',
  autoIncrementType: 'integer',
  autoIncrementColumn: (c) => c.autoIncrement(),
  lockForClaim: (qb) => qb,
};

const postgresDialect: StoreDialect = {
  name: 'postgres',
  autoIncrementType: 'bigserial',
  autoIncrementColumn: (c) => c,
  lockForClaim: (qb) => qb.forUpdate().skipLocked() as typeof qb,
};

export interface OpenedStore {
  db: Kysely<Database>;
  dialect: StoreDialect;
  /** A description safe to print (no password). */
  description: string;
}

const require = createRequire(import.meta.url);

/**
 * Opens the database named by `url`: `postgres://…` for PostgreSQL, anything else is a SQLite file
 * path (or `:memory:`).
 */
export function openStore(url: string): OpenedStore {
  if (/^postgres(ql)?:\/\//.test(url)) {
    const pg = require('pg') as typeof import('pg');
    // bigint counts come back as strings by default; our counts are small.
    pg.types.setTypeParser(20, (v: string) => Number.parseInt(v, 10));
    const pool = new pg.Pool({ connectionString: url, max: 10 });
    pool.on('error', () => {
      /* idle client errors surface on the next query; /readyz reports them */
    });
    const safe = url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
    return { db: new Kysely<Database>({ dialect: new PostgresDialect({ pool }) }), dialect: postgresDialect, description: safe };
  }
  const Sqlite = require('better-sqlite3') as typeof import('better-sqlite3');
  if (url !== ':memory:') mkdirSync(dirname(url), { recursive: true });
  let database: import('better-sqlite3').Database;
  try {
    database = new Sqlite(url);
  } catch (e) {
    throw new TesseraError('ERR_CONFIG', `cannot open SQLite database ${url}: ${(e as Error).message}`, { cause: e });
  }
  database.pragma('journal_mode = WAL');
  database.pragma('synchronous = NORMAL');
  database.pragma('foreign_keys = ON');
  database.pragma('busy_timeout = 5000');
  return { db: new Kysely<Database>({ dialect: new SqliteDialect({ database }) }), dialect: sqliteDialect, description: `sqlite ${url}` };
}
