import { randomUUID } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { ApiClient, type ClaimedRun, type FlowRun, formatDuration, isTerminal, parseDuration, TesseraError } from '@tessera/core';
import type { WorkerEvent } from './events.js';
import { backoffDelay, sleep } from './lib/backoff.js';
import { type CompiledWorkerOptions, compileWorkerOptions, resolveLoaderUrl, resolveRunnerPath } from './lib/compile-options.js';
import { FATAL_AUTH_CODES, WorkerCredentials } from './lib/credentials.js';
import { decideFinalState } from './lib/final-state.js';
import { type FlowProcess, launchFlowProcess, type ProcessExit } from './lib/flow-process.js';
import { type RetryingOptions, retrying } from './lib/retry.js';
import { type ProjectedTokenFiles, projectTokenFiles, sweepTokenDirs } from './lib/token-files.js';
import type { StopOptions, WorkerLogger, WorkerOptions } from './options.js';

/** Longest wait between two polls while the server is unreachable, ms. */
const POLL_BACKOFF_CAP_MS = 2000;
/**
 * An empty poll answer that came back faster than this is followed by a short pause, so that a
 * server which does not hold polls open cannot make the worker spin.
 */
const MIN_EMPTY_POLL_MS = 250;

/** One claimed run, from the claim until its final state is reported (or the server forgets it). */
interface RunSlot {
  readonly claimed: ClaimedRun;
  readonly runId: string;
  /** `run 7f3c1a2b`, for log lines. */
  readonly label: string;
  process: FlowProcess | undefined;
  startedAt: number;
  cancelRequested: boolean;
  shutdown: boolean;
  forgotten: boolean;
  killTimer: NodeJS.Timeout | undefined;
  /** Aborted when the server forgets the run: its report, if any, must not be sent. */
  readonly reportAbort: AbortController;
  /** Aborted when the run must not start after all (cancelled, forgotten, worker stopping). */
  readonly startAbort: AbortController;
  done: Promise<void>;
}

/** The poll request in flight. */
interface InflightPoll {
  /** The capacity it offered: above 0, the server may be claiming runs for it right now. */
  readonly capacity: number;
  readonly abort: AbortController;
  /** Settles once its answer (if any) has been acted on. */
  readonly finished: Promise<void>;
}

/** What the server sent, checked: it is untrusted input from the network. */
interface PollInstructions {
  runs: ClaimedRun[];
  cancel: string[];
  forget: string[];
}

/**
 * A Tessera worker: claims runs of one work pool and executes each in its own flow process.
 *
 * It long-polls the server (the poll is also its heartbeat, so it polls even when full), starts a
 * claimed run at once, relays cancellations (SIGTERM, then SIGKILL after `cancelGraceMs`), and
 * reports CRASHED or CANCELLED for a run whose process ended without reporting a final state.
 *
 * @example
 * ```ts
 * const worker = createWorker({ apiUrl: 'http://127.0.0.1:4200', pool: 'default' });
 * worker.start();
 * process.once('SIGTERM', () => void worker.stop({ timeoutMs: '30s' }));
 * ```
 */
export class Worker {
  /** Random per process start: a restarted worker is a new worker to the server. */
  readonly id: string = randomUUID();
  /** Display name. */
  readonly name: string;
  /** The work pool this worker claims runs from. */
  readonly pool: string;

  private readonly options: CompiledWorkerOptions;
  private readonly log: WorkerLogger;
  private readonly client: ApiClient;
  private readonly credentials: WorkerCredentials;
  private readonly runs = new Map<string, RunSlot>();
  private readonly halt = new AbortController();
  private runnerPath = '';
  private loaderUrl = '';
  private loop: Promise<void> | undefined;
  private inflight: InflightPoll | undefined;
  private stopping = false;
  private stopPromise: Promise<void> | undefined;

  /** @throws TesseraError `ERR_CONFIG` or `ERR_INVALID_DURATION` naming the offending option. */
  constructor(options: WorkerOptions) {
    this.options = compileWorkerOptions(options);
    this.name = this.options.name;
    this.pool = this.options.pool;
    this.log = this.options.logger;
    // No retries inside the client: the poll loop and the reports each retry on their own terms.
    this.client = new ApiClient({ baseUrl: this.options.apiUrl });
    this.credentials = new WorkerCredentials(this.options.apiUrl, this.options.auth, { name: this.name, pool: this.pool }, this.log);
  }

