import { existsSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { FakeTesseraApi } from '../test/fake-api.js';
import { Collector, collectingLogger, processAlive, tempDir, waitFor } from '../test/helpers.js';
import { writeTestRunner } from '../test/runner.js';
import { createWorker, type Worker, type WorkerEvent, type WorkerOptions } from './index.js';

type Stamped = WorkerEvent & { at: number };

const runnerModule = writeTestRunner();
let fake: FakeTesseraApi;
let worker: Worker | undefined;
let events: Stamped[];
let logger: ReturnType<typeof collectingLogger>;
let out: Collector;
let err: Collector;
let dir: string;

beforeEach(async () => {
  fake = new FakeTesseraApi();
  await fake.start();
  worker = undefined;
  events = [];
  logger = collectingLogger();
  out = new Collector();
  err = new Collector();
  dir = tempDir();
});

afterEach(async () => {
  if (worker) {
    const stopped = worker.stop();
    void worker.stop(); // a second call stops what still runs
    await stopped;
  }
  await fake.stop();
  // Whatever happened, no run credential reached the worker's logs or the relayed output.
  const everything = [...logger.lines, out.text, err.text, JSON.stringify(events)].join('\n');
  for (const fakeRun of fake.runs.values()) if (fakeRun.credential) expect(everything).not.toContain(fakeRun.credential);
});

function startWorker(overrides: Partial<WorkerOptions> = {}): Worker {
  worker = createWorker({
    apiUrl: fake.url,
    pool: 'default',
    runnerModule,
    pollWaitMs: 5000,
    cancelGraceMs: 300,
    serverRetryForMs: 20_000,
    logger,
    output: { stdout: out, stderr: err },
    onEvent: (event) => events.push({ ...event, at: Date.now() }),
    ...overrides,
  });
  worker.start();
  return worker;
}

function eventOf<T extends WorkerEvent['type']>(type: T, runId?: string): (Extract<WorkerEvent, { type: T }> & { at: number }) | undefined {
  return events.find((e) => e.type === type && (runId === undefined || ('runId' in e && e.runId === runId))) as
    | (Extract<WorkerEvent, { type: T }> & { at: number })
    | undefined;
}

function waitForEvent<T extends WorkerEvent['type']>(type: T, runId?: string, timeoutMs = 10_000) {
  return waitFor(`event "${type}"${runId ? ` of run ${runId}` : ''}`, () => eventOf(type, runId), timeoutMs);
}

interface StartedFile {
  pid: number;
  cwd: string;
  hasIpc: boolean;
  env: Record<string, string>;
}

function startedFile(runId: string, timeoutMs = 10_000): Promise<StartedFile> {
  return waitFor(
    `run ${runId} to start`,
    () => {
      try {
        return JSON.parse(readFileSync(join(dir, `started-${runId}.json`), 'utf8')) as StartedFile;
      } catch {
        return undefined;
      }
    },
    timeoutMs,
  );
}

function workerProposals(runId: string) {
  return fake.proposals.filter((p) => p.runId === runId);
}

const sleeper = (ms = 60_000) => ({ TEST_BEHAVIOUR: 'sleep', TEST_SLEEP_MS: String(ms) });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('claiming and launching', () => {
  test('starts a claimed run as soon as the held poll returns, without waiting for a poll interval', async () => {
    startWorker({ pollWaitMs: 30_000 });
    await waitFor('a held poll', () => fake.holdingPoll);

    const enqueuedAt = Date.now();
    const first = fake.enqueue({ path: dir, env: sleeper() });
    const started = await waitForEvent('started', first);
    expect(started.at - enqueuedAt).toBeLessThan(1000);

    // The next poll goes out at once, so a second run is claimed as quickly.
    await waitFor('a held poll', () => fake.holdingPoll);
    const secondAt = Date.now();
    const second = fake.enqueue({ path: dir, env: sleeper() });
    expect((await waitForEvent('started', second)).at - secondAt).toBeLessThan(1000);
    expect(eventOf('claimed', second)?.run.id).toBe(second);
    expect(worker?.running.sort()).toEqual([first, second].sort());
  });

  test("runs the flow process in the claim's path with the run environment and an IPC channel", async () => {
    startWorker({ env: { FROM_WORKER: 'worker', FROM_BOTH: 'worker' } });
    const id = fake.enqueue({
      path: dir,
      entrypoint: 'flows/etl.ts:nightly',
      env: { ...sleeper(), FROM_BOTH: 'deployment', TESSERA_RUN_ID: 'spoofed-by-deployment' },
    });
    const info = await startedFile(id);

    expect(info.cwd).toBe(realpathSync(dir));
    expect(info.hasIpc).toBe(true);
    expect(info.env).toMatchObject({
      TESSERA_API_URL: fake.url,
      TESSERA_RUN_ID: id,
      TESSERA_RUN_ATTEMPT: '1',
      TESSERA_RUN_CREDENTIAL: fake.runs.get(id)?.credential,
      TESSERA_ENTRYPOINT: 'flows/etl.ts:nightly',
      FROM_WORKER: 'worker',
      FROM_BOTH: 'deployment',
    });
    await waitFor('prefixed stdout', () => out.text.includes(`[run ${id.slice(0, 4)}] hello from the flow process\n`));
  });

  test('a flow process can import a TypeScript entrypoint from a project without "type": "module"', async () => {
    startWorker();
    writeFileSync(
      join(dir, 'flows.ts'),
      "import { sep } from 'node:path';\nexport const main = async (): Promise<string> => 'typescript ran' + sep;\n",
    );
    const id = fake.enqueue({ path: dir, entrypoint: 'flows.ts:main', env: { TEST_BEHAVIOUR: 'entrypoint' } });
    await waitForEvent('exited', id);
    expect(eventOf('exited', id)).toMatchObject({ code: 0 });
    expect(readFileSync(join(dir, `result-${id}`), 'utf8')).toBe('typescript ran/');
  });

  test('sends capacity = concurrency - running, keeps polling at capacity 0 as a heartbeat, and never runs more than concurrency', async () => {
    startWorker({ concurrency: 2, pollWaitMs: 200 });
    const ids = [fake.enqueue({ path: dir, env: sleeper(1500) }), fake.enqueue({ path: dir, env: sleeper(1500) })];
    const third = fake.enqueue({ path: dir, env: sleeper(100) });
    await waitForEvent('started', ids[0]);
    await waitForEvent('started', ids[1]);

    const from = fake.polls.length;
    await waitFor('heartbeat polls at capacity 0', () => fake.polls.slice(from).filter((p) => p.body.capacity === 0).length >= 2);
    expect(fake.state(third)).toBe('SCHEDULED');
    expect(fake.polls.slice(from).every((p) => p.body.running.length === 2)).toBe(true);

    await waitForEvent('started', third);
    for (const poll of fake.polls) expect(poll.body.capacity).toBe(2 - poll.body.running.length);
    let live = 0;
    let most = 0;
    for (const e of events) {
      if (e.type === 'claimed') most = Math.max(most, ++live);
      if (e.type === 'reported') live--;
    }
    expect(most).toBe(2);
  });
});

describe('reporting the end of a run', () => {
  test('reports CRASHED with the exit code and the last 30 lines of stderr when the process exits without a final state', async () => {
    startWorker();
    const stderr = Array.from({ length: 40 }, (_, i) => `err-${String(i + 1).padStart(2, '0')}`).join('|');
    const id = fake.enqueue({ path: dir, env: { TEST_BEHAVIOUR: 'exit', TEST_EXIT_CODE: '3', TEST_STDERR: stderr } });

    const reported = await waitForEvent('reported', id);
    expect(reported).toMatchObject({ outcome: 'accepted', state: 'CRASHED' });
    expect(eventOf('exited', id)).toMatchObject({ code: 3, signal: null });
    expect(fake.state(id)).toBe('CRASHED');
    const [proposal] = workerProposals(id);
    expect(proposal?.auth).toBe('credential');
    const message = proposal?.body.state.message ?? '';
    expect(message).toMatch(/^flow process exited with code 3 \(signal none\) before reporting a final state; last stderr:\n/);
    expect(message).toContain('err-11\n');
    expect(message.endsWith('err-40')).toBe(true);
    expect(message).not.toContain('err-10');
    expect(eventOf('crashed', id)?.message).toBe(message);
    expect(err.text).toContain(`[run ${id.slice(0, 4)}] err-40\n`);
    expect(worker?.running).toEqual([]);
  });

  test('redacts a run credential that the flow process prints, in relayed output and in the crash message', async () => {
    startWorker();
    const id = fake.enqueue({ path: dir, env: { TEST_BEHAVIOUR: 'exit', TEST_LEAK: '1' } });
    await waitForEvent('reported', id);
    const credential = fake.runs.get(id)?.credential ?? '';
    expect(err.text).toContain(`oops: [redacted credential …${credential.slice(-4)}]`);
    expect(workerProposals(id)[0]?.body.state.message).toContain('[redacted credential');
    expect(JSON.stringify(fake.proposals)).not.toContain(credential);
  });

  test('reports nothing when the flow process reported its final state itself (credential dead: falls back to the worker client)', async () => {
    startWorker();
    const id = fake.enqueue({ path: dir, env: { TEST_BEHAVIOUR: 'complete' } });
    const reported = await waitForEvent('reported', id);
    expect(reported).toMatchObject({ outcome: 'already-final', state: 'COMPLETED' });
    expect(workerProposals(id).map((p) => p.body.state.type)).toEqual(['RUNNING', 'COMPLETED']);
    expect(eventOf('crashed', id)).toBeUndefined();
  });

  test('reports CRASHED without starting a process when the working directory does not exist', async () => {
    startWorker();
    const missing = join(dir, 'not-here');
    const id = fake.enqueue({ path: missing, env: sleeper() });
    await waitForEvent('reported', id);
    expect(eventOf('started', id)).toBeUndefined();
    expect(fake.state(id)).toBe('CRASHED');
    expect(workerProposals(id)[0]?.body.state.message).toContain(`working directory "${missing}" does not exist`);
  });

  test('reports CRASHED when the process cannot even be spawned (a NUL byte in its environment), instead of failing silently', async () => {
    startWorker();
    const id = fake.enqueue({ path: dir, env: { BROKEN: 'a\u0000b' } });
    await waitForEvent('reported', id);
    expect(eventOf('started', id)).toBeUndefined();
    expect(fake.state(id)).toBe('CRASHED');
    expect(workerProposals(id)[0]?.body.state.message).toContain('the flow process could not be started');
  });

  test('a 409 answer to a report is logged and the run is let go', async () => {
    startWorker();
    fake.rejectProposals = true;
    const id = fake.enqueue({ path: dir, env: { TEST_BEHAVIOUR: 'exit' } });
    const reported = await waitForEvent('reported', id);
    expect(reported).toMatchObject({ outcome: 'conflict', state: null, message: 'rejected by the test' });
    expect(workerProposals(id)).toHaveLength(1);
    expect(logger.lines.some((l) => l.startsWith('info') && l.includes('someone else already decided'))).toBe(true);
    expect(worker?.running).toEqual([]);
  });

  test('keeps retrying a report while the server is down and delivers it when the server is back', async () => {
    startWorker({ pollWaitMs: 500 });
    const id = fake.enqueue({ path: dir, env: sleeper(700) });
    await startedFile(id);
    const port = fake.port;
    await fake.stop();

    await waitForEvent('exited', id);
    await sleep(1500);
    expect(worker?.running).toEqual([id]); // still held: the report is pending
    expect(fake.state(id)).toBe('PENDING');
    await fake.start(port);

    expect(await waitForEvent('reported', id)).toMatchObject({ outcome: 'accepted', state: 'CRASHED' });
    expect(fake.state(id)).toBe('CRASHED');
    expect(workerProposals(id)[0]?.body.state.message).toContain('flow process exited with code 0 (signal none)');
    // One line for the outage of this report, not one per attempt.
    expect(logger.lines.filter((l) => l.includes(id.slice(0, 8)) && l.includes('retrying'))).toHaveLength(1);
  });
});

describe('polling while the server is unreachable', () => {
  test('logs one line per outage, keeps retrying, and says when the server is back', async () => {
    startWorker({ pollWaitMs: 200 });
    await waitFor('a held poll', () => fake.holdingPoll);
    const port = fake.port;
    await fake.stop();
    await sleep(1500);
    await fake.start(port);
    await waitFor('a poll after the outage', () => fake.polls.some((p) => p.at > Date.now() - 1000));

    const id = fake.enqueue({ path: dir, env: { TEST_BEHAVIOUR: 'exit' } });
    await waitForEvent('reported', id);
    expect(logger.lines.filter((l) => l.includes('cannot poll'))).toHaveLength(1);
    expect(events.filter((e) => e.type === 'pollError')).toHaveLength(1);
    expect(logger.lines.some((l) => l.includes('reached the server again'))).toBe(true);
  });
});

describe('cancellation', () => {
  test('sends SIGTERM, then SIGKILL after the grace period to a process that ignores SIGTERM, then reports CANCELLED', async () => {
    startWorker({ cancelGraceMs: 500 });
    const id = fake.enqueue({ path: dir, env: { TEST_BEHAVIOUR: 'ignore-term' } });
    await startedFile(id);

    const cancelledAt = Date.now();
    fake.cancel(id);
    expect(await waitForEvent('reported', id)).toMatchObject({ outcome: 'accepted', state: 'CANCELLED' });

    expect(eventOf('cancelled', id)).toMatchObject({ reason: 'requested' });
    expect(existsSync(join(dir, `sigterm-${id}`))).toBe(true);
    const exited = eventOf('exited', id);
    expect(exited).toMatchObject({ code: null, signal: 'SIGKILL' });
    expect((exited?.at ?? 0) - cancelledAt).toBeGreaterThanOrEqual(450);
    expect(workerProposals(id).map((p) => p.body.state.type)).toEqual(['CANCELLED']);
    expect(fake.state(id)).toBe('CANCELLED');
  });

  test('a process that honours SIGTERM is reported CANCELLED without waiting for the grace period', async () => {
    startWorker({ cancelGraceMs: 10_000 });
    const id = fake.enqueue({ path: dir, env: sleeper() });
    await startedFile(id);
    const cancelledAt = Date.now();
    fake.cancel(id);
    await waitForEvent('reported', id);
    const exited = eventOf('exited', id);
    expect(exited).toMatchObject({ signal: 'SIGTERM' });
    expect((exited?.at ?? Infinity) - cancelledAt).toBeLessThan(2000);
    expect(fake.state(id)).toBe('CANCELLED');
  });

  test('kills what a flow process started once it has exited: nothing of a run outlives it', async () => {
    startWorker();
    const id = fake.enqueue({ path: dir, env: { TEST_BEHAVIOUR: 'orphan' } });
    await startedFile(id);
    const child = await waitFor('the child pid', () => {
      try {
        return Number(readFileSync(join(dir, `child-${id}`), 'utf8')) || undefined;
      } catch {
        return undefined;
      }
    });
    await waitForEvent('exited', id);
    await waitFor('the child to be killed', () => !processAlive(child) || undefined, 5_000);
  });

  test('forget kills the process at once and reports nothing', async () => {
    startWorker({ cancelGraceMs: 10_000 });
    const id = fake.enqueue({ path: dir, env: { TEST_BEHAVIOUR: 'ignore-term' } });
    const { pid } = await startedFile(id);

    fake.forget(id);
    expect(await waitForEvent('exited', id)).toMatchObject({ signal: 'SIGKILL' });
    expect(eventOf('cancelled', id)).toMatchObject({ reason: 'forgotten' });
    await waitFor('the run to be let go', () => worker?.running.length === 0);
    await sleep(300);
    expect(processAlive(pid)).toBe(false);
    expect(workerProposals(id)).toEqual([]);
    expect(eventOf('reported', id)).toBeUndefined();
    expect(fake.state(id)).toBe('CRASHED');
    expect(fake.polls.at(-1)?.body.running).toEqual([]);
  });
});

describe('stop()', () => {
  test('stops claiming, keeps heartbeating at capacity 0 and waits for running runs to finish', async () => {
    startWorker({ pollWaitMs: 300 });
    const a = fake.enqueue({ path: dir, env: sleeper(1000) });
    await waitForEvent('started', a);
    await waitFor('a held poll', () => fake.holdingPoll);

    const stopped = worker?.stop();
    const heartbeatsFrom = fake.polls.length;
    await waitFor('heartbeat polls', () => fake.polls.slice(heartbeatsFrom).length >= 1);
    const b = fake.enqueue({ path: dir, env: sleeper() });
    await stopped;

    expect(eventOf('exited', a)).toMatchObject({ code: 0, signal: null });
    expect(eventOf('reported', a)).toBeDefined();
    expect(fake.state(b)).toBe('SCHEDULED');
    expect(fake.polls.slice(heartbeatsFrom).every((p) => p.body.capacity === 0)).toBe(true);
    // The poll stop() abandoned may reach the fake server a moment later on a busy machine; nothing after it.
    await sleep(200);
    const pollsAfter = fake.polls.length;
    await sleep(500);
    expect(fake.polls.length).toBe(pollsAfter);
  });

  test('a run handed out by the poll that was open when stop() was called is still executed, not dropped', async () => {
    startWorker({ pollWaitMs: 5000 });
    await waitFor('a held poll', () => fake.holdingPoll);
    const stopped = worker?.stop();
    const id = fake.enqueue({ path: dir, env: sleeper(300) });
    await stopped;
    expect(eventOf('started', id)).toBeDefined();
    expect(eventOf('exited', id)).toMatchObject({ code: 0, signal: null });
    expect(fake.state(id)).toBe('CRASHED'); // the test runner exits 0 without reporting
  });

  test('stop() on an idle worker resolves once the open poll returns', async () => {
    startWorker({ pollWaitMs: 400 });
    await waitFor('a held poll', () => fake.holdingPoll);
    const at = Date.now();
    await worker?.stop();
    expect(Date.now() - at).toBeLessThan(1500);
    expect(worker?.running).toEqual([]);
  });

  test('after its timeout, stops running processes (SIGTERM, grace, SIGKILL) and reports them CRASHED "worker shut down"', async () => {
    startWorker({ cancelGraceMs: 300 });
    const id = fake.enqueue({ path: dir, env: { TEST_BEHAVIOUR: 'ignore-term' } });
    await startedFile(id);

    await worker?.stop({ timeoutMs: 200 });
    expect(eventOf('cancelled', id)).toMatchObject({ reason: 'shutdown' });
    expect(existsSync(join(dir, `sigterm-${id}`))).toBe(true);
    expect(eventOf('exited', id)).toMatchObject({ signal: 'SIGKILL' });
    expect(fake.state(id)).toBe('CRASHED');
    expect(workerProposals(id)[0]?.body.state.message).toMatch(/^worker shut down/);
  });

  test('a second call stops running processes at once and both calls resolve together', async () => {
    startWorker();
    const id = fake.enqueue({ path: dir, env: sleeper() });
    const { pid } = await startedFile(id);

    const first = worker?.stop();
    await sleep(200);
    expect(processAlive(pid)).toBe(true);
    const second = worker?.stop();
    expect(second).toBe(first);
    await first;
    expect(eventOf('exited', id)).toMatchObject({ signal: 'SIGTERM' });
    expect(workerProposals(id)[0]?.body.state).toMatchObject({ type: 'CRASHED' });
    expect(workerProposals(id)[0]?.body.state.message).toMatch(/^worker shut down/);
  });
});

/** Asks for a token with the run credential, the way any process of the run can, and prints it every way a flow might. */
const LEAKY_FLOW = `
export async function leak() {
  const res = await fetch(process.env.TESSERA_API_URL + '/api/identity/token', {
    method: 'POST',
    headers: { authorization: 'Bearer ' + process.env.TESSERA_RUN_CREDENTIAL, 'content-type': 'application/json' },
    body: JSON.stringify({ audience: 'vault.internal' }),
  });
  const { token } = await res.json();
  console.log(token);
  console.log('token for vault: ' + token + ' (expires soon)');
  process.stdout.write('partial ' + token.slice(0, 20));
  process.stdout.write(token.slice(20) + ' written in two chunks\\n');
  console.error('authorization: Bearer ' + token);
  process.exit(Number(process.env.LEAK_EXIT_CODE ?? 0));
}
`;

// Catches: flow-process.ts relaying a flow's output (stdout, stderr, or the stderr tail of the crash
// message) without redactSecrets — a token printed by flow code would reach the worker's terminal and logs.
test('masks the identity token a flow process prints, on stdout, on stderr and in the crash message', async () => {
  writeFileSync(join(dir, 'leaky.mjs'), LEAKY_FLOW);
  startWorker({ serverRetryForMs: 5_000 });
  await waitFor('a held poll', () => fake.holdingPoll);
  const id = fake.enqueue({ path: dir, entrypoint: 'leaky.mjs:leak', env: { TEST_BEHAVIOUR: 'entrypoint', LEAK_EXIT_CODE: '3' } });
  await waitFor(`run ${id} to be reported`, () => eventOf('reported', id));
  const token = fake.tokens.find((t) => t.runId === id)?.token ?? '';
  expect(token).toMatch(/^eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+$/);
  const prefix = `[run ${id.slice(0, 4)}] `;
  const mask = `[redacted JWT …${token.slice(-4)}]`;
  expect(out.text).toContain(`${prefix}${mask}\n`);
  expect(out.text).toContain(`${prefix}token for vault: ${mask} (expires soon)\n`);
  expect(out.text).toContain(`${prefix}partial ${mask} written in two chunks\n`);
  expect(err.text).toContain(`${prefix}authorization: Bearer ${mask}\n`);
  const crash = fake.proposals.find((p) => p.runId === id)?.body.state.message ?? '';
  expect(crash).toMatch(/^flow process exited with code 3/);
  expect(crash).toContain(`authorization: Bearer ${mask}`);

  const everything = [out.text, err.text, ...logger.lines, JSON.stringify(events), JSON.stringify(fake.proposals)].join('\n');
  expect(everything).not.toContain(token);
  // Not even the unsigned part (header.payload), which names the run and audience.
  expect(everything).not.toContain(token.slice(0, token.lastIndexOf('.')));
});
