/**
 * Dispatch on SQLite and PostgreSQL (issue #6), beside a well-known PostgreSQL job queue.
 *
 * For each store — SQLite (one server), PostgreSQL with one replica, PostgreSQL with two — this
 * measures Tessera's claim path with no-op workers (no flow process: the worker polls, claims, and
 * reports Running then Completed with the run credential, over HTTP, as the SDK would), and
 * graphile-worker processing the same number of no-op jobs with the same concurrency, on the same
 * PostgreSQL database in the same run:
 *
 * - latency: one run (job) at a time with idle workers, due → claim received by the worker and
 *   due → Running accepted (graphile-worker: `run_at` → the task function starts);
 * - throughput: a backlog of N runs (jobs) released at once, until the last is Completed.
 *
 * Replicas are separate processes (`startReplica`), so two replicas use both cores as they would on
 * two machines; the no-op workers and graphile-worker run in this process. Production timings
 * (`DEFAULT_SETTINGS`). Needs `npm run build` and PostgreSQL at TESSERA_TEST_DATABASE_URL
 * (default 127.0.0.1:5432). Every database it creates is dropped at the end.
 *
 *   const rows = await run({ quick: true });
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ApiClient, createApiClient } from '@tessera/core';
import { DEFAULT_SETTINGS } from '@tessera/server';
import { createTestDatabase, postgresAvailable, type ReplicaProcess, startReplica, type TestDatabase } from '@tessera/testing';
import { type JobHelpers, Logger, makeWorkerUtils, run as runGraphileWorker } from 'graphile-worker';
import pg from 'pg';

/** Options for {@link run}. */
export interface DispatchPgOptions {
  /** Smaller counts, for a smoke run. @default false */
  quick?: boolean;
  /** Backlog size for the throughput figures. @default 1000 (400 with `quick`) */
  jobs?: number;
  /** Runs (jobs) measured one at a time for the latency figures. @default 50 (20 with `quick`) */
  latencySamples?: number;
  /** Runs (jobs) in flight at once, in total, for Tessera and for graphile-worker alike. @default 16 */
  concurrency?: number;
  /** Registers cleanup with the caller (bench/run.ts's `onCleanup`); otherwise it runs at the end. */
  onCleanup?: (what: string, fn: () => unknown) => void;
  /** Progress lines. @default stdout */
  log?: (line: string) => void;
}

/** One line of the summary, in bench/run.ts's shape, with the figures as data for the JSON copy. */
export interface DispatchPgRow {
  bench: 'dispatch-pg';
  name: string;
  figures: string;
  baseline: string;
  goal?: string;
  data: Record<string, unknown>;
}

interface Summary {
  n: number;
  p50: number;
  p99: number;
  mean: number;
}

function summarize(samples: readonly number[]): Summary {
  const s = [...samples].sort((a, b) => a - b);
  const at = (p: number) => s[Math.min(s.length, Math.max(1, Math.ceil((p / 100) * s.length))) - 1] ?? Number.NaN;
  return { n: s.length, p50: at(50), p99: at(99), mean: s.reduce((a, b) => a + b, 0) / (s.length || 1) };
}

const ms = (x: number) =>
  !Number.isFinite(x) ? 'n/a' : x >= 100 ? `${x.toFixed(0)} ms` : x >= 10 ? `${x.toFixed(1)} ms` : `${x.toFixed(2)} ms`;
const perS = (x: number) => `${x >= 100 ? x.toFixed(0) : x.toFixed(1)}/s`;
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));

/**
 * A worker without flow processes: polls (long poll, heartbeat and claim in one request, like
 * `@tessera/worker`), and for each claimed run reports Running then Completed with its credential.
 */
