import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { formatDuration, TesseraError } from '@tessera/core';
import type { z } from 'zod';
import { contextOf, type RunContext } from '../context.js';
import { writeLog } from '../logging.js';
import type { CompiledRunOptions } from './options.js';
import { retryDelayFor } from './options.js';
import { validateParameters } from './parameters.js';
import { describeThrown } from './run-error.js';
import { createScope, endScope, Frame, type RunScope, storage } from './scope.js';
import { linkAbort, rejectOnAbort, sleep } from './timing.js';

/** What `flow()` compiles a definition into; the engine and `describeFlow` read it. */
export interface FlowDefinition {
  readonly options: CompiledRunOptions;
  readonly schema: z.ZodObject | null;
  readonly fn: (params: never, ctx: RunContext) => Promise<unknown>;
}

/**
 * Runs a flow's function inside `frame` with the flow's timeout. Settles when the function does,
 * or rejects as soon as `controller` aborts (timeout, cancellation, crash); the function's promise is
 * then abandoned.
 */
export async function runFlowBody(def: FlowDefinition, frame: Frame, controller: AbortController): Promise<unknown> {
  const { timeoutMs } = def.options;
  let timer: NodeJS.Timeout | undefined;
  if (timeoutMs !== null) {
    timer = setTimeout(() => {
      controller.abort(
        new TesseraError(
          'ERR_TIMEOUT',
          `flow "${def.options.name}" timed out after ${formatDuration(timeoutMs)}; raise its timeout or make it faster`,
        ),
      );
    }, timeoutMs);
  }
  const aborted = rejectOnAbort(controller.signal);
  try {
    const body = storage.run(frame, invokeFlow, def, frame);
    return await Promise.race([body, aborted.promise]);
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    aborted.dispose();
  }
}

async function invokeFlow(def: FlowDefinition, frame: Frame): Promise<unknown> {
  return await (def.fn as (p: unknown, c: unknown) => Promise<unknown>)(frame.parameters ?? frame.scope.parameters, contextOf(frame));
}

/** Calls a flow outside any run: validated, executed in-process with its retries, nothing reported. */
export async function runFlowLocally(def: FlowDefinition, input: unknown): Promise<unknown> {
  const { options } = def;
  const parameters = validateParameters(options.name, def.schema, input);
  const runId = randomUUID();
  for (let attempt = 1; ; attempt++) {
    const scope = createScope({ runId, attempt, flowName: options.name, deploymentName: null, parameters });
    try {
      const result = await runFlowBody(def, new Frame(scope, scope.controller.signal, null, 0), scope.controller);
      endScope(scope, new TesseraError('ERR_CANCELLED', `flow "${options.name}" completed`));
      return result;
    } catch (error) {
      endScope(scope, error instanceof Error ? error : new TesseraError('ERR_CANCELLED', `flow "${options.name}" failed`));
      if (attempt > options.retries) throw error;
      const delay = retryDelayFor(options.retryDelaysMs, attempt);
      writeLog(
        null,
        'warn',
        `flow "${options.name}" attempt ${attempt} failed: ${describeThrown(error)}; retrying in ${formatDuration(delay)}`,
        [],
      );
      await sleep(delay);
    }
  }
}

/**
 * Calls a flow from inside another run: it runs inline as part of that run (its tasks are task runs
 * of the current flow run), with its own parameter validation and timeout; no retries of its own.
 */
export async function runFlowNested(def: FlowDefinition, input: unknown, parent: Frame): Promise<unknown> {
  const parameters = validateParameters(def.options.name, def.schema, input);
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  const unlink = linkAbort(parent.signal, controller);
  try {
    return await runFlowBody(def, new Frame(parent.scope, controller.signal, parent.task, parent.taskAttempt, parameters), controller);
  } finally {
    unlink();
  }
}

/** Convenience for the engine: a scope-level frame. */
export function flowFrame(scope: RunScope): Frame {
  return new Frame(scope, scope.controller.signal, null, 0);
}
