import { randomUUID } from 'node:crypto';
import { type ApiClient, type DeploymentSpec, TesseraError } from '@tessera/core';
import { createFakeClock, type FakeClock, startTestServer, type TestServer } from '@tessera/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

async function expectCode(p: Promise<unknown>, code: string, status?: number): Promise<TesseraError> {
  const e = await p.then(
    () => {
      throw new Error(`expected ${code}, but the call succeeded`);
    },
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(TesseraError);
  expect((e as TesseraError).code).toBe(code);
  if (status) expect((e as TesseraError).status).toBe(status);
  return e as TesseraError;
}

function spec(overrides: Partial<DeploymentSpec> = {}): DeploymentSpec {
  return {
    name: 'etl',
    flowName: 'etl',
    entrypoint: 'flows.ts:etl',
    path: '/tmp',
    workPool: 'default',
    identity: { audiences: ['sts.amazonaws.com'] },
    ...overrides,
  };
}

async function claimOne(client: ApiClient, workerId = randomUUID(), pool = 'default') {
  const res = await client.poll(pool, { workerId, workerName: 'w-test', capacity: 1, running: [], waitMs: 0 });
  const claimed = res.runs[0];
  if (!claimed) throw new Error('nothing claimed');
  return { ...claimed, workerId, as: client.withToken(claimed.credential) };
}

describe('orchestration rules (real server, SQLite)', () => {
  let server: TestServer;
  let clock: FakeClock;
  beforeEach(async () => {
    clock = createFakeClock();
    server = await startTestServer({ clock, backgroundServices: false });
    await server.client.createWorkPool({ name: 'default' });
  });
  afterEach(async () => {
    await server.close();
  });

  it('claims a due run with a credential bound to the run and its attempt', async () => {
    await server.client.putDeployment(spec());
    const run = await server.client.runDeployment('etl');
    const c = await claimOne(server.client);
    expect(c.run.id).toBe(run.id);
    expect(c.run.state.type).toBe('PENDING');
    expect(c.run.attempt).toBe(1);
    expect(c.credential).toMatch(/^tsr_[A-Za-z0-9_-]{40,}$/);
    expect(await c.as.getFlowRun(run.id)).toMatchObject({ id: run.id });
  });

  it('answers 409 with the reason for an illegal transition', async () => {
    await server.client.putDeployment(spec());
    const run = await server.client.runDeployment('etl');
    const e = await expectCode(server.client.proposeState(run.id, { state: { type: 'COMPLETED' } }), 'ERR_ILLEGAL_TRANSITION', 409);
    expect(e.message).toMatch(/Scheduled cannot become Completed/);
    const c = await claimOne(server.client);
    await c.as.proposeState(run.id, { state: { type: 'RUNNING' } });
    await c.as.proposeState(run.id, { state: { type: 'COMPLETED' }, result: { rows: 3 } });
    const e2 = await expectCode(server.client.proposeState(run.id, { state: { type: 'RUNNING' } }), 'ERR_ILLEGAL_TRANSITION', 409);
    expect(e2.message).toMatch(/already Completed, a terminal state/);
  });

  it('records the cause of every transition', async () => {
    await server.client.putDeployment(spec());
    const run = await server.client.runDeployment('etl');
    const c = await claimOne(server.client);
    await c.as.proposeState(run.id, { state: { type: 'RUNNING' } });
    await c.as.proposeState(run.id, { state: { type: 'COMPLETED' } });
    const states = (await server.client.getFlowRunStates(run.id)).items;
    expect(states.map((s) => [s.name, s.cause?.kind])).toEqual([
      ['Scheduled', 'person'],
      ['Pending', 'worker'],
      ['Running', 'flow'],
      ['Completed', 'flow'],
    ]);
  });

  it('refuses the run credential once the run is terminal, and for other runs', async () => {
    await server.client.putDeployment(spec());
    const a = await server.client.runDeployment('etl');
    const b = await server.client.runDeployment('etl');
    const ca = await claimOne(server.client);
    const cb = await claimOne(server.client);
    const mine = ca.run.id === a.id ? ca : cb;
    const other = mine === ca ? b : a;
    await expectCode(mine.as.proposeState(other.id, { state: { type: 'RUNNING' } }), 'ERR_FORBIDDEN', 403);
    await expectCode(mine.as.getFlowRun(other.id), 'ERR_FORBIDDEN', 403);
    await expectCode(mine.as.listFlowRuns(), 'ERR_FORBIDDEN', 403);
    await mine.as.proposeState(mine.run.id, { state: { type: 'RUNNING' } });
    await mine.as.proposeState(mine.run.id, { state: { type: 'COMPLETED' } });
    await expectCode(mine.as.issueIdentityToken({ audience: 'sts.amazonaws.com' }), 'ERR_CREDENTIAL_REVOKED', 401);
    await expectCode(mine.as.getFlowRun(mine.run.id), 'ERR_CREDENTIAL_REVOKED', 401);
    await expectCode(server.client.withToken('tsr_notarealcredentialnotarealcredential00').getFlowRun(a.id), 'ERR_CREDENTIAL_INVALID', 401);
  });

  it('retries a failed run with its retry delay, with a new attempt and a new credential', async () => {
    await server.client.putDeployment(spec({ retries: 1, retryDelaysMs: [10_000] }));
    const run = await server.client.runDeployment('etl');
    const c1 = await claimOne(server.client);
    await c1.as.proposeState(run.id, { state: { type: 'RUNNING' } });
    const res = await c1.as.proposeState(run.id, { state: { type: 'FAILED' }, error: { name: 'Error', message: 'ECONNRESET' } });
    expect(res.retryScheduled).toBe(true);
    expect(res.run.state.name).toBe('AwaitingRetry');
    expect(
      (await server.client.poll('default', { workerId: randomUUID(), workerName: 'w', capacity: 1, running: [], waitMs: 0 })).runs,
    ).toHaveLength(0);
    clock.advance(10_001);
    const c2 = await claimOne(server.client);
    expect(c2.run.attempt).toBe(2);
    await expectCode(c1.as.proposeState(run.id, { state: { type: 'RUNNING' } }), 'ERR_CREDENTIAL_REVOKED', 401);
    const r = await c2.as.proposeState(run.id, { state: { type: 'RUNNING' } });
    expect(r.run.state.name).toBe('Retrying');
    // The same proposal again (its answer lost on the way, the process retries): accepted, once.
    const again = await c2.as.proposeState(run.id, { state: { type: 'RUNNING' } });
    expect(again.status).toBe('ACCEPT');
    expect(again.run.state.name).toBe('Retrying');
    const retrying = (await server.client.getFlowRunStates(run.id)).items.filter((h) => h.name === 'Retrying');
    expect(retrying).toHaveLength(1);
    const final = await c2.as.proposeState(run.id, { state: { type: 'FAILED' }, error: { name: 'Error', message: 'again' } });
    expect(final.run.state.type).toBe('FAILED');
    expect(final.retryScheduled).toBeUndefined();
  });

  it("accepts a run's own re-sent Running once; anyone else's re-send changes nothing", async () => {
    await server.client.putDeployment(spec());
    const run = await server.client.runDeployment('etl');
    const c = await claimOne(server.client);
    expect((await c.as.proposeState(run.id, { state: { type: 'RUNNING' } })).status).toBe('ACCEPT');
    expect((await c.as.proposeState(run.id, { state: { type: 'RUNNING' } })).status).toBe('ACCEPT');
    expect((await server.client.getFlowRunStates(run.id)).items.filter((h) => h.type === 'RUNNING')).toHaveLength(1);
    // The local admin re-sending Running: nothing to do (ABORT), still one Running in the history.
    expect((await server.client.proposeState(run.id, { state: { type: 'RUNNING' } })).status).toBe('ABORT');
    // A re-sent final state is not an error either, and not a second transition.
    await c.as.proposeState(run.id, { state: { type: 'COMPLETED' }, result: 1 });
    expect((await server.client.proposeState(run.id, { state: { type: 'COMPLETED' }, result: 2 })).status).toBe('ABORT');
    expect((await server.client.getFlowRun(run.id)).result).toBe(1);
  });

  it('does not retry a run whose parameters are invalid', async () => {
    await server.client.putDeployment(spec({ retries: 3 }));
    const run = await server.client.runDeployment('etl');
    const c = await claimOne(server.client);
    const res = await c.as.proposeState(run.id, {
      state: { type: 'FAILED' },
      error: { name: 'ValidationError', message: 'x', code: 'ERR_INVALID_PARAMETERS' },
    });
    expect(res.run.state.type).toBe('FAILED');
  });

  it('cancels a scheduled run at once and a running one through Cancelling', async () => {
    await server.client.putDeployment(spec());
    const later = await server.client.runDeployment('etl', { scheduledFor: new Date(clock.now() + 60_000).toISOString() });
    expect((await server.client.cancelFlowRun(later.id)).state.type).toBe('CANCELLED');
    const run = await server.client.runDeployment('etl');
    const c = await claimOne(server.client);
    await c.as.proposeState(run.id, { state: { type: 'RUNNING' } });
    expect((await server.client.cancelFlowRun(run.id.slice(0, 8))).state.type).toBe('CANCELLING');
    const poll = await server.client.poll('default', { workerId: c.workerId, workerName: 'w', capacity: 0, running: [run.id], waitMs: 0 });
    expect(poll.cancel).toEqual([run.id]);
    await c.as.proposeState(run.id, { state: { type: 'CANCELLED' } });
    await expectCode(server.client.cancelFlowRun(run.id), 'ERR_ILLEGAL_TRANSITION', 409).catch(async () => {
      // Cancelling a cancelled run is a no-op, not an error.
      expect((await server.client.getFlowRun(run.id)).state.type).toBe('CANCELLED');
    });
  });

  it('honours pool and deployment concurrency limits', async () => {
    await server.client.updateWorkPool('default', { concurrencyLimit: 3 });
    await server.client.putDeployment(spec({ name: 'a', concurrencyLimit: 1 }));
    await server.client.putDeployment(spec({ name: 'b' }));
    for (let i = 0; i < 3; i++) await server.client.runDeployment('a');
    for (let i = 0; i < 3; i++) await server.client.runDeployment('b');
    const res = await server.client.poll('default', { workerId: randomUUID(), workerName: 'w', capacity: 10, running: [], waitMs: 0 });
    expect(res.runs).toHaveLength(3);
    expect(res.runs.filter((r) => r.run.deploymentName === 'a')).toHaveLength(1);
    const more = await server.client.poll('default', { workerId: randomUUID(), workerName: 'w2', capacity: 10, running: [], waitMs: 0 });
    expect(more.runs).toHaveLength(0);
  });

  it('never lets concurrent claims exceed a pool, queue or deployment limit (PostgreSQL claims take turns under a limit)', async () => {
    // One pool per kind of limit, so that each case starts with every slot free.
    await server.client.createWorkPool({ name: 'by-pool', concurrencyLimit: 2 });
    await server.client.createWorkPool({ name: 'by-queue' });
    await server.client.createWorkQueue('by-queue', { name: 'slow', concurrencyLimit: 1 });
    await server.client.createWorkPool({ name: 'by-deployment' });
    await server.client.putDeployment(spec({ name: 'pooled', workPool: 'by-pool' }));
    await server.client.putDeployment(spec({ name: 'queued', workPool: 'by-queue', workQueue: 'slow' }));
    await server.client.putDeployment(spec({ name: 'limited', workPool: 'by-deployment', concurrencyLimit: 1 }));
    for (const [name, pool, limit] of [
      ['pooled', 'by-pool', 2],
      ['queued', 'by-queue', 1],
      ['limited', 'by-deployment', 1],
    ] as const) {
      for (let i = 0; i < 8; i++) await server.client.runDeployment(name);
      const answers = await Promise.all(
        Array.from({ length: 6 }, () =>
          server.client.poll(pool, { workerId: randomUUID(), workerName: 'w', capacity: 1, running: [], waitMs: 0 }),
        ),
      );
      const claimed = answers.flatMap((a) => a.runs);
      expect(claimed.length, name).toBeGreaterThanOrEqual(1);
      expect(claimed.length, name).toBeLessThanOrEqual(limit);
    }
  });

  it('passes over the backlog of a deployment at its limit: other deployments’ runs are claimed', async () => {
    await server.client.putDeployment(spec({ name: 'a', concurrencyLimit: 1 }));
    await server.client.putDeployment(spec({ name: 'b' }));
    for (let i = 0; i < 6; i++) await server.client.runDeployment('a');
    clock.advance(1_000);
    const b = await server.client.runDeployment('b');
    await claimOne(server.client);
    // The next batch of 4 candidates (capacity × 4) would hold only runs of a.
    const next = await claimOne(server.client);
    expect(next.run.id).toBe(b.id);
  });

  it('does not retry a run that was cancelled, however its process ended', async () => {
    await server.client.putDeployment(spec({ retries: 3 }));
    const run = await server.client.runDeployment('etl');
    const c = await claimOne(server.client);
    await c.as.proposeState(run.id, { state: { type: 'RUNNING' } });
    await server.client.cancelFlowRun(run.id);
    // User code turned the cancellation into an ordinary error.
    const res = await c.as.proposeState(run.id, { state: { type: 'FAILED' }, error: { name: 'Error', message: 'aborted' } });
    expect(res.retryScheduled).toBeUndefined();
    expect((await server.client.getFlowRun(run.id)).state.type).toBe('FAILED');
    expect(
      (await server.client.poll('default', { workerId: randomUUID(), workerName: 'w', capacity: 1, running: [], waitMs: 0 })).runs,
    ).toEqual([]);
  });

  it('makes a run Pending only through a claim, and pauses only runs that have not started', async () => {
    await server.client.updateWorkPool('default', { concurrencyLimit: 1 });
    await server.client.putDeployment(spec());
    const run = await server.client.runDeployment('etl');
    const e = await expectCode(server.client.proposeState(run.id, { state: { type: 'PENDING' } }), 'ERR_ILLEGAL_TRANSITION', 409);
    expect(e.message).toContain('only when a worker claims it');
    // Held, then released: a paused run holds no slot and is not claimed.
    await server.client.proposeState(run.id, { state: { type: 'PAUSED' } });
    expect(
      (await server.client.poll('default', { workerId: randomUUID(), workerName: 'w', capacity: 1, running: [], waitMs: 0 })).runs,
    ).toEqual([]);
    await expectCode(server.client.proposeState(run.id, { state: { type: 'RUNNING' } }), 'ERR_ILLEGAL_TRANSITION', 409);
    await server.client.proposeState(run.id, { state: { type: 'SCHEDULED' } });
    const c = await claimOne(server.client);
    await c.as.proposeState(run.id, { state: { type: 'RUNNING' } });
    // A running process cannot be paused from outside (it would keep running and free its slot).
    await expectCode(server.client.proposeState(run.id, { state: { type: 'PAUSED' } }), 'ERR_ILLEGAL_TRANSITION', 409);
  });

  it('stores a proposed scheduledFor as UTC, and refuses one that is not a time, naming the field', async () => {
    await server.client.putDeployment(spec());
    const run = await server.client.runDeployment('etl');
    const c = await claimOne(server.client);
    const due = new Date(clock.now() + 60 * 60_000);
    const offset = `${new Date(due.getTime() + 2 * 3_600_000).toISOString().slice(0, 19)}+02:00`;
    const bad = await expectCode(c.as.proposeState(run.id, { state: { type: 'SCHEDULED' }, scheduledFor: 'soon' }), 'ERR_VALIDATION', 400);
    expect(bad.details).toMatchObject({ field: 'scheduledFor' });
    await c.as.proposeState(run.id, { state: { type: 'SCHEDULED' }, scheduledFor: offset });
    expect((await server.client.getFlowRun(run.id)).nextScheduledStartTime).toBe(due.toISOString());
    clock.set(due.getTime());
    expect((await claimOne(server.client)).run.id).toBe(run.id);
  });

  it('cancels a retry-waiting run of a deleted deployment, and runs still going are not retried', async () => {
    await server.client.putDeployment(spec({ retries: 1, retryDelaysMs: [60_000] }));
    const waiting = await server.client.runDeployment('etl');
    const w = await claimOne(server.client);
    await w.as.proposeState(waiting.id, { state: { type: 'RUNNING' } });
    expect(
      (await w.as.proposeState(waiting.id, { state: { type: 'FAILED' }, error: { name: 'Error', message: 'x' } })).retryScheduled,
    ).toBe(true);
    const going = await server.client.runDeployment('etl');
    clock.advance(1);
    const g = (
      await server.client.poll('default', { workerId: randomUUID(), workerName: 'w', capacity: 5, running: [], waitMs: 0 })
    ).runs.find((r) => r.run.id === going.id);
    expect(g).toBeDefined();
    const as = server.client.withToken(g?.credential);
    await as.proposeState(going.id, { state: { type: 'RUNNING' } });
    await server.client.request('DELETE', '/api/deployments/etl');
    expect((await server.client.getFlowRun(waiting.id)).state).toMatchObject({ type: 'CANCELLED', message: 'its deployment was deleted' });
    const failed = await as.proposeState(going.id, { state: { type: 'FAILED' }, error: { name: 'Error', message: 'x' } });
    expect(failed.retryScheduled).toBeUndefined();
    expect(
      (await server.client.poll('default', { workerId: randomUUID(), workerName: 'w', capacity: 5, running: [], waitMs: 0 })).runs,
    ).toEqual([]);
  });

  it('ends an ad-hoc run whose process is gone when it is cancelled a second time', async () => {
    const started = await server.client.createAdhocRun({ flowName: 'local', parameters: {} });
    const as = server.client.withToken(started.credential);
    await as.proposeState(started.run.id, { state: { type: 'RUNNING' } });
    expect((await server.client.cancelFlowRun(started.run.id)).state.type).toBe('CANCELLING');
    // Nobody confirms: `tessera run` died.
    const again = await server.client.cancelFlowRun(started.run.id);
    expect(again.state).toMatchObject({ type: 'CANCELLED', message: expect.stringMatching(/did not confirm/) });
    await expectCode(as.proposeState(started.run.id, { state: { type: 'COMPLETED' } }), 'ERR_CREDENTIAL_REVOKED', 401);
  });

  it('marks a worker that stops heartbeating as dead: its run is Crashed, then retried', async () => {
    await server.client.putDeployment(spec({ retries: 1 }));
    const run = await server.client.runDeployment('etl');
    const c = await claimOne(server.client);
    await c.as.proposeState(run.id, { state: { type: 'RUNNING' } });
    clock.advance(3_000);
    await server.tick();
    expect((await server.client.getFlowRun(run.id)).state.type).toBe('RUNNING');
    clock.advance(2_000);
    await server.tick();
    const after = await server.client.getFlowRun(run.id);
    expect(after.state.name).toBe('AwaitingRetry');
    const names = (await server.client.getFlowRunStates(run.id)).items.map((s) => s.name);
    expect(names.slice(-2)).toEqual(['Crashed', 'AwaitingRetry']);
    // The dead worker comes back: it is told to forget the run, so it never runs it twice.
    const poll = await server.client.poll('default', { workerId: c.workerId, workerName: 'w', capacity: 0, running: [run.id], waitMs: 0 });
    expect(poll.forget).toEqual([run.id]);
  });

  it('applies a verdict about a silent worker only to the claim it judged, not to a later attempt', async () => {
    await server.client.putDeployment(spec({ retries: 2 }));
    const run = await server.client.runDeployment('etl');
    const first = await claimOne(server.client);
    await first.as.proposeState(run.id, { state: { type: 'RUNNING' } });
    await first.as.proposeState(run.id, { state: { type: 'FAILED' }, error: { name: 'Error', message: 'x' } });
    const second = await claimOne(server.client);
    expect(second.run.attempt).toBe(2);
    // The zombie detector read the run while the first worker held it, and acts now.
    const stale = { workerId: first.workerId, attempt: 1 };
    const actor = { kind: 'server' as const, id: 'zombie-detector' };
    const res = await server.services.runs.proposeState(run.id, { state: { type: 'CRASHED' } }, actor, stale);
    expect(res.status).toBe('ABORT');
    expect((await server.client.getFlowRun(run.id)).state.type).toBe('PENDING');
    const current = { workerId: second.workerId, attempt: 2 };
    expect((await server.services.runs.proposeState(run.id, { state: { type: 'CRASHED' } }, actor, current)).status).toBe('ACCEPT');
  });

  it('bounds what a run credential sends and what a list returns, naming the field', async () => {
    await server.client.putDeployment(spec());
    const run = await server.client.runDeployment('etl');
    const c = await claimOne(server.client);
    const line = { flowRunId: run.id, level: 'info' as const, message: 'hello', timestamp: new Date(clock.now()).toISOString() };
    for (const [bad, field] of [
      [{ ...line, timestamp: `2026-11-29T12:00:00Z${'0'.repeat(100)}` }, 'timestamp'],
      [{ ...line, timestamp: 'tsr_abcdefghijklmnopqrstuvwxyz' }, 'timestamp'],
      [{ ...line, taskRunId: 'tsr_abcdefghijklmnopqrstuvwxyz' }, 'taskRunId'],
    ] as const) {
      const e = await expectCode(c.as.sendLogs([bad]), 'ERR_VALIDATION', 400);
      expect(e.message).toContain(field);
    }
    await c.as.sendLogs([line, { ...line, message: 'x'.repeat(40_000) }]);
    const logs = (
      await server.client.request<{ items: { message: string }[] }>('GET', `/api/flow-runs/${run.id}/logs`, { query: { limit: -1 } })
    ).items;
    // A negative limit is not "no limit": at least one line, never more than the cap.
    expect(logs).toHaveLength(1);
    const all = (await server.client.request<{ items: { message: string }[] }>('GET', `/api/flow-runs/${run.id}/logs`)).items;
    expect(all[1]?.message.length).toBe(16_000);
    for (let i = 0; i < 3; i++) await server.client.runDeployment('etl');
    expect((await server.client.listFlowRuns({ limit: -1 })).items).toHaveLength(1);
  });

  it('gives back a claim its worker never acknowledges', async () => {
    await server.client.putDeployment(spec());
    const run = await server.client.runDeployment('etl');
    const c = await claimOne(server.client);
    clock.advance(6_000);
    await server.client.poll('default', { workerId: c.workerId, workerName: 'w', capacity: 0, running: [], waitMs: 0 });
    const after = await server.client.getFlowRun(run.id);
    expect(after.state.type).toBe('SCHEDULED');
    expect(after.attempt).toBe(0);
  });

  it('wakes a waiting worker as soon as a run becomes due', async () => {
    await server.client.putDeployment(spec());
    const started = Date.now();
    const poll = server.client.poll('default', { workerId: randomUUID(), workerName: 'w', capacity: 1, running: [], waitMs: 20_000 });
    await new Promise((r) => setTimeout(r, 100));
    await server.client.runDeployment('etl');
    const res = await poll;
    expect(res.runs).toHaveLength(1);
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});

/**
 * Starts a 20 s poll with capacity 1, counting the claims it makes; resolves 0.5 s later, the poll
 * still open (a held-back poll also looks again once a second by itself).
 */
async function heldPoll(server: TestServer) {
  const claims = server.services.claims;
  const claim = claims.claim.bind(claims);
  let calls = 0;
  claims.claim = (...args: Parameters<typeof claims.claim>) => {
    calls++;
    return claim(...args);
  };
  const started = Date.now();
  const answer = server.client.poll('default', { workerId: randomUUID(), workerName: 'w', capacity: 1, running: [], waitMs: 20_000 });
  // A test that fails before awaiting the answer closes the server under it: not a second error.
  answer.catch(() => {});
  await new Promise((r) => setTimeout(r, 500));
  return { answer, started, claims: () => calls };
}

describe('long polls and runs due later', () => {
  // A real clock: these polls are held open for real.
  let server: TestServer;
  beforeEach(async () => {
    server = await startTestServer({ backgroundServices: false });
    await server.client.createWorkPool({ name: 'default' });
  });
  afterEach(async () => server.close());

  it('a poll already waiting claims a run created for later at its time, not at the end of the poll', async () => {
    await server.client.putDeployment(spec());
    // The poll starts first and finds no run at all, so it would sleep for its whole 20 s.
    const poll = server.client.poll('default', { workerId: randomUUID(), workerName: 'w', capacity: 1, running: [], waitMs: 20_000 });
    await new Promise((r) => setTimeout(r, 200));
    const due = Date.now() + 1_500;
    await server.client.runDeployment('etl', { scheduledFor: new Date(due).toISOString() });
    const res = await poll;
    expect(res.runs).toHaveLength(1);
    expect(Date.now()).toBeGreaterThanOrEqual(due);
    expect(Date.now() - due).toBeLessThan(5_000);
  });

  it('a poll facing a due run it may not claim waits for a change instead of claiming again and again, and takes the run once a slot frees', async () => {
    await server.client.putDeployment(spec({ concurrencyLimit: 1 }));
    const first = await server.client.runDeployment('etl');
    const c = await claimOne(server.client);
    await c.as.proposeState(first.id, { state: { type: 'RUNNING' } });
    // Due now, but the deployment's only slot is taken.
    const second = await server.client.runDeployment('etl');
    const poll = await heldPoll(server);
    // Held open without spinning: one claim at the start, none while nothing changes.
    expect(poll.claims()).toBe(1);
    await c.as.proposeState(first.id, { state: { type: 'COMPLETED' } });
    const res = await poll.answer;
    expect(res.runs.map((r) => r.run.id)).toEqual([second.id]);
    expect(Date.now() - poll.started).toBeLessThan(5_000);
  });

  it('a poll held back by a deployment limit claims as soon as the limit is raised', async () => {
    await server.client.putDeployment(spec({ concurrencyLimit: 1 }));
    await server.client.runDeployment('etl');
    await claimOne(server.client);
    const second = await server.client.runDeployment('etl');
    const poll = await heldPoll(server);
    expect(poll.claims()).toBe(1);
    await server.client.putDeployment(spec({ concurrencyLimit: 2 }));
    expect((await poll.answer).runs.map((r) => r.run.id)).toEqual([second.id]);
    expect(Date.now() - poll.started).toBeLessThan(5_000);
  });

  it('a poll with nothing held back is not woken when a run ends: only polls a limit blocked are', async () => {
    await server.client.putDeployment(spec());
    const run = await server.client.runDeployment('etl');
    const c = await claimOne(server.client);
    await c.as.proposeState(run.id, { state: { type: 'RUNNING' } });
    const poll = await heldPoll(server);
    await c.as.proposeState(run.id, { state: { type: 'COMPLETED' } });
    await new Promise((r) => setTimeout(r, 500));
    expect(poll.claims()).toBe(1);
    await server.client.runDeployment('etl');
    expect((await poll.answer).runs).toHaveLength(1);
    expect(poll.claims()).toBe(2);
  });

  it('a poll on a paused pool with a due run waits without claiming again, and claims the run as soon as the pool is resumed', async () => {
    await server.client.putDeployment(spec());
    await server.client.updateWorkPool('default', { paused: true });
    const run = await server.client.runDeployment('etl');
    const poll = await heldPoll(server);
    expect(poll.claims()).toBe(1);
    await server.client.updateWorkPool('default', { paused: false });
    const res = await poll.answer;
    expect(res.runs.map((r) => r.run.id)).toEqual([run.id]);
    expect(Date.now() - poll.started).toBeLessThan(5_000);
  });
});

describe('deployments and parameters', () => {
  let server: TestServer;
  beforeEach(async () => {
    server = await startTestServer({ backgroundServices: false });
    await server.client.createWorkPool({ name: 'default' });
  });
  afterEach(async () => server.close());

  it('refuses a deployment on an unknown pool, naming it', async () => {
    const e = await expectCode(server.client.putDeployment(spec({ workPool: 'gpu' })), 'ERR_UNKNOWN_POOL', 404);
    expect(e.message).toContain('work pool "gpu" does not exist');
    expect(e.message).toContain('tessera pools create gpu');
  });

  it('validates parameters against the flow schema with field-level errors', async () => {
    await server.client.putDeployment(
      spec({
        parameterSchema: {
          type: 'object',
          properties: { date: { type: 'string' }, limit: { type: 'integer', minimum: 1 } },
          required: ['date'],
          additionalProperties: false,
        },
      }),
    );
    const e = await expectCode(server.client.runDeployment('etl', { parameters: { limit: 0, extra: 1 } }), 'ERR_INVALID_PARAMETERS', 422);
    expect(e.message).toContain('date');
    expect(e.message).toContain('limit');
    expect(e.message).toContain('extra');
    const ok = await server.client.runDeployment('etl', { parameters: { date: '2026-11-28', limit: 5 } });
    expect(ok.parameters).toEqual({ date: '2026-11-28', limit: 5 });
  });

  it('accepts a parameter schema with an $id, deploy after deploy and run after run', async () => {
    const parameterSchema = { $id: 'https://example.com/etl-params', type: 'object', properties: { date: { type: 'string' } } };
    await server.client.putDeployment(spec({ parameterSchema }));
    await server.client.putDeployment(spec({ parameterSchema }));
    for (let i = 0; i < 3; i++) await server.client.runDeployment('etl', { parameters: { date: '2026-11-29' } });
    await expectCode(server.client.runDeployment('etl', { parameters: { date: 7 } }), 'ERR_INVALID_PARAMETERS', 422);
  });

  it('names the field of a malformed request body', async () => {
    const e = await expectCode(server.client.putDeployment({ ...spec(), entrypoint: 'no-export-here' }), 'ERR_VALIDATION', 400);
    expect(e.message).toContain('entrypoint');
  });

  it('refuses a NUL byte in anything a process is given (env, path, entrypoint, token-file fields), naming the field', async () => {
    const cases: [Partial<DeploymentSpec>, string][] = [
      [{ env: { OK: 'fine', BAD: 'a\u0000b' } }, 'env.BAD'],
      [{ path: '/tmp\u0000/x' }, 'path'],
      [{ entrypoint: 'flows.ts\u0000:etl' }, 'entrypoint'],
    ];
    for (const [overrides, field] of cases) {
      const e = await expectCode(server.client.putDeployment(spec(overrides)), 'ERR_VALIDATION', 400);
      expect(e.message, field).toContain(field);
      expect(e.message, field).toContain('NUL byte');
    }
  });

  it('keeps the deployment id across redeploys', async () => {
    const a = await server.client.putDeployment(spec());
    const b = await server.client.putDeployment(spec({ description: 'changed' }));
    expect(b.id).toBe(a.id);
  });

  it('refuses invalid cron expressions and time zones', async () => {
    const e = await expectCode(server.client.putDeployment(spec({ schedules: [{ cron: '0 25 * * *' }] })), 'ERR_INVALID_SCHEDULE', 400);
    expect(e.message).toContain('schedules[0].cron');
    await expectCode(
      server.client.putDeployment(spec({ schedules: [{ cron: '0 2 * * *', timezone: 'Mars/Olympus' }] })),
      'ERR_INVALID_SCHEDULE',
      400,
    );
  });
});

describe('scheduler', () => {
  it('creates the slots it missed while it could not run, as long as they would not be Late yet', async () => {
    const clock = createFakeClock('2026-11-28T12:00:30Z');
    const server = await startTestServer({
      clock,
      backgroundServices: false,
      settings: { scheduleHorizonMs: 5 * 60_000, maxScheduledRuns: 2, lateAfterMs: 5 * 60_000 },
    });
    try {
      await server.client.createWorkPool({ name: 'default' });
      await server.client.putDeployment(spec({ name: 'catch-up', schedules: [{ interval: 60_000 }] }));
      await server.tick();
      // The scheduler stalls for 4 minutes (a leader failing over, a stalled event loop): two slots
      // ahead were not enough. The slots it missed are created now, none twice, none skipped.
      clock.advance(4 * 60_000);
      await server.tick();
      await server.tick();
      const slots = (await server.client.listFlowRuns({ deployment: 'catch-up', limit: 100 })).items
        .map((r) => Date.parse(r.expectedStartTime))
        .sort((a, b) => a - b);
      // Two missed (12:03, 12:04) and two ahead (12:05, 12:06), after the first two.
      expect(slots).toHaveLength(6);
      expect(new Set(slots).size).toBe(slots.length);
      expect(slots.slice(1).filter((t, i) => t - (slots[i] as number) !== 60_000)).toEqual([]);
      // Down longer than lateAfterMs: what would already be Late is skipped, not created.
      clock.advance(20 * 60_000);
      await server.tick();
      const after = (await server.client.listFlowRuns({ deployment: 'catch-up', limit: 100 })).items.map((r) =>
        Date.parse(r.expectedStartTime),
      );
      expect(Math.min(...after.filter((t) => t > Math.max(...slots)))).toBeGreaterThanOrEqual(clock.now() - 5 * 60_000);
    } finally {
      await server.close();
    }
  });

  it('a paused schedule takes its runs created ahead of time with it; resumed, it creates them again', async () => {
    const clock = createFakeClock('2026-11-28T12:00:30Z');
    const server = await startTestServer({ clock, backgroundServices: false, settings: { scheduleHorizonMs: 5 * 60_000 } });
    try {
      await server.client.createWorkPool({ name: 'default' });
      await server.client.putDeployment(spec({ schedules: [{ cron: '* * * * *' }] }));
      await server.tick();
      const scheduled = async () => (await server.client.listFlowRuns({ state: 'SCHEDULED', limit: 100 })).items.length;
      expect(await scheduled()).toBe(5);
      await server.client.putDeployment(spec({ schedules: [{ cron: '* * * * *', active: false }] }));
      expect(await scheduled()).toBe(0);
      clock.advance(60_000);
      expect(
        (await server.client.poll('default', { workerId: randomUUID(), workerName: 'w', capacity: 5, running: [], waitMs: 0 })).runs,
      ).toEqual([]);
      await server.client.putDeployment(spec({ schedules: [{ cron: '* * * * *' }] }));
      await server.tick();
      expect(await scheduled()).toBe(5);
    } finally {
      await server.close();
    }
  });

  it('creates upcoming runs once per slot, across ticks and restarts, and marks late runs', async () => {
    const clock = createFakeClock('2026-11-28T12:00:30Z');
    let server = await startTestServer({
      clock,
      backgroundServices: false,
      settings: { scheduleHorizonMs: 5 * 60_000, maxScheduledRuns: 10, lateAfterMs: 15_000 },
    });
    const first = server;
    try {
      await server.client.createWorkPool({ name: 'default' });
      await server.client.putDeployment(spec({ schedules: [{ cron: '* * * * *' }] }));
      await server.tick();
      await server.tick();
      let runs = (await server.client.listFlowRuns({ limit: 100 })).items;
      expect(runs.map((r) => r.expectedStartTime).sort()).toEqual([
        '2026-11-28T12:01:00.000Z',
        '2026-11-28T12:02:00.000Z',
        '2026-11-28T12:03:00.000Z',
        '2026-11-28T12:04:00.000Z',
        '2026-11-28T12:05:00.000Z',
      ]);
      expect(runs[0]?.triggerKind).toBe('schedule');
      expect(runs[0]?.triggeredBy.kind).toBe('schedule');
      await server.stop();
      server = await startTestServer({
        clock,
        home: first.home,
        ...(first.databaseUrl ? { databaseUrl: first.databaseUrl } : {}),
        backgroundServices: false,
        settings: { scheduleHorizonMs: 5 * 60_000, lateAfterMs: 15_000 },
      });
      clock.advance(60_000);
      await server.tick();
      runs = (await server.client.listFlowRuns({ limit: 100 })).items;
      const slots = runs.map((r) => r.expectedStartTime);
      expect(new Set(slots).size).toBe(slots.length);
      expect(slots).toContain('2026-11-28T12:06:00.000Z');
      const late = runs.find((r) => r.expectedStartTime === '2026-11-28T12:01:00.000Z');
      expect(late?.state.name).toBe('Late');
    } finally {
      await server.stop();
      await first.close();
    }
  });
});
