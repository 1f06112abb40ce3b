/**
 * Tessera benchmarks (`npm run bench` builds first, then runs this file):
 *
 *   node --import tsx bench/run.ts [--only overhead|dispatch|throughput|issuance|verify|dispatch-pg] [--quick]
 *
 * - overhead:   per-task cost of 1,000 no-op tasks in a flow reporting to a real server
 * - dispatch:   from a run being due to its flow code starting, beside bare process start-up
 * - throughput: trivial runs per second through one worker at concurrency 8, beside spawning the
 *               same number of node+tsx processes 8 at a time
 *
 * Every figure is printed beside a baseline measured in the same run. Everything runs in this
 * process (server, worker) or in its children (flow processes), talks only to 127.0.0.1, and is
 * cleaned up at the end, on Ctrl-C, or when the hard time limit is reached. `docs/benchmarks.md`
 * explains how to read the output. `--json FILE` also writes every figure to FILE.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { ApiClient, FlowRun, StateHistoryEntry } from '@tessera/core';
import { flow, runFlowAttached, task } from '@tessera/sdk';
import { DEFAULT_SETTINGS } from '@tessera/server';
import { startTestServer, type TestServer } from '@tessera/testing';
import { createWorker, type Worker, type WorkerEvent } from '@tessera/worker';

// ─── options ────────────────────────────────────────────────────────────────────────────────────

const BENCHES = ['overhead', 'dispatch', 'throughput', 'issuance', 'verify', 'dispatch-pg'] as const;
type BenchName = (typeof BENCHES)[number];

const { values: args } = parseArgs({
  options: {
    only: { type: 'string', multiple: true },
    quick: { type: 'boolean', default: false },
    'poll-wait': { type: 'string' },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  process.stdout.write(
    `usage: node --import tsx bench/run.ts [--only ${BENCHES.join('|')}]… [--quick] [--poll-wait MS]
  --quick         smaller counts, for a smoke run
  --poll-wait MS  the worker's pollWaitMs (default: the worker's own default), to compare settings
  --json FILE     also write every figure to FILE as JSON
`,
  );
  process.exit(0);
}
const only = (args.only ?? []).flatMap((s) => s.split(',')).map((s) => s.trim());
for (const name of only) {
  if (!(BENCHES as readonly string[]).includes(name)) {
    process.stderr.write(`bench: unknown benchmark "${name}"; choose from ${BENCHES.join(', ')}\n`);
    process.exit(2);
  }
}
const selected: BenchName[] = only.length > 0 ? BENCHES.filter((b) => only.includes(b)) : [...BENCHES];
const QUICK = args.quick === true;
const POLL_WAIT_MS = args['poll-wait'] === undefined ? undefined : Number(args['poll-wait']);
if (POLL_WAIT_MS !== undefined && !(Number.isInteger(POLL_WAIT_MS) && POLL_WAIT_MS >= 0)) {
  process.stderr.write(`bench: --poll-wait must be a whole number of milliseconds, not "${args['poll-wait']}"\n`);
  process.exit(2);
}

// boxMs / baseBoxMs: the throughput measurement and its baseline stop at this time even if not all
// runs are done (the rate is then computed over what finished), to keep the bench under ~3 minutes.
const SIZES = QUICK
  ? {
      tasks: 200,
      overheadReps: 2,
      emptyRuns: 3,
      dispatchRuns: 8,
      startupSamples: 8,
      startupExtraSamples: 5,
      throughputRuns: 50,
      concurrency: 8,
      boxMs: 40_000,
      baseBoxMs: 10_000,
    }
  : {
      tasks: 1000,
      overheadReps: 3,
      emptyRuns: 5,
      dispatchRuns: 30,
      startupSamples: 30,
      startupExtraSamples: 15,
      throughputRuns: 500,
      concurrency: 8,
      boxMs: 75_000,
      baseBoxMs: 25_000,
    };
/** The whole bench is stopped (and cleaned up) after this long, whatever it is doing. */
const HARD_LIMIT_MS = QUICK ? 300_000 : 900_000;
const GOAL_PER_TASK_MS = 2;

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
/** The same loader the worker passes to `node --import` (its package entry, see worker/src/lib/compile-options.ts). */
const TSX_LOADER = import.meta.resolve('tsx');

// ─── cleanup and the hard limit ─────────────────────────────────────────────────────────────────

const cleanups: { what: string; fn: () => unknown }[] = [];
const children = new Set<ChildProcess>();
let cleaning: Promise<void> | undefined;

function onCleanup(what: string, fn: () => unknown): void {
  cleanups.push({ what, fn });
}

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const child of children) killTree(child);
    for (const { what, fn } of cleanups.splice(0).reverse()) {
      try {
        const t0 = performance.now();
        await withTimeout(Promise.resolve().then(fn), 30_000, what);
        if (process.env.BENCH_DEBUG) process.stderr.write(`bench: cleanup: ${what} took ${(performance.now() - t0).toFixed(0)} ms\n`);
      } catch (e) {
        process.stderr.write(`bench: cleanup: ${(e as Error).message}\n`);
      }
    }
  })();
  return cleaning;
}

