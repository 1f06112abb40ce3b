import type { TaskRunEvent, TesseraError } from '@tessera/core';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { getRunContext } from '../context.js';
import type { RunEvent } from '../events.js';
import { flow } from '../flow.js';
import { identity } from '../identity.js';
import { log } from '../logging.js';
import { task } from '../task.js';
import { type FakeServer, startFakeServer } from '../test-support/fake-server.js';
import { runFlowAttached } from './attached.js';

let server: FakeServer;

beforeAll(async () => {
  server = await startFakeServer({ audiences: ['sts.amazonaws.com'], batchLatencyMs: 2 });
});
afterAll(() => server.stop());
afterEach(() => vi.restoreAllMocks());

function quiet(): void {
  vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
}

function statesOf(events: TaskRunEvent[], taskRunId: string): string[] {
  return events.filter((e) => e.taskRunId === taskRunId).map((e) => (e.state.name ? `${e.state.type}:${e.state.name}` : e.state.type));
}

describe('runFlowAttached against a real HTTP server', () => {
  it('reports 1,000 task runs in order, in few requests, all before the final state', async () => {
    quiet();
    const noop = task({ name: 'noop' }, async (i: number) => i);
    let bodyMs = 0;
    const many = flow({ name: 'many-tasks' }, async () => {
      const t0 = performance.now();
      const out = await noop.map(Array.from({ length: 1_000 }, (_, i) => i));
      bodyMs = performance.now() - t0;
      return out.length;
    });
    const before = server.requests.length;
    const { run, result, error } = await runFlowAttached(many, { client: server.client() });
    expect(error).toBeNull();
    expect(result).toBe(1_000);
    expect(run.state.type).toBe('COMPLETED');
    expect(run.result).toBe(1_000);

    const mine = server.requests.slice(before);
    const eventRequests = mine.filter((r) => r.path === '/api/task-runs/events');
    const events = eventRequests.flatMap((r) => (r.body as { events: TaskRunEvent[] }).events);
    expect(events).toHaveLength(3_000);
    expect(eventRequests.length).toBeLessThanOrEqual(10);
    const ids = new Set(events.map((e) => e.taskRunId));
    expect(ids.size).toBe(1_000);
    for (const id of ids) expect(statesOf(events, id)).toEqual(['PENDING', 'RUNNING', 'COMPLETED']);
    expect(events.every((e) => e.flowRunId === run.id && e.taskKey === 'noop')).toBe(true);
    // Every event arrived before the final state was proposed.
    const completedAt = mine.findIndex(
      (r) => r.path.endsWith('/state') && (r.body as { state: { type: string } }).state.type === 'COMPLETED',
    );
    expect(mine.findLastIndex((r) => r.path === '/api/task-runs/events')).toBeLessThan(completedAt);
    // Under 2 ms per no-op task, reporting included.
    expect(bodyMs / 1_000).toBeLessThan(2);
  });

  it('reports a retried task as Running, AwaitingRetry, Retrying, Completed', async () => {
    quiet();
    let calls = 0;
    const flaky = task({ name: 'flaky', retries: 1, retryDelay: 10 }, async () => {
      if (++calls === 1) throw new Error('transient');
      return 'ok';
    });
    const before = server.eventBatches.length;
    const { run } = await runFlowAttached(
      flow({ name: 'retrying' }, async () => flaky()),
      { client: server.client() },
    );
    expect(run.state.type).toBe('COMPLETED');
    const events = server.eventBatches.slice(before).flat();
    const id = events[0]?.taskRunId as string;
    expect(statesOf(events, id)).toEqual(['PENDING', 'RUNNING', 'SCHEDULED:AwaitingRetry', 'RUNNING:Retrying', 'COMPLETED']);
    expect(events.map((e) => e.attempt)).toEqual([0, 1, 1, 2, 2]);
    expect(events[2]?.state.message).toMatch(/attempt 1 of 2 failed: transient; retrying in 10 ms/);
  });

  it('fails the run with the task error when a task fails for good', async () => {
    quiet();
    const broken = task({ name: 'broken' }, async () => {
      throw new Error('disk full');
    });
    const before = server.eventBatches.length;
    const { run, error, result } = await runFlowAttached(
      flow({ name: 'failing' }, async () => broken()),
      { client: server.client() },
    );
    expect(result).toBeUndefined();
    expect(run.state.type).toBe('FAILED');
    expect(error).toMatchObject({
      name: 'TaskRunError',
      code: 'ERR_TASK_FAILED',
      message: 'task "broken" failed after 1 attempt: disk full',
    });
    expect(run.error).toMatchObject({ code: 'ERR_TASK_FAILED' });
    const events = server.eventBatches.slice(before).flat();
    const failed = events.find((e) => e.state.type === 'FAILED');
    expect(failed?.error).toMatchObject({ name: 'Error', message: 'disk full' });
  });

  it('reports a task timeout as FAILED with code ERR_TIMEOUT', async () => {
    quiet();
    const slow = task({ name: 'slow', timeout: 20 }, async () => new Promise((r) => setTimeout(r, 500)));
    const before = server.eventBatches.length;
    const { error } = await runFlowAttached(
      flow({ name: 'timing-out' }, async () => slow()),
      { client: server.client() },
    );
    expect(error?.code).toBe('ERR_TASK_FAILED');
    const failed = server.eventBatches
      .slice(before)
      .flat()
      .find((e) => e.state.type === 'FAILED');
    expect(failed?.error?.code).toBe('ERR_TIMEOUT');
  });

  it('fails the run with ERR_TIMEOUT and cancels unfinished task runs when the flow times out', async () => {
    quiet();
    const hang = task({ name: 'hang' }, async () => new Promise((r) => setTimeout(r, 500)));
    const before = server.eventBatches.length;
    const { run, error } = await runFlowAttached(
      flow({ name: 'flow-timeout', timeout: 30 }, async () => hang()),
      { client: server.client() },
    );
    expect(run.state.type).toBe('FAILED');
    expect(error?.code).toBe('ERR_TIMEOUT');
    const events = server.eventBatches.slice(before).flat();
    expect(statesOf(events, events[0]?.taskRunId as string)).toEqual(['PENDING', 'RUNNING', 'CANCELLED']);
  });

  it('sends redacted log lines with the flow run and task run ids', async () => {
    quiet();
    let taskRunId = '';
    const leaky = task({ name: 'leaky' }, async () => {
      taskRunId = getRunContext().taskRunId as string;
      const token = await identity.token({ audience: 'sts.amazonaws.com' });
      log.info('got token %s', token);
    });
    const before = server.logBatches.length;
    const { run } = await runFlowAttached(
      flow({ name: 'logging' }, async () => leaky()),
      { client: server.client() },
    );
    const logs = server.logBatches.slice(before).flat();
    const line = logs.find((l) => l.message.startsWith('got token'));
    expect(line).toMatchObject({ flowRunId: run.id, taskRunId, level: 'info' });
    expect(line?.message).toMatch(/^got token \[redacted JWT …[A-Za-z0-9_-]{4}\]$/);
    expect(logs.some((l) => l.message.includes('eyJ'))).toBe(false);
  });

  it('asks for identity tokens with the run credential, naming the task inside a task', async () => {
    quiet();
    let taskRunId = '';
    const useToken = task({ name: 'use-token' }, async () => {
      taskRunId = getRunContext().taskRunId as string;
      return identity.tokenWithClaims({ audience: 'sts.amazonaws.com', lifetime: '2m' });
    });
    const f = flow({ name: 'identity-flow' }, async () => ({
      inFlow: await identity.token({ audience: 'sts.amazonaws.com' }),
      inTask: await useToken(),
    }));
    const before = server.tokenRequests.length;
    const { result, run } = await runFlowAttached(f, { client: server.client() });
    expect(result?.inFlow).toMatch(/^eyJ/);
    expect(result?.inTask).toMatchObject({ aud: 'sts.amazonaws.com', tokenType: 'JWT' });
    expect(server.tokenRequests.slice(before)).toEqual([
      { audience: 'sts.amazonaws.com' },
      { audience: 'sts.amazonaws.com', lifetime: 120_000, taskRunId, taskName: 'use-token' },
    ]);
    const tokenCalls = server.requests.filter((r) => r.path === '/api/identity/token');
    expect(tokenCalls.every((r) => r.auth?.startsWith('tsr_'))).toBe(true);
    expect(run.state.type).toBe('COMPLETED');
  });

  it("rethrows the server's refusal of an audience with its code and message", async () => {
    quiet();
    const f = flow({ name: 'bad-audience' }, async () => {
      try {
        await identity.token({ audience: 'sts.amazon.com' });
        return null;
      } catch (e) {
        return { code: (e as TesseraError).code, message: (e as TesseraError).message };
      }
    });
    const { result } = await runFlowAttached(f, { client: server.client() });
    expect(result).toEqual({
      code: 'ERR_AUDIENCE_NOT_ALLOWED',
      message: 'audience "sts.amazon.com" is not allowed for this run; allowed: sts.amazonaws.com',
    });
  });

  it('delivers task-run state changes and log lines to onEvent as they happen', async () => {
    const seen: RunEvent[] = [];
    const step = task({ name: 'step' }, async () => log.info('working'));
    await runFlowAttached(
      flow({ name: 'live' }, async () => step()),
      { client: server.client(), printLogs: false, onEvent: (e) => seen.push(e) },
    );
    const kinds = seen.map((e) =>
      e.type === 'task-run' ? `task:${e.event.state.type}` : e.type === 'flow-run' ? `flow:${e.run.state.type}` : `log:${e.entry.message}`,
    );
    expect(kinds[0]).toBe('flow:PENDING');
    expect(kinds).toContain('flow:RUNNING');
    expect(kinds.indexOf('task:RUNNING')).toBeLessThan(kinds.indexOf('log:working'));
    expect(kinds.indexOf('log:working')).toBeLessThan(kinds.indexOf('task:COMPLETED'));
    expect(kinds.at(-1)).toBe('flow:COMPLETED');
  });

  it('throws ERR_INVALID_PARAMETERS before creating a run', async () => {
    const f = flow({ name: 'typed', parameters: z.object({ n: z.number() }) }, async ({ n }) => n);
    const before = server.runs.size;
    await expect(runFlowAttached(f, { client: server.client(), parameters: { n: 'x' } as never })).rejects.toMatchObject({
      code: 'ERR_INVALID_PARAMETERS',
      message: 'invalid parameters for flow "typed": n: Invalid input: expected number, received string',
    });
    expect(server.runs.size).toBe(before);
  });

  it('creates the ad hoc run with the flow settings and runs the retry the server schedules', async () => {
    quiet();
    const attempts: number[] = [];
    const f = flow({ name: 'server-retry', retries: 1, retryDelay: 20, tags: ['a'] }, async (_p, ctx) => {
      attempts.push(ctx.attempt);
      if (ctx.attempt === 1) throw new Error('first attempt fails');
      return 'second';
    });
    const { run, result } = await runFlowAttached(f, { client: server.client(), tags: ['b'] });
    expect(attempts).toEqual([1, 2]);
    expect(result).toBe('second');
    expect(run).toMatchObject({ attempt: 2, maxRetries: 1, retryDelaysMs: [20], tags: ['a', 'b'], state: { type: 'COMPLETED' } });
    const types = server.proposals.filter((p) => p.runId === run.id).map((p) => p.body.state.type);
    expect(types).toEqual(['RUNNING', 'FAILED', 'PENDING', 'RUNNING', 'COMPLETED']);
  });

  it('reports the run Cancelled when the caller aborts', async () => {
    quiet();
    const controller = new AbortController();
    const f = flow({ name: 'cancellable' }, async (_p, ctx) => {
      setTimeout(() => controller.abort(), 20);
      await new Promise((r) => setTimeout(r, 1_000));
      return ctx.runId;
    });
    const { run, error } = await runFlowAttached(f, { client: server.client(), signal: controller.signal });
    expect(run.state.type).toBe('CANCELLED');
    expect(error?.code).toBe('ERR_CANCELLED');
  });

  it('stores a non-JSON return value as null and undefined as null', async () => {
    quiet();
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    const a = await runFlowAttached(
      flow({ name: 'circular' }, async () => circular),
      { client: server.client() },
    );
    expect(a.run.state.type).toBe('COMPLETED');
    expect(a.run.result).toBeNull();
    expect(a.result).toBe(circular);
    const b = await runFlowAttached(
      flow({ name: 'void' }, async () => undefined),
      { client: server.client() },
    );
    expect(b.run.result).toBeNull();
  });
});

describe('runFlowAttached cancellation before start', () => {
  it('reports the run Cancelled without running it when the signal is already aborted', async () => {
    quiet();
    let ran = false;
    const f = flow({ name: 'never-runs' }, async () => {
      ran = true;
    });
    const { run, error } = await runFlowAttached(f, { client: server.client(), signal: AbortSignal.abort() });
    expect(ran).toBe(false);
    expect(run.state.type).toBe('CANCELLED');
    expect(error?.code).toBe('ERR_CANCELLED');
  });
});