class NoopWorker {
  readonly received = new Map<string, number>();
  readonly started = new Map<string, number>();
  readonly completed = new Map<string, number>();
  private readonly inflight = new Set<string>();
  private readonly waiters = new Map<string, () => void>();
  private readonly abort = new AbortController();
  private readonly id = randomUUID();
  private slotFreed: () => void = () => {};
  private loop: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly client: ApiClient,
    private readonly capacity: number,
    private readonly name: string,
  ) {}

  start(): void {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const room = this.capacity - this.inflight.size;
      if (room <= 0) {
        await new Promise<void>((r) => {
          this.slotFreed = r;
        });
        continue;
      }
      let runs: { run: { id: string }; credential: string }[];
      try {
        const res = await this.client.poll(
          'bench',
          { workerId: this.id, workerName: this.name, capacity: room, running: [...this.inflight], waitMs: 10_000 },
          this.abort.signal,
        );
        runs = res.runs;
      } catch (e) {
        if (this.stopped) return;
        process.stderr.write(`bench: ${this.name} poll failed: ${(e as Error).message}\n`);
        await sleep(200);
        continue;
      }
      const at = Date.now();
      for (const c of runs) {
        this.received.set(c.run.id, at);
        this.inflight.add(c.run.id);
        void this.execute(c.run.id, c.credential);
      }
    }
  }

  private async execute(runId: string, credential: string): Promise<void> {
    const as = this.client.withToken(credential);
    try {
      await as.proposeState(runId, { state: { type: 'RUNNING' } });
      this.started.set(runId, Date.now());
      await as.proposeState(runId, { state: { type: 'COMPLETED' }, result: null });
      this.completed.set(runId, Date.now());
    } catch (e) {
      process.stderr.write(`bench: run ${runId.slice(0, 8)} failed: ${(e as Error).message}\n`);
    } finally {
      this.inflight.delete(runId);
      this.slotFreed();
      this.waiters.get(runId)?.();
      this.waiters.delete(runId);
    }
  }

  /** Resolves when the run was reported Completed (or failed) by this worker. */
  done(runId: string): Promise<void> {
    if (this.completed.has(runId)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.set(runId, resolve));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    this.slotFreed();
    await this.loop;
  }
}

interface StoreSetup {
  label: string;
  /** The database graphile-worker uses: this store's when it is PostgreSQL, a fresh one beside SQLite. */
  pgUrl: string;
  replicas: ReplicaProcess[];
}

interface Measured {
  latency: { claim: Summary; started: Summary };
  /** The whole life of a no-op run (job): claim, Running, Completed (get, complete). */
  throughput: { perSecond: number; ms: number; jobs: number };
  /** Tessera only: the claim path alone, backlog → every run claimed by a worker, credential issued. */
  claims?: { perSecond: number; ms: number; jobs: number };
}

