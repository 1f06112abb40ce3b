import { createRequire } from 'node:module';
import type { Lease } from './dialect.js';

const require = createRequire(import.meta.url);

/** The advisory lock's key: two int4s, so it cannot collide with a one-bigint key another tool uses. */
const LOCK_CLASS = 0x7e55e7a;

/** Options for {@link createPgLease}. */
export interface PgLeaseOptions {
  /** Lock number within Tessera's lock class; one per singleton. */
  lockId: number;
  /** Shown in `pg_stat_activity.application_name`, so operators can see who holds the lock. */
  applicationName: string;
  /** How long a connection attempt or the liveness check may take before the lease counts as lost, ms. @default 3000 */
  timeoutMs?: number;
  onError?: (e: Error) => void;
}

/**
 * A lease held as a PostgreSQL session-level advisory lock (`pg_try_advisory_lock`) on a dedicated
 * connection. The lock lives exactly as long as that session: when the holder dies, its connection
 * closes and PostgreSQL releases the lock, which is the failover. The holder checks its session
 * every tick and gives the lease up as soon as a check fails, so it never acts on a lock it may have
 * lost. Keepalives are set on the session so that PostgreSQL also notices a holder whose machine
 * vanished without closing the connection (about 11 s) rather than after the OS default of 2 hours.
 */
export function createPgLease(url: string, options: PgLeaseOptions): Lease {
  const pg = require('pg') as typeof import('pg');
  const timeoutMs = options.timeoutMs ?? 3_000;
  const onError = options.onError ?? (() => {});
  let client: import('pg').Client | undefined;
  let held = false;
  let closed = false;

  const drop = (c: import('pg').Client | undefined) => {
    if (!c) return;
    if (client === c) {
      client = undefined;
      held = false;
    }
    c.removeAllListeners('end');
    // Not end(): on a dead socket it may wait; destroying the socket releases nothing we still need.
    (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
    void c.end().catch(() => {});
  };

  const withTimeout = <T>(p: Promise<T>, what: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${what} took longer than ${timeoutMs} ms`)), timeoutMs);
      p.then(
        (v) => {
          clearTimeout(t);
          resolve(v);
        },
        (e) => {
          clearTimeout(t);
          reject(e);
        },
      );
    });

  const connect = async (): Promise<import('pg').Client> => {
    const c = new pg.Client({
      connectionString: url,
      application_name: options.applicationName.slice(0, 63),
      connectionTimeoutMillis: timeoutMs,
      keepAlive: true,
      keepAliveInitialDelayMillis: 5_000,
    });
    c.on('error', (e) => {
      onError(e);
      drop(c);
    });
    c.on('end', () => drop(c));
    await c.connect();
    // PostgreSQL's side of the connection: notice a vanished holder in ~11 s, not 2 h (see docs/operations.md).
    await c.query(
      'set tcp_keepalives_idle = 5; set tcp_keepalives_interval = 2; set tcp_keepalives_count = 3; set tcp_user_timeout = 10000',
    );
    return c;
  };

  return {
    get held() {
      return held;
    },
    async check(): Promise<boolean> {
      if (closed) return false;
      try {
        if (!client) client = await withTimeout(connect(), 'connecting for the singleton lock');
        const c = client;
        if (held) {
          // The lock lives as long as the session: a live session means we still hold it.
          await withTimeout(c.query('select 1'), 'the singleton lock check');
        } else {
          const r = await withTimeout(
            c.query<{ ok: boolean }>('select pg_try_advisory_lock($1, $2) as ok', [LOCK_CLASS, options.lockId]),
            'pg_try_advisory_lock',
          );
          held = client === c && r.rows[0]?.ok === true;
        }
        return held;
      } catch (e) {
        onError(e as Error);
        drop(client);
        return false;
      }
    },
    async close(): Promise<void> {
      closed = true;
      const c = client;
      client = undefined;
      const wasHeld = held;
      held = false;
      if (!c) return;
      try {
        // Hand over at once rather than when the connection closes; closing would release it anyway.
        if (wasHeld) await withTimeout(c.query('select pg_advisory_unlock($1, $2)', [LOCK_CLASS, options.lockId]), 'unlock');
      } catch {
        // the session is gone, and the lock with it
      }
      c.removeAllListeners('end');
      await withTimeout(c.end(), 'closing the singleton connection').catch(() => drop(c));
    },
  };
}
