import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { WAKE_ALL, type WakeupBus } from '../services/events.js';

const CHANNEL = 'tessera_wakeup';
const require = createRequire(import.meta.url);

/**
 * LISTEN/NOTIFY between replicas. One dedicated connection listens; publishing goes through a
 * small pool. A lost listener reconnects by itself with backoff and then delivers
 * {@link WAKE_ALL}, so every waiting poll re-checks at once: wake-ups missed while it was away cost
 * nothing more than that re-check, never a run.
 *
 * Each payload is `<origin> <key>`: a replica skips its own notifications, because {@link Wakeups}
 * already woke its own waiters at once. Delivered again a moment later, the echo would wake a poll
 * that had just looked and gone back to sleep, for a second, useless claim.
 */
export function createPgWakeupBus(url: string, onError: (e: Error) => void = () => {}): WakeupBus {
  const pg = require('pg') as typeof import('pg');
  const publisher = new pg.Pool({ connectionString: url, max: 2, connectionTimeoutMillis: 5_000, keepAlive: true });
  publisher.on('error', onError);
  // A connection dropping mid-query emits 'error' on its client; unhandled, it would end the process.
  publisher.on('connect', (client) => client.on('error', () => {}));
  let connectedOnce = false;
  let listener: import('pg').Client | undefined;
  let closed = false;
  let deliver: ((key: string) => void) | undefined;
  let retryMs = 250;
  const origin = randomUUID();

  const connect = async (): Promise<void> => {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000, keepAlive: true });
    client.on('notification', (msg) => {
      if (msg.channel !== CHANNEL || !msg.payload) return;
      const space = msg.payload.indexOf(' ');
      // A replica of an older version (rolling upgrade) sends the bare key.
      if (space < 0) deliver?.(msg.payload);
      else if (msg.payload.slice(0, space) !== origin) deliver?.(msg.payload.slice(space + 1));
    });
    client.on('error', (e) => {
      onError(e);
      reconnect(client);
    });
    client.on('end', () => reconnect(client));
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
    } catch (e) {
      client.removeAllListeners('end');
      void client.end().catch(() => {});
      throw e;
    }
    if (closed) {
      void client.end().catch(() => {});
      return;
    }
    listener = client;
    retryMs = 250;
    // Whatever was published while we were not listening: let every waiting poll look again.
    if (connectedOnce) deliver?.(WAKE_ALL);
    connectedOnce = true;
  };

  const reconnect = (dead: import('pg').Client) => {
    if (closed || listener !== dead) return;
    listener = undefined;
    dead.removeAllListeners('end');
    void dead.end().catch(() => {});
    const attempt = () => {
      if (closed) return;
      connect().catch((e: Error) => {
        onError(e);
        retryMs = Math.min(retryMs * 2, 5_000);
        setTimeout(attempt, retryMs);
      });
    };
    setTimeout(attempt, retryMs);
  };

  return {
    publish(key) {
      if (closed) return;
      publisher.query('select pg_notify($1, $2)', [CHANNEL, `${origin} ${key}`]).catch(onError);
    },
    async subscribe(fn) {
      deliver = fn;
      await connect();
    },
    async close() {
      closed = true;
      const l = listener;
      listener = undefined;
      if (l) {
        l.removeAllListeners('end');
        await l.end().catch(() => {});
      }
      await publisher.end().catch(() => {});
    },
  };
}
