/**
 * The dialect layer, on the store this project runs against (SQLite, then PostgreSQL): claims that
 * never hand a run out twice under concurrency, the singleton lease and its failover, LISTEN/NOTIFY
 * wake-ups and their reconnection, migrations run by several replicas at once, and a connection
 * lost mid-transaction.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase, type TestDatabase, testDatabaseUrl, testStore, waitFor } from '@tessera/testing';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WAKE_ALL } from './services/events.js';
import { type OpenedStore, openStore } from './store/dialect.js';
import { migrateToLatest } from './store/migrate.js';
import { prepared } from './store/prepared.js';

const POSTGRES = testStore() === 'postgres';
let database: TestDatabase | undefined;
let dir: string;
let url: string;
const opened: OpenedStore[] = [];

function open(): OpenedStore {
  const store = openStore(url);
  opened.push(store);
  return store;
}

/** Runs SQL on the test PostgreSQL server's admin database (to kill connections like an outage would). */
async function admin<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: testDatabaseUrl() });
  await c.connect();
  try {
    return (await c.query<T>(text, values)).rows;
  } finally {
    await c.end();
  }
}

/** Terminates this test database's connections whose application_name matches `like`. */
async function terminate(like = '%'): Promise<number> {
  const rows = await admin<{ ok: boolean }>(
    'select pg_terminate_backend(pid) as ok from pg_stat_activity where datname = $1 and pid <> pg_backend_pid() and application_name like $2',
    [database?.name, like],
  );
  return rows.length;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-store-'));
  if (POSTGRES) database = await createTestDatabase();
  url = database?.url ?? join(dir, 'tessera.db');
  const store = open();
  await migrateToLatest(store.db as never, store.dialect);
});

afterAll(async () => {
  for (const s of opened.splice(0)) await s.destroy().catch(() => {});
  await database?.drop();
  rmSync(dir, { recursive: true, force: true });
});

describe('prepared queries and cached statements', () => {
  const byName = prepared((db, p) =>
    db.selectFrom('work_pools').select(['name', 'paused']).where('name', '=', p(0)).where('paused', '=', 0).orderBy('name').limit(5),
  );

  it('run with new arguments each time, constants of the builder kept, on this store', async () => {
    const store = open();
    const now = new Date().toISOString();
    await store.db
      .insertInto('work_pools')
      .values(
        ['pq-a', 'pq-b'].map((name, i) => ({
          id: `pq-${i}-${Date.now()}`,
          name,
          description: null,
          concurrency_limit: null,
          paused: 0,
          created_at: now,
        })),
      )
      .execute();
    expect(await byName.execute(store.db, ['pq-a'])).toEqual([{ name: 'pq-a', paused: 0 }]);
    expect(await byName.first(store.db, ['pq-b'])).toEqual({ name: 'pq-b', paused: 0 });
    expect(await byName.first(store.db, ['pq-none'])).toBeUndefined();
    // Inside a transaction too (compiled afresh there).
    await store.db.transaction().execute(async (trx) => {
      expect(await byName.first(trx, ['pq-a'])).toEqual({ name: 'pq-a', paused: 0 });
    });
  });

  it('never run inside a transaction another caller holds open on the connection', async () => {
    const store = open();
    const now = new Date().toISOString();
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    let inserted!: () => void;
    const insertedP = new Promise<void>((r) => {
      inserted = r;
    });
    const trx = store.db
      .transaction()
      .execute(async (t) => {
        await t
          .insertInto('work_pools')
          .values({
            id: `pq-rb-${Date.now()}`,
            name: 'pq-rolled-back',
            description: null,
            concurrency_limit: null,
            paused: 0,
            created_at: now,
          })
          .execute();
        inserted();
        await held;
        throw new Error('roll back');
      })
      .catch(() => 'rolled back');
    await insertedP;
    // Issued while the transaction holds its uncommitted row: answered only after it rolled back.
    const seen = byName.first(store.db, ['pq-rolled-back']);
    release();
    expect(await trx).toBe('rolled back');
    expect(await seen).toBeUndefined();
  });

  it('refuse the wrong number of arguments and a p(i) that is not a whole parameter', async () => {
    const store = open();
    await expect(byName.execute(store.db, [])).rejects.toThrow('takes 1 argument(s), got 0');
    const gap = prepared((db, p) => db.selectFrom('work_pools').select('name').where('name', '=', p(1)));
    await expect(gap.execute(store.db, ['x', 'y'])).rejects.toThrow('every p(i) must be a whole parameter value');
  });

  it.runIf(!POSTGRES)('SQLite: more distinct statements than the cache holds all still answer right, a stream included', async () => {
    const store = open();
    for (let i = 0; i < 1_200; i++) {
      const row = await sql<{ n: number }>`select ${sql.lit(i)} + ${i} as n`.execute(store.db);
      expect(row.rows[0]?.n).toBe(2 * i);
    }
    const streamed: number[] = [];
    for await (const r of store.db.selectNoFrom((eb) => eb.val(7).as('n')).stream()) streamed.push(Number(r.n));
    expect(streamed).toEqual([7]);
    // The same SQL again after eviction and after the stream: prepared anew or reused, same answer.
    expect((await sql<{ n: number }>`select ${sql.lit(3)} + ${3} as n`.execute(store.db)).rows[0]?.n).toBe(6);
  });
});

