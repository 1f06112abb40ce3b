import { AsyncLocalStorage } from 'node:async_hooks';
import { setMaxListeners } from 'node:events';
import type { ApiClient, RunError, StateType, TaskRunEvent } from '@tessera/core';
import type { RunContext } from '../context.js';
import type { RunEvent } from '../events.js';
import type { Logger } from '../logging.js';
import type { RunReporter } from './reporter.js';

/** Numeric log levels, for threshold checks. */
export const LOG_LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
/** The names of {@link LOG_LEVELS}. */
export type LogLevelName = keyof typeof LOG_LEVELS;

/** The level below which lines are neither printed nor sent: `TESSERA_LOG_LEVEL`, default `info`. */
export function logThresholdFromEnv(): number {
  const name = process.env.TESSERA_LOG_LEVEL?.toLowerCase();
  return name && name in LOG_LEVELS ? LOG_LEVELS[name as LogLevelName] : LOG_LEVELS.info;
}

/** One task run as the SDK tracks it while it is not finished. */
export interface TaskRunRecord {
  readonly id: string;
  /** The task's name. */
  readonly key: string;
  /** Display name: `<key>-<n>`, n counting calls of that task within the flow run. */
  readonly name: string;
  readonly maxRetries: number;
  attempt: number;
  /** Set once a terminal event was emitted, so nothing is reported after it. */
  done: boolean;
}

/** Everything one execution of a flow (one attempt) shares: identity, reporting, cancellation. */
export interface RunScope {
  readonly runId: string;
  attempt: number;
  readonly flowName: string;
  readonly deploymentName: string | null;
  parameters: Record<string, unknown>;
  /** False for local runs (a flow called directly): nothing is reported, no identity. */
  readonly tracked: boolean;
  /** Aborted when the run ends, times out, or is cancelled; every task's signal derives from it. */
  readonly controller: AbortController;
  readonly client: ApiClient | null;
  readonly reporter: RunReporter | null;
  readonly onEvent: ((event: RunEvent) => void) | null;
  readonly printLogs: boolean;
  readonly logThreshold: number;
  readonly activeTasks: Set<TaskRunRecord>;
  readonly taskCounters: Map<string, number>;
}

/** Options for {@link createScope}. */
export interface CreateScopeOptions {
  runId: string;
  attempt: number;
  flowName: string;
  deploymentName: string | null;
  parameters: Record<string, unknown>;
  client?: ApiClient | null;
  reporter?: RunReporter | null;
  onEvent?: ((event: RunEvent) => void) | null;
  printLogs?: boolean;
}

/** Creates the scope of one flow-run attempt (local or tracked). */
export function createScope(options: CreateScopeOptions): RunScope {
  const controller = new AbortController();
  // Every running task links its own signal to this one for the length of an attempt.
  setMaxListeners(0, controller.signal);
  return {
    runId: options.runId,
    attempt: options.attempt,
    flowName: options.flowName,
    deploymentName: options.deploymentName,
    parameters: options.parameters,
    tracked: Boolean(options.reporter),
    controller,
    client: options.client ?? null,
    reporter: options.reporter ?? null,
    onEvent: options.onEvent ? guardListener(options.onEvent) : null,
    printLogs: options.printLogs ?? true,
    logThreshold: logThresholdFromEnv(),
    activeTasks: new Set(),
    taskCounters: new Map(),
  };
}

function guardListener(listener: (event: RunEvent) => void): (event: RunEvent) => void {
  let warned = false;
  return (event) => {
    try {
      listener(event);
    } catch (error) {
      // A bug in a progress display must not break the run it displays.
      if (!warned) process.stderr.write(`tessera: onEvent listener threw (${String(error)}); ignoring\n`);
      warned = true;
    }
  };
}

/** The value held in async-local storage: a scope plus where in it the code is running. */
export class Frame {
  context: RunContext | undefined;
  logger: Logger | undefined;
  constructor(
    readonly scope: RunScope,
    readonly signal: AbortSignal,
    readonly task: TaskRunRecord | null,
    readonly taskAttempt: number,
    readonly parameters: Record<string, unknown> | null = null,
  ) {}
}

const STORAGE_KEY = Symbol.for('@tessera/sdk:run-storage:v1');

/**
 * One storage per process, even if two copies of the SDK are loaded (the worker's `run-flow` bin and
 * the user project's own `node_modules/@tessera/sdk`): otherwise tasks would not see their flow run.
 */
const globalSlots = globalThis as Record<symbol, AsyncLocalStorage<Frame> | undefined>;
globalSlots[STORAGE_KEY] ??= new AsyncLocalStorage<Frame>();
export const storage: AsyncLocalStorage<Frame> = globalSlots[STORAGE_KEY];

/** Reports a task run's state change to the server (batched) and to the `onEvent` listener. */
export function emitTaskEvent(
  scope: RunScope,
  record: TaskRunRecord,
  type: StateType,
  name?: string,
  message?: string,
  error?: RunError,
): void {
  if (record.done) return;
  if (type === 'COMPLETED' || type === 'FAILED' || type === 'CANCELLED' || type === 'CRASHED') record.done = true;
  if (!scope.reporter && !scope.onEvent) return;
  const state: TaskRunEvent['state'] = { type };
  if (name !== undefined) state.name = name;
  if (message !== undefined) state.message = message;
  const event: TaskRunEvent = {
    taskRunId: record.id,
    flowRunId: scope.runId,
    taskKey: record.key,
    name: record.name,
    state,
    attempt: record.attempt,
    maxRetries: record.maxRetries,
    timestamp: new Date().toISOString(),
  };
  if (error) event.error = error;
  scope.reporter?.events.push(event);
  scope.onEvent?.({ type: 'task-run', event });
}

/**
 * Ends a scope: task runs still going (not awaited, or cut off by a timeout) are reported
 * Cancelled, then the scope's signal aborts so cooperative code stops.
 */
export function endScope(scope: RunScope, reason: Error): void {
  for (const record of scope.activeTasks) {
    emitTaskEvent(scope, record, 'CANCELLED', undefined, `the flow run ended before this task run did: ${reason.message}`);
  }
  scope.activeTasks.clear();
  if (!scope.controller.signal.aborted) scope.controller.abort(reason);
}
