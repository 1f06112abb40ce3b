import { fileURLToPath } from 'node:url';
import type { TesseraError } from '@tessera/core';
import { describe, expect, it } from 'vitest';
import { describeFlow } from '../flow.js';
import { loadFlowFromEntrypoint } from './entrypoint.js';

const fixtures = fileURLToPath(new URL('../test-support/fixtures/', import.meta.url));

async function failure(entrypoint: string, cwd = fixtures): Promise<TesseraError> {
  try {
    await loadFlowFromEntrypoint(entrypoint, cwd);
  } catch (e) {
    return e as TesseraError;
  }
  throw new Error('expected a failure');
}

describe('loadFlowFromEntrypoint', () => {
  it('loads the named flow export relative to cwd', async () => {
    const flow = await loadFlowFromEntrypoint('flows.ts:hello', fixtures);
    expect(describeFlow(flow).name).toBe('hello');
    await expect((flow as unknown as (p: unknown) => Promise<string>)({ who: 'you' })).resolves.toBe('hello you');
  });

  it('rejects a malformed entrypoint with the expected form', async () => {
    for (const bad of ['flows.ts', 'flows.ts:', ':hello', 'flows.ts:not-an-identifier']) {
      const e = await failure(bad);
      expect(e.code).toBe('ERR_ENTRYPOINT');
      expect(e.message).toMatch(/is malformed; expected path\/to\/file\.ts:exportName/);
    }
  });

  it('names the resolved path when the file does not exist', async () => {
    const e = await failure('nope/missing.ts:flow');
    expect(e.code).toBe('ERR_ENTRYPOINT');
    expect(e.message).toContain(`file not found: ${fixtures}nope/missing.ts`);
  });

  it('lists the exports that are flows when the export is missing', async () => {
    const e = await failure('flows.ts:helo');
    expect(e.code).toBe('ERR_ENTRYPOINT');
    expect(e.message).toMatch(/has no export named "helo"; exports that are flows: hello, goodbye$/);
  });

  it('says so when the export is not a flow', async () => {
    const e = await failure('flows.ts:plain');
    expect(e.code).toBe('ERR_ENTRYPOINT');
    expect(e.message).toMatch(/export "plain" is not a flow \(it is a function\)/);
    expect((await failure('flows.ts:answer')).message).toMatch(/it is a number/);
  });

  it('wraps an error thrown while importing the file', async () => {
    const e = await failure('broken.ts:anything');
    expect(e.code).toBe('ERR_ENTRYPOINT');
    expect(e.message).toMatch(/importing .*broken\.ts failed: this module fails to load/);
    expect((e.cause as Error).message).toBe('this module fails to load');
  });
});
