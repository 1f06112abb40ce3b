import { randomUUID } from 'node:crypto';
import type { ApiClient, TesseraError } from '@tessera/core';
import type { TestServer } from './server.js';

/** A run claimed the way a worker claims it: its credential, and a client that acts with it. */
export interface ClaimedRun {
  runId: string;
  credential: string;
  /** The API client authenticated with the run credential. */
  as: ApiClient;
}

/**
 * Claims `runId` from `pool` as a worker named `workerName` would (one poll, capacity 1) and reports
 * the run Running with its credential.
 * @throws Error when the poll does not hand out that run.
 */
export async function claimRun(
  server: TestServer,
  runId: string,
  options: { pool?: string; workerName?: string } = {},
): Promise<ClaimedRun> {
  const poll = await server.client.poll(options.pool ?? 'default', {
    workerId: randomUUID(),
    workerName: options.workerName ?? 'w-1',
    capacity: 1,
    running: [],
    waitMs: 0,
  });
  const claimed = poll.runs.find((r) => r.run.id === runId);
  if (!claimed) throw new Error(`run ${runId} was not claimed`);
  const as = server.client.withToken(claimed.credential);
  await as.proposeState(runId, { state: { type: 'RUNNING' } });
  return { runId, credential: claimed.credential, as };
}

/** The error `p` rejects with. @throws Error when `p` resolves. */
export async function failure(p: Promise<unknown>): Promise<TesseraError> {
  try {
    await p;
  } catch (e) {
    return e as TesseraError;
  }
  throw new Error('expected a failure');
}
