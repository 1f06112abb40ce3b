/**
 * WAL checkpoints for SQLite, off the event loop. SQLite's automatic checkpoint runs inside the
 * commit that crosses the threshold: under steady writes (one issuance record per token) that commit
 * copies megabytes and syncs the file while every request waits, which is what a server's p99 latency
 * is made of. Here a worker thread with its own connection runs a PASSIVE checkpoint a few times a
 * second — it never waits for readers or writers — then, once the WAL is long, a RESTART checkpoint
 * for the few frames written meanwhile, so that the WAL starts over instead of growing for as long as
 * writes never pause. The server's connection keeps a far higher automatic threshold only as a
 * backstop, should the thread ever fall behind or die.
 *
 * A RESTART holds writers off while it copies the last frames and syncs the files, and a writer that
 * meets it waits in SQLite's busy handler, which sleeps (1 ms at least) on the event loop. The write
 * gate keeps the server's direct writes (the hot path: issuance records) from meeting it: while the
 * thread restarts the WAL they wait asynchronously instead, and the event loop goes on.
 *
 * The thread never writes to the database itself: the server's connection is its only writer, which
 * its deferred transactions rely on (a commit by another connection between a transaction's first
 * read and its first write fails that write with SQLITE_BUSY_SNAPSHOT). So the first write after a
 * restart, which starts the WAL over and syncs its header, stays the server's (about 0.2 ms).
 */

import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/** The server connection's automatic-checkpoint threshold (pages) while the checkpointer runs: a backstop. */
export const BACKSTOP_AUTOCHECKPOINT_PAGES = 20_000;

/** A running checkpointer. */
export interface Checkpointer {
  /** Stops the thread after its current checkpoint and closes its connection. */
  close(): Promise<void>;
  /** The gate the server's direct writes go through (see {@link WriteGate}). */
  readonly gate: WriteGate;
}

/**
 * Lets a write statement on the server's connection in, unless the checkpointer is restarting the WAL.
 * `enter()` answers `undefined` when the write may run now (call `leave()` right after it), or a
 * promise that settles when the restart is over (`'open'`: enter again) or after
 * {@link GATE_MAX_WAIT_MS} (`'timed-out'`: write anyway, and meet SQLite's own busy handling).
 * Shared memory, no messages: the thread announces a restart, waits for a write in progress to
 * finish, and lets writers in after it.
 */
export interface WriteGate {
  enter(): Promise<'open' | 'timed-out'> | undefined;
  leave(): void;
}

/** Slots of the gate's shared memory. */
const RESTARTING = 0;
const WRITING = 1;
/** Longest a write waits for a restart before it goes ahead (it then meets SQLite's own busy handling). */
const GATE_MAX_WAIT_MS = 5_000;

/** `Atomics.waitAsync` (V8 since Node 16; TypeScript's lib has it from ES2024). */
interface AtomicsWaitAsync {
  waitAsync(
    cells: Int32Array,
    index: number,
    value: number,
    timeoutMs: number,
  ): { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
}

/** The writers' side of the gate over `cells` (exported for its tests). @internal */
export function writeGate(cells: Int32Array, maxWaitMs = GATE_MAX_WAIT_MS): WriteGate {
  return {
    enter: () => {
      // Dekker's handshake, with sequentially consistent Atomics: the writer raises WRITING then looks
      // at RESTARTING, the thread raises RESTARTING then looks at WRITING; at least one sees the other.
      Atomics.store(cells, WRITING, 1);
      if (Atomics.load(cells, RESTARTING) === 0) return undefined;
      Atomics.store(cells, WRITING, 0);
      Atomics.notify(cells, WRITING);
      const wait = (Atomics as unknown as AtomicsWaitAsync).waitAsync(cells, RESTARTING, 1, maxWaitMs);
      if (!wait.async) return Promise.resolve('open');
      return wait.value.then((outcome) => (outcome === 'timed-out' ? 'timed-out' : 'open'));
    },
    leave: () => {
      Atomics.store(cells, WRITING, 0);
      Atomics.notify(cells, WRITING);
    },
  };
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
  /**
   * Called after each checkpoint with SQLite's answer: WAL frames in the log, how many are now in the
   * database, and whether it was a RESTART that completed (the next write starts the WAL over).
   */
  onCheckpoint?: (result: { log: number; checkpointed: number; restarted: boolean }) => void;
}

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { fileMustExist: true });
// RESTART waits this long for the writer's transaction in progress (commits take well under 1 ms).
db.pragma('busy_timeout = 50');
const cells = new Int32Array(workerData.gate);
let stopped = false;
let timer;
const loop = () => {
  if (stopped) return;
  try {
    let r = db.pragma('wal_checkpoint(PASSIVE)')[0];
    let restarted = false;
    // Under steady writes the WAL never catches up on its own: a writer restarts it only when every
    // frame is in the database, and new frames arrive during every checkpoint. Once it is long, copy
    // the few frames written meanwhile with writers held off (RESTART), so the next write starts it over.
    if (r.log >= workerData.restartFrames) {
      // Close the gate: the server's direct writes wait (asynchronously) from now on; let the one in
      // progress, if any, finish (a single statement: well under a millisecond).
      Atomics.store(cells, 0, 1);
      const until = Date.now() + 100;
      while (Atomics.load(cells, 1) === 1 && Date.now() < until) Atomics.wait(cells, 1, 1, 5);
      try {
        r = db.pragma('wal_checkpoint(RESTART)')[0];
        restarted = r.busy === 0;
      } finally {
        Atomics.store(cells, 0, 0);
        Atomics.notify(cells, 0);
      }
    }
    if (workerData.report) parentPort.postMessage({ log: r.log, checkpointed: r.checkpointed, restarted });
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
  const cells = new Int32Array(new SharedArrayBuffer(8));
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    workerData: {
      gate: cells.buffer,
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
  const exited = new Promise<void>((resolve) =>
    worker.once('exit', () => {
      // A thread that ends (or dies) mid-restart must not leave the gate closed.
      Atomics.store(cells, RESTARTING, 0);
      Atomics.notify(cells, RESTARTING);
      resolve();
    }),
  );
  worker.on('error', (e) => options.onError?.(e));
  let closing: Promise<void> | undefined;
  return {
    gate: writeGate(cells),
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
