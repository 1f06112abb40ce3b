/** Row ↔ API shape mapping, in one place. */
import type {
  Deployment,
  FlowRun,
  RunError,
  Schedule,
  StateCause,
  StateHistoryEntry,
  StateType,
  TaskRun,
  TriggerKind,
  Worker,
  WorkPool,
  WorkQueue,
} from '@tessera/core';
import type { Selectable } from 'kysely';
import { fromJson } from '../lib/json.js';
import type {
  DeploymentTable,
  FlowRunStateTable,
  FlowRunTable,
  ScheduleTable,
  TaskRunTable,
  WorkerTable,
  WorkPoolTable,
  WorkQueueTable,
} from './schema.js';

export type FlowRunRow = FlowRunTable & {
  flow_name: string;
  deployment_name: string | null;
  pool_name: string | null;
  worker_name: string | null;
};

export function toFlowRun(r: FlowRunRow): FlowRun {
  return {
    id: r.id,
    name: r.name,
    flowId: r.flow_id,
    flowName: r.flow_name,
    deploymentId: r.deployment_id,
    deploymentName: r.deployment_name,
    workPool: r.pool_name,
    workQueue: r.work_queue,
    state: { type: r.state_type as StateType, name: r.state_name, message: r.state_message, timestamp: r.state_timestamp },
    parameters: fromJson(r.parameters, {}),
    attempt: r.attempt,
    maxRetries: r.max_retries,
    retryDelaysMs: fromJson(r.retry_delays, []),
    expectedStartTime: r.expected_start_time,
    nextScheduledStartTime: r.next_scheduled_start_time,
    startTime: r.start_time,
    endTime: r.end_time,
    workerId: r.worker_id,
    workerName: r.worker_name,
    triggerKind: r.trigger_kind as TriggerKind,
    triggeredBy: fromJson<StateCause>(r.triggered_by, { kind: 'server', id: 'unknown' }),
    result: fromJson(r.result, null),
    error: fromJson<RunError | null>(r.error, null),
    tags: fromJson(r.tags, []),
    idempotencyKey: r.idempotency_key,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export function toStateEntry(r: Selectable<FlowRunStateTable>): StateHistoryEntry {
  return {
    id: String(r.id),
    attempt: r.attempt,
    type: r.type as StateType,
    name: r.name,
    message: r.message,
    timestamp: r.timestamp,
    cause: fromJson<StateCause | null>(r.cause, null),
  };
}

export function toTaskRun(r: TaskRunTable): TaskRun {
  return {
    id: r.id,
    flowRunId: r.flow_run_id,
    taskKey: r.task_key,
    name: r.name,
    state: { type: r.state_type as StateType, name: r.state_name, message: r.state_message, timestamp: r.state_timestamp },
    attempt: r.attempt,
    maxRetries: r.max_retries,
    startTime: r.start_time,
    endTime: r.end_time,
    error: fromJson<RunError | null>(r.error, null),
    createdAt: r.created_at,
  };
}

export function toWorkPool(r: WorkPoolTable, extra: { activeRuns?: number; queues?: WorkQueue[] } = {}): WorkPool {
  return {
    id: r.id,
    name: r.name,
    description: r.description,
    concurrencyLimit: r.concurrency_limit,
    paused: r.paused === 1,
    createdAt: r.created_at,
    ...extra,
  };
}

export function toWorkQueue(r: WorkQueueTable, pool: string): WorkQueue {
  return { id: r.id, pool, name: r.name, priority: r.priority, concurrencyLimit: r.concurrency_limit };
}

export function toSchedule(r: ScheduleTable): Schedule {
  return {
    id: r.id,
    deploymentId: r.deployment_id,
    cron: r.cron,
    intervalMs: r.interval_ms,
    anchor: r.anchor,
    timezone: r.timezone,
    active: r.active === 1,
    createdBy: fromJson<StateCause | null>(r.created_by, null),
  };
}

export function toDeployment(r: DeploymentTable & { flow_name: string; pool_name: string }, schedules: ScheduleTable[]): Deployment {
  return {
    id: r.id,
    name: r.name,
    flowId: r.flow_id,
    flowName: r.flow_name,
    entrypoint: r.entrypoint,
    path: r.path,
    workPool: r.pool_name,
    workQueue: r.work_queue,
    description: r.description,
    parameters: fromJson(r.parameters, {}),
    parameterSchema: fromJson(r.parameter_schema, null),
    tags: fromJson(r.tags, []),
    environment: r.environment,
    project: r.project,
    identity: fromJson(r.identity, { audiences: [] }),
    concurrencyLimit: r.concurrency_limit,
    retries: r.retries,
    retryDelaysMs: fromJson(r.retry_delays, []),
    env: fromJson(r.env, {}),
    schedules: schedules.map(toSchedule),
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export function toWorker(r: WorkerTable & { pool_name: string }, offlineBefore: string): Worker {
  return {
    id: r.id,
    name: r.name,
    pool: r.pool_name,
    lastHeartbeatAt: r.last_heartbeat_at,
    status: r.last_heartbeat_at < offlineBefore ? 'offline' : 'online',
    createdAt: r.created_at,
  };
}
