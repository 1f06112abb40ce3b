/**
 * WAL checkpoints for SQLite, off the event loop. SQLite's automatic checkpoint runs inside the
 * commit that crosses the threshold: under steady writes (one issuance record per token) that commit
 * copies megabytes and syncs the file while every request waits, which is what a server's p99 latency
 * is made of. Here a worker thread with its own connection runs a PASSIVE checkpoint a few times a
 * second — it never waits for readers or writers — then, once the WAL is long, a RESTART checkpoint
 * for the few frames written meanwhile, so that the WAL starts over instead of growing for as long as
 * writes never pause. The server's connection keeps a far higher automatic threshold only as a
 * backstop, should the thread ever fall behind or die.
 */

import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/** The server connection's automatic-checkpoint threshold (pages) while the checkpointer runs: a backstop. */
export const BACKSTOP_AUTOCHECKPOINT_PAGES = 20_000;

/** A running checkpointer. */
export interface Checkpointer {
  /** Stops the thread after its current checkpoint and closes its connection. */
  close(): Promise<void>;
}

/** Options of {@link startCheckpointer}. */
export interface CheckpointerOptions {
  /** Pause between checkpoints, ms. @default 200 */
  intervalMs?: number;
  /**
   * WAL length (frames, about 4 KiB each) past which a checkpoint also restarts the WAL, holding
   * writers off for the few frames written since the passive pass. @default 1000 (SQLite's own
   * automatic threshold)
   */
  restartFrames?: number;
  /** Called when the thread fails (the backstop then keeps the WAL bounded). */
  onError?: (e: Error) => void;
  /** Called after each checkpoint with SQLite's answer: WAL frames in the log, and how many are now in the database. */
  onCheckpoint?: (result: { log: number; checkpointed: number }) => void;
}

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { fileMustExist: true });
// RESTART waits this long for the writer's transaction in progress (commits take well under 1 ms).
db.pragma('busy_timeout = 50');
let stopped = false;
let timer;
const loop = () => {
  if (stopped) return;
  try {
    let r = db.pragma('wal_checkpoint(PASSIVE)')[0];
    // Under steady writes the WAL never catches up on its own: a writer restarts it only when every
    // frame is in the database, and new frames arrive during every checkpoint. Once it is long, copy
    // the few frames written meanwhile with writers held off (RESTART), so the next write starts it over.
    if (r.log >= workerData.restartFrames) r = db.pragma('wal_checkpoint(RESTART)')[0];
    if (workerData.report) parentPort.postMessage({ log: r.log, checkpointed: r.checkpointed });
  } catch { /* busy: another checkpoint runs; next time */ }
  timer = setTimeout(loop, workerData.intervalMs);
};
parentPort.on('message', (m) => {
  if (m !== 'stop') return;
  stopped = true;
  clearTimeout(timer);
  db.close();
  parentPort.close();
});
loop();
`;

/** Starts checkpointing the WAL of the SQLite database at `file` from a worker thread. */
export function startCheckpointer(file: string, options: CheckpointerOptions = {}): Checkpointer {
  const require = createRequire(import.meta.url);
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    workerData: {
      file,
      driver: require.resolve('better-sqlite3'),
      intervalMs: options.intervalMs ?? 200,
      restartFrames: options.restartFrames ?? 1_000,
      report: options.onCheckpoint !== undefined,
    },
  });
  if (options.onCheckpoint) worker.on('message', options.onCheckpoint);
  // Never keeps the process alive by itself.
  worker.unref();
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  worker.on('error', (e) => options.onError?.(e));
  let closing: Promise<void> | undefined;
  return {
    close: () => {
      closing ??= (async () => {
        worker.postMessage('stop');
        const timeout = setTimeout(() => void worker.terminate(), 5_000);
        await exited;
        clearTimeout(timeout);
      })();
      return closing;
    },
  };
}
