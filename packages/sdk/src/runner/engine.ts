import {
  type ApiClient,
  type FlowRun,
  formatDuration,
  type ProposeStateRequest,
  type ProposeStateResponse,
  type RunError,
  TesseraError,
} from '@tessera/core';
import type { RunEvent } from '../events.js';
import { type AnyFlow, flowDefinition } from '../flow.js';
import { flowFrame, runFlowBody } from '../lib/flow-runner.js';
import { validateParameters } from '../lib/parameters.js';
import { RunReporter, type RunReporterOptions } from '../lib/reporter.js';
import { describeThrown, toRunError } from '../lib/run-error.js';
import { createScope, endScope, type LogLevelName, type RunScope } from '../lib/scope.js';
import { sleep } from '../lib/timing.js';
import { writeLog } from '../logging.js';

/** Options for {@link FlowRunEngine}. */
export interface FlowRunEngineOptions {
  /** A client holding the run credential. */
  client: ApiClient;
  /** The run as the server knows it (Pending, or Scheduled for a retry of an attached run). */
  run: FlowRun;
  /** Produces the flow to execute (imports the entrypoint for worker-started runs). */
  loadFlow: () => Promise<AnyFlow>;
  onEvent?: ((event: RunEvent) => void) | undefined;
  /** @default true */
  printLogs?: boolean | undefined;
  /** When it aborts, the run stops and is reported Cancelled. */
  signal?: AbortSignal | undefined;
  reporter?: RunReporterOptions | undefined;
}

/** How one execution ended. */
export interface FlowRunEngineResult {
  /** `skipped`: the server refused to start the run (cancelled meanwhile, already running…). */
  status: 'completed' | 'failed' | 'cancelled' | 'skipped';
  /** The run as the server last returned it. */
  run: FlowRun;
  /** The flow's return value (not JSON-normalised), when completed. */
  result: unknown;
  error: RunError | null;
  /** The server's retry rule turned the failure into AwaitingRetry. */
  retryScheduled: boolean;
}

/**
 * Executes one attempt of a tracked flow run: load, validate parameters, propose Running, run with
 * the flow's timeout, flush task events and logs, propose the final state. Shared by
 * `runFlowProcess` (worker-started) and `runFlowAttached` (`tessera run`).
 */
export class FlowRunEngine {
  readonly reporter: RunReporter;
  readonly scope: RunScope;
  private running = false;
  private terminated = false;
  private lastRun: FlowRun;
  private readonly options: FlowRunEngineOptions;

  constructor(options: FlowRunEngineOptions) {
    this.options = options;
    const { run } = options;
    this.lastRun = run;
    this.reporter = new RunReporter(options.client, options.reporter);
    this.scope = createScope({
      runId: run.id,
      attempt: Math.max(1, run.attempt),
      flowName: run.flowName,
      deploymentName: run.deploymentName,
      parameters: run.parameters ?? {},
      client: options.client,
      reporter: this.reporter,
      onEvent: options.onEvent ?? null,
      printLogs: options.printLogs ?? true,
    });
  }

  /** Runs the attempt. Rejects only when the server cannot be reached to report the outcome. */
  async execute(): Promise<FlowRunEngineResult> {
    const { scope } = this;
    const { signal } = this.options;
    const cancelled = (): TesseraError => new TesseraError('ERR_CANCELLED', 'the run was cancelled by its caller');
    const onCancel = (): void => {
      this.abort(cancelled());
    };
    signal?.addEventListener('abort', onCancel, { once: true });
    try {
      let flow: AnyFlow;
      let parameters: Record<string, unknown>;
      try {
        flow = await this.options.loadFlow();
        const def = flowDefinition(flow);
        if (def.options.name !== scope.flowName) {
          this.log(
            'warn',
            `the run is for flow "${scope.flowName}" but the entrypoint's flow is named "${def.options.name}"; running it anyway`,
          );
        }
        parameters = validateParameters(def.options.name, def.schema, scope.parameters);
      } catch (error) {
        return await this.failBeforeStart(error);
      }
      scope.parameters = parameters;
      if (signal?.aborted) return await this.finish({ ok: false, error: cancelled() }, 0);

      if (this.lastRun.state.type === 'SCHEDULED' && !(await this.propose({ state: { type: 'PENDING' } })).accepted)
        return await this.skipped();
      const started = await this.propose({ state: { type: 'RUNNING' } });
      if (!started.accepted) return await this.skipped();
      scope.attempt = Math.max(1, this.lastRun.attempt);
      this.log('info', `flow run "${this.lastRun.name}" of flow "${scope.flowName}" started (attempt ${scope.attempt})`);

      this.running = true;
      const t0 = performance.now();
      let outcome: { ok: true; value: unknown } | { ok: false; error: unknown };
      try {
        outcome = { ok: true, value: await runFlowBody(flowDefinition(flow), flowFrame(scope), scope.controller) };
      } catch (error) {
        outcome = { ok: false, error };
      }
      this.running = false;
      return await this.finish(outcome, performance.now() - t0);
    } finally {
      signal?.removeEventListener('abort', onCancel);
    }
  }

  /** Stops the running flow with `reason` (which becomes the run's error). False when nothing is running. */
  abort(reason: Error): boolean {
    if (!this.running && !this.options.signal?.aborted) return false;
    if (!this.scope.controller.signal.aborted) this.scope.controller.abort(reason);
    return true;
  }

