/**
 * The dialect layer: the only place that knows which database is underneath. Everything else
 * writes portable Kysely queries and asks this object for the few things that differ.
 */

import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { TesseraError } from '@tessera/core';
import {
  type ColumnDefinitionBuilder,
  Kysely,
  PostgresDialect,
  type SelectQueryBuilder,
  SqliteDialect,
  sql,
  type Transaction,
} from 'kysely';
import type { WakeupBus } from '../services/events.js';
import { createPgWakeupBus } from './pg-bus.js';
import { createPgLease } from './pg-lease.js';
import type { Database } from './schema.js';
import { BACKSTOP_AUTOCHECKPOINT_PAGES, type Checkpointer, startCheckpointer } from './sqlite-checkpointer.js';

/** A column type as Kysely's schema builder takes it. */
type ColumnType = Parameters<ReturnType<Kysely<unknown>['schema']['createTable']>['addColumn']>[1];

/** What differs between the databases, for the few places where SQL must (see {@link openStore}). */
export interface StoreDialect {
  readonly name: 'sqlite' | 'postgres';
  readonly autoIncrementType: ColumnType;
  autoIncrementColumn(c: ColumnDefinitionBuilder): ColumnDefinitionBuilder;
  /**
   * Adds `FOR UPDATE [OF of] SKIP LOCKED` where the database has it (claims): concurrent claimers on
   * any replica take different rows without waiting for each other. Name the claimed table's alias in
   * `of` when the query joins others, so that only its rows are locked. SQLite has one writer at a
   * time, so a claim's transaction already excludes every other.
   */
  // biome-ignore lint/suspicious/noExplicitAny: generic over any select
  lockForClaim<QB extends SelectQueryBuilder<Database, any, any>>(qb: QB, of?: string): QB;
  /**
   * Makes the claims of one pool that are subject to a concurrency limit take turns, until `trx`
   * ends: each counts the active runs only once the one before it has committed. Row locks alone do
   * not do that on PostgreSQL (at READ COMMITTED, two claimers would each count the other's new
   * Pending runs as zero and both fill the last slot). SQLite has one writer: nothing to do.
   */
  serializeLimitedClaims(trx: Transaction<Database>, poolId: string): Promise<void>;
}

const sqliteDialect: StoreDialect = {
  name: 'sqlite',
  autoIncrementType: 'integer',
  autoIncrementColumn: (c) => c.autoIncrement(),
  lockForClaim: (qb) => qb,
  serializeLimitedClaims: async () => {},
};

const postgresDialect: StoreDialect = {
  name: 'postgres',
  autoIncrementType: 'bigserial',
  autoIncrementColumn: (c) => c,
  lockForClaim: (qb, of) => qb.forUpdate(of as never).skipLocked() as typeof qb,
  // The two-key advisory locks are a key space apart from the one-key locks the leases use.
  serializeLimitedClaims: async (trx, poolId) => {
    await sql`select pg_advisory_xact_lock(${CLAIM_LOCK_CLASS}, hashtext(${poolId}))`.execute(trx);
  },
};

/** First key of the per-pool advisory locks claims under a concurrency limit take (see serializeLimitedClaims). */
const CLAIM_LOCK_CLASS = 0x7e55;

/**
 * A lease that at most one replica holds at a time: the singleton services (scheduler, zombie
 * detection, key maintenance) run only while it is held. See `services/singleton.ts`.
 */
export interface Lease {
  /** Whether the last {@link Lease.check} found the lease held. */
  readonly held: boolean;
  /**
   * Takes the lease if it is free, or confirms that this process still holds it. Never throws: a
   * database that cannot be reached means the lease is not held.
   */
  check(): Promise<boolean>;
  /** Gives the lease up (another replica may take it at once) and closes its connection. */
  close(): Promise<void>;
}

/** An open database: the Kysely instance, its dialect, and the replica coordination it offers. */
export interface OpenedStore {
  db: Kysely<Database>;
  dialect: StoreDialect;
  /** A description safe to print (no password). */
  description: string;
  /**
   * A lease named by `lockId`. On PostgreSQL an advisory lock on a dedicated session, shared by every
   * replica on the database; on SQLite, whose file only one server uses, a lease this process always holds.
   */
  createLease(options: { lockId: number; holder: string; onError?: (e: Error) => void }): Lease;
  /**
   * Wake-ups between replicas (LISTEN/NOTIFY on PostgreSQL), or `undefined` where one process is
   * all there is (SQLite): in-process wake-ups are enough.
   */
  createWakeupBus(onError?: (e: Error) => void): WakeupBus | undefined;
  /** Closes every connection. */
  destroy(): Promise<void>;
}

/** Options for {@link openStore}. */
export interface OpenStoreOptions {
  /**
   * PostgreSQL connections per replica (the pool; the singleton lease and LISTEN take one more each).
   * @default 10
   */
  poolSize?: number;
}

const require = createRequire(import.meta.url);

/** SQLite: this process is the only server on the file, so it always holds every lease. */
const localLease = (): Lease => {
  let closed = false;
  return {
    get held() {
      return !closed;
    },
    check: async () => !closed,
    close: async () => {
      closed = true;
    },
  };
};

/**
 * Opens the database named by `url`: `postgres://…` for PostgreSQL, anything else is a SQLite file
 * path (or `:memory:`).
 */