describe('migrations', () => {
  it('are idempotent, and several replicas may run them at once', async () => {
    const [a, b] = [open(), open()];
    const ran = await Promise.all([migrateToLatest(a.db as never, a.dialect), migrateToLatest(b.db as never, b.dialect)]);
    expect(ran).toEqual([[], []]);
    if (!POSTGRES) return;
    // A fresh database migrated by three replicas starting together: each migration runs once.
    const fresh = await createTestDatabase();
    const stores = [0, 1, 2].map(() => openStore(fresh.url));
    try {
      const results = await Promise.all(stores.map((s) => migrateToLatest(s.db as never, s.dialect)));
      const all = results.flat();
      expect(new Set(all).size).toBe(all.length);
      expect(all).toContain('0005-replicas');
    } finally {
      for (const s of stores) await s.destroy();
      await fresh.drop();
    }
  });
});

describe('claims under concurrency', () => {
  it('never hands a row to two concurrent claimers (FOR UPDATE SKIP LOCKED on PostgreSQL, one writer on SQLite)', async () => {
    // Three pools of connections as three replicas would have; SQLite serves one server per file
    // through one connection, whose transactions run one at a time.
    const one = open();
    const stores = POSTGRES ? [one, open(), open()] : [one, one, one];
    const [first] = stores;
    const db = (first as OpenedStore).db;
    const now = new Date().toISOString();
    const poolId = 'pool-claims';
    await db
      .insertInto('work_pools')
      .values({
        id: poolId,
        name: 'claims',
        description: null,
        paused: 0,
        concurrency_limit: null,
        created_at: now,
      })
      .execute();
    await db.insertInto('flows').values({ id: 'flow-claims', name: 'claims', created_at: now }).execute();
    const ids = Array.from({ length: 120 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`);
    for (const id of ids) {
      await db
        .insertInto('flow_runs')
        .values({
          id,
          name: id,
          flow_id: 'flow-claims',
          deployment_id: null,
          work_pool_id: poolId,
          work_queue: null,
          priority: 0,
          state_type: 'SCHEDULED',
          state_name: 'Scheduled',
          state_message: null,
          state_timestamp: now,
          parameters: '{}',
          attempt: 0,
          max_retries: 0,
          retry_delays: '[]',
          expected_start_time: now,
          next_scheduled_start_time: now,
          start_time: null,
          end_time: null,
          worker_id: null,
          claimed_at: null,
          trigger_kind: 'manual',
          triggered_by: '{}',
          result: null,
          error: null,
          tags: '[]',
          idempotency_key: null,
          created_at: now,
          updated_at: now,
        })
        .execute();
    }
    // 24 claimers over three pools of connections (as three replicas would), 5 rows each, at once.
    // Each takes its rows with the dialect's claim lock and holds them a moment before committing.
    const claimOnce = async (store: OpenedStore, who: string): Promise<string[]> =>
      store.db.transaction().execute(async (trx) => {
        const rows = await store.dialect
          .lockForClaim(
            trx
              .selectFrom('flow_runs')
              .select('id')
              .where('work_pool_id', '=', poolId)
              .where('state_type', '=', 'SCHEDULED')
              .orderBy('id')
              .limit(5),
          )
          .execute();
        await new Promise((r) => setTimeout(r, 20));
        const got: string[] = [];
        for (const r of rows) {
          // Compare-and-set, as the claim service does: without the lock a loser would see 0 rows here.
          const res = await trx
            .updateTable('flow_runs')
            .set({ state_type: 'PENDING', worker_id: who })
            .where('id', '=', r.id)
            .where('state_type', '=', 'SCHEDULED')
            .executeTakeFirst();
          if (Number(res.numUpdatedRows) === 1) got.push(r.id);
        }
        return got;
      });
    const claimed: string[] = [];
    const lost: number[] = [];
    await Promise.all(
      Array.from({ length: 24 }, async (_, i) => {
        const got = await claimOnce(stores[i % 3] as OpenedStore, `w${i}`);
        claimed.push(...got);
        lost.push(5 - got.length);
      }),
    );
    expect(claimed).toHaveLength(120);
    expect(new Set(claimed).size).toBe(120);
    // Every claimer got a full batch: nobody waited on, or lost, rows another one had locked.
    expect(lost.every((n) => n === 0)).toBe(true);
  });
});

describe('singleton lease', () => {
  it('is held by exactly one replica, and passes to another when the holder lets go', async () => {
    const store = open();
    const a = store.createLease({ lockId: 901, holder: 'replica-a' });
    const b = store.createLease({ lockId: 901, holder: 'replica-b' });
    try {
      const first = [await a.check(), await b.check()];
      if (!POSTGRES) {
        // SQLite: one server per file, so every lease is this process's.
        expect(first).toEqual([true, true]);
        return;
      }
      expect(first).toEqual([true, false]);
      expect([await a.check(), await b.check()]).toEqual([true, false]);
      await a.close();
      expect(await b.check()).toBe(true);
      expect(b.held).toBe(true);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it.skipIf(!POSTGRES)('moves when the holder’s database session dies, and the old holder knows it lost it', async () => {
    const store = open();
    const errors: Error[] = [];
    const a = store.createLease({ lockId: 902, holder: 'replica-dies', onError: (e) => errors.push(e) });
    const b = store.createLease({ lockId: 902, holder: 'replica-takes-over' });
    try {
      expect(await a.check()).toBe(true);
      expect(await b.check()).toBe(false);
      const holders = await admin<{ application_name: string }>(
        `select a.application_name from pg_locks l join pg_stat_activity a on a.pid = l.pid
          where l.locktype = 'advisory' and l.objid = 902 and l.granted and a.datname = $1`,
        [database?.name],
      );
      expect(holders.map((h) => h.application_name)).toEqual(['tessera singleton replica-dies']);
      // The holder's connection is killed (its process crashed, or the network dropped it).
      expect(await terminate('tessera singleton replica-dies')).toBe(1);
      await waitFor(() => b.check(), { timeoutMs: 5_000, what: 'the lease to move' });
      expect(await a.check()).toBe(false);
      expect(errors.length).toBeGreaterThan(0);
      // Once the new holder lets go, the old one can take it again: it reconnects by itself.
      await b.close();
      expect(await a.check()).toBe(true);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('wake-up bus', () => {
  it.skipIf(POSTGRES)('is not needed on SQLite: one process serves the database', () => {
    expect(open().createWakeupBus()).toBeUndefined();
  });

  it.skipIf(!POSTGRES)(
    'delivers a key published on one replica to every other replica (not back to itself), and re-wakes everyone after reconnecting',
    async () => {
      const [sa, sb] = [open(), open()];
      const a = sa.createWakeupBus();
      const b = sb.createWakeupBus();
      if (!a || !b) throw new Error('PostgreSQL gives a wake-up bus');
      const gotA: string[] = [];
      const gotB: string[] = [];
      try {
        await a.subscribe((k) => gotA.push(k));
        await b.subscribe((k) => gotB.push(k));
        a.publish('pool:p1');
        b.publish('slots:p2');
        a.publish('worker:w0');
        await waitFor(() => gotB.length >= 2 && gotA.length >= 1, { timeoutMs: 5_000, what: 'the wake-ups' });
        // A replica woke its own waiters in process: an echo through LISTEN, a moment later, would wake
        // them again for nothing. Give one time to show.
        await new Promise((r) => setTimeout(r, 300));
        expect([...gotB].sort()).toEqual(['pool:p1', 'worker:w0']);
        expect(gotA).toEqual(['slots:p2']);
        // A replica of an older version (a rolling upgrade) sends the bare key: delivered as it is.
        await sql`select pg_notify('tessera_wakeup', 'pool:old')`.execute(sa.db);
        await waitFor(() => gotA.includes('pool:old') && gotB.includes('pool:old'), { timeoutMs: 5_000, what: 'the old-format wake-up' });
        // Every connection to the database dies (a restart): the listeners come back by themselves and
        // wake everything once, since they may have missed something.
        await terminate();
        await waitFor(() => gotB.includes(WAKE_ALL), { timeoutMs: 10_000, what: 'the bus to reconnect' });
        await waitFor(
          async () => {
            b.publish('worker:w1');
            await new Promise((r) => setTimeout(r, 100));
            return gotA.includes('worker:w1');
          },
          { timeoutMs: 10_000, what: 'wake-ups after reconnecting' },
        );
      } finally {
        await a.close();
        await b.close();
      }
    },
  );
});

describe('connection loss', () => {
  afterEach(async () => {
    // Leave a usable pool behind.
    await waitFor(async () => (await sql`select 1 as one`.execute(opened[0]?.db as never)).rows.length === 1, { timeoutMs: 10_000 });
  });

  it.skipIf(!POSTGRES)('a transaction cut mid-way leaves nothing behind and does not take the process down', async () => {
    const store = open();
    const now = new Date().toISOString();
    const e = await store.db
      .transaction()
      .execute(async (trx) => {
        await trx
          .insertInto('replicas')
          .values({ id: 'half-done', url: null, host: null, pid: null, started_at: now, last_seen_at: now, stopped_at: null })
          .execute();
        // The connection dies while the transaction is open and idle (nobody awaits a query on it).
        await terminate();
        await new Promise((r) => setTimeout(r, 300));
        await trx.updateTable('replicas').set({ url: 'x' }).where('id', '=', 'half-done').execute();
      })
      .catch((err: Error) => err);
    expect(e).toBeInstanceOf(Error);
    // The pool replaced the dead connection; the half-done insert was rolled back.
    const rows = await waitFor(async () => store.db.selectFrom('replicas').select('id').where('id', '=', 'half-done').execute(), {
      timeoutMs: 10_000,
      what: 'the pool to reconnect',
    });
    expect(rows).toEqual([]);
  });
});
