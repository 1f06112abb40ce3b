import { TesseraError } from '@tessera/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { getRunContext } from './context.js';
import { TaskRunError } from './errors.js';
import { flow } from './flow.js';
import { isTask, task } from './task.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function rejection(promise: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await promise;
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

describe('tasks run locally (no server)', () => {
  afterEach(() => vi.restoreAllMocks());

  it('returns the function result when called inside a local flow', async () => {
    const double = task({ name: 'double' }, async (n: number) => n * 2);
    const f = flow({ name: 'f' }, async () => (await double(2)) + (await double(3)));
    await expect(f()).resolves.toBe(10);
  });

  it('retries a failing task until it succeeds', async () => {
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    let calls = 0;
    const flaky = task({ name: 'flaky', retries: 2 }, async () => {
      calls++;
      if (calls < 3) throw new Error(`boom ${calls}`);
      return 'ok';
    });
    await expect(flow({ name: 'f' }, async () => flaky())()).resolves.toBe('ok');
    expect(calls).toBe(3);
  });

  it('waits the backoff delays between attempts, repeating the last one', async () => {
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const starts: number[] = [];
    const failing = task({ name: 'backoff', retries: 3, retryDelay: [30, '120ms'] }, async () => {
      starts.push(performance.now());
      throw new Error('nope');
    });
    await rejection(flow({ name: 'f' }, async () => failing())());
    expect(starts).toHaveLength(4);
    const gaps = starts.slice(1).map((t, i) => t - (starts[i] as number));
    expect(gaps[0]).toBeGreaterThanOrEqual(28);
    expect(gaps[0]).toBeLessThan(110);
    for (const gap of gaps.slice(1)) {
      expect(gap).toBeGreaterThanOrEqual(118);
      expect(gap).toBeLessThan(400);
    }
  });

  it('throws a TaskRunError with the original error as cause when retries run out', async () => {
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const original = new RangeError('bad row 7');
    const failing = task({ name: 'load-rows', retries: 1 }, async () => {
      throw original;
    });
    const error = await rejection(flow({ name: 'f' }, async () => failing())());
    expect(error).toBeInstanceOf(TaskRunError);
    expect(error).toBeInstanceOf(TesseraError);
    const e = error as TaskRunError;
    expect(e.code).toBe('ERR_TASK_FAILED');
    expect(e.name).toBe('TaskRunError');
    expect(e.taskName).toBe('load-rows');
    expect(e.attempts).toBe(2);
    expect(e.taskRunId).toMatch(/^[0-9a-f-]{36}$/);
    expect(e.cause).toBe(original);
    expect(e.message).toBe('task "load-rows" failed after 2 attempts: bad row 7');
  });

  it('fails an attempt that exceeds the timeout with ERR_TIMEOUT and aborts its signal', async () => {
    let signal: AbortSignal | undefined;
    const slow = task({ name: 'slow', timeout: '30ms' }, async () => {
      signal = getRunContext().signal;
      await sleep(1_000);
      return 'late';
    });
    const t0 = performance.now();
    const error = await rejection(flow({ name: 'f' }, async () => slow())());
    expect(performance.now() - t0).toBeLessThan(500);
    expect((error as TaskRunError).code).toBe('ERR_TASK_FAILED');
    const cause = (error as TaskRunError).cause as TesseraError;
    expect(cause.code).toBe('ERR_TIMEOUT');
    expect(cause.message).toMatch(/task "slow" timed out after 30 ms/);
    expect(signal?.aborted).toBe(true);
    expect(signal?.reason).toMatchObject({ code: 'ERR_TIMEOUT' });
  });

  it('retries an attempt that timed out', async () => {
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    let calls = 0;
    const sometimesSlow = task({ name: 'sometimes-slow', timeout: 30, retries: 1 }, async () => {
      calls++;
      if (calls === 1) await sleep(500);
      return calls;
    });
    await expect(flow({ name: 'f' }, async () => sometimesSlow())()).resolves.toBe(2);
  });

  it('map runs one task call per item in parallel and keeps the order of results', async () => {
    const inFlight = { now: 0, max: 0 };
    const square = task({ name: 'square' }, async (n: number, offset: number) => {
      inFlight.now++;
      inFlight.max = Math.max(inFlight.max, inFlight.now);
      await sleep(20 - n);
      inFlight.now--;
      return n * n + offset;
    });
    const f = flow({ name: 'f' }, async () => square.map([1, 2, 3, 4, 5], 100));
    await expect(f()).resolves.toEqual([101, 104, 109, 116, 125]);
    expect(inFlight.max).toBe(5);
  });

  it('runs tasks in parallel with Promise.all', async () => {
    const wait = task({ name: 'wait' }, async (ms: number) => {
      await sleep(ms);
      return ms;
    });
    const t0 = performance.now();
    const f = flow({ name: 'f' }, async () => Promise.all([wait(100), wait(100), wait(100), wait(100)]));
    await expect(f()).resolves.toEqual([100, 100, 100, 100]);
    expect(performance.now() - t0).toBeLessThan(300);
  });

  it('gives each task call its own task-run context inside the flow run', async () => {
    const seen: unknown[] = [];
    const inspect = task({ name: 'inspect' }, async () => {
      const ctx = getRunContext();
      seen.push({ taskName: ctx.taskName, taskRunId: ctx.taskRunId, runId: ctx.runId, flowName: ctx.flowName, local: ctx.local });
    });
    let runId = '';
    await flow({ name: 'ctx-flow' }, async (_p, ctx) => {
      runId = ctx.runId;
      expect(ctx.taskRunId).toBeUndefined();
      await inspect();
      await inspect();
    })();
    expect(seen).toHaveLength(2);
    expect(seen[0]).toMatchObject({ taskName: 'inspect', runId, flowName: 'ctx-flow', local: true });
    expect((seen[0] as { taskRunId: string }).taskRunId).not.toBe((seen[1] as { taskRunId: string }).taskRunId);
  });

  it('runs a task called outside any flow locally, with retries', async () => {
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    let calls = 0;
    const standalone = task({ name: 'standalone', retries: 1 }, async (x: number) => {
      calls++;
      if (calls === 1) throw new Error('first');
      return x + 1;
    });
    await expect(standalone(1)).resolves.toBe(2);
    expect(isTask(standalone)).toBe(true);
    expect(standalone.options).toMatchObject({ name: 'standalone', retries: 1, retryDelaysMs: [0], timeoutMs: null });
  });

  it('turns a synchronous throw into a failed task run', async () => {
    const syncThrow = task({ name: 'sync-throw' }, (() => {
      throw new Error('sync');
    }) as unknown as () => Promise<void>);
    const error = await rejection(syncThrow());
    expect(error.code).toBe('ERR_TASK_FAILED');
  });

  it('rejects invalid task options naming the option', () => {
    expect(() => task({ name: '' }, async () => {})).toThrow(
      expect.objectContaining({ code: 'ERR_VALIDATION', message: expect.stringMatching(/"name"/) }),
    );
    expect(() => task({ name: 't', retries: -1 }, async () => {})).toThrow(
      expect.objectContaining({ code: 'ERR_VALIDATION', message: 'task "t": option "retries" must be a non-negative integer; got -1' }),
    );
    expect(() => task({ name: 't', retryDelay: ['1s', 'soon'] }, async () => {})).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_DURATION', message: expect.stringMatching(/retryDelay\[1\]: "soon"/) }),
    );
    expect(() => task({ name: 't', timeout: 0 }, async () => {})).toThrow(expect.objectContaining({ code: 'ERR_VALIDATION' }));
  });

  it('accepts a zod schema on flows but not on tasks (type-level check compiles)', () => {
    const schema = z.object({ a: z.string() });
    expect(flow({ name: 'typed', parameters: schema }, async ({ a }) => a.length).options.parameters).toBe(schema);
  });
});