/** Tessera with `replicas.length` replicas: latency one run at a time, then a released backlog. */
async function measureTessera(setup: StoreSetup, o: Required<Omit<DispatchPgOptions, 'onCleanup' | 'log'>>): Promise<Measured> {
  const [first] = setup.replicas as [ReplicaProcess];
  const admin = createApiClient({ baseUrl: first.url, retryForMs: 30_000 });
  await admin.createWorkPool({ name: 'bench' });
  await admin.putDeployment({ name: 'noop', flowName: 'noop', entrypoint: 'flows.ts:noop', path: tmpdir(), workPool: 'bench' });
  // The same total concurrency as graphile-worker's, split over one worker per replica.
  const capacity = Math.ceil(o.concurrency / setup.replicas.length);
  const workers = setup.replicas.map((r, i) => new NoopWorker(createApiClient({ baseUrl: r.url }), capacity, `noop-${i}`));
  for (const w of workers) w.start();
  try {
    const doneBy = (id: string) => Promise.race(workers.map((w) => w.done(id)));
    const find = (m: 'received' | 'started', id: string) => workers.map((w) => w[m].get(id)).find((v) => v !== undefined) ?? Number.NaN;
    // Latency: one at a time, created through each replica in turn, workers idle in their long polls.
    for (let i = 0; i < 5; i++) await doneBy((await admin.runDeployment('noop')).id); // warm-up
    const claim: number[] = [];
    const started: number[] = [];
    for (let i = 0; i < o.latencySamples; i++) {
      const via = createApiClient({ baseUrl: (setup.replicas[i % setup.replicas.length] as ReplicaProcess).url });
      const run = await via.runDeployment('noop');
      await doneBy(run.id);
      const due = Date.parse(run.expectedStartTime);
      claim.push(find('received', run.id) - due);
      started.push(find('started', run.id) - due);
      await sleep(20);
    }
    // Throughput: a paused pool fills up, then is released at once.
    await admin.updateWorkPool('bench', { paused: true });
    const ids: string[] = [];
    let left = o.jobs;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (left-- > 0) ids.push((await admin.runDeployment('noop')).id);
      }),
    );
    const t0 = Date.now();
    await admin.updateWorkPool('bench', { paused: false });
    await Promise.all(ids.map(doneBy));
    const last = Math.max(...ids.map((id) => workers.map((w) => w.completed.get(id) ?? 0).reduce((a, b) => Math.max(a, b), 0)));
    const total = last - t0;
    await Promise.all(workers.map((w) => w.stop()));
    const claims = await measureClaims(setup, o, admin);
    return {
      latency: { claim: summarize(claim), started: summarize(started) },
      throughput: { perSecond: (o.jobs / total) * 1000, ms: total, jobs: o.jobs },
      claims,
    };
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
  }
}

/**
 * The claim path alone: a backlog of N runs is claimed by pollers on every replica (capacity as in
 * the other measurements), each claim moving a run to Pending with its history row and a new run
 * credential, and answering the worker with everything it needs to start the run. Nothing is
 * reported afterwards: that is the flow's part, measured by the throughput figure.
 */
async function measureClaims(
  setup: StoreSetup,
  o: Required<Omit<DispatchPgOptions, 'onCleanup' | 'log'>>,
  admin: ApiClient,
): Promise<{ perSecond: number; ms: number; jobs: number }> {
  await admin.updateWorkPool('bench', { paused: true });
  let left = o.jobs;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (left-- > 0) await admin.runDeployment('noop');
    }),
  );
  const capacity = Math.ceil(o.concurrency / setup.replicas.length);
  let claimed = 0;
  const t0 = Date.now();
  await admin.updateWorkPool('bench', { paused: false });
  await Promise.all(
    setup.replicas.map(async (r) => {
      const client = createApiClient({ baseUrl: r.url });
      const workerId = randomUUID();
      while (claimed < o.jobs) {
        const res = await client.poll('bench', { workerId, workerName: 'claimer', capacity, running: [], waitMs: 0 });
        claimed += res.runs.length;
      }
    }),
  );
  const ms = Date.now() - t0;
  return { perSecond: (o.jobs / ms) * 1000, ms, jobs: o.jobs };
}

