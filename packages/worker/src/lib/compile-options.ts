import { existsSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { isAbsolute, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDuration, TesseraError } from '@tessera/core';
import type { WorkerEvent } from '../events.js';
import type { WorkerLogger, WorkerOptions } from '../options.js';
import type { WorkerAuth } from './credentials.js';

/** {@link WorkerOptions} with defaults applied and durations in ms: the one shape the worker reads. */
export interface CompiledWorkerOptions {
  readonly apiUrl: string;
  readonly pool: string;
  readonly name: string;
  readonly concurrency: number;
  readonly pollWaitMs: number;
  readonly cancelGraceMs: number;
  readonly serverRetryForMs: number;
  readonly runnerModule: string | URL | undefined;
  readonly loader: string | URL | false | undefined;
  readonly env: Readonly<Record<string, string>>;
  readonly tokenDir: string;
  readonly logger: WorkerLogger;
  readonly onEvent: ((event: WorkerEvent) => void) | undefined;
  readonly output: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream };
  readonly auth: Readonly<WorkerAuth>;
}

const consoleLogger: WorkerLogger = {
  info: (message) => console.log(message),
  warn: (message) => console.warn(message),
  error: (message) => console.error(message),
};

function configError(message: string): TesseraError {
  return new TesseraError('ERR_CONFIG', message);
}

/** Validates options and applies defaults. @throws TesseraError `ERR_CONFIG` or `ERR_INVALID_DURATION` naming the option. */
export function compileWorkerOptions(options: WorkerOptions): CompiledWorkerOptions {
  let apiUrl: string;
  try {
    const url = new URL(options.apiUrl);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(url.protocol);
    apiUrl = options.apiUrl.replace(/\/+$/, '');
  } catch {
    throw configError(`worker option apiUrl: "${options.apiUrl}" is not an http(s) URL; use e.g. http://127.0.0.1:4200`);
  }
  if (typeof options.pool !== 'string' || options.pool.trim() === '') {
    throw configError('worker option pool: a work pool name is required, e.g. "default"');
  }
  const concurrency = options.concurrency ?? 8;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw configError(`worker option concurrency: ${concurrency} is not allowed; use a whole number of at least 1`);
  }
  const name = options.name?.trim() || `${hostname()}-${process.pid}`;
  if (options.joinToken && options.federatedTokenFile) {
    throw configError('worker options joinToken and federatedTokenFile: give one way to authenticate, not both');
  }
  if (options.joinToken !== undefined && !/^tsj_[A-Za-z0-9_-]{16,}$/.test(options.joinToken)) {
    throw configError('worker option joinToken: expected a join token (tsj_…) from `tessera workers join-token`');
  }
  return Object.freeze({
    apiUrl,
    pool: options.pool,
    name,
    concurrency,
    pollWaitMs: parseDuration(options.pollWaitMs ?? 10_000, 'worker option pollWaitMs'),
    cancelGraceMs: parseDuration(options.cancelGraceMs ?? 10_000, 'worker option cancelGraceMs'),
    serverRetryForMs: parseDuration(options.serverRetryForMs ?? 600_000, 'worker option serverRetryForMs'),
    runnerModule: options.runnerModule,
    loader: options.loader,
    env: Object.freeze({ ...options.env }),
    tokenDir: resolvePath(options.tokenDir ?? tmpdir()),
    logger: options.logger ?? consoleLogger,
    onEvent: options.onEvent,
    output: options.output ?? { stdout: process.stdout, stderr: process.stderr },
    auth: Object.freeze({
      joinToken: options.joinToken,
      federatedTokenFile: options.federatedTokenFile ? resolvePath(options.federatedTokenFile) : undefined,
      identityFile: options.identityFile ? resolvePath(options.identityFile) : undefined,
    }),
  });
}

/** The SDK's flow-process entry, which every flow process runs unless `runnerModule` says otherwise. */
export const DEFAULT_RUNNER = '@tessera/sdk/run-flow';

/**
 * Absolute path of the runner module. Resolved here (from this package's location, not the cwd)
 * so that a worker started from any directory finds it.
 */
export function resolveRunnerPath(runnerModule: string | URL | undefined): string {
  const spec = runnerModule ?? DEFAULT_RUNNER;
  let path: string;
  try {
    if (spec instanceof URL || spec.startsWith('file:')) path = fileURLToPath(spec);
    else if (isAbsolute(spec)) path = spec;
    else if (spec.startsWith('.')) path = resolvePath(spec);
    else path = fileURLToPath(import.meta.resolve(spec));
  } catch (e) {
    throw new TesseraError(
      'ERR_CONFIG',
      `worker option runnerModule: cannot resolve "${String(spec)}" (${(e as Error).message}); install @tessera/sdk next to @tessera/worker or pass runnerModule`,
      { cause: e },
    );
  }
  if (!existsSync(path)) {
    throw configError(
      `worker option runnerModule: "${path}" does not exist; build @tessera/sdk (npm run build) or pass another runnerModule`,
    );
  }
  return path;
}

/**
 * Absolute file URL of tsx's loader, for `node --import`; absolute so it works from any cwd. The
 * package entry (what `node --import tsx` loads) registers both tsx's ESM and CommonJS hooks:
 * `tsx/esm` alone cannot load a `flows.ts` from a project without `"type": "module"` on Node 20
 * (ERR_REQUIRE_CYCLE_MODULE).
 */
export function resolveLoaderUrl(): string {
  try {
    return import.meta.resolve('tsx');
  } catch (e) {
    throw new TesseraError('ERR_CONFIG', `cannot resolve the tsx loader: ${(e as Error).message}; reinstall @tessera/worker`, {
      cause: e,
    });
  }
}