function killTree(child: ChildProcess): void {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL'); // its own process group (spawned detached, like the worker does)
  } catch {
    child.kill('SIGKILL');
  }
}

async function abort(code: number, message: string): Promise<never> {
  process.stderr.write(`\nbench: ${message}\n`);
  await cleanup();
  process.exit(code);
}

const hardLimit = setTimeout(() => void abort(3, `stopped after the hard limit of ${HARD_LIMIT_MS / 1000} s; cleaned up`), HARD_LIMIT_MS);
process.once('SIGINT', () => void abort(130, 'interrupted; cleaned up'));
process.once('SIGTERM', () => void abort(143, 'terminated; cleaned up'));

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ─── statistics and formatting ──────────────────────────────────────────────────────────────────

interface Summary {
  n: number;
  p50: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

/** Nearest-rank percentile of an ascending array. */
function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number;
}

function summarize(samples: readonly number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  const sum = sorted.reduce((s, x) => s + x, 0);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    mean: sum / sorted.length,
    min: sorted[0] ?? Number.NaN,
    max: sorted[sorted.length - 1] ?? Number.NaN,
  };
}

/** Milliseconds with about three significant digits. */
function ms(x: number): string {
  if (!Number.isFinite(x)) return 'n/a';
  const a = Math.abs(x);
  const digits = a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : a >= 0.1 ? 3 : a >= 0.01 ? 4 : 5;
  return `${x.toFixed(digits)} ms`;
}

function rate(x: number): string {
  return `${x >= 100 ? x.toFixed(0) : x.toFixed(1)} runs/s`;
}

function p5099(s: Summary): string {
  return `p50 ${ms(s.p50)}  p99 ${ms(s.p99)}`;
}

const color = process.stdout.isTTY && !process.env.NO_COLOR;
const bold = (s: string) => (color ? `\x1b[1m${s}\x1b[0m` : s);
const dim = (s: string) => (color ? `\x1b[2m${s}\x1b[0m` : s);
const out = (line = '') => process.stdout.write(`${line}\n`);

interface Row {
  bench: BenchName;
  name: string;
  figures: string;
  baseline: string;
  goal?: string;
}
const table: Row[] = [];
const json: Record<string, unknown> = {};

function line(label: string, text: string): void {
  out(`  ${label.padEnd(46)} ${text}`);
}

// ─── shared helpers ─────────────────────────────────────────────────────────────────────────────

/** A real server on 127.0.0.1 (ephemeral port) over a fresh SQLite file, with production timings. */
async function startBenchServer(): Promise<TestServer> {
  const server = await startTestServer({ logLevel: 'warn', settings: { ...DEFAULT_SETTINGS } });
  onCleanup('stop the server and delete its data', async () => {
    // A connection with no request on it (an aborted fetch can leave one) would hold close() until
    // Node's headers timeout; nothing is in flight by now, so cut whatever is left after 2 s.
    const timer = setTimeout(() => server.app.server.closeAllConnections(), 2000);
    try {
      await server.close();
    } finally {
      clearTimeout(timer);
    }
  });
  return server;
}