/** graphile-worker on `pgUrl`: the same measurements with no-op jobs. */
async function measureGraphile(pgUrl: string, o: Required<Omit<DispatchPgOptions, 'onCleanup' | 'log'>>): Promise<Measured> {
  const logger = new Logger(() => () => {});
  // Our own pool, so that the database being dropped at the end cannot crash the bench.
  const pgPool = new pg.Pool({ connectionString: pgUrl, max: o.concurrency + 4 });
  pgPool.on('error', () => {});
  pgPool.on('connect', (c) => c.on('error', () => {}));
  const utils = await makeWorkerUtils({ pgPool, logger });
  await utils.migrate();
  const waiters = new Map<string, () => void>();
  const handled = new Map<string, { startedAt: number; runAt: number }>();
  const completed = new Map<string, number>();
  const taskList = {
    noop: async (payload: unknown, helpers: JobHelpers) => {
      const key = (payload as { key: string }).key;
      handled.set(key, { startedAt: Date.now(), runAt: helpers.job.run_at.getTime() });
    },
  };
  const done = (key: string) =>
    completed.has(key) ? Promise.resolve() : new Promise<void>((resolve) => waiters.set(key, () => resolve()));
  const startRunner = async () => {
    const runner = await runGraphileWorker({
      pgPool,
      concurrency: o.concurrency,
      noHandleSignals: true,
      pollInterval: 2_000,
      taskList,
      logger,
    });
    // After the job's completion is written to the database, as Tessera's Completed is.
    runner.events.on('job:complete', ({ job }) => {
      const key = (job.payload as { key: string }).key;
      completed.set(key, Date.now());
      waiters.get(key)?.();
      waiters.delete(key);
    });
    return runner;
  };
  try {
    let runner = await startRunner();
    for (let i = 0; i < 5; i++) {
      const key = `warm-${i}`;
      await utils.addJob('noop', { key });
      await done(key);
    }
    const started: number[] = [];
    for (let i = 0; i < o.latencySamples; i++) {
      const key = `lat-${i}`;
      await utils.addJob('noop', { key });
      await done(key);
      const h = handled.get(key) as { startedAt: number; runAt: number };
      started.push(h.startedAt - h.runAt);
      await sleep(20);
    }
    // Throughput: the backlog is queued while no worker runs, then a runner starts.
    await runner.stop();
    const keys = Array.from({ length: o.jobs }, (_, i) => `tp-${i}`);
    await utils.withPgClient((c) =>
      c.query(`select graphile_worker.add_job('noop', json_build_object('key', k)) from unnest($1::text[]) k`, [keys]),
    );
    const t0 = Date.now();
    runner = await startRunner();
    await Promise.all(keys.map(done));
    const last = Math.max(...keys.map((k) => completed.get(k) ?? 0));
    const total = last - t0;
    await runner.stop();
    const lat = summarize(started);
    return { latency: { claim: lat, started: lat }, throughput: { perSecond: (o.jobs / total) * 1000, ms: total, jobs: o.jobs } };
  } finally {
    await utils.release();
    await pgPool.end();
  }
}

/**
 * Runs the three store set-ups in turn and returns one summary row per figure (Tessera beside
 * graphile-worker). Throws when PostgreSQL cannot be reached, saying where it looked.
 */
