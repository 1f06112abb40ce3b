/** Fixture runs for formatting tests: plain objects shaped as the API returns them. */
import type { FlowRun, StateHistoryEntry, TaskRun } from '@tessera/core';

const RUN_ID = '7f3c1a2b-9d4e-4f00-8a11-5c2d3e4f5a6b';

export function completedRun(): FlowRun {
  return {
    id: RUN_ID,
    name: 'crimson-otter',
    flowId: 'f1',
    flowName: 'nightly-etl',
    deploymentId: 'd1',
    deploymentName: 'nightly-etl',
    workPool: 'default',
    workQueue: null,
    state: {
      type: 'COMPLETED',
      name: 'Completed',
      timestamp: '2026-11-28T01:00:41.000Z',
      cause: { kind: 'flow', id: `${RUN_ID}#2`, label: 'flow process, attempt 2' },
    },
    parameters: { day: '2026-11-27' },
    attempt: 2,
    maxRetries: 2,
    retryDelaysMs: [10_000],
    expectedStartTime: '2026-11-28T01:00:00.000Z',
    nextScheduledStartTime: null,
    startTime: '2026-11-28T01:00:00.120Z',
    endTime: '2026-11-28T01:00:41.000Z',
    workerId: 'w1',
    workerName: 'w-1',
    triggerKind: 'schedule',
    triggeredBy: { kind: 'schedule', id: 's1', label: 'cron "0 2 * * *" Europe/Paris (created by ana@example.com)' },
    result: { rows: 120443 },
    error: null,
    tags: ['etl'],
    idempotencyKey: null,
    createdAt: '2026-11-28T01:00:00.000Z',
    updatedAt: '2026-11-28T01:00:41.000Z',
  };
}

export function completedStates(): StateHistoryEntry[] {
  const flow = (n: number) => ({ kind: 'flow' as const, id: `${RUN_ID}#${n}`, label: `flow process, attempt ${n}` });
  const worker = { kind: 'worker' as const, id: 'w1', label: 'w-1' };
  return [
    {
      id: 's1',
      attempt: 0,
      type: 'SCHEDULED',
      name: 'Scheduled',
      timestamp: '2026-11-28T01:00:00.000Z',
      cause: { kind: 'schedule', id: 's1', label: 'cron "0 2 * * *" Europe/Paris' },
    },
    { id: 's2', attempt: 1, type: 'PENDING', name: 'Pending', timestamp: '2026-11-28T01:00:00.004Z', cause: worker },
    { id: 's3', attempt: 1, type: 'RUNNING', name: 'Running', timestamp: '2026-11-28T01:00:00.120Z', cause: flow(1) },
    { id: 's4', attempt: 1, type: 'FAILED', name: 'Failed', message: 'ECONNRESET', timestamp: '2026-11-28T01:00:20.500Z', cause: flow(1) },
    {
      id: 's5',
      attempt: 1,
      type: 'SCHEDULED',
      name: 'AwaitingRetry',
      message: 'retry 1 of 2 in 10 s',
      timestamp: '2026-11-28T01:00:20.501Z',
      cause: { kind: 'server', id: 'retry-rule', label: 'retry rule' },
    },
    { id: 's6', attempt: 2, type: 'PENDING', name: 'Pending', timestamp: '2026-11-28T01:00:30.600Z', cause: worker },
    { id: 's7', attempt: 2, type: 'RUNNING', name: 'Retrying', timestamp: '2026-11-28T01:00:30.700Z', cause: flow(2) },
    { id: 's8', attempt: 2, type: 'COMPLETED', name: 'Completed', timestamp: '2026-11-28T01:00:41.000Z', cause: flow(2) },
  ];
}

function task(i: number, over: Partial<TaskRun> & Pick<TaskRun, 'taskKey' | 'name'>): TaskRun {
  return {
    id: `t${i}`,
    flowRunId: RUN_ID,
    state: { type: 'COMPLETED', name: 'Completed', timestamp: '2026-11-28T01:00:40.000Z' },
    attempt: 1,
    maxRetries: 0,
    startTime: `2026-11-28T01:00:3${i}.000Z`,
    endTime: `2026-11-28T01:00:3${i}.500Z`,
    error: null,
    createdAt: `2026-11-28T01:00:3${i}.000Z`,
    ...over,
  };
}

export function completedTasks(): TaskRun[] {
  return [
    task(1, { taskKey: 'extract', name: 'extract-1', endTime: '2026-11-28T01:00:34.100Z' }),
    task(2, { taskKey: 'transform', name: 'transform-1' }),
    task(3, { taskKey: 'transform', name: 'transform-2' }),
    task(4, { taskKey: 'transform', name: 'transform-3' }),
    task(5, { taskKey: 'load', name: 'load-1', attempt: 2, maxRetries: 3, endTime: '2026-11-28T01:00:36.200Z' }),
  ];
}

export function failedRun(): FlowRun {
  return {
    ...completedRun(),
    id: '0a1b2c3d-0000-4000-8000-000000000000',
    name: 'quiet-heron',
    deploymentId: null,
    deploymentName: null,
    workPool: null,
    workerId: null,
    workerName: null,
    attempt: 1,
    maxRetries: 0,
    parameters: {},
    tags: [],
    triggerKind: 'adhoc',
    triggeredBy: { kind: 'person', id: 'local-admin', label: 'local admin' },
    state: { type: 'FAILED', name: 'Failed', message: 'kaboom', timestamp: '2026-11-28T01:00:01.000Z' },
    startTime: '2026-11-28T01:00:00.500Z',
    endTime: '2026-11-28T01:00:01.000Z',
    result: null,
    error: {
      name: 'TaskRunError',
      code: 'ERR_TASK_FAILED',
      message: 'task "load-1" failed: kaboom',
      stack: 'TaskRunError: task "load-1" failed: kaboom\n    at load (/srv/flows/etl.ts:12:9)\n    at async run (/srv/flows/etl.ts:30:3)',
    },
  };
}
