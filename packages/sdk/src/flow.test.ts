import type { TesseraError, ValidationIssue } from '@tessera/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { getRunContext } from './context.js';
import { describeFlow, flow, isFlow } from './flow.js';
import { identity } from './identity.js';
import { getLogger, log } from './logging.js';
import { task } from './task.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const JWT = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJmbG93OmV0bCIsImF1ZCI6InN0cyJ9.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl';

async function rejection(promise: Promise<unknown>): Promise<TesseraError> {
  try {
    await promise;
  } catch (e) {
    return e as TesseraError;
  }
  throw new Error('expected a rejection');
}

function captureOutput(): { text: () => string } {
  const lines: string[] = [];
  const capture = (chunk: unknown): boolean => {
    lines.push(String(chunk));
    return true;
  };
  vi.spyOn(process.stdout, 'write').mockImplementation(capture);
  vi.spyOn(process.stderr, 'write').mockImplementation(capture);
  return { text: () => lines.join('') };
}

const params = z.object({
  day: z.string(),
  count: z.number().int().min(1).default(3),
  items: z.array(z.object({ id: z.string() })).optional(),
});

describe('flows run locally (no server)', () => {
  afterEach(() => vi.restoreAllMocks());

  it('passes validated parameters with defaults applied and the run context to the function', async () => {
    const etl = flow({ name: 'etl', parameters: params }, async (p, ctx) => ({
      p,
      local: ctx.local,
      flowName: ctx.flowName,
      attempt: ctx.attempt,
    }));
    await expect(etl({ day: 'mon' })).resolves.toEqual({ p: { day: 'mon', count: 3 }, local: true, flowName: 'etl', attempt: 1 });
  });

  it('rejects invalid parameters before running, naming each field path and problem', async () => {
    let ran = false;
    const etl = flow({ name: 'etl', parameters: params }, async () => {
      ran = true;
    });
    const error = await rejection(etl({ day: 5, count: 0, items: [{ id: 'a' }, { id: 2 }] } as never));
    expect(ran).toBe(false);
    expect(error.code).toBe('ERR_INVALID_PARAMETERS');
    expect(error.message).toBe(
      'invalid parameters for flow "etl": day: Invalid input: expected string, received number; count: Too small: expected number to be >=1; items[1].id: Invalid input: expected string, received number',
    );
    expect(error.details?.issues as ValidationIssue[]).toEqual([
      { path: 'day', message: 'Invalid input: expected string, received number' },
      { path: 'count', message: 'Too small: expected number to be >=1' },
      { path: 'items[1].id', message: 'Invalid input: expected string, received number' },
    ]);
  });

  it('reports a missing required parameter by name', async () => {
    const etl = flow({ name: 'etl', parameters: params }, async () => {});
    const error = await rejection(etl({} as never));
    expect(error.code).toBe('ERR_INVALID_PARAMETERS');
    expect(error.details?.issues).toEqual([{ path: 'day', message: 'Invalid input: expected string, received undefined' }]);
  });

  it('fails with ERR_TIMEOUT when the flow exceeds its timeout and aborts the signal', async () => {
    let signal: AbortSignal | undefined;
    const slow = flow({ name: 'slow-flow', timeout: '40ms' }, async (_p, ctx) => {
      signal = ctx.signal;
      await sleep(1_000);
    });
    const error = await rejection(slow());
    expect(error.code).toBe('ERR_TIMEOUT');
    expect(error.message).toMatch(/flow "slow-flow" timed out after 40 ms/);
    expect(signal?.aborted).toBe(true);
  });

  it('cancels the tasks still running when the flow times out', async () => {
    let taskSignal: AbortSignal | undefined;
    const hang = task({ name: 'hang' }, async () => {
      taskSignal = getRunContext().signal;
      await sleep(1_000);
    });
    const error = await rejection(flow({ name: 'f', timeout: 30 }, async () => hang())());
    expect(error.code).toBe('ERR_TIMEOUT');
    expect(taskSignal?.aborted).toBe(true);
  });

  it('retries the whole flow locally with its own retries', async () => {
    captureOutput();
    let attempts: number[] = [];
    const f = flow({ name: 'flaky-flow', retries: 2, retryDelay: 5 }, async (_p, ctx) => {
      attempts = [...attempts, ctx.attempt];
      if (ctx.attempt < 3) throw new Error('again');
      return 'done';
    });
    await expect(f()).resolves.toBe('done');
    expect(attempts).toEqual([1, 2, 3]);
  });

  it('runs a flow called from another flow inline, validating its parameters', async () => {
    const child = flow({ name: 'child', parameters: z.object({ n: z.number() }) }, async ({ n }, ctx) => ({ n, runId: ctx.runId }));
    const parent = flow({ name: 'parent' }, async (_p, ctx) => ({ child: await child({ n: 1 }), runId: ctx.runId }));
    const out = await parent();
    expect(out.child).toEqual({ n: 1, runId: out.runId });
    const bad = flow({ name: 'bad-parent' }, async () => child({ n: 'x' } as never));
    expect((await rejection(bad())).code).toBe('ERR_INVALID_PARAMETERS');
  });

  it('describes a flow as JSON with its parameter schema', () => {
    const etl = flow(
      { name: 'etl', retries: 2, retryDelay: ['1s', '1m'], timeout: '1h', tags: ['nightly'], parameters: params },
      async () => {},
    );
    expect(isFlow(etl)).toBe(true);
    expect(isFlow(async () => {})).toBe(false);
    const d = describeFlow(etl);
    expect(d).toMatchObject({ name: 'etl', retries: 2, retryDelaysMs: [1_000, 60_000], timeoutMs: 3_600_000, tags: ['nightly'] });
    expect(d.parameterSchema).toMatchObject({
      type: 'object',
      required: ['day'],
      properties: { day: { type: 'string' }, count: { type: 'integer', default: 3 } },
    });
    expect(JSON.parse(JSON.stringify(d))).toEqual(d);
    expect(describeFlow(flow({ name: 'plain' }, async () => {}))).toEqual({
      name: 'plain',
      retries: 0,
      retryDelaysMs: [0],
      timeoutMs: null,
      tags: [],
      parameterSchema: null,
    });
  });

  it('rejects a parameters option that is not a zod object', () => {
    expect(() => flow({ name: 'x', parameters: z.string() as never }, async () => {})).toThrow(/must be a zod object schema/);
  });
});

