import { TesseraError } from '@tessera/core';
import { describeThrown } from './lib/run-error.js';

/** Options for {@link TaskRunError}. */
export interface TaskRunErrorOptions {
  taskName: string;
  taskRunId: string;
  /** Attempts made, including the last. */
  attempts: number;
  /** What the task's last attempt threw (a `TesseraError` with code `ERR_TIMEOUT` for a timeout). */
  cause: unknown;
}

/**
 * Thrown by a task call when the task run failed for good (every retry used up). The original
 * error is kept as `cause`.
 *
 * @example
 * try { await fetchRows(url) } catch (e) {
 *   if (e instanceof TaskRunError && (e.cause as TesseraError).code === 'ERR_TIMEOUT') …
 * }
 */
export class TaskRunError extends TesseraError {
  /** Always `ERR_TASK_FAILED`. */
  declare readonly code: 'ERR_TASK_FAILED';
  readonly taskName: string;
  readonly taskRunId: string;
  readonly attempts: number;
  declare readonly cause: unknown;

  constructor(options: TaskRunErrorOptions) {
    const tries = options.attempts === 1 ? '1 attempt' : `${options.attempts} attempts`;
    super('ERR_TASK_FAILED', `task "${options.taskName}" failed after ${tries}: ${describeThrown(options.cause)}`, {
      cause: options.cause,
      details: { taskName: options.taskName, taskRunId: options.taskRunId, attempts: options.attempts },
    });
    this.taskName = options.taskName;
    this.taskRunId = options.taskRunId;
    this.attempts = options.attempts;
  }
}
