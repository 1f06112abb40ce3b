import { type ChildProcess, spawn } from 'node:child_process';
import { type ClaimedRun, RUN_ENV, redactSecrets } from '@tessera/core';
import { LineSplitter, LineTail } from './lines.js';

/** How a flow process ended. `error` is set when it could not be started at all. */
export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

/** Options for {@link launchFlowProcess}. */
export interface LaunchFlowProcessOptions {
  claimed: ClaimedRun;
  apiUrl: string;
  /** Absolute file URL of the tsx loader, passed to `--import`; empty for none. */
  loaderUrl: string;
  /** Absolute path of the runner module (the SDK's flow-process entry). */
  runnerPath: string;
  /** The worker's extra environment (below the claim's own `env`). */
  env: Readonly<Record<string, string>>;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Lines of stderr kept for the crash message. @default 30 */
  stderrTailLines?: number;
  /** The run's token files: their variables, and the inherited ones they displace. */
  tokenFiles?: ProjectedEnv | undefined;
}

/** Variables that token-file projection sets, and inherited ones it removes (see `projectTokenFiles`). */
export interface ProjectedEnv {
  readonly env: Readonly<Record<string, string>>;
  readonly shadowed: readonly string[];
}

/** The worker's `TESSERA_*` variables a run inherits: settings, never credentials. */
const INHERITED: ReadonlySet<string> = new Set(['TESSERA_LOG_LEVEL']);

/** How long to wait for stdout/stderr to close after the process exited (a grandchild may hold them open). */
const STDIO_CLOSE_WAIT_MS = 500;

/**
 * Environment of a flow process: the worker's environment without its `TESSERA_*` variables, then
 * the worker's `env` option, then the deployment's `env`, then the token-file variables, then the
 * run variables, which nothing may override (a deployment must not be able to point a run at another
 * server or hand it another run's credential). The worker's own `TESSERA_*` variables (but
 * `TESSERA_LOG_LEVEL`) are its
 * credentials and configuration (`TESSERA_JOIN_TOKEN`, `TESSERA_FEDERATED_TOKEN_FILE`,
 * `TESSERA_HOME`, a server's `TESSERA_DATABASE_URL` or client secrets when both share a shell):
 * none is the run's. With token files, static cloud credentials inherited from the worker are
 * dropped too: the run must act as itself, not as the machine it happens to run on.
 */
export function buildRunEnv(
  claimed: ClaimedRun,
  apiUrl: string,
  workerEnv: Readonly<Record<string, string>>,
  base: NodeJS.ProcessEnv = process.env,
  tokenFiles?: ProjectedEnv,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) if (v !== undefined && (!k.startsWith('TESSERA_') || INHERITED.has(k))) env[k] = v;
  Object.assign(env, workerEnv);
  for (const name of tokenFiles?.shadowed ?? []) delete env[name];
  Object.assign(env, claimed.env, tokenFiles?.env);
  env[RUN_ENV.apiUrl] = apiUrl;
  env[RUN_ENV.runId] = claimed.run.id;
  env[RUN_ENV.attempt] = String(claimed.run.attempt);
  env[RUN_ENV.credential] = claimed.credential;
  env[RUN_ENV.entrypoint] = claimed.entrypoint;
  return env;
}

/** The short prefix put before each line a flow process prints: `[run 7f3c] `. */
export function outputPrefix(runId: string): string {
  return `[run ${runId.slice(0, 4)}] `;
}

/**
 * One flow run's subprocess. Created by {@link launchFlowProcess}; `exited` never rejects.
 *
 * The process is spawned with an IPC channel: the SDK runner exits on `disconnect`, so when the
 * worker dies (even by SIGKILL) its flow processes die with it instead of running on unsupervised
 * while the server retries the run elsewhere. On POSIX it also gets its own process group, so a
 * Ctrl-C in the worker's terminal reaches only the worker (which then stops gracefully) and a kill
 * reaches the processes the flow started too.
 */
export class FlowProcess {
  readonly exited: Promise<ProcessExit>;
  private readonly tail: LineTail;

  constructor(
    private readonly child: ChildProcess,
    options: LaunchFlowProcessOptions,
  ) {
    this.tail = new LineTail(options.stderrTailLines ?? 30);
    const prefix = outputPrefix(options.claimed.run.id);
    const out = new LineSplitter((line) => options.stdout.write(`${prefix}${redactSecrets(line)}\n`));
    const err = new LineSplitter((line) => {
      const safe = redactSecrets(line);
      this.tail.push(safe);
      options.stderr.write(`${prefix}${safe}\n`);
    });
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => out.push(chunk));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => err.push(chunk));
    // The IPC channel is only a lifeline; an error on it (e.g. EPIPE after the child died) is not ours to report.
    child.on('disconnect', () => {});

    this.exited = new Promise<ProcessExit>((resolve) => {
      let result: ProcessExit | undefined;
      let settled = false;
      const finish = () => {
        if (settled || !result) return;
        settled = true;
        out.end();
        err.end();
        resolve(result);
      };
      child.once('error', (error) => {
        // 'error' without a pid: the process never started and no 'exit' will follow.
        if (child.pid === undefined) {
          result = { code: null, signal: null, error };
          finish();
        }
      });
      child.once('exit', (code, signal) => {
        result = { code, signal };
        setTimeout(finish, STDIO_CLOSE_WAIT_MS).unref();
      });
      child.once('close', () => finish());
    });
  }

  /** OS process id, or `undefined` if the process could not be started. */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** True until the process has exited. */
  alive(): boolean {
    return this.child.pid !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Sends `signal` to the flow process and everything it started. Does nothing once it has exited. */
  kill(signal: NodeJS.Signals): void {
    const pid = this.child.pid;
    if (pid === undefined) return;
    if (process.platform !== 'win32') {
      try {
        process.kill(-pid, signal);
        return;
      } catch {
        // ESRCH: the group is gone; fall through for the process itself.
      }
    }
    if (this.alive()) this.child.kill(signal);
  }

  /**
   * Kills what is left of the process group once the flow process itself has exited: processes the
   * flow started must not outlive its run (they could go on acting for it while the run is retried
   * elsewhere, or after it was cancelled). POSIX only; nothing left is fine.
   */
  killLeftovers(): void {
    const pid = this.child.pid;
    if (pid === undefined || process.platform === 'win32') return;
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // ESRCH: nothing left in the group.
    }
  }

  /** The last lines the process wrote to stderr, secrets redacted. */
  stderrTail(): string[] {
    return this.tail.toArray();
  }
}

/** Starts the flow process for a claimed run. */
export function launchFlowProcess(options: LaunchFlowProcessOptions): FlowProcess {
  const args = options.loaderUrl ? ['--import', options.loaderUrl, options.runnerPath] : [options.runnerPath];
  const child = spawn(process.execPath, args, {
    cwd: options.claimed.path,
    env: buildRunEnv(options.claimed, options.apiUrl, options.env, process.env, options.tokenFiles),
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    detached: process.platform !== 'win32',
    windowsHide: true,
  });
  return new FlowProcess(child, options);
}