describe('run context and identity outside Tessera runs', () => {
  afterEach(() => vi.restoreAllMocks());

  it('getRunContext() throws ERR_NO_RUN_CONTEXT outside a run', () => {
    expect(() => getRunContext()).toThrow(
      expect.objectContaining({ code: 'ERR_NO_RUN_CONTEXT', message: expect.stringMatching(/outside a flow run/) }),
    );
  });

  it('identity.token() outside a run throws ERR_NO_IDENTITY explaining where tokens exist', async () => {
    const error = await rejection(identity.token({ audience: 'sts.amazonaws.com' }));
    expect(error.code).toBe('ERR_NO_IDENTITY');
    expect(error.message).toMatch(/identity tokens exist only inside runs started by Tessera/);
  });

  it('identity.token() in a locally called flow throws ERR_NO_IDENTITY', async () => {
    const f = flow({ name: 'local-id' }, async () => identity.token({ audience: 'vault' }));
    const error = await rejection(f());
    expect(error.code).toBe('ERR_NO_IDENTITY');
    expect(error.message).toMatch(/flow "local-id" was called directly/);
  });
});

describe('logging', () => {
  afterEach(() => vi.restoreAllMocks());

  it('masks a JWT and a run credential in printed lines', async () => {
    const out = captureOutput();
    const leaky = task({ name: 'leaky' }, async () => {
      log.info('token is %s', JWT);
      getLogger().warn(`credential tsr_abcdefghijklmnopqrstuvwx in use`);
    });
    await flow({ name: 'leak-flow' }, async () => leaky())();
    const text = out.text();
    expect(text).not.toContain(JWT);
    expect(text).not.toContain('tsr_abcdefghijklmnopqrstuvwx');
    expect(text).toContain('[redacted JWT …dXJl]');
    expect(text).toContain('[redacted credential …uvwx]');
    expect(text).toMatch(/INFO +\[leaky-1\] token is/);
    expect(text).toMatch(/WARN +\[leaky-1\] credential/);
  });

  it('masks a credential that straddles the cut of a very long message, and cuts the message', async () => {
    const out = captureOutput();
    const credential = `tsr_${'k'.repeat(40)}`;
    await flow({ name: 'long-log' }, async () => {
      log.info(`${'x '.repeat(15_995)}${credential} and more`);
    })();
    const text = out.text();
    expect(text).toContain('more characters cut');
    expect(text).not.toContain('tsr_kkk');
    // The mask itself may be cut; the credential's characters are gone either way.
    expect(text).toMatch(/x \[redacted/);
  });

  it('prints outside a run, without a prefix, warn and error to stderr', () => {
    const stdout: string[] = [];
    const stderr: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((c) => stdout.push(String(c)) > 0);
    vi.spyOn(process.stderr, 'write').mockImplementation((c) => stderr.push(String(c)) > 0);
    log.info('hello %d', 42);
    log.error(new Error('bad'));
    expect(stdout.join('')).toMatch(/INFO {2}hello 42\n$/);
    expect(stderr.join('')).toMatch(/ERROR Error: bad/);
  });

  it('uses the flow name as the prefix outside tasks', async () => {
    const out = captureOutput();
    await flow({ name: 'prefix-flow' }, async (_p, ctx) => ctx.logger.info('from the flow'))();
    expect(out.text()).toMatch(/INFO +\[prefix-flow\] from the flow/);
  });
});
