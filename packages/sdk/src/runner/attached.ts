import type { ApiClient, FlowRun, RunError } from '@tessera/core';
import type { RunEvent } from '../events.js';
import { type AnyFlow, type Flow, flowDefinition } from '../flow.js';
import { retryDelayFor } from '../lib/options.js';
import { validateParameters } from '../lib/parameters.js';
import { sleep } from '../lib/timing.js';
import { FlowRunEngine } from './engine.js';

/** Options for {@link runFlowAttached}. */
export interface RunFlowAttachedOptions<P = Record<string, unknown>> {
  /** A client for the Tessera API, authenticated as the person or machine starting the run. */
  client: ApiClient;
  parameters?: P;
  /** Extra tags, added to the flow's own. */
  tags?: string[];
  /** Receives flow-run state changes, task-run state changes and log lines as they happen. */
  onEvent?: (event: RunEvent) => void;
  /** Print log lines to the terminal. Turn off when `onEvent` renders them. @default true */
  printLogs?: boolean;
  /** Aborting it (Ctrl-C) stops the flow and reports the run Cancelled. */
  signal?: AbortSignal;
}

/** What {@link runFlowAttached} resolves to. */
export interface RunFlowAttachedResult<R = unknown> {
  /** The run as the server last returned it (normally in its final state). */
  run: FlowRun;
  /** The flow's return value when the run completed. */
  result: R | undefined;
  /** Why the run failed, was cancelled or could not start; null when it completed. */
  error: RunError | null;
}

/**
 * Runs a flow in the current process as a tracked, ad hoc flow run (`tessera run`): creates the run on
 * the server, then executes it like a worker-started run would (Running, task runs, logs, identity
 * tokens, final state), with the run credential the server returned. When the server's retry rule
 * schedules a retry, it waits and runs the next attempt here too. Requests use `options.client`'s
 * settings (give it a `retryForMs` to ride out a server restart).
 *
 * @throws TesseraError `ERR_INVALID_PARAMETERS` before any run is created; errors from the server
 *   when it cannot be reached.
 * @example
 * const { run, error } = await runFlowAttached(nightly, { client, parameters: { day: '2024-05-01' } });
 */
export async function runFlowAttached<P, R>(flow: Flow<P, R>, options: RunFlowAttachedOptions<P>): Promise<RunFlowAttachedResult<R>> {
  const def = flowDefinition(flow as AnyFlow);
  const parameters = (options.parameters ?? {}) as Record<string, unknown>;
  validateParameters(def.options.name, def.schema, parameters);
  const { run, credential } = await options.client.createAdhocRun({
    flowName: def.options.name,
    parameters,
    maxRetries: def.options.retries,
    retryDelaysMs: [...def.options.retryDelaysMs],
    tags: [...new Set([...def.options.tags, ...(options.tags ?? [])])],
  });
  options.onEvent?.({ type: 'flow-run', run });
  const client = options.client.withToken(credential);
  let current = run;
  let previous: { run: FlowRun; error: RunError | null } | null = null;
  for (;;) {
    const engine = new FlowRunEngine({
      client,
      run: current,
      loadFlow: async () => flow as AnyFlow,
      onEvent: options.onEvent,
      printLogs: options.printLogs,
      signal: options.signal,
    });
    const outcome = await engine.execute();
    // The server scheduled a retry but would not let this credential start it: the failure that
    // caused the retry is the answer, not the refusal.
    if (outcome.status === 'skipped' && previous) return { run: outcome.run, result: undefined, error: previous.error };
    if (outcome.status === 'failed' && outcome.retryScheduled && !options.signal?.aborted) {
      current = outcome.run;
      previous = outcome;
      const at = Date.parse(current.nextScheduledStartTime ?? '');
      const delay = Number.isNaN(at)
        ? retryDelayFor(def.options.retryDelaysMs, Math.max(1, current.attempt))
        : Math.max(0, at - Date.now());
      engine.log('info', `the server scheduled a retry; next attempt in ${Math.round(delay)} ms`);
      try {
        await sleep(delay, options.signal);
      } catch {
        return { run: current, result: undefined, error: outcome.error };
      }
      continue;
    }
    return { run: outcome.run, result: outcome.result as R | undefined, error: outcome.error };
  }
}
