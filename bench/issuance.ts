/**
 * Identity-token issuance over HTTP (issue #3), beside three baselines measured in the same run with
 * the same load generator:
 *
 *   node --import tsx bench/issuance.ts [--quick]      (after `npm run build`)
 *
 * Targets, for RS256 and ES256 each:
 * - tessera:  `POST /api/identity/token` of a real server (SQLite in a temp dir, log level warn): the
 *             run credential is checked, the run read, the issuance recorded in `issued_tokens`.
 *             Requests rotate over 32 claimed runs of a deployment with `identity.algorithm` set;
 *             the per-run rate limit is raised out of the way.
 * - sign:     jose `SignJWT(...).sign()` with the same claims, no HTTP: the ceiling set by the
 *             signature itself.
 * - fastify:  a bare Fastify endpoint that parses the JSON body and signs the same claims with jose.
 * - oidc-provider: `oidc-provider` v9 issuing JWT access tokens by `client_credentials`
 *             (resource indicators, `accessTokenFormat: 'jwt'`, same alg), client_secret_basic.
 *
 * Each server runs in a process of its own (`issuance-target.ts`, forked), as in production: no
 * target shares a heap, a garbage collector or an event loop with another or with the generator.
 * Load generator (ours: `http-load.ts`, a lean keep-alive HTTP/1.1 client, because node:http's client
 * costs about as much CPU per request as the servers do), on a worker thread of this process:
 * - closed loop: 32 requests in flight; per target 1 s warm-up, then 5 s measured (quick: 0.3 s +
 *   1 s) in 1 s slices that the four targets of an algorithm take in turn, so load from elsewhere on
 *   the machine hits all of them alike; tokens/s, and the latency (send → last byte) of every request;
 * - open loop at half of each target's measured peak, same slicing: requests sent on a fixed
 *   schedule (the thread naps at most 0.2 ms between sends), latency counted from the scheduled send
 *   time (no coordinated omission).
 * For `sign`, a "request" is one signature. Throughput ratios in the goals are the median of the
 * per-round ratios of adjacent slices. CPU µs/token is the CPU time of the server's process (all its
 * threads, from /proc; for `sign`, this process) per token in the closed loop.
 *
 * Goals (the issue's): tessera ≥ 3× oidc-provider's tokens/s; ≥ 80 % of the bare Fastify signer with
 * ES256; p99 under 5 ms at half of peak load. Talks only to 127.0.0.1, stops by itself, removes its
 * temp dirs. `docs/benchmarks.md` has the figures and how to read them.
 */
import { fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { createLoadClient } from './http-load.js';
import { type Alg, type FromTarget, type HttpTarget, runLikeClaims, type ServerTargetName, type ToTarget } from './issuance-target.js';

type TargetName = ServerTargetName | 'sign';

/** Options of {@link run}. */
export interface IssuanceBenchOptions {
  /** Short windows, for a smoke run. @default false */
  quick?: boolean;
  /** Requests kept in flight by the closed-loop generator. @default 32 */
  concurrency?: number;
  /** Measured window per target and phase, ms. @default 5000 (quick: 1000) */
  durationMs?: number;
  /** Warm-up before each window, ms. @default 1000 (quick: 300) */
  warmupMs?: number;
  /** Algorithms to measure. @default ['RS256', 'ES256'] */
  algs?: Alg[];
}

/** One target at one algorithm. */
export interface IssuanceBenchRow {
  bench: 'issuance';
  alg: Alg;
  target: TargetName;
  /** Closed loop: tokens per second with `concurrency` requests in flight. */
  tokensPerSec: number;
  /** The same, slice by slice (1 s slices, in the order measured; round i of every target is adjacent in time). */
  sliceTokensPerSec: number[];
  /** Closed loop latencies, ms. */
  p50Ms: number;
  p99Ms: number;
  /** Open loop at half of `tokensPerSec`: the offered rate and the latencies (from the scheduled send time), ms. */
  halfLoadRate: number;
  halfLoadP50Ms: number;
  halfLoadP99Ms: number;
  /**
   * Open loop: the 99th percentile of how late the load generator itself sent requests (its naps
   * and its thread's share of the CPUs). Counted in the latencies above, like any delay before the send.
   */
  halfLoadSendLatenessP99Ms: number;
  /** Fastify only: the open loop again at Tessera's half-load rate (the same rate, the least server work). */
  atTesseraRate?: { rate: number; p50Ms: number; p99Ms: number };
  /** Tessera and the bare signer: open-loop latencies at fractions of Tessera's peak (1 s slices, pooled). */
  byRate?: { fraction: number; rate: number; p50Ms: number; p99Ms: number }[];
  /** CPU time of the server's process (all its threads; for `sign`, the bench's) per token in the closed loop, µs. */
  cpuUsPerToken: number;
  /** Requests that did not answer 200 (any at all makes the row suspect). */
  errors: number;
  concurrency: number;
  durationMs: number;
}

// ─── load generator (worker thread) ─────────────────────────────────────────────────────────────

export interface SignTarget {
  type: 'sign';
  alg: Alg;
  claims: Record<string, unknown>;
}
export interface Job {
  /** Names the target: agents (and their warm connections) are kept per target across jobs. */
  key: string;
  target: HttpTarget | SignTarget;
  mode: 'closed' | 'open';
  concurrency: number;
  /** Open loop: requests per second. */
  rate: number;
  /** Whose CPU time to measure: a server's process; none: this process (the `sign` target). */
  cpuPid?: number;
  warmupMs: number;
  durationMs: number;
}
export interface JobResult {
  /** Requests that completed inside the measured window (throughput). */
  completed: number;
  /** Latency of every request that started (was scheduled) inside the window, ms. */
  latencies: Float64Array;
  /** Open loop: send time minus scheduled time of each request, ms (the generator's own share of the latency). */
  lateness: Float64Array;
  errors: number;
  firstError?: string;
  /** Every successful request, warm-up included (to check the server recorded as many). */
  okTotal: number;
  /** The body of one successful answer (a token to check). */
  sample?: string;
  /** CPU time during the window of the server's process (all its threads), or of this one for `sign`, µs. */
  cpuUs: number;
}

type Fire = (i: number) => Promise<string>;
const fires = new Map<string, Fire>();

async function fireFor(job: Job): Promise<Fire> {
  const key = `${job.key}/${job.mode}`;
  const known = fires.get(key);
  if (known) return known;
  let fire: Fire;
  if (job.target.type === 'http') {
    const t = job.target;
    // One connection per request in flight: the closed loop keeps `concurrency`, the open loop opens
    // as many as the schedule needs. A lean client (see http-load.ts): node:http's own would take
    // about as much CPU per request as the servers under test.
    const client = createLoadClient(
      t.port,
      t.variants.map((v) => ({ path: t.path, ...v })),
    );
    fire = async (i) => {
      const res = await client.send(i);
      if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${res.body.slice(0, 300)}`);
      return res.body;
    };
  } else {
    const t = job.target;
    const { SignJWT, generateKeyPair } = await import('jose');
    const { privateKey } = await generateKeyPair(t.alg);
    fire = () =>
      new SignJWT({ ...t.claims, jti: randomUUID() })
        .setProtectedHeader({ alg: t.alg, typ: 'JWT', kid: 'bench' })
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(privateKey);
  }
  fires.set(key, fire);
  return fire;
}

/**
 * The open loop's longest nap, ms: answers that arrive meanwhile are read (and timed) when it ends,
 * so it is also the most the generator adds to a measured latency on top of its own CPU time.
 */
const NAP_MS = 0.2;
const napGate = new Int32Array(new SharedArrayBuffer(4));
/** Sleeps this thread for `ms`, with the sub-millisecond precision a libuv timer lacks. */
const nap = (ms: number) => Atomics.wait(napGate, 0, 0, ms);

/** CPU time so far of every thread of `pid` (from /proc/PID/task/TID/schedstat, ns on the CPU), or of this process, µs. */
function cpuUsOf(pid: number | undefined): number {
  if (pid === undefined) {
    const u = process.cpuUsage();
    return u.user + u.system;
  }
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // The thread ended between the listing and the read: its time is gone with it.
    }
  }
  return ns / 1000;
}

/** One window of load against one target: warm-up, then the measured window; drains what is in flight. */
async function generate(job: Job): Promise<JobResult> {
  const fire = await fireFor(job);
  const latencies: number[] = [];
  /** Open loop: how late the generator itself sent each request (its timer and thread, not the target). */
  const lateness: number[] = [];
  let completed = 0;
  let errors = 0;
  let firstError: string | undefined;
  let okTotal = 0;
  let sample: string | undefined;
  let seq = 0;
  const start = performance.now();
  const measureStart = start + job.warmupMs;
  const end = measureStart + job.durationMs;
  const cpuNow = () => cpuUsOf(job.cpuPid);
  let cpu0 = cpuNow();
  let cpu: number | undefined;
  const cpuTimers = [
    setTimeout(() => {
      cpu0 = cpuNow();
    }, job.warmupMs),
    setTimeout(() => {
      cpu = cpuNow() - cpu0;
    }, job.warmupMs + job.durationMs),
  ];

  const one = async (intended: number) => {
    const sent = performance.now();
    if (job.mode === 'open' && intended >= measureStart && intended < end) lateness.push(sent - intended);
    try {
      const body = await fire(seq++);
      const done = performance.now();
      okTotal++;
      sample ??= body;
      if (done >= measureStart && done <= end) completed++;
      if (intended >= measureStart && intended < end) latencies.push(done - intended);
    } catch (e) {
      errors++;
      firstError ??= (e as Error).message;
    }
  };

  if (job.mode === 'closed') {
    const lane = async () => {
      while (performance.now() < end) await one(performance.now());
    };
    await Promise.all(Array.from({ length: job.concurrency }, lane));
  } else {
    // Send every request whose scheduled time has come. Between sends the thread naps until the next
    // one is due, at most NAP_MS at a time, then lets the event loop read what has arrived: a libuv
    // timer has 1 ms steps (sends up to 2 ms late), a busy loop would steal a core from the server.
    // Latency counts from the scheduled time, so a late send is charged to the target, not hidden
    // (no coordinated omission).
    const interval = 1000 / job.rate;
    const total = Math.ceil((end - start) / interval);
    const inflight = new Set<Promise<void>>();
    let sent = 0;
    await new Promise<void>((resolve) => {
      const tick = () => {
        const now = performance.now();
        const due = Math.min(total, Math.floor((now - start) / interval) + 1);
        while (sent < due) {
          const p = one(start + sent * interval);
          inflight.add(p);
          void p.finally(() => inflight.delete(p));
          sent++;
        }
        if (sent >= total) return resolve();
        const wait = start + sent * interval - performance.now();
        if (wait > 0) nap(Math.min(wait, NAP_MS));
        setImmediate(tick);
      };
      tick();
    });
    await Promise.all(inflight);
  }
  for (const t of cpuTimers) clearTimeout(t);
  cpu ??= cpuNow() - cpu0;
  return {
    completed,
    latencies: Float64Array.from(latencies),
    lateness: Float64Array.from(lateness),
    errors,
    ...(firstError ? { firstError } : {}),
    okTotal,
    ...(sample !== undefined ? { sample } : {}),
    cpuUs: cpu,
  };
}

if (!isMainThread && (workerData as { issuanceBench?: boolean } | null)?.issuanceBench) {
  parentPort?.on('message', (m: { id: number; job: Job }) => {
    generate(m.job).then(
      (r) => parentPort?.postMessage({ id: m.id, ok: r }, [r.latencies.buffer as ArrayBuffer, r.lateness.buffer as ArrayBuffer]),
      (e: Error) => parentPort?.postMessage({ id: m.id, error: e.stack ?? e.message }),
    );
  });
}

/**
 * The load generator's worker thread: its JavaScript runs beside, not inside, the event loop of the
 * server under test. On Node 20 a worker does not inherit `--import tsx`, so it registers tsx's
 * loader itself before loading this file.
 */
export function startGenerator(): { job(job: Job): Promise<JobResult>; close(): Promise<void> } {
  const entry = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => { m.register(); return import(${JSON.stringify(import.meta.url)}); })`;
  const worker = new Worker(entry, { eval: true, workerData: { issuanceBench: true } });
  const pending = new Map<number, { resolve(r: JobResult): void; reject(e: Error): void }>();
  let next = 0;
  const failAll = (e: Error) => {
    for (const p of pending.values()) p.reject(e);
    pending.clear();
  };
  worker.on('message', (m: { id: number; ok?: JobResult; error?: string }) => {
    const p = pending.get(m.id);
    pending.delete(m.id);
    if (m.ok) p?.resolve(m.ok);
    else p?.reject(new Error(`load generator: ${m.error}`));
  });
  worker.on('error', failAll);
  worker.on('exit', (code) => failAll(new Error(`load generator exited (${code})`)));
  return {
    job: (job) =>
      new Promise((resolve, reject) => {
        const id = next++;
        pending.set(id, { resolve, reject });
        worker.postMessage({ id, job });
      }),
    close: async () => {
      await worker.terminate();
    },
  };
}

// ─── targets ────────────────────────────────────────────────────────────────────────────────────

interface Target {
  name: TargetName;
  alg: Alg;
  spec: HttpTarget | SignTarget;
  /** The process whose CPU time the target's tokens cost (a server's own process); none: this process. */
  pid?: number;
  /** Checks one answer: the right algorithm, a real JWT. */
  check(sample: string): void;
}

function headerAlg(jwt: string): string {
  const [h] = jwt.split('.');
  return (JSON.parse(Buffer.from(h ?? '', 'base64url').toString()) as { alg: string }).alg;
}

function expectAlg(target: string, alg: Alg, token: string | undefined): void {
  if (!token || headerAlg(token) !== alg) throw new Error(`${target}: expected a ${alg} JWT, got ${String(token).slice(0, 80)}`);
}

/** Forks `bench/issuance-target.ts` for one server; resolves when it listens. */
async function startServerProcess(target: ServerTargetName, algs: Alg[], concurrency: number) {
  // The child registers tsx like this process did (`--import tsx` is in execArgv and forks inherit it).
  const child = fork(fileURLToPath(new URL('./issuance-target.ts', import.meta.url)), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const stop = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      child.send({ type: 'stop' } satisfies ToTarget);
    });
  try {
    const ready = await new Promise<Extract<FromTarget, { type: 'ready' }>>((resolve, reject) => {
      child.once('message', (m: FromTarget) => (m.type === 'ready' ? resolve(m) : reject(new Error(`${target}: ${m.message}`))));
      child.once('exit', (code, signal) => reject(new Error(`${target}: its process exited (${code ?? signal}) before listening`)));
      child.send({ type: 'start', target, algs, concurrency } satisfies ToTarget);
    });
    return { pid: child.pid as number, specs: ready.specs, url: ready.url, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** Starts the three servers, each in its own process; returns the targets and a stop function. */
async function startTargets(algs: Alg[], concurrency: number) {
  const stops: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch(() => undefined);
  };
  try {
    const servers = {} as Record<ServerTargetName, Awaited<ReturnType<typeof startServerProcess>>>;
    for (const name of ['tessera', 'fastify', 'oidc-provider'] as const) {
      servers[name] = await startServerProcess(name, algs, concurrency);
      stops.push(servers[name].stop);
    }
    const targets: Target[] = [];
    const served = (name: ServerTargetName, alg: Alg, check: (s: string) => void): Target => {
      const spec = servers[name].specs[alg];
      if (!spec) throw new Error(`${name}: no ${alg} endpoint`);
      return { name, alg, spec, pid: servers[name].pid, check };
    };
    for (const alg of algs) {
      targets.push({
        name: 'sign',
        alg,
        spec: { type: 'sign', alg, claims: runLikeClaims() },
        check: (s) => expectAlg('sign', alg, s),
      });
      targets.push(served('fastify', alg, (s) => expectAlg('fastify', alg, (JSON.parse(s) as { token: string }).token)));
      targets.push(
        served('oidc-provider', alg, (s) => expectAlg('oidc-provider', alg, (JSON.parse(s) as { access_token: string }).access_token)),
      );
      targets.push(served('tessera', alg, (s) => expectAlg('tessera', alg, (JSON.parse(s) as { token: string }).token)));
    }
    return { targets, stop, tessera: { url: servers.tessera.url } };
  } catch (e) {
    await stop();
    throw e;
  }
}

async function issuedCount(tesseraUrl: string): Promise<number> {
  const text = await (await fetch(`${tesseraUrl}/metrics`)).text();
  const m = /^tessera_identity_tokens_issued_total (\d+)$/m.exec(text);
  if (!m) throw new Error('tessera: /metrics has no tessera_identity_tokens_issued_total');
  return Number(m[1]);
}

const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;

function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

function pooled(parts: Float64Array[]): Float64Array {
  const out = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out.sort();
}

/** What a run in progress must stop (servers, temp dirs, the generator): for Ctrl-C and the time limit. */
const cleanups = new Set<() => Promise<void>>();

/** The open loop's lower rates, as fractions of Tessera's peak (half of it is the goal's rate). */
const LADDER = [0.125, 0.25, 0.375];
/** Slices (of SLICE_MS) per target at each of those rates. */
const LADDER_SLICES = 2;

/** Measured slice length: targets take turns slice by slice, so a burst of load from elsewhere hits all alike. */
const SLICE_MS = 1000;

/**
 * Runs the benchmark and returns one row per target and algorithm. Starts (and stops) its servers
 * and its load generator on 127.0.0.1; prints nothing.
 *
 * Per algorithm: each target is warmed up (`warmupMs`, closed loop); then the closed-loop window
 * (`durationMs` per target) is cut in 1 s slices taken in turn by the four targets (rotating the
 * order every round); then the same for the open loop at half of each target's measured peak.
 */
export async function run(opts: IssuanceBenchOptions = {}): Promise<IssuanceBenchRow[]> {
  const concurrency = opts.concurrency ?? 32;
  const durationMs = opts.durationMs ?? (opts.quick ? 1000 : 5000);
  const warmupMs = opts.warmupMs ?? (opts.quick ? 300 : 1000);
  const algs = opts.algs ?? ['RS256', 'ES256'];
  const slices = Math.max(1, Math.round(durationMs / SLICE_MS));
  const sliceMs = durationMs / slices;
  const { targets, stop, tessera } = await startTargets(algs, concurrency);
  const generator = startGenerator();
  const cleanup = async () => {
    await generator.close();
    await stop();
  };
  cleanups.add(cleanup);
  const rows: IssuanceBenchRow[] = [];
  try {
    const before = await issuedCount(tessera.url);
    let tesseraOk = 0;
    for (const alg of algs) {
      const ts = targets.filter((t) => t.alg === alg);
      const key = (t: Target) => `${t.name}-${t.alg}`;
      const acc = new Map(
        ts.map((t) => [
          t,
          {
            slices: [] as number[],
            completed: 0,
            cpuUs: 0,
            closed: [] as Float64Array[],
            open: [] as Float64Array[],
            lateness: [] as Float64Array[],
            rate: 0,
            errors: 0,
            firstError: undefined as string | undefined,
          },
        ]),
      );
      const note = (t: Target, r: JobResult) => {
        const a = acc.get(t);
        if (!a) return;
        a.errors += r.errors;
        a.firstError ??= r.firstError;
        if (t.name === 'tessera') tesseraOk += r.okTotal;
      };
      for (const t of ts) {
        const r = await generator.job({
          key: key(t),
          target: t.spec,
          mode: 'closed',
          concurrency,
          rate: 0,
          cpuPid: t.pid,
          warmupMs: 0,
          durationMs: warmupMs,
        });
        note(t, r);
        if (r.sample === undefined) throw new Error(`${t.name} ${t.alg}: no successful request (${r.firstError})`);
        t.check(r.sample);
      }
      const order = (i: number) => ts.map((_, j) => ts[(i + j) % ts.length] as Target);
      for (let i = 0; i < slices; i++) {
        for (const t of order(i)) {
          const r = await generator.job({
            key: key(t),
            target: t.spec,
            mode: 'closed',
            concurrency,
            rate: 0,
            cpuPid: t.pid,
            warmupMs: 100,
            durationMs: sliceMs,
          });
          note(t, r);
          const a = acc.get(t);
          if (!a) continue;
          a.slices.push((r.completed / sliceMs) * 1000);
          a.completed += r.completed;
          a.cpuUs += r.cpuUs;
          a.closed.push(r.latencies);
        }
      }
      for (const a of acc.values()) a.rate = Math.max(1, (a.completed / durationMs) * 1000 * 0.5);
      // The bare signer again at Tessera's half-load rate: what this machine and generator give at that
      // rate with the least server work, beside Tessera's p99.
      const fastifyTarget = ts.find((t) => t.name === 'fastify');
      const tesseraRate = acc.get(ts.find((t) => t.name === 'tessera') as Target)?.rate ?? 0;
      const sameRate: Float64Array[] = [];
      /** One open-loop slice against `t` at `rate`. */
      const openSlice = async (t: Target, rate: number) => {
        const r = await generator.job({
          key: key(t),
          target: t.spec,
          mode: 'open',
          concurrency,
          rate,
          warmupMs: 100,
          durationMs: sliceMs,
          cpuPid: t.pid,
        });
        note(t, r);
        return r;
      };
      for (let i = 0; i < slices; i++) {
        for (const t of order(i)) {
          const a = acc.get(t);
          if (!a) continue;
          const r = await openSlice(t, a.rate);
          a.open.push(r.latencies);
          a.lateness.push(r.lateness);
          if (t === fastifyTarget && tesseraRate > 0) sameRate.push((await openSlice(t, tesseraRate)).latencies);
        }
      }
      // Lower rates, as fractions of Tessera's peak: where its p99 stands below half of the peak,
      // beside the bare signer's at the same rates.
      const ladder = new Map<Target, { fraction: number; rate: number; p50Ms: number; p99Ms: number }[]>();
      const tesseraTarget = ts.find((t) => t.name === 'tessera');
      if (tesseraRate > 0 && tesseraTarget && fastifyTarget) {
        for (const fraction of LADDER) {
          const rate = tesseraRate * 2 * fraction;
          for (const t of [tesseraTarget, fastifyTarget]) {
            const parts: Float64Array[] = [];
            for (let k = 0; k < (opts.quick ? 1 : LADDER_SLICES); k++) parts.push((await openSlice(t, rate)).latencies);
            const l = pooled(parts);
            const list = ladder.get(t) ?? [];
            list.push({ fraction, rate: Math.round(rate), p50Ms: round(quantile(l, 0.5)), p99Ms: round(quantile(l, 0.99)) });
            ladder.set(t, list);
          }
        }
      }
      for (const t of ts) {
        const a = acc.get(t);
        if (!a) continue;
        if (a.errors > 0) process.stderr.write(`issuance bench: ${t.name} ${t.alg}: ${a.errors} errors, first: ${a.firstError}\n`);
        const closed = pooled(a.closed);
        const open = pooled(a.open);
        rows.push({
          bench: 'issuance',
          alg,
          target: t.name,
          tokensPerSec: Math.round((a.completed / durationMs) * 1000),
          sliceTokensPerSec: a.slices.map((x) => Math.round(x)),
          p50Ms: round(quantile(closed, 0.5)),
          p99Ms: round(quantile(closed, 0.99)),
          halfLoadRate: Math.round(a.rate),
          halfLoadP50Ms: round(quantile(open, 0.5)),
          halfLoadP99Ms: round(quantile(open, 0.99)),
          halfLoadSendLatenessP99Ms: round(quantile(pooled(a.lateness), 0.99)),
          ...(t === fastifyTarget && sameRate.length > 0
            ? {
                atTesseraRate: {
                  rate: Math.round(tesseraRate),
                  p50Ms: round(quantile(pooled(sameRate), 0.5)),
                  p99Ms: round(quantile(pooled(sameRate), 0.99)),
                },
              }
            : {}),
          ...(ladder.has(t) ? { byRate: ladder.get(t) } : {}),
          cpuUsPerToken: Math.round(a.cpuUs / Math.max(1, a.completed)),
          errors: a.errors,
          concurrency,
          durationMs,
        });
      }
    }
    // Every token the generator got from Tessera was recorded (jti, run, audience, expiry): nothing skipped.
    const recorded = (await issuedCount(tessera.url)) - before;
    if (recorded !== tesseraOk) throw new Error(`tessera recorded ${recorded} issuances but answered ${tesseraOk} tokens`);
  } finally {
    cleanups.delete(cleanup);
    await cleanup();
  }
  return rows;
}

/** Throughput ratio a / b: the median over rounds of the ratio of adjacent slices (robust to bursts of outside load). */
function sliceRatio(a: IssuanceBenchRow, b: IssuanceBenchRow): number {
  const n = Math.min(a.sliceTokensPerSec.length, b.sliceTokensPerSec.length);
  const ratios = Array.from({ length: n }, (_, i) => (a.sliceTokensPerSec[i] as number) / Math.max(1, b.sliceTokensPerSec[i] as number));
  return n > 0 ? median(ratios) : a.tokensPerSec / Math.max(1, b.tokensPerSec);
}

/** The issue's goals, judged on the rows (throughput ratios: median of per-round slice ratios). */
export function verdicts(rows: IssuanceBenchRow[]): { goal: string; value: string; met: boolean }[] {
  const get = (target: TargetName, alg: Alg) => rows.find((r) => r.target === target && r.alg === alg);
  const out: { goal: string; value: string; met: boolean }[] = [];
  for (const alg of ['RS256', 'ES256'] as const) {
    const t = get('tessera', alg);
    const op = get('oidc-provider', alg);
    if (t && op) {
      const x = sliceRatio(t, op);
      out.push({ goal: `${alg}: tessera ≥ 3× oidc-provider tokens/s`, value: `${x.toFixed(2)}×`, met: x >= 3 });
    }
  }
  for (const alg of ['ES256', 'RS256'] as const) {
    const t = get('tessera', alg);
    const f = get('fastify', alg);
    if (t && f) {
      const x = sliceRatio(t, f);
      out.push({
        goal: `${alg}: tessera ≥ 80 % of the bare Fastify signer${alg === 'RS256' ? ' (the goal names ES256; for information)' : ''}`,
        value: `${Math.round(x * 100)} %`,
        met: x >= 0.8,
      });
    }
  }
  for (const alg of ['RS256', 'ES256'] as const) {
    const r = get('tessera', alg);
    if (r)
      out.push({
        goal: `${alg}: tessera p99 < 5 ms at half of peak`,
        value: `${r.halfLoadP99Ms} ms at ${r.halfLoadRate}/s`,
        met: r.halfLoadP99Ms < 5,
      });
  }
  return out;
}

/** Prints rows as a small table, then the goals. */
export function format(rows: IssuanceBenchRow[]): string {
  const n = (x: number) => x.toLocaleString('en-US');
  const first = rows[0];
  const lines = [
    `issuance  (closed loop: ${first?.concurrency ?? '?'} in flight, ${(first?.durationMs ?? 0) / 1000} s per target; open loop at half of each target's peak)`,
    `alg    target          tokens/s   p50 ms   p99 ms  | half-load rate  p50 ms   p99 ms  gen late p99 | CPU µs/token`,
  ];
  for (const r of rows) {
    lines.push(
      `${r.alg}  ${r.target.padEnd(14)} ${n(r.tokensPerSec).padStart(9)} ${r.p50Ms.toFixed(2).padStart(8)} ${r.p99Ms.toFixed(2).padStart(8)}  | ${n(r.halfLoadRate).padStart(9)}/s ${r.halfLoadP50Ms.toFixed(2).padStart(8)} ${r.halfLoadP99Ms.toFixed(2).padStart(8)}  ${r.halfLoadSendLatenessP99Ms.toFixed(2).padStart(12)} | ${String(r.cpuUsPerToken).padStart(7)}${r.errors ? `  (${r.errors} errors)` : ''}`,
    );
  }
  for (const v of verdicts(rows)) lines.push(`goal  ${v.goal}: ${v.value}  ${v.met ? 'met' : 'MISSED'}`);
  for (const alg of ['RS256', 'ES256'] as const) {
    const f = rows.find((r) => r.target === 'fastify' && r.alg === alg);
    const op = rows.find((r) => r.target === 'oidc-provider' && r.alg === alg);
    // What the 3× goal is up against: no layer over a bare Fastify signer can beat the bare signer.
    if (f && op) lines.push(`note  ${alg}: the bare Fastify signer itself is ${sliceRatio(f, op).toFixed(2)}× oidc-provider`);
    const t = rows.find((r) => r.target === 'tessera' && r.alg === alg);
    if (t?.byRate && f?.byRate)
      lines.push(
        `note  ${alg}: p99 at lower rates, tessera / bare signer: ${t.byRate
          .map((b, i) => `${Math.round(b.fraction * 100)} % of peak (${n(b.rate)}/s) ${b.p99Ms} / ${f.byRate?.[i]?.p99Ms ?? '?'} ms`)
          .join('; ')}`,
      );
    if (f?.atTesseraRate)
      lines.push(
        `note  ${alg}: the bare Fastify signer at Tessera's half-load rate (${n(f.atTesseraRate.rate)}/s): p50 ${f.atTesseraRate.p50Ms} ms, p99 ${f.atTesseraRate.p99Ms} ms`,
      );
  }
  lines.push(
    'note  gen late p99: how late the load generator itself sent open-loop requests (its naps, its share of the CPUs); part of every half-load latency',
  );
  return lines.join('\n');
}

/** The machine, as a line to print beside the figures (the load average matters on a shared machine). */
export function machine(): string {
  const load = loadavg().map((x) => x.toFixed(2));
  return `machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, node ${process.version}, load average ${load.join(' ')}`;
}

if (isMainThread && process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const abort = async (why: string, code: number) => {
    process.stderr.write(`issuance bench: ${why}; stopping\n`);
    await Promise.all([...cleanups].map((c) => c().catch(() => undefined)));
    process.exit(code);
  };
  // Stop by ourselves whatever happens (a full run takes about 2 minutes).
  setTimeout(() => void abort('time limit reached', 1), 10 * 60_000).unref();
  process.once('SIGINT', () => void abort('interrupted', 130));
  process.once('SIGTERM', () => void abort('terminated', 143));
  process.stdout.write(`${machine()}\n`);
  const rows = await run({ quick: process.argv.includes('--quick') });
  process.stdout.write(`${format(rows)}\n${machine()} (after)\n`);
}
