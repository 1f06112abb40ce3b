import type { Duration } from '@tessera/core';
import type { WorkerEvent } from './events.js';

/** Where the worker writes its own messages. Messages never contain a credential. */
export interface WorkerLogger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** Options for {@link createWorker}. Durations are milliseconds or strings such as `'10s'`. */
export interface WorkerOptions {
  /** Tessera server base URL, e.g. `http://127.0.0.1:4200`. Also given to flow processes as `TESSERA_API_URL`. */
  apiUrl: string;
  /** Work pool to claim runs from. */
  pool: string;
  /** Name shown in the UI and recorded on the runs. @default `${hostname}-${pid}` */
  name?: string;
  /** Most flow processes run at once. @default 8 */
  concurrency?: number;
  /** Longest the server may hold a poll open, waiting for a claimable run or a cancellation. @default 10_000 */
  pollWaitMs?: Duration;
  /** After SIGTERM, how long a cancelled flow process may take to exit before SIGKILL. @default 10_000 */
  cancelGraceMs?: Duration;
  /** How long to keep retrying a run's final report while the server is unreachable. @default 600_000 (10 min) */
  serverRetryForMs?: Duration;
  /**
   * Module each flow process runs: a path, a `file:` URL or a package specifier.
   * @default `import.meta.resolve('@tessera/sdk/run-flow')`
   */
  runnerModule?: string | URL;
  /**
   * Module each flow process loads with `node --import` before the runner, or `false` for none. The
   * SDK's runner needs tsx to load the flow's TypeScript; `false` suits only a `runnerModule` in plain
   * JavaScript, and saves the loader's start-up (about 0.2 s of CPU per run).
   * @default tsx
   */
  loader?: string | URL | false;
  /** Extra environment for every flow process; a deployment's own `env` wins over it. */
  env?: Record<string, string>;
  /**
   * Directory in which each run with token files (`identity.tokenFiles`) gets its own directory
   * (mode 0700, removed when the run ends). Created if missing. See docs/token-files.md.
   * @default os.tmpdir()
   */
  tokenDir?: string;
  /** @default console (info → stdout, warn and error → stderr) */
  logger?: WorkerLogger;
  /** Receives every {@link WorkerEvent}; exceptions it throws are logged and ignored. */
  onEvent?: (event: WorkerEvent) => void;
  /** Where flow processes' output goes, each line prefixed `[run 7f3c] `. @default process.stdout and process.stderr */
  output?: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream };
  /**
   * A single-use join token (`tsj_…`, from `tessera workers join-token`). The worker generates a key
   * pair, joins once, then proves possession of the key (RFC 7523) for every short-lived access
   * token. Not needed in local mode. See docs/security.md.
   */
  joinToken?: string;
  /**
   * A file holding a platform token (e.g. a Kubernetes projected service-account token), exchanged
   * for short-lived access tokens under a trust policy with role `worker`; re-read at every exchange.
   */
  federatedTokenFile?: string;
  /**
   * Keep the worker's identity (id and private key, mode 0600) in this file, so a restart needs no new
   * join token. @default none: the key lives in memory and a restarted worker needs a new join token
   */
  identityFile?: string;
}

/** Options for {@link Worker.stop}. */
export interface StopOptions {
  /**
   * How long to wait for running runs to finish; then they are stopped (SIGTERM, grace, SIGKILL)
   * and reported CRASHED with "worker shut down". @default no limit (a second `stop()` call stops them)
   */
  timeoutMs?: Duration;
}