  /** A client carrying the worker's own access token (none in local mode). */
  private async ownClient(): Promise<ApiClient> {
    return this.credentials.enabled ? this.client.withToken(await this.credentials.token()) : this.client;
  }

  /** Why the worker stopped by itself: it could not authenticate (revoked, join token spent or expired). */
  fatalError: TesseraError | undefined;

  /** Resolves when polling has ended: after {@link Worker.stop}, or when the worker stopped by itself ({@link Worker.fatalError}). */
  whenStopped(): Promise<void> {
    return this.loop ?? Promise.resolve();
  }

  /** Ids of the runs this worker holds: executing, or ending and being reported. */
  get running(): string[] {
    return [...this.runs.values()].filter((slot) => !slot.forgotten).map((slot) => slot.runId);
  }

  /**
   * Starts polling. Returns at once; the worker runs until {@link Worker.stop}.
   * @throws TesseraError `ERR_CONFIG` when the runner module or tsx cannot be found, `ERR_CONFLICT` when called twice.
   */
  start(): void {
    if (this.loop || this.stopping) {
      throw new TesseraError('ERR_CONFLICT', `worker "${this.name}" was already started; create a new Worker to start again`);
    }
    this.runnerPath = resolveRunnerPath(this.options.runnerModule);
    const loader = this.options.loader;
    this.loaderUrl = loader === false ? '' : loader === undefined ? resolveLoaderUrl() : String(loader);
    this.log.info(
      `worker "${this.name}" (${this.id}) polling pool "${this.pool}" at ${this.options.apiUrl} with concurrency ${this.options.concurrency}`,
    );
    this.loop = this.pollLoop().catch((e) => this.log.error(`worker poll loop stopped unexpectedly: ${errorMessage(e)}`));
    // Token files that a killed worker left behind (their tokens are still valid until they expire).
    void sweepTokenDirs(this.options.tokenDir, this.log);
  }

  /**
   * Stops claiming runs and waits for the running ones to finish, polling on with capacity 0 so the
   * server still sees the worker and can still cancel. A poll that was open with spare capacity is
   * allowed to finish (at most `pollWaitMs`), and a run it hands out is executed: aborting it could
   * lose a claim the server already made. After `timeoutMs`, or on a second call, running flow
   * processes are stopped (SIGTERM, `cancelGraceMs`, SIGKILL) and reported CRASHED with "worker
   * shut down". Resolves when every run is reported and polling has ended.
   */
  stop(options: StopOptions = {}): Promise<void> {
    if (this.stopPromise) {
      this.forceStop('stop() was called again');
      return this.stopPromise;
    }
    const timeoutMs = options.timeoutMs === undefined ? undefined : parseDuration(options.timeoutMs, 'stop option timeoutMs');
    this.stopping = true;
    this.stopPromise = this.drain(timeoutMs);
    return this.stopPromise;
  }

