import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { formatDuration, TesseraError } from '@tessera/core';
import { TaskRunError } from '../errors.js';
import { writeLog } from '../logging.js';
import type { CompiledRunOptions } from './options.js';
import { retryDelayFor } from './options.js';
import { describeThrown, toRunError } from './run-error.js';
import { createScope, emitTaskEvent, endScope, Frame, type RunScope, storage, type TaskRunRecord } from './scope.js';
import { linkAbort, sleep } from './timing.js';

/** What `task()` compiles a definition into. */
export interface TaskDefinition {
  readonly options: CompiledRunOptions;
  readonly fn: (...args: never[]) => Promise<unknown>;
}

/**
 * Runs one call of a task: a task run with its own states, retries and timeout. This is the hot
 * path (thousands of calls per flow run), so it does no I/O: events go to the reporter's queue.
 */
export function callTask(def: TaskDefinition, args: readonly unknown[]): Promise<unknown> {
  const parent = storage.getStore();
  if (parent === undefined) return callDetached(def, args);
  return runTaskRun(def, args, parent.scope, parent);
}

/** A task called outside any flow runs as if in a local flow run named after it. */
async function callDetached(def: TaskDefinition, args: readonly unknown[]): Promise<unknown> {
  const scope = createScope({ runId: randomUUID(), attempt: 1, flowName: def.options.name, deploymentName: null, parameters: {} });
  const frame = new Frame(scope, scope.controller.signal, null, 0);
  try {
    return await runTaskRun(def, args, scope, frame);
  } finally {
    endScope(scope, new TesseraError('ERR_CANCELLED', 'the task call returned'));
  }
}

async function runTaskRun(def: TaskDefinition, args: readonly unknown[], scope: RunScope, parent: Frame): Promise<unknown> {
  const { options } = def;
  const parentSignal = parent.signal;
  if (parentSignal.aborted) {
    throw new TesseraError('ERR_CANCELLED', `task "${options.name}" was not started: its flow run is no longer running`, {
      cause: parentSignal.reason,
    });
  }
  const seq = (scope.taskCounters.get(options.name) ?? 0) + 1;
  scope.taskCounters.set(options.name, seq);
  const record: TaskRunRecord = {
    id: randomUUID(),
    key: options.name,
    name: `${options.name}-${seq}`,
    maxRetries: options.retries,
    attempt: 0,
    done: false,
  };
  scope.activeTasks.add(record);
  emitTaskEvent(scope, record, 'PENDING');
  try {
    for (let attempt = 1; ; attempt++) {
      record.attempt = attempt;
      emitTaskEvent(scope, record, 'RUNNING', attempt > 1 ? 'Retrying' : undefined);
      try {
        const value = await runAttempt(def, args, scope, parentSignal, record, attempt);
        emitTaskEvent(scope, record, 'COMPLETED');
        return value;
      } catch (error) {
        if (parentSignal.aborted) {
          emitTaskEvent(scope, record, 'CANCELLED', undefined, describeThrown(parentSignal.reason));
          throw new TaskRunError({ taskName: options.name, taskRunId: record.id, attempts: attempt, cause: error });
        }
        if (attempt <= options.retries) {
          const delay = retryDelayFor(options.retryDelaysMs, attempt);
          const message = `attempt ${attempt} of ${options.retries + 1} failed: ${describeThrown(error)}; retrying in ${formatDuration(delay)}`;
          emitTaskEvent(scope, record, 'SCHEDULED', 'AwaitingRetry', message);
          writeLog(new Frame(scope, parentSignal, record, attempt), 'warn', message, []);
          await sleep(delay, parentSignal);
          continue;
        }
        const runError = toRunError(error);
        emitTaskEvent(scope, record, 'FAILED', undefined, runError.message, runError);
        const failure = new TaskRunError({ taskName: options.name, taskRunId: record.id, attempts: attempt, cause: error });
        if (scope.tracked) writeLog(new Frame(scope, parentSignal, record, attempt), 'error', failure.message, []);
        throw failure;
      }
    }
  } finally {
    scope.activeTasks.delete(record);
  }
}

async function runAttempt(
  def: TaskDefinition,
  args: readonly unknown[],
  scope: RunScope,
  parentSignal: AbortSignal,
  record: TaskRunRecord,
  attempt: number,
): Promise<unknown> {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  const unlink = linkAbort(parentSignal, controller);
  const frame = new Frame(scope, controller.signal, record, attempt);
  let timer: NodeJS.Timeout | undefined;
  try {
    const body = storage.run(frame, invoke, def.fn, args);
    const { timeoutMs } = def.options;
    if (timeoutMs === null) return await body;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new TesseraError(
          'ERR_TIMEOUT',
          `task "${def.options.name}" timed out after ${formatDuration(timeoutMs)} (attempt ${attempt}); raise its timeout or make it faster`,
        );
        // The function's promise is abandoned; the signal lets cooperative code stop early.
        controller.abort(error);
        reject(error);
      }, timeoutMs);
    });
    return await Promise.race([body, timedOut]);
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    unlink();
  }
}

/** Calls the user's function, turning a synchronous throw into a rejection. */
async function invoke(fn: (...args: never[]) => Promise<unknown>, args: readonly unknown[]): Promise<unknown> {
  return await (fn as (...a: readonly unknown[]) => Promise<unknown>)(...args);
}
