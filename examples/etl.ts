import { flow, getLogger, getRunContext, task } from '@tessera/sdk';
import { z } from 'zod';

const extract = task({ name: 'extract' }, async (batches: number) => {
  return Array.from({ length: batches }, (_, i) => ({ batch: i, rows: 1000 + i }));
});

const transform = task({ name: 'transform', timeout: '30s' }, async (b: { batch: number; rows: number }) => {
  await new Promise((r) => setTimeout(r, 10));
  return { ...b, rows: b.rows * 10 };
});

// Fails on its first attempt of every run, like a sink that drops the first connection.
const load = task({ name: 'load', retries: 3, retryDelay: ['100ms', '500ms'] }, async (rows: number) => {
  const { taskAttempt } = getRunContext() as { taskAttempt?: number };
  if ((taskAttempt ?? 1) === 1) throw new Error('ECONNRESET: sink closed the connection');
  getLogger().info(`loaded ${rows} rows`);
  return rows;
});

/** An ETL flow: one extract, parallel transforms with `.map`, a load that retries. */
export const etl = flow(
  {
    name: 'etl',
    retries: 2,
    retryDelay: '5s',
    parameters: z.object({ batches: z.number().int().min(1).max(1000).default(12) }),
  },
  async ({ batches }) => {
    const extracted = await extract(batches);
    const transformed = await transform.map(extracted);
    const rows = transformed.reduce((n, b) => n + b.rows, 0);
    await load(rows);
    return { batches: transformed.length, rows };
  },
);