/** A project directory inside the repository, so its flow files resolve `@tessera/sdk`. */
function createBenchProject(files: Record<string, string>): string {
  const dir = join(REPO_ROOT, '.tessera', 'bench-projects', randomUUID());
  mkdirSync(dir, { recursive: true });
  onCleanup(`remove ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  for (const [path, content] of Object.entries(files)) writeFileSync(join(dir, path), content);
  return dir;
}

const FLOWS_TS = `const moduleLoadedAt = Date.now();
import { flow } from '@tessera/sdk';

/** Records when its code starts: the first line of the flow function. */
export const stamp = flow({ name: 'bench-stamp' }, async () => {
  const flowStartAt = Date.now();
  return { flowStartAt, moduleLoadedAt, pid: process.pid };
});

export const trivial = flow({ name: 'bench-trivial' }, async () => ({ ok: true }));
`;
/** Process start-up baselines: node + tsx + a TypeScript file, and the same importing the SDK. */
const TRIVIAL_TS = 'const at: number = Date.now();\nprocess.stdout.write(String(at));\n';
const TRIVIAL_SDK_TS = "import '@tessera/sdk';\nconst at: number = Date.now();\nprocess.stdout.write(String(at));\n";
const TRIVIAL_SDK_MJS = "import '@tessera/sdk';\nprocess.stdout.write(String(Date.now()));\n";

/** How the worker finished with a run: its report, or `forgotten` (the server told it to drop the run). */
type Done = { outcome: (WorkerEvent & { type: 'reported' })['outcome'] | 'forgotten' };

interface BenchWorker {
  worker: Worker;
  /**
   * Resolves when the worker is done with the run: it reported it, or its process exited after the
   * server told the worker to forget it (then the worker reports nothing; see docs/benchmarks.md).
   */
  done(runId: string, timeoutMs?: number): Promise<Done>;
  /** When the worker spawned the run's flow process (epoch ms). */
  startedAt: Map<string, number>;
  /** When the worker saw the run's flow process exit (epoch ms). */
  exitedAt: Map<string, number>;
  /** Runs whose flow process the worker killed because the server said to forget them. */
  forgotten: Set<string>;
  /** Stops the worker now (running flow processes get SIGTERM). */
  stop(): Promise<void>;
  outputTail(): string;
}

/** An in-process worker (as in `tessera dev`), silent, with its events recorded. */
function startBenchWorker(server: TestServer, pool: string, concurrency: number): BenchWorker {
  const finished = new Map<string, Done>();
  const waiters = new Map<string, (d: Done) => void>();
  const startedAt = new Map<string, number>();
  const exitedAt = new Map<string, number>();
  const forgotten = new Set<string>();
  const exited = new Set<string>();
  const finish = (runId: string, d: Done) => {
    if (finished.has(runId)) return;
    finished.set(runId, d);
    waiters.get(runId)?.(d);
    waiters.delete(runId);
  };
  let tail = '';
  const keep = (chunk: unknown) => {
    tail = (tail + String(chunk)).slice(-8000);
  };
  const sink = new Writable({
    write(chunk, _enc, cb) {
      keep(chunk);
      cb();
    },
  });
  const worker = createWorker({
    apiUrl: server.url,
    pool,
    concurrency,
    name: 'bench-worker',
    ...(POLL_WAIT_MS !== undefined ? { pollWaitMs: POLL_WAIT_MS } : {}),
    logger: { info: () => {}, warn: (m) => keep(`worker warn: ${m}\n`), error: (m) => keep(`worker error: ${m}\n`) },
    output: { stdout: sink, stderr: sink },
    onEvent: (event) => {
      if (event.type === 'started') startedAt.set(event.runId, Date.now());
      // A forgotten run gets no report; its process may exit before or after the server says so.
      if (event.type === 'cancelled' && event.reason === 'forgotten') {
        forgotten.add(event.runId);
        if (exited.has(event.runId)) finish(event.runId, { outcome: 'forgotten' });
      }
      if (event.type === 'exited') {
        exited.add(event.runId);
        exitedAt.set(event.runId, Date.now());
        if (forgotten.has(event.runId)) finish(event.runId, { outcome: 'forgotten' });
      }
      if (event.type === 'reported') finish(event.runId, { outcome: event.outcome });
    },
  });
  worker.start();
  const stop = async () => {
    const stopped = worker.stop();
    void worker.stop(); // a second stop() ends the open poll at once and stops what still runs
    await stopped;
  };
  onCleanup('stop the worker', stop);
  return {
    stop,
    worker,
    startedAt,
    exitedAt,
    forgotten,
    outputTail: () => tail,
    done(runId, timeoutMs = 60_000) {
      const done = finished.get(runId);
      if (done) return Promise.resolve(done);
      return withTimeout(
        new Promise((resolve) => waiters.set(runId, resolve)),
        timeoutMs,
        `run ${runId.slice(0, 8)} (worker output: ${tail.slice(-2000)})`,
      );
    },
  };
}

interface SpawnSample {
  /** spawn() → the child's first line of code (its own Date.now()), ms. */
  startMs: number;
  /** spawn() → 'exit', ms. */
  lifetimeMs: number;
}

/** Spawns a process the way the worker spawns flow processes (worker/src/lib/flow-process.ts). */
function spawnLikeWorker(args: string[], cwd: string): Promise<SpawnSample> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const epoch0 = Date.now();
    const child = spawn(process.execPath, args, {
      cwd,
      env: { ...process.env },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      detached: process.platform !== 'win32',
      windowsHide: true,
    });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.on('disconnect', () => {});
    child.once('error', (e) => {
      children.delete(child);
      reject(e);
    });
    child.once('exit', (code) => {
      const lifetimeMs = performance.now() - t0;
      children.delete(child);
      if (code !== 0) return reject(new Error(`${args.join(' ')} exited with ${code}: ${stderr.slice(-2000)}`));
      // stdout may still be draining: wait for 'close' before reading it.
      const finish = () => {
        const at = Number(stdout.trim());
        resolve({ startMs: Number.isFinite(at) && at > 0 ? at - epoch0 : Number.NaN, lifetimeMs });
      };
      if (child.stdout?.readableEnded) finish();
      else child.once('close', finish);
    });
  });
}

async function spawnSamples(n: number, args: string[], cwd: string): Promise<SpawnSample[]> {
  const samples: SpawnSample[] = [];
  for (let i = 0; i < n; i++) samples.push(await spawnLikeWorker(args, cwd));
  return samples;
}

function stateAt(history: StateHistoryEntry[], type: string): number {
  const entry = history.find((s) => s.type === type);
  return entry ? Date.parse(entry.timestamp) : Number.NaN;
}

// ─── 1. overhead per task ───────────────────────────────────────────────────────────────────────

/** Per-call latencies recorded by the flows below, read after each run. */
let recorded: number[] = [];
/** When the flow body returned (performance.now()); what comes after it is the flush and the final state. */
let bodyEndAt = 0;

const noop = task({ name: 'noop' }, async (_i: number) => {});

const sequentialFlow = flow({ name: 'bench-sequential' }, async ({ n }: { n: number }) => {
  const lat = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await noop(i);
    lat[i] = performance.now() - t0;
  }
  recorded = lat;
  bodyEndAt = performance.now();
  return n;
});

/**
 * The `.map` fan-out: `noop.map(items)` is `Promise.all(items.map((i) => noop(i)))`; written out here
 * only so that each call's resolution can be timed.
 */
const parallelFlow = flow({ name: 'bench-parallel' }, async ({ n }: { n: number }) => {
  const lat = new Array<number>(n);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: n }, (_, i) =>
      noop(i).then(() => {
        lat[i] = performance.now() - t0;
      }),
    ),
  );
  recorded = lat;
  bodyEndAt = performance.now();
  return n;
});

/** The same calls without Tessera. */
const bareNoop = async (_i: number) => {};
async function bareSequential(n: number): Promise<number[]> {
  const lat = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await bareNoop(i);
    lat[i] = performance.now() - t0;
  }
  return lat;
}
async function bareParallel(n: number): Promise<number[]> {
  const lat = new Array<number>(n);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: n }, (_, i) =>
      bareNoop(i).then(() => {
        lat[i] = performance.now() - t0;
      }),
    ),
  );
  return lat;
}

interface Measured {
  lat: Summary;
  wallMs: number;
  perTaskMs: number;
  /** From the flow body's return to the end (flush of task events, final state); 0 for bare calls. */
  tailMs: number;
}

async function measure(n: number, fn: () => Promise<number[] | undefined>): Promise<Measured> {
  bodyEndAt = 0;
  const t0 = performance.now();
  const lat = (await fn()) ?? recorded;
  const end = performance.now();
  const wallMs = end - t0;
  return { lat: summarize(lat), wallMs, perTaskMs: wallMs / n, tailMs: bodyEndAt > 0 ? end - bodyEndAt : 0 };
}

async function attached(client: ApiClient, which: typeof sequentialFlow, n: number): Promise<{ run: FlowRun; tasks: number }> {
  const res = await runFlowAttached(which, { client, parameters: { n }, printLogs: false });
  if (res.error || res.run.state.type !== 'COMPLETED') {
    throw new Error(`the attached run ended ${res.run.state.name}: ${res.error?.message ?? ''}`);
  }
  return { run: res.run, tasks: n };
}

async function verifyOnServer(client: ApiClient, run: FlowRun, n: number): Promise<string> {
  const [server, taskRuns] = await Promise.all([client.getFlowRun(run.id), client.listTaskRuns(run.id)]);
  const completed = taskRuns.items.filter((t) => t.state.type === 'COMPLETED').length;
  const ok = server.state.type === 'COMPLETED' && taskRuns.items.length === n && completed === n;
  if (!ok) {
    throw new Error(
      `server check failed for run ${run.id}: run ${server.state.name}, ${taskRuns.items.length} task runs recorded, ${completed} Completed (expected ${n})`,
    );
  }
  return `${completed}/${n} task runs Completed on the server ✓`;
}

/** Several measurements of the same thing: per-call latencies pooled, wall figures by their median. */
interface Repeated {
  lat: Summary;
  wallMs: number;
  perTaskMs: number;
  tailMs: number;
  reps: number;
}

function combine(n: number, reps: Measured[], latencies: number[][]): Repeated {
  const median = (xs: number[]) =>
    percentile(
      [...xs].sort((a, b) => a - b),
      50,
    );
  const wallMs = median(reps.map((r) => r.wallMs));
  return {
    lat: summarize(latencies.flat()),
    wallMs,
    perTaskMs: wallMs / n,
    tailMs: median(reps.map((r) => r.tailMs)),
    reps: reps.length,
  };
}

async function benchOverhead(): Promise<void> {
  const n = SIZES.tasks;
  const reps = SIZES.overheadReps;
  out(bold(`\n▸ overhead per task: ${n.toLocaleString('en')} no-op tasks in one flow (each measured ${reps} times)`));
  const server = await startBenchServer();
  const { client } = server;
  // Time the server's handling of task-run event batches (it shares this process's one thread).
  const applied = { batches: 0, events: 0, ms: 0 };
  const taskRuns = server.services.taskRuns;
  const applyEvents = taskRuns.applyEvents.bind(taskRuns);
  taskRuns.applyEvents = async (runId, events) => {
    const t0 = performance.now();
    try {
      return await applyEvents(runId, events);
    } finally {
      applied.ms += performance.now() - t0;
      applied.events += events.length;
      applied.batches++;
    }
  };

  // Warm-up (JIT, connection pool, SQLite pages); nothing here is reported.
  await bareSequential(n);
  await bareParallel(n);
  await sequentialFlow({ n: 200 });
  await parallelFlow({ n: 200 });
  await attached(client, sequentialFlow, 200);
  await attached(client, parallelFlow, 200);

  const results: Record<string, Repeated> = {};
  for (const [mode, flowFn, bare] of [
    ['sequential', sequentialFlow, bareSequential],
    ['parallel', parallelFlow, bareParallel],
  ] as const) {
    const m = { bare: [] as Measured[], local: [] as Measured[], tracked: [] as Measured[] };
    const lat = { bare: [] as number[][], local: [] as number[][], tracked: [] as number[][] };
    const serverMs: number[] = [];
    let check = '';
    // Interleaved, so that a slow moment of the machine does not land on one variant only.
    for (let r = 0; r < reps; r++) {
      let bareLat: number[] = [];
      m.bare.push(
        await measure(n, async () => {
          bareLat = await bare(n);
          return bareLat;
        }),
      );
      lat.bare.push(bareLat);
      m.local.push(
        await measure(n, async () => {
          await flowFn({ n });
          return undefined;
        }),
      );
      lat.local.push(recorded);
      let tracked: { run: FlowRun; tasks: number } | undefined;
      Object.assign(applied, { batches: 0, events: 0, ms: 0 });
      m.tracked.push(
        await measure(n, async () => {
          tracked = await attached(client, flowFn, n);
          return undefined;
        }),
      );
      lat.tracked.push(recorded);
      serverMs.push(applied.ms);
      check = await verifyOnServer(client, (tracked as { run: FlowRun }).run, n);
    }
    const bareM = combine(n, m.bare, lat.bare);
    const local = combine(n, m.local, lat.local);
    const trackedM = combine(n, m.tracked, lat.tracked);
    const applyMs = percentile(
      [...serverMs].sort((a, b) => a - b),
      50,
    );
    results[mode] = trackedM;
    out(dim(`  ${mode} (${mode === 'sequential' ? 'await each call' : 'all calls at once, as .map does'})`));
    line('bare async function (no Tessera)', `${p5099(bareM.lat)}  wall/task ${ms(bareM.perTaskMs)}`);
    line('local flow, no server (flow(...))', `${p5099(local.lat)}  wall/task ${ms(local.perTaskMs)}`);
    line('tracked: runFlowAttached, real server', `${p5099(trackedM.lat)}  wall/task ${ms(trackedM.perTaskMs)}  ${dim(`(${check})`)}`);
    line(
      '  of which after the last task returned',
      `${ms(trackedM.tailMs)}  ${dim('(sending the remaining task-run events, reporting Completed)')}`,
    );
    line(
      '  server time applying task-run events',
      `${ms(applyMs)}  ${dim(`(${ms(applyMs / n)} per task; ${applied.events} events in ${applied.batches} requests)`)}`,
    );
    const goalOk = trackedM.perTaskMs < GOAL_PER_TASK_MS;
    table.push({
      bench: 'overhead',
      name: `task overhead (${mode})`,
      figures: `${p5099(trackedM.lat)}  wall/task ${ms(trackedM.perTaskMs)}`,
      baseline: `bare fn p50 ${ms(bareM.lat.p50)}; local flow p50 ${ms(local.lat.p50)}, wall/task ${ms(local.perTaskMs)}`,
      goal: `< ${GOAL_PER_TASK_MS} ms ${goalOk ? '✓' : '✗'}`,
    });
    json[`overhead.${mode}`] = {
      tasks: n,
      tracked: trackedM,
      local,
      bare: bareM,
      serverApplyMs: applyMs,
      goalMsPerTask: GOAL_PER_TASK_MS,
    };
  }

  // The fixed cost of a tracked run (create, Running, flush, Completed), which wall/task above includes.
  const empty: number[] = [];
  for (let i = 0; i < SIZES.emptyRuns; i++) {
    const t0 = performance.now();
    await attached(client, sequentialFlow, 0);
    empty.push(performance.now() - t0);
  }
  const fixed = summarize(empty);
  const seq = results.sequential as Repeated;
  const marginal = (seq.wallMs - fixed.p50) / n;
  line(
    'fixed cost of one tracked run (0 tasks)',
    `p50 ${ms(fixed.p50)} over ${fixed.n} runs → sequential wall/task without it ${ms(marginal)}`,
  );
  table.push({
    bench: 'overhead',
    name: 'tracked run, 0 tasks',
    figures: `p50 ${ms(fixed.p50)} per run (create → Completed)`,
    baseline: `sequential wall/task without it ${ms(marginal)}`,
  });
  json['overhead.emptyRun'] = fixed;
}

// ─── 2. dispatch latency ────────────────────────────────────────────────────────────────────────

async function benchDispatch(): Promise<void> {
  const n = SIZES.dispatchRuns;
  out(bold(`\n▸ dispatch latency: ${n} runs one at a time, run due → flow code starts`));
  const server = await startBenchServer();
  const { client } = server;
  const dir = createBenchProject({
    'flows.ts': FLOWS_TS,
    'trivial.ts': TRIVIAL_TS,
    'trivial-sdk.ts': TRIVIAL_SDK_TS,
    'trivial-sdk.mjs': TRIVIAL_SDK_MJS,
  });
  await client.createWorkPool({ name: 'bench' });
  await client.putDeployment({ name: 'bench-stamp', flowName: 'bench-stamp', entrypoint: 'flows.ts:stamp', path: dir, workPool: 'bench' });
  const bw = startBenchWorker(server, 'bench', SIZES.concurrency);

  const oneRun = async () => {
    const run = await client.runDeployment('bench-stamp');
    const report = await bw.done(run.id);
    const [final, states] = await Promise.all([client.getFlowRun(run.id), client.getFlowRunStates(run.id)]);
    if (final.state.type !== 'COMPLETED') {
      throw new Error(`run ${run.id} ended ${final.state.name} (${report.outcome}): ${final.error?.message ?? ''}\n${bw.outputTail()}`);
    }
    const result = final.result as { flowStartAt: number; moduleLoadedAt: number };
    const due = Date.parse(final.expectedStartTime);
    const history = states.items;
    return {
      dueToFlowStart: result.flowStartAt - due,
      claim: stateAt(history, 'PENDING') - due,
      claimToSpawn: (bw.startedAt.get(run.id) ?? Number.NaN) - stateAt(history, 'PENDING'),
      spawnToModule: result.moduleLoadedAt - (bw.startedAt.get(run.id) ?? Number.NaN),
      moduleToFlowStart: result.flowStartAt - result.moduleLoadedAt,
      dueToCompleted: Date.parse(final.endTime ?? '') - due,
    };
  };

  for (let i = 0; i < 2; i++) await oneRun(); // warm-up: disk cache, tsx's transform cache
  const samples: Awaited<ReturnType<typeof oneRun>>[] = [];
  for (let i = 0; i < n; i++) samples.push(await oneRun());
  const pick = (k: keyof (typeof samples)[number]) => summarize(samples.map((s) => s[k]));
  const total = pick('dueToFlowStart');
  const claim = pick('claim');
  const claimToSpawn = pick('claimToSpawn');
  const spawnToModule = pick('spawnToModule');
  const moduleToFlow = pick('moduleToFlowStart');
  const completed = pick('dueToCompleted');

  // Baselines: processes spawned exactly as the worker spawns flow processes, doing nothing.
  const m = SIZES.startupSamples;
  await spawnLikeWorker(['--import', TSX_LOADER, 'trivial.ts'], dir); // warm-up
  const k = SIZES.startupExtraSamples;
  const tsxNode = await spawnSamples(m, ['--import', TSX_LOADER, 'trivial.ts'], dir);
  const tsxSdk = await spawnSamples(k, ['--import', TSX_LOADER, 'trivial-sdk.ts'], dir);
  const bareNode = await spawnSamples(k, ['-e', 'process.stdout.write(String(Date.now()))'], dir);
  const bareSdk = await spawnSamples(k, ['trivial-sdk.mjs'], dir);
  const startup = summarize(tsxNode.map((s) => s.startMs));
  const startupSdk = summarize(tsxSdk.map((s) => s.startMs));
  const startupBare = summarize(bareNode.map((s) => s.startMs));
  const startupBareSdk = summarize(bareSdk.map((s) => s.startMs));

  line('due → flow code starts', `${p5099(total)}  ${dim(`(${n} runs; Date.now() at the flow's first line − expectedStartTime)`)}`);
  line('  due → Pending (claim)', p5099(claim));
  line('  Pending → process spawned (worker)', p5099(claimToSpawn));
  line('  spawned → flow file loaded', p5099(spawnToModule));
  line('  flow file loaded → flow code starts', `${p5099(moduleToFlow)}  ${dim('(validate, propose Running)')}`);
  line('due → Completed on the server', p5099(completed));
  line('baseline: node + tsx start-up', `${p5099(startup)}  ${dim(`(spawn → first line of a trivial .ts, ${m} samples)`)}`);
  line('baseline: … + import @tessera/sdk', `${p5099(startupSdk)}  ${dim(`(${k} samples, as are the next two)`)}`);
  line('baseline: node alone (no tsx)', p5099(startupBare));
  line('baseline: node + import @tessera/sdk (no tsx)', p5099(startupBareSdk));
  table.push({
    bench: 'dispatch',
    name: 'dispatch (due → flow code)',
    figures: p5099(total),
    baseline: `process start-up (node+tsx) ${p5099(startup)}`,
  });
  table.push({
    bench: 'dispatch',
    name: 'claim (due → Pending)',
    figures: p5099(claim),
    baseline: `node alone starts in p50 ${ms(startupBare.p50)}`,
  });
  json.dispatch = {
    runs: n,
    dueToFlowStart: total,
    claim,
    claimToSpawn,
    spawnToModule,
    moduleToFlowStart: moduleToFlow,
    dueToCompleted: completed,
    startup: { nodeTsx: startup, nodeTsxSdk: startupSdk, nodeAlone: startupBare, nodeSdk: startupBareSdk },
  };
}

// ─── 3. throughput ──────────────────────────────────────────────────────────────────────────────

async function benchThroughput(): Promise<void> {
  const n = SIZES.throughputRuns;
  const c = SIZES.concurrency;
  out(bold(`\n▸ throughput: ${n} trivial runs through one worker at concurrency ${c}`));
  const server = await startBenchServer();
  const { client } = server;
  const dir = createBenchProject({ 'flows.ts': FLOWS_TS, 'trivial.ts': TRIVIAL_TS });
  await client.createWorkPool({ name: 'bench' });
  await client.putDeployment({
    name: 'bench-trivial',
    flowName: 'bench-trivial',
    entrypoint: 'flows.ts:trivial',
    path: dir,
    workPool: 'bench',
  });
  const bw = startBenchWorker(server, 'bench', c);

  // Warm-up: a few runs through the same worker, not counted.
  const warm = await Promise.all(Array.from({ length: 4 }, () => client.runDeployment('bench-trivial')));
  await Promise.all(warm.map((r) => bw.done(r.id)));
  const forgottenBefore = bw.forgotten.size;

  // Runs are created while the worker runs them (creation is far faster than execution). The
  // measurement stops at the time box even if runs are left; the rate is over the finished ones.
  const boxStart = performance.now();
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push((await client.runDeployment('bench-trivial')).id);
  const createMs = performance.now() - boxStart;
  const left = Math.max(0, SIZES.boxMs - (performance.now() - boxStart));
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all(ids.map((id) => bw.done(id, SIZES.boxMs + 60_000))),
    new Promise((resolve) => {
      timer = setTimeout(resolve, left);
    }),
  ]);
  clearTimeout(timer);
  // Nothing more is claimed; what still runs is stopped before the baseline uses the CPU.
  await client.updateWorkPool('bench', { paused: true });
  await bw.stop();

  const wanted = new Set(ids);
  const runs = (await client.listFlowRuns({ deployment: 'bench-trivial', limit: 1000 })).items.filter((r) => wanted.has(r.id));
  const completed = runs.filter((r) => r.state.type === 'COMPLETED' && r.endTime);
  const firstDue = Math.min(...runs.map((r) => Date.parse(r.expectedStartTime)));
  const lastCompleted = Math.max(...completed.map((r) => Date.parse(r.endTime as string)));
  const endToEnd = summarize(completed.map((r) => Date.parse(r.endTime as string) - Date.parse(r.expectedStartTime)));
  const spanMs = lastCompleted - firstDue;
  const tessera = completed.length / (spanMs / 1000);
  const boxed = completed.length < n;
  // Runs the time box cut off end Crashed ("worker shut down") or stay Scheduled; any other end is a failure.
  const failedRuns = runs.filter((r) => r.state.type === 'FAILED');
  if (completed.length === 0 || failedRuns.length > 0) {
    throw new Error(`${completed.length} of ${n} runs Completed, ${failedRuns.length} Failed\n${bw.outputTail()}`);
  }
  const forgotten = bw.forgotten.size - forgottenBefore;
  // How busy the worker's slots were: flow-process time of the completed runs / (slots × span).
  const busyMs = completed.reduce((sum, r) => sum + ((bw.exitedAt.get(r.id) ?? Number.NaN) - (bw.startedAt.get(r.id) ?? Number.NaN)), 0);
  const utilization = busyMs / (c * spanMs);
  const lifetime = summarize(completed.map((r) => (bw.exitedAt.get(r.id) ?? Number.NaN) - (bw.startedAt.get(r.id) ?? Number.NaN)));

  // Baseline: trivial node+tsx processes, `c` at a time, no Tessera; same count, same kind of time box.
  const baseStart = performance.now();
  let launched = 0;
  let finished = 0;
  await Promise.all(
    Array.from({ length: c }, async () => {
      while (launched < n && performance.now() - baseStart < SIZES.baseBoxMs) {
        launched++;
        await spawnLikeWorker(['--import', TSX_LOADER, 'trivial.ts'], dir);
        finished++;
      }
    }),
  );
  const baseMs = performance.now() - baseStart;
  const ceiling = finished / (baseMs / 1000);
  const share = `${((tessera / ceiling) * 100).toFixed(0)} %`;

  const boxNote = boxed ? `time-boxed at ${SIZES.boxMs / 1000} s: ${completed.length} of ${n} Completed` : `all ${n} Completed ✓`;
  line(
    `Tessera: ${n} runs, concurrency ${c}`,
    `${rate(tessera)}  ${dim(`(${completed.length} runs in ${(spanMs / 1000).toFixed(1)} s, first due → last Completed; ${boxNote}; ${n} created in ${(createMs / 1000).toFixed(1)} s)`)}`,
  );
  line('  run due → Completed, per run', `${p5099(endToEnd)}  ${dim('(includes queueing behind the 8 slots)')}`);
  line('  flow process lifetime (spawn → exit)', p5099(lifetime));
  line(
    '  worker slot utilization',
    `${(utilization * 100).toFixed(0)} %  ${dim(`(flow-process time / (${c} slots × span); the rest is slots idle with runs waiting)`)}`,
  );
  line(
    `baseline: node+tsx processes, ${c} at once`,
    `${rate(ceiling)}  ${dim(`(${finished} in ${(baseMs / 1000).toFixed(1)} s${finished < n ? `, time-boxed at ${SIZES.baseBoxMs / 1000} s` : ''}; the ceiling process start-up allows)`)}`,
  );
  line('Tessera / ceiling', share);
  if (forgotten > 0) {
    line(
      'flow processes killed by "forget"',
      `${forgotten} of ${completed.length} ${dim('(SIGKILLed while exiting after reporting Completed; no worker report; see docs/benchmarks.md)')}`,
    );
  }
  table.push({
    bench: 'throughput',
    name: `throughput (concurrency ${c})`,
    figures: `${rate(tessera)}${boxed ? ` (${completed.length}/${n} in ${SIZES.boxMs / 1000} s box)` : ` (${n} runs)`}`,
    baseline: `bare node+tsx spawns ${rate(ceiling)} (Tessera = ${share} of it)`,
  });
  json.throughput = {
    runs: n,
    completed: completed.length,
    timeBoxed: boxed,
    boxMs: SIZES.boxMs,
    concurrency: c,
    pollWaitMs: POLL_WAIT_MS ?? 'worker default',
    runsPerSecond: tessera,
    spanMs,
    createMs,
    dueToCompleted: endToEnd,
    processLifetime: lifetime,
    slotUtilization: utilization,
    forgotten,
    ceiling: { runsPerSecond: ceiling, processes: finished, ms: baseMs },
  };
}

// ─── main ───────────────────────────────────────────────────────────────────────────────────────

const started = performance.now();
const load = () =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
out(
  bold('Tessera benchmarks') +
    dim(
      `  ${selected.join(', ')}${QUICK ? ' (--quick)' : ''} · node ${process.version} · ${cpus().length} CPU (${cpus()[0]?.model ?? '?'}) · ${(totalmem() / 2 ** 30).toFixed(0)} GiB · load ${load()}`,
    ),
);
/** Issue #3: token issuance over HTTP beside raw signing, a bare Fastify signer and oidc-provider. */
async function benchIssuance(): Promise<void> {
  const m = await import('./issuance.js');
  const rows = await m.run({ quick: QUICK });
  out(m.format(rows));
  for (const v of m.verdicts(rows))
    table.push({ bench: 'issuance', name: `issuance: ${v.goal}`, figures: v.value, baseline: 'same run', goal: v.met ? '✓' : '✗' });
  json.issuance = rows;
}

/** Issue #4: verification with a warm JWKS cache beside jose's bare jwtVerify. */
async function benchVerify(): Promise<void> {
  const m = await import('./verify.js');
  const rows = await m.run({ quick: QUICK });
  out(m.format(rows));
  for (const r of rows) {
    table.push({
      bench: 'verify',
      name: `verify ${r.alg} (policy included)`,
      figures: `${Math.round(r.tesseraOpsPerSec)} /s`,
      baseline: `jose jwtVerify ${Math.round(r.joseOpsPerSec)} /s (ratio ${r.ratio.toFixed(2)})`,
      goal: `≥ 0.90 ${r.ratio >= 0.9 ? '✓' : '✗'}`,
    });
  }
  json.verify = rows;
}

/** Issue #6: dispatch on SQLite and PostgreSQL (one and two replicas) beside graphile-worker. */
async function benchDispatchPg(): Promise<void> {
  const m = await import('./dispatch-pg.js');
  const rows = await m.run({ quick: QUICK, onCleanup, log: out });
  for (const r of rows)
    table.push({ bench: 'dispatch-pg', name: r.name, figures: r.figures, baseline: r.baseline, ...(r.goal ? { goal: r.goal } : {}) });
  json['dispatch-pg'] = rows;
}

const runners: Record<BenchName, () => Promise<void>> = {
  overhead: benchOverhead,
  dispatch: benchDispatch,
  throughput: benchThroughput,
  issuance: benchIssuance,
  verify: benchVerify,
  'dispatch-pg': benchDispatchPg,
};
let failed = false;
for (const name of selected) {
  try {
    await runners[name]();
  } catch (e) {
    failed = true;
    process.stderr.write(`\nbench ${name} failed: ${(e as Error).stack ?? e}\n`);
  } finally {
    await cleanup();
    cleaning = undefined;
  }
}

const labelWidth = Math.max(...table.map((r) => r.name.length), 10);
const figWidth = Math.max(...table.map((r) => r.figures.length), 10);
out(bold('\nSummary'));
for (const r of table) {
  out(`  ${r.name.padEnd(labelWidth)}  ${r.figures.padEnd(figWidth)}   baseline ${r.baseline}${r.goal ? `   goal ${r.goal}` : ''}`);
}
const totalS = (performance.now() - started) / 1000;
out(dim(`\n${totalS.toFixed(0)} s in all; load average now ${load()}${failed ? '; some benchmarks FAILED (see above)' : ''}`));

if (args.json) {
  const results = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    loadavg: loadavg(),
    quick: QUICK,
    results: json,
  };
  writeFileSync(args.json, `${JSON.stringify(results, null, 2)}\n`);
}
clearTimeout(hardLimit);
process.exit(failed ? 1 : 0);
