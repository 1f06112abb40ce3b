import { randomUUID } from 'node:crypto';
import type { ApiClient, Deployment, DeploymentSpec, TesseraError } from '@tessera/core';
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

/** Every text cell of every table of the server's database (scan them for secrets). */
export async function textCells(server: TestServer): Promise<{ table: string; column: string; value: string }[]> {
  const db = server.services.ctx.db;
  const cells: { table: string; column: string; value: string }[] = [];
  for (const table of await db.introspection.getTables()) {
    const rows = (await db
      .selectFrom(table.name as never)
      .selectAll()
      .execute()) as Record<string, unknown>[];
    for (const row of rows) {
      for (const [column, value] of Object.entries(row)) if (typeof value === 'string') cells.push({ table: table.name, column, value });
    }
  }
  return cells;
}

/** Reports a task of `runId` Running, as the SDK would from inside a task; returns its task-run id. */
export async function startTaskRun(as: ApiClient, runId: string, task: { key: string; name: string }): Promise<string> {
  const taskRunId = randomUUID();
  await as.sendTaskRunEvents([
    {
      taskRunId,
      flowRunId: runId,
      taskKey: task.key,
      name: task.name,
      state: { type: 'RUNNING' },
      attempt: 1,
      maxRetries: 0,
      timestamp: new Date().toISOString(),
    },
  ]);
  return taskRunId;
}

/**
 * Deploys flow `etl` (`flows.ts:etl` in /tmp, pool `default`, environment `prod`) as `spec.name`, with
 * whatever else `spec` sets (identity audiences…). For tests that claim its runs by hand, not run them.
 */
export function putTestDeployment(server: TestServer, spec: Partial<DeploymentSpec> & { name: string }): Promise<Deployment> {
  return server.client.putDeployment({
    flowName: 'etl',
    entrypoint: 'flows.ts:etl',
    path: '/tmp',
    workPool: 'default',
    environment: 'prod',
    ...spec,
  });
}
