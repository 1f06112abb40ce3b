import { createRequire } from 'node:module';
import type { WakeupBus } from '../services/events.js';

const CHANNEL = 'tessera_wakeup';
const require = createRequire(import.meta.url);

/**
 * LISTEN/NOTIFY between replicas. One dedicated connection listens; publishing goes through a
 * short-lived pool connection. A lost listener reconnects by itself with backoff; wake-ups missed
 * meanwhile only cost a poll cycle (polls time out and re-check), never a run.
 */
export function createPgWakeupBus(url: string, onError: (e: Error) => void = () => {}): WakeupBus {
  const pg = require('pg') as typeof import('pg');
  const publisher = new pg.Pool({ connectionString: url, max: 2 });
  publisher.on('error', onError);
  let listener: import('pg').Client | undefined;
  let closed = false;
  let deliver: ((key: string) => void) | undefined;
  let retryMs = 250;

  const connect = async (): Promise<void> => {
    const client = new pg.Client({ connectionString: url });
    client.on('notification', (msg) => {
      if (msg.channel === CHANNEL && msg.payload) deliver?.(msg.payload);
    });
    client.on('error', (e) => {
      onError(e);
      reconnect(client);
    });
    client.on('end', () => reconnect(client));
    await client.connect();
    await client.query(`LISTEN ${CHANNEL}`);
    listener = client;
    retryMs = 250;
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
      publisher.query('select pg_notify($1, $2)', [CHANNEL, key]).catch(onError);
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