export async function run(options: DispatchPgOptions = {}): Promise<DispatchPgRow[]> {
  const o = {
    quick: options.quick ?? false,
    jobs: options.jobs ?? (options.quick ? 400 : 1000),
    latencySamples: options.latencySamples ?? (options.quick ? 20 : 50),
    concurrency: options.concurrency ?? 16,
  };
  const log = options.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const cleanups: { what: string; fn: () => unknown }[] = [];
  const onCleanup = (what: string, fn: () => unknown) => {
    if (options.onCleanup) options.onCleanup(what, fn);
    else cleanups.push({ what, fn });
  };
  if (!(await postgresAvailable())) {
    throw new Error(
      'dispatch-pg needs PostgreSQL at TESSERA_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres); start it, e.g. `pg_ctlcluster <version> main start`',
    );
  }
  const rows: DispatchPgRow[] = [];
  try {
    for (const kind of ['sqlite', 'postgres-1', 'postgres-2'] as const) {
      const database: TestDatabase = await createTestDatabase();
      onCleanup(`drop ${database.name}`, () => database.drop());
      let storeUrl = database.url;
      if (kind === 'sqlite') {
        const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-'));
        onCleanup(`remove ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
        storeUrl = join(dir, 'tessera.db');
      }
      const count = kind === 'postgres-2' ? 2 : 1;
      const replicas: ReplicaProcess[] = [];
      for (let i = 0; i < count; i++) {
        const r = await startReplica({ databaseUrl: storeUrl, logLevel: 'warn', settings: { ...DEFAULT_SETTINGS } });
        replicas.push(r);
        onCleanup(`stop replica ${r.replicaId}`, () => r.kill('SIGTERM'));
      }
      const label = kind === 'sqlite' ? 'SQLite, 1 server' : `PostgreSQL, ${count} replica${count > 1 ? 's' : ''}`;
      log(`  ${label}: ${o.latencySamples} runs one at a time, then ${o.jobs} at once, concurrency ${o.concurrency}…`);
      const tessera = await measureTessera({ label, pgUrl: database.url, replicas }, o);
      for (const r of replicas) await r.kill('SIGTERM');
      // graphile-worker on the same PostgreSQL database (beside SQLite: a PostgreSQL database of its own).
      const queue = await measureGraphile(database.url, o);
      const t = tessera;
      const g = queue;
      log(
        `    Tessera: due → claim p50 ${ms(t.latency.claim.p50)} p99 ${ms(t.latency.claim.p99)}; due → Running p50 ${ms(t.latency.started.p50)} p99 ${ms(t.latency.started.p99)}; ${perS(t.throughput.perSecond)} (${o.jobs} in ${ms(t.throughput.ms)})`,
      );
      const c = t.claims as NonNullable<Measured['claims']>;
      log(`    Tessera claim path alone: ${perS(c.perSecond)} (${o.jobs} in ${ms(c.ms)})`);
      log(
        `    graphile-worker: run_at → task starts p50 ${ms(g.latency.started.p50)} p99 ${ms(g.latency.started.p99)}; ${perS(g.throughput.perSecond)} (${o.jobs} in ${ms(g.throughput.ms)})`,
      );
      const perJobT = t.throughput.ms / o.jobs;
      const perJobG = g.throughput.ms / o.jobs;
      rows.push({
        bench: 'dispatch-pg',
        name: `dispatch latency, ${label}`,
        figures: `due → claim p50 ${ms(t.latency.claim.p50)} p99 ${ms(t.latency.claim.p99)}; → Running p50 ${ms(t.latency.started.p50)}`,
        baseline: `graphile-worker run_at → task p50 ${ms(g.latency.started.p50)} p99 ${ms(g.latency.started.p99)}`,
        goal: `claim p50 ≤ queue's ${t.latency.claim.p50 <= g.latency.started.p50 ? '✓' : '✗'}`,
        data: { store: kind, tessera: t.latency, graphileWorker: g.latency },
      });
      const perClaim = c.ms / o.jobs;
      rows.push({
        bench: 'dispatch-pg',
        name: `claim path, ${label}`,
        figures: `${perS(c.perSecond)} (${ms(perClaim)}/run: lock, Pending, history, credential, answer)`,
        baseline: `graphile-worker ${perS(g.throughput.perSecond)} (${ms(perJobG)}/job: get, complete)`,
        goal: `per job ≤ queue's ${perClaim <= perJobG ? '✓' : '✗'}`,
        data: { store: kind, jobs: o.jobs, concurrency: o.concurrency, tessera: c, graphileWorker: g.throughput },
      });
      rows.push({
        bench: 'dispatch-pg',
        name: `run throughput, ${label}`,
        figures: `${perS(t.throughput.perSecond)} (${ms(perJobT)}/run: claim, Running, Completed)`,
        baseline: `graphile-worker ${perS(g.throughput.perSecond)} (${ms(perJobG)}/job: get, complete)`,
        data: { store: kind, jobs: o.jobs, concurrency: o.concurrency, tessera: t.throughput, graphileWorker: g.throughput },
      });
    }
  } finally {
    for (const { what, fn } of cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (e) {
        process.stderr.write(`bench: cleanup: ${what}: ${(e as Error).message}\n`);
      }
    }
  }
  return rows;
}

// Run on its own: `node --import tsx bench/dispatch-pg.ts [--quick]`.
if (import.meta.url === `file://${process.argv[1]}`) {
  const rows = await run({ quick: process.argv.includes('--quick') });
  for (const r of rows) process.stdout.write(`${r.name.padEnd(44)} ${r.figures}   baseline ${r.baseline}   goal ${r.goal ?? ''}\n`);
  process.exit(0);
}