  private async drain(timeoutMs: number | undefined): Promise<void> {
    const claiming = this.inflight && this.inflight.capacity > 0 ? this.inflight : undefined;
    if (this.runs.size > 0 || claiming) {
      const what = [
        claiming ? `the open poll (up to ${formatDuration(this.options.pollWaitMs)})` : '',
        this.runs.size > 0 ? `${this.runs.size} running run(s)` : '',
      ].filter(Boolean);
      const limit = timeoutMs === undefined ? '; stop again to stop now' : ` for up to ${formatDuration(timeoutMs)}`;
      this.log.info(`worker "${this.name}" stopping: waiting for ${what.join(' and ')}${limit}`);
    }
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => this.forceStop(`stop timeout of ${formatDuration(timeoutMs)} reached`), timeoutMs);
    if (claiming) await claiming.finished;
    while (this.runs.size > 0) await Promise.allSettled([...this.runs.values()].map((slot) => slot.done));
    clearTimeout(timer);
    this.halt.abort();
    this.inflight?.abort.abort();
    await this.loop;
    this.log.info(`worker "${this.name}" stopped`);
  }

  /** Stops every running flow process now; an open poll is abandoned even if it offered capacity. */
  private forceStop(reason: string): void {
    this.shutdownRuns(reason);
    this.inflight?.abort.abort();
  }

  private async pollLoop(): Promise<void> {
    let failures = 0;
    let outageSince: number | undefined;
    while (!this.halt.signal.aborted) {
      const capacity = this.stopping ? 0 : Math.max(0, this.options.concurrency - this.runs.size);
      const abort = new AbortController();
      let finish = () => {};
      const inflight: InflightPoll = { capacity, abort, finished: new Promise<void>((resolve) => (finish = resolve)) };
      this.inflight = inflight;
      const sentAt = Date.now();
      let answer: unknown;
      let failure: Error | undefined;
      try {
        answer = await (await this.ownClient()).poll(
          this.pool,
          { workerId: this.id, workerName: this.name, capacity, running: this.running, waitMs: this.options.pollWaitMs },
          abort.signal,
        );
      } catch (e) {
        failure = e instanceof Error ? e : new Error(String(e));
      }
      if (this.inflight === inflight) this.inflight = undefined;
      if (failure) {
        finish();
        if (abort.signal.aborted) continue;
        if (failure instanceof TesseraError && failure.status === 401) this.credentials.invalidate();
        if (failure instanceof TesseraError && FATAL_AUTH_CODES.has(failure.code)) {
          // Retrying cannot help: the worker was revoked, or its join token is spent or expired.
          this.log.error(`worker "${this.name}" cannot authenticate: ${failure.message}`);
          this.fatalError ??= failure;
          this.emit({ type: 'pollError', error: failure });
          void this.stop();
          await sleep(POLL_BACKOFF_CAP_MS, this.halt.signal);
          continue;
        }
        failures++;
        // One line per outage, not one per attempt (a restart shows as ECONNRESET, then ECONNREFUSED…).
        if (outageSince === undefined) {
          outageSince = sentAt;
          this.log.warn(`worker "${this.name}" cannot poll pool "${this.pool}": ${failure.message}; retrying until it answers`);
          this.emit({ type: 'pollError', error: failure });
        }
        await sleep(backoffDelay(failures, POLL_BACKOFF_CAP_MS), this.halt.signal);
        continue;
      }
      if (outageSince !== undefined) {
        this.log.info(`worker "${this.name}" reached the server again after ${formatDuration(Date.now() - outageSince)}`);
      }
      failures = 0;
      outageSince = undefined;
      const instructions = this.readPollAnswer(answer);
      for (const runId of instructions.forget) this.forget(runId);
      for (const runId of instructions.cancel) this.cancel(runId);
      for (const claimed of instructions.runs) this.launch(claimed);
      finish();
      const idle = instructions.runs.length + instructions.cancel.length + instructions.forget.length === 0;
      const elapsed = Date.now() - sentAt;
      if (idle && elapsed < MIN_EMPTY_POLL_MS) await sleep(MIN_EMPTY_POLL_MS - elapsed, this.halt.signal);
    }
  }

  private readPollAnswer(answer: unknown): PollInstructions {
    const body = (answer ?? {}) as Record<string, unknown>;
    const ids = (value: unknown): string[] => (Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : []);
    const runs: ClaimedRun[] = [];
    for (const item of Array.isArray(body.runs) ? body.runs : []) {
      const c = item as Partial<ClaimedRun> | null;
      if (
        typeof c?.run?.id === 'string' &&
        typeof c.credential === 'string' &&
        typeof c.path === 'string' &&
        typeof c.entrypoint === 'string'
      ) {
        runs.push({ ...c, env: c.env && typeof c.env === 'object' ? c.env : {} } as ClaimedRun);
      } else {
        this.log.error(`worker "${this.name}" received a malformed claim (missing run.id, credential, path or entrypoint); ignoring it`);
      }
    }
    return { runs, cancel: ids(body.cancel), forget: ids(body.forget) };
  }

  /** Starts a claimed run. Never drops one: even past capacity or while stopping, a claim is executed. */
  private launch(claimed: ClaimedRun): void {
    const runId = claimed.run.id;
    if (this.runs.has(runId)) {
      this.log.warn(`${label(runId)} was handed out again while this worker already runs it; ignoring the duplicate`);
      return;
    }
    const slot: RunSlot = {
      claimed,
      runId,
      label: label(runId),
      process: undefined,
      startedAt: Date.now(),
      cancelRequested: false,
      shutdown: false,
      forgotten: false,
      killTimer: undefined,
      reportAbort: new AbortController(),
      startAbort: new AbortController(),
      done: Promise.resolve(),
    };
    this.runs.set(runId, slot);
    this.emit({ type: 'claimed', runId, run: claimed.run });
    this.log.info(`claimed ${slot.label} "${claimed.run.name}" of flow "${claimed.run.flowName}" (attempt ${claimed.run.attempt})`);
    slot.done = this.execute(slot)
      .catch((e) => this.log.error(`${slot.label}: ${errorMessage(e)}`))
      .finally(() => {
        clearTimeout(slot.killTimer);
        this.runs.delete(runId);
        // A slot just freed up: a poll held open with capacity 0 would keep it idle until the poll
        // times out. Such a poll claims nothing, so abandoning it and polling again at once is safe.
        const held = this.inflight;
        if (held && held.capacity === 0 && !this.stopping) held.abort.abort();
      });
  }

  private async execute(slot: RunSlot): Promise<void> {
    const startable = () => !slot.forgotten && !slot.cancelRequested && !slot.shutdown;
    let notStarted = await this.checkWorkingDirectory(slot.claimed.path);
    let exit: ProcessExit | undefined;
    let tokenFiles: ProjectedTokenFiles | undefined;
    try {
      if (!notStarted && slot.claimed.tokenFiles !== undefined && startable()) {
        try {
          tokenFiles = await this.projectTokenFiles(slot);
        } catch (e) {
          // Abandoned because the run was cancelled meanwhile: reported as such below.
          if (startable()) notStarted = errorMessage(e);
        }
      }
      let proc: FlowProcess | undefined;
      if (!notStarted && startable()) {
        try {
          proc = launchFlowProcess({
            claimed: slot.claimed,
            apiUrl: this.options.apiUrl,
            loaderUrl: this.loaderUrl,
            runnerPath: this.runnerPath,
            env: this.options.env,
            stdout: this.options.output.stdout,
            stderr: this.options.output.stderr,
            tokenFiles,
          });
        } catch (e) {
          // spawn throws at once for what it cannot even try (a NUL byte in the environment or the
          // path): reported as not started, never left for the server to hand out again and again.
          notStarted = `the flow process could not be started: ${errorMessage(e)}`;
        }
      }
      if (proc) {
        slot.process = proc;
        slot.startedAt = Date.now();
        if (proc.pid !== undefined) this.emit({ type: 'started', runId: slot.runId, pid: proc.pid });
        exit = await proc.exited;
        clearTimeout(slot.killTimer);
        proc.killLeftovers();
        const durationMs = Date.now() - slot.startedAt;
        this.emit({ type: 'exited', runId: slot.runId, code: exit.code, signal: exit.signal, durationMs });
        this.log.info(
          `${slot.label} flow process exited with code ${exit.code ?? 'none'} (signal ${exit.signal ?? 'none'}) after ${formatDuration(durationMs)}`,
        );
      } else if (!notStarted) {
        notStarted = 'the run was cancelled or the worker stopped before it started';
      }
    } finally {
      // Whatever ended the run (its own end, a crash, a cancel, a forget, the worker stopping), its tokens go with it.
      await tokenFiles?.close();
    }
    if (slot.forgotten) return;
    await this.report(slot, exit, notStarted);
  }

  /** Fetches the run's first tokens with its own credential and writes its token files. */
  private projectTokenFiles(slot: RunSlot): Promise<ProjectedTokenFiles> {
    const runClient = this.client.withToken(slot.claimed.credential);
    return projectTokenFiles({
      spec: slot.claimed.tokenFiles,
      runId: slot.runId,
      baseDir: this.options.tokenDir,
      issue: (request) => runClient.issueIdentityToken(request),
      logger: this.log,
      label: slot.label,
      retryForMs: this.options.serverRetryForMs,
      signal: slot.startAbort.signal,
    });
  }

  private async checkWorkingDirectory(path: string): Promise<string | undefined> {
    if (!isAbsolute(path)) return `the run's working directory "${path}" is not an absolute path; redeploy with an absolute path`;
    try {
      if (!(await stat(path)).isDirectory()) return `the run's working directory "${path}" is not a directory on worker "${this.name}"`;
      return undefined;
    } catch {
      return `the run's working directory "${path}" does not exist on worker "${this.name}"; run the worker where the deployment's code is, or redeploy with a path that exists here`;
    }
  }

  /**
   * Reports the final state of a run whose process ended, unless the run is already terminal.
   * Retries while the server is unreachable (a restart must not lose the report); a 409 means
   * someone else already decided, which is final.
   */
  private async report(slot: RunSlot, exit: ProcessExit | undefined, notStarted: string | undefined): Promise<void> {
    const { runId } = slot;
    const signal = slot.reportAbort.signal;
    const runClient = this.client.withToken(slot.claimed.credential);
    // The run credential dies when the run becomes terminal; the worker's own client still may read and report.
    const withCredential =
      <T>(fn: (client: ApiClient) => Promise<T>) =>
      async (): Promise<T> => {
        try {
          return await fn(runClient);
        } catch (e) {
          if (!(e instanceof TesseraError && e.status === 401)) throw e;
          try {
            return await fn(await this.ownClient());
          } catch (e2) {
            // A worker may not read or change runs with its own token (only in local mode): the
            // credential's refusal (the attempt ended on the server) is the answer.
            if (e2 instanceof TesseraError && (e2.status === 401 || e2.status === 403)) throw e;
            throw e2;
          }
        }
      };
    let outage = false;
    const retryOptions = (what: string): RetryingOptions => ({
      retryForMs: this.options.serverRetryForMs,
      signal,
      onRetry: ({ error }) => {
        if (outage) return;
        outage = true;
        this.log.warn(
          `${slot.label}: cannot ${what} yet (${error.message}); retrying for up to ${formatDuration(this.options.serverRetryForMs)}`,
        );
      },
    });

    let current: FlowRun | undefined;
    try {
      current = await retrying(
        withCredential((c) => c.getFlowRun(runId)),
        retryOptions('read its state'),
      );
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof TesseraError && e.code === 'ERR_CREDENTIAL_REVOKED' && this.credentials.enabled) {
        // The run credential dies at every terminal state: the server already decided this attempt.
        this.log.info(`${slot.label}: its attempt already ended on the server (${errorMessage(e)})`);
        this.emit({ type: 'reported', runId, outcome: 'already-final', state: null });
        return;
      }
      this.log.warn(`${slot.label}: cannot read its state (${errorMessage(e)}); reporting its end anyway`);
    }
    if (signal.aborted) return;
    if (current && (current.attempt !== slot.claimed.run.attempt || current.state.type === 'SCHEDULED')) {
      // This attempt already ended on the server: it failed and a retry is scheduled or running (its
      // final report's answer may have been lost), or it was given back. The run's state now belongs
      // to another attempt, not to this process.
      this.log.info(
        `${slot.label}: attempt ${slot.claimed.run.attempt} already ended (the run is ${current.state.name}, attempt ${current.attempt})`,
      );
      this.emit({ type: 'reported', runId, outcome: 'already-final', state: null });
      return;
    }
    if (current && isTerminal(current.state.type)) {
      this.log.info(`${slot.label} is ${current.state.name}`);
      this.emit({ type: 'reported', runId, outcome: 'already-final', state: current.state.type });
      return;
    }

    const body = decideFinalState({
      exit,
      current: current?.state.type,
      cancelRequested: slot.cancelRequested,
      shutdown: slot.shutdown,
      ...(notStarted ? { notStarted } : {}),
      stderrTail: slot.process?.stderrTail() ?? [],
    });
    const type = body.state.type;
    if (type === 'CRASHED') this.emit({ type: 'crashed', runId, message: body.state.message ?? '' });
    try {
      // With the run credential only: once it is revoked the attempt has ended on the server, and a
      // report through the worker's own client could land on the next attempt.
      const answer = await retrying(() => runClient.proposeState(runId, body), retryOptions(`report it ${type}`));
      const state = answer.run?.state?.type ?? null;
      if (answer.status === 'ACCEPT') {
        this.log.info(`${slot.label} reported ${type}${outage ? ' after the server came back' : ''}`);
        this.emit({ type: 'reported', runId, outcome: 'accepted', state: type });
      } else {
        this.log.info(`${slot.label}: the server kept it ${state ?? 'unchanged'} instead of ${type}`);
        this.emit({ type: 'reported', runId, outcome: 'aborted', state });
      }
    } catch (e) {
      if (signal.aborted) return;
      const message = errorMessage(e);
      if (e instanceof TesseraError && e.code === 'ERR_CREDENTIAL_REVOKED') {
        this.log.info(`${slot.label}: not reported ${type}, its attempt already ended on the server (${message})`);
        this.emit({ type: 'reported', runId, outcome: 'already-final', state: null });
        return;
      }
      if (e instanceof TesseraError && e.status === 409) {
        this.log.info(`${slot.label}: not reported ${type}, someone else already decided its state (${message})`);
        this.emit({ type: 'reported', runId, outcome: 'conflict', state: null, message });
        return;
      }
      this.log.error(`${slot.label}: could not report it ${type}: ${message}`);
      this.emit({ type: 'reported', runId, outcome: 'failed', state: null, message });
    }
  }

  /** The server asked to cancel a run: SIGTERM now, SIGKILL after the grace period, then CANCELLED. */
  private cancel(runId: string): void {
    const slot = this.runs.get(runId);
    if (!slot || slot.forgotten || slot.cancelRequested) return;
    slot.cancelRequested = true;
    slot.startAbort.abort();
    this.log.info(`${slot.label}: cancellation requested; stopping its flow process`);
    this.emit({ type: 'cancelled', runId, reason: 'requested' });
    this.terminate(slot);
  }

  /**
   * The server no longer expects this worker to run it (zombie detection crashed it; it may already
   * run elsewhere): kill it now and report nothing, so it cannot run twice or overwrite the new state.
   */
  private forget(runId: string): void {
    const slot = this.runs.get(runId);
    if (!slot || slot.forgotten) return;
    slot.forgotten = true;
    slot.reportAbort.abort();
    slot.startAbort.abort();
    clearTimeout(slot.killTimer);
    this.log.warn(`${slot.label}: the server no longer expects this worker to run it; killing its flow process`);
    this.emit({ type: 'cancelled', runId, reason: 'forgotten' });
    slot.process?.kill('SIGKILL');
  }

  private shutdownRuns(reason: string): void {
    const slots = [...this.runs.values()].filter((slot) => !slot.forgotten && !slot.shutdown);
    if (slots.length > 0) this.log.warn(`worker "${this.name}": ${reason}; stopping ${slots.length} run(s)`);
    for (const slot of slots) {
      slot.shutdown = true;
      slot.startAbort.abort();
      if (slot.process && !slot.process.alive()) continue;
      this.emit({ type: 'cancelled', runId: slot.runId, reason: 'shutdown' });
      this.terminate(slot);
    }
  }

  /** SIGTERM, and SIGKILL if the process is still alive after `cancelGraceMs`. Idempotent. */
  private terminate(slot: RunSlot): void {
    const proc = slot.process;
    if (!proc?.alive() || slot.killTimer) return;
    proc.kill('SIGTERM');
    slot.killTimer = setTimeout(() => {
      if (!proc.alive()) return;
      this.log.warn(
        `${slot.label}: flow process still running ${formatDuration(this.options.cancelGraceMs)} after SIGTERM; sending SIGKILL`,
      );
      proc.kill('SIGKILL');
    }, this.options.cancelGraceMs);
  }

  private emit(event: WorkerEvent): void {
    try {
      this.options.onEvent?.(event);
    } catch (e) {
      this.log.error(`worker onEvent handler threw on "${event.type}": ${errorMessage(e)}`);
    }
  }
}

/**
 * Creates a {@link Worker}; call `start()` to begin claiming runs.
 * @throws TesseraError `ERR_CONFIG` or `ERR_INVALID_DURATION` naming the offending option.
 */
export function createWorker(options: WorkerOptions): Worker {
  return new Worker(options);
}

function label(runId: string): string {
  return `run ${runId.slice(0, 8)}`;
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
