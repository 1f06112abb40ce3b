import { TesseraError } from '@tessera/core';
import { expect, test } from 'vitest';
import { retrying } from './retry.js';

const unreachable = () => new TesseraError('ERR_SERVER_UNREACHABLE', 'down');

test('retries while the server is unreachable and returns the first success', async () => {
  let calls = 0;
  const retries: number[] = [];
  const value = await retrying(
    async () => {
      if (++calls < 3) throw unreachable();
      return 'ok';
    },
    { retryForMs: 5000, onRetry: ({ attempt }) => retries.push(attempt) },
  );
  expect(value).toBe('ok');
  expect(retries).toEqual([1, 2]);
});

test('does not retry an answer the server gave on purpose (4xx)', async () => {
  let calls = 0;
  const conflict = new TesseraError('ERR_ILLEGAL_TRANSITION', 'already Crashed');
  await expect(
    retrying(
      async () => {
        calls++;
        throw conflict;
      },
      { retryForMs: 5000 },
    ),
  ).rejects.toMatchObject({ code: 'ERR_ILLEGAL_TRANSITION', status: 409 });
  expect(calls).toBe(1);
});

test('gives up with the last error once the retry window has passed', async () => {
  const at = Date.now();
  await expect(retrying(async () => Promise.reject(unreachable()), { retryForMs: 300 })).rejects.toMatchObject({
    code: 'ERR_SERVER_UNREACHABLE',
  });
  expect(Date.now() - at).toBeLessThan(1000);
});

test('stops when its signal aborts', async () => {
  const abort = new AbortController();
  setTimeout(() => abort.abort(), 50);
  const at = Date.now();
  await expect(
    retrying(async () => Promise.reject(unreachable()), { retryForMs: 60_000, capMs: 10_000, signal: abort.signal }),
  ).rejects.toThrow('down');
  expect(Date.now() - at).toBeLessThan(2000);
});
