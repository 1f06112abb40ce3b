import { TesseraError } from '@tessera/core';
import { type Frame, storage } from './lib/scope.js';
import { type Logger, loggerFor } from './logging.js';

/**
 * Where the calling code runs: the flow run and, inside a task, the task run.
 * Obtain it with {@link getRunContext}; a flow's function also receives it as its second argument.
 */
export interface RunContext {
  /** The flow run's id (a random id for local runs). */
  readonly runId: string;
  /** The flow run's 1-based attempt number. */
  readonly attempt: number;
  readonly flowName: string;
  /** Null for local and `tessera run` (ad hoc) runs. */
  readonly deploymentName: string | null;
  /** The validated parameters (defaults applied). */
  readonly parameters: Readonly<Record<string, unknown>>;
  /** Set inside a task. */
  readonly taskRunId?: string;
  /** The task's name, set inside a task. */
  readonly taskName?: string;
  /** The task run's 1-based attempt number, set inside a task. */
  readonly taskAttempt?: number;
  /**
   * Aborts when this code should stop: the task or flow timed out, the run was cancelled, or it
   * ended. Pass it to `fetch` and friends for cooperative cancellation.
   */
  readonly signal: AbortSignal;
  /** Logs to the terminal and to the run's log on the server. */
  readonly logger: Logger;
  /** True when the flow was called directly (no server): nothing is reported and no identity exists. */
  readonly local: boolean;
}

/**
 * Returns the context of the flow or task run the caller is executing in.
 *
 * @throws TesseraError `ERR_NO_RUN_CONTEXT` when called outside a flow or task.
 * @example
 * const { runId, signal } = getRunContext();
 * await fetch(url, { signal });
 */
export function getRunContext(): RunContext {
  const frame = storage.getStore();
  if (!frame) {
    throw new TesseraError(
      'ERR_NO_RUN_CONTEXT',
      'getRunContext() was called outside a flow run; call it from inside a function passed to flow() or task() (directly or in code they call)',
    );
  }
  return contextOf(frame);
}

/** The (cached) public context of a frame. */
export function contextOf(frame: Frame): RunContext {
  if (frame.context) return frame.context;
  const { scope, task } = frame;
  const context: RunContext = {
    runId: scope.runId,
    attempt: scope.attempt,
    flowName: scope.flowName,
    deploymentName: scope.deploymentName,
    parameters: frame.parameters ?? scope.parameters,
    ...(task ? { taskRunId: task.id, taskName: task.key, taskAttempt: frame.taskAttempt } : {}),
    signal: frame.signal,
    logger: loggerFor(frame),
    local: !scope.tracked,
  };
  frame.context = Object.freeze(context);
  return frame.context;
}