export function openStore(url: string, options: OpenStoreOptions = {}): OpenedStore {
  if (/^postgres(ql)?:\/\//.test(url)) {
    const pg = require('pg') as typeof import('pg');
    // bigint counts come back as strings by default; our counts are small.
    pg.types.setTypeParser(20, (v: string) => Number.parseInt(v, 10));
    const pool = new pg.Pool({
      connectionString: url,
      max: options.poolSize ?? 10,
      // While PostgreSQL is unreachable, requests fail fast (503 on /readyz) instead of queueing forever.
      connectionTimeoutMillis: 5_000,
      keepAlive: true,
      // A replica stuck mid-transaction (paused, partitioned) must not hold row locks for ever.
      idle_in_transaction_session_timeout: 60_000,
    });
    pool.on('error', () => {
      /* idle client errors surface on the next query; /readyz reports them */
    });
    // A connection that drops while checked out (mid-transaction) emits 'error' on its client, which
    // nobody else listens to: unhandled, it would kill the process. The query in flight fails (and its
    // transaction is rolled back by PostgreSQL); the pool discards the broken client on release.
    pool.on('connect', (client) => client.on('error', () => {}));
    const safe = url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    return {
      db,
      dialect: postgresDialect,
      description: safe,
      createLease: ({ lockId, holder, onError }) =>
        createPgLease(url, { lockId, applicationName: `tessera singleton ${holder}`, ...(onError ? { onError } : {}) }),
      createWakeupBus: (onError) => createPgWakeupBus(url, onError),
      destroy: () => db.destroy(),
    };
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
  const cached = withStatementCache(database);
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: cached }) });
  // Checkpoints run on a worker thread; the automatic one stays as a backstop (see sqlite-checkpointer.ts).
  let checkpointer: Checkpointer | undefined;
  if (url !== ':memory:') {
    database.pragma(`wal_autocheckpoint = ${BACKSTOP_AUTOCHECKPOINT_PAGES}`);
    checkpointer = startCheckpointer(url, {
      onError: () => {
        if (database.open) database.pragma('wal_autocheckpoint = 1000');
      },
    });
  }
  const gate = checkpointer?.gate;
  const query = (sql: string, parameters: readonly unknown[], ungated = false): ReturnType<DirectSqlite['query']> => {
    // Inside a transaction that Kysely holds open on the connection, a statement run here would join it.
    if (database.inTransaction) return undefined;
    const stmt = cached.prepare(sql) as unknown as import('better-sqlite3').Statement;
    if (stmt.reader) return stmt.all(parameters as unknown[]);
    // A write waits (without blocking the event loop) while the checkpointer restarts the WAL; after
    // the gate's longest wait it goes ahead and meets SQLite's busy handling like any write.
    const wait = ungated ? undefined : gate?.enter();
    if (wait) return wait.then((outcome) => query(sql, parameters, outcome === 'timed-out'));
    try {
      stmt.run(parameters as unknown[]);
    } finally {
      if (!ungated) gate?.leave();
    }
    return [];
  };
  directAccess.set(db, { query: (sql, parameters) => query(sql, parameters) });
  return {
    db,
    dialect: sqliteDialect,
    description: `sqlite ${url}`,
    createLease: () => localLease(),
    createWakeupBus: () => undefined,
    destroy: async () => {
      await checkpointer?.close();
      await db.destroy();
    },
  };
}

/**
 * Runs compiled SQL on the connection at once, synchronously: the rows; `undefined` when it cannot now
 * (see {@link directSqlite}); a promise of either for a write that waits for the checkpointer's WAL
 * restart to finish.
 */
export interface DirectSqlite {
  query(sql: string, parameters: readonly unknown[]): unknown[] | undefined | Promise<unknown[] | undefined>;
}

const directAccess = new WeakMap<object, DirectSqlite>();

/**
 * SQLite's connection under `db`, for the prepared hot-path queries (store/prepared.ts): better-sqlite3
 * is synchronous, so a statement run straight on it is atomic with respect to everything else in this
 * process, and skips Kysely's connection queue and the promises around it. It answers `undefined` while
 * a transaction is open on the connection (the query then waits its turn through Kysely), and
 * `directSqlite` answers `undefined` for PostgreSQL and for transactions.
 */
export function directSqlite(db: object): DirectSqlite | undefined {
  return directAccess.get(db);
}

/** How many prepared statements {@link withStatementCache} keeps (distinct SQL texts; `IN` lists vary). */
const STATEMENT_CACHE_SIZE = 500;

/**
 * The database as Kysely's SQLite driver sees it, with `prepare` cached by SQL text (oldest first
 * out). Kysely prepares every query afresh, and compiling a statement costs SQLite more
 * than running it for the short lookups of the hot paths (credential check, token issuance). A
 * cached statement is never used by two queries at once: the driver runs one query at a time on its
 * single connection, streams included.
 */
function withStatementCache(database: import('better-sqlite3').Database): import('kysely').SqliteDatabase {
  const cache = new Map<string, import('better-sqlite3').Statement>();
  return {
    close: () => {
      cache.clear();
      database.close();
    },
    prepare: (sql: string) => {
      // Kysely opens transactions with a deferred `begin`. The checkpointer's RESTART takes the write
      // lock for a moment, and a deferred transaction that has read and then writes cannot wait for
      // it (SQLite answers SQLITE_BUSY at once rather than risk a deadlock): take the write lock at
      // `begin`, where the busy timeout applies. On one connection, transactions run one at a time anyway.
      if (sql === 'begin') sql = 'begin immediate';
      let stmt = cache.get(sql);
      if (!stmt) {
        stmt = database.prepare(sql);
        // Oldest first out. Not least-recently-used: reordering on every hit would rewrite the map's
        // table on the hot path; a hot statement evicted by a flood of distinct ones is prepared again once.
        if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value as string);
        cache.set(sql, stmt);
      }
      return stmt as unknown as ReturnType<import('kysely').SqliteDatabase['prepare']>;
    },
  };
}