  /**
   * For SIGTERM: marks unfinished task runs Cancelled, sends what is queued (waiting at most
   * `timeoutMs`), and makes sure no final state is proposed afterwards: whoever sent the signal owns
   * the run's state now.
   */
  async terminate(reason: Error, timeoutMs: number): Promise<void> {
    this.terminated = true;
    this.log('warn', reason.message);
    endScope(this.scope, reason);
    await Promise.race([this.reporter.flush(), sleep(timeoutMs)]);
    this.reporter.close();
  }

  /** Logs as the flow run (printed, and sent unless the reporter is closed). */
  log(level: LogLevelName, message: string): void {
    writeLog(flowFrame(this.scope), level, message, []);
  }

  private async finish(
    outcome: { ok: true; value: unknown } | { ok: false; error: unknown },
    elapsedMs: number,
  ): Promise<FlowRunEngineResult> {
    const { scope } = this;
    let body: ProposeStateRequest;
    let status: FlowRunEngineResult['status'];
    let error: RunError | null = null;
    if (outcome.ok) {
      body = { state: { type: 'COMPLETED' }, result: this.toJsonResult(outcome.value) };
      status = 'completed';
      this.log('info', `flow run completed in ${formatDuration(elapsedMs)}`);
      endScope(scope, new TesseraError('ERR_CANCELLED', 'the flow run completed'));
    } else {
      error = toRunError(outcome.error);
      const cancelled = this.options.signal?.aborted === true && error.code === 'ERR_CANCELLED';
      status = cancelled ? 'cancelled' : 'failed';
      body = cancelled
        ? { state: { type: 'CANCELLED', message: error.message } }
        : { state: { type: 'FAILED', message: error.message }, error };
      this.log('error', `flow run ${status} after ${formatDuration(elapsedMs)}: ${error.message}`);
      endScope(scope, outcome.error instanceof Error ? outcome.error : new TesseraError('ERR_CANCELLED', error.message));
    }
    await this.reporter.flush();
    this.reporter.close();
    if (this.terminated) return { status, run: this.lastRun, result: undefined, error, retryScheduled: false };
    const response = await this.propose(body);
    if (!response.accepted) await this.refreshRun();
    return {
      status,
      run: this.lastRun,
      result: outcome.ok ? outcome.value : undefined,
      error,
      retryScheduled: response.retryScheduled,
    };
  }

  private async failBeforeStart(cause: unknown): Promise<FlowRunEngineResult> {
    const error = toRunError(cause);
    this.log('error', `flow run could not start: ${error.message}`);
    endScope(this.scope, cause instanceof Error ? cause : new TesseraError('ERR_CANCELLED', error.message));
    await this.reporter.flush();
    this.reporter.close();
    if (this.lastRun.state.type === 'SCHEDULED') await this.propose({ state: { type: 'PENDING' } });
    const response = await this.propose({ state: { type: 'FAILED', message: error.message }, error });
    if (!response.accepted) await this.refreshRun();
    return { status: 'failed', run: this.lastRun, result: undefined, error, retryScheduled: response.retryScheduled };
  }

  private async skipped(): Promise<FlowRunEngineResult> {
    await this.refreshRun();
    const state = this.lastRun.state;
    const message = `the server did not let this run start (it is ${state.name}${state.message ? `: ${state.message}` : ''}); nothing was executed`;
    this.log('warn', message);
    endScope(this.scope, new TesseraError('ERR_CANCELLED', message));
    await this.reporter.flush();
    this.reporter.close();
    return {
      status: 'skipped',
      run: this.lastRun,
      result: undefined,
      error: { name: 'TesseraError', message, code: 'ERR_CONFLICT' },
      retryScheduled: false,
    };
  }

  /** Proposes a state. A refusal (ABORT or 409) is an answer, not an error; unreachable servers reject. */
  private async propose(body: ProposeStateRequest): Promise<{ accepted: boolean; retryScheduled: boolean }> {
    let response: ProposeStateResponse;
    try {
      response = await this.options.client.proposeState(this.scope.runId, body);
    } catch (error) {
      // 409: illegal transition (e.g. cancelled meanwhile); 401: the credential died with the run.
      // Either way the server has settled the run's state and there is nothing left to report.
      if (error instanceof TesseraError && (error.status === 409 || error.status === 401)) {
        writeLog(null, 'warn', `the server refused state ${body.state.type} for run ${this.scope.runId}: ${error.message}`, []);
        return { accepted: false, retryScheduled: false };
      }
      throw error;
    }
    this.lastRun = response.run;
    this.scope.onEvent?.({ type: 'flow-run', run: response.run });
    return { accepted: response.status === 'ACCEPT', retryScheduled: response.retryScheduled === true };
  }

  private async refreshRun(): Promise<void> {
    try {
      this.lastRun = await this.options.client.getFlowRun(this.scope.runId);
    } catch {
      // The credential dies with the run; the last known state will do.
    }
  }

  /** The value stored as the run's result: JSON only, `undefined` → null. */
  private toJsonResult(value: unknown): unknown {
    if (value === undefined) return null;
    try {
      const text = JSON.stringify(value);
      return text === undefined ? null : JSON.parse(text);
    } catch (error) {
      this.log('warn', `the flow's return value cannot be stored (not JSON-serialisable: ${describeThrown(error)}); storing null`);
      return null;
    }
  }
}
