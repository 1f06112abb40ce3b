/** Flow files for the end-to-end tests, written into a temporary project. */
export const FLOWS = `
import { appendFileSync, writeFileSync } from 'node:fs';
import { flow, task, getRunContext, getLogger, identity } from '@tessera/sdk';
import { z } from 'zod';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const ok = flow({ name: 'ok' }, async () => ({ ok: true }));

const flaky = task({ name: 'flaky', retries: 2, retryDelay: '50ms' }, async () => {
  if ((getRunContext().taskAttempt ?? 1) < 2) throw new Error('ECONNRESET: sink closed the connection');
  return 'loaded';
});
const double = task({ name: 'double' }, async (n: number) => n * 2);
export const etl = flow({ name: 'etl' }, async () => {
  const doubled = await double.map([1, 2, 3]);
  return { loaded: await flaky(), doubled };
});

export const failing = flow({ name: 'failing' }, async () => {
  throw new TypeError('bad row 42: expected a number');
});

export const marker = flow(
  { name: 'marker', parameters: z.object({ dir: z.string(), ms: z.number().default(0) }) },
  async ({ dir, ms }) => {
    const { runId, attempt } = getRunContext();
    writeFileSync(dir + '/' + runId + '.' + attempt + '.pid', String(process.pid));
    appendFileSync(dir + '/executions.log', runId + ' ' + attempt + '\\n');
    await sleep(ms);
    appendFileSync(dir + '/done.log', runId + ' ' + attempt + '\\n');
    return { attempt };
  },
);

export const withToken = flow(
  { name: 'with-token', parameters: z.object({ dir: z.string(), audience: z.string() }) },
  async ({ dir, audience }) => {
    const token = await identity.token({ audience });
    getLogger().info('got token ' + token);
    writeFileSync(dir + '/token.jwt', token);
    return { length: token.length };
  },
);
`;
