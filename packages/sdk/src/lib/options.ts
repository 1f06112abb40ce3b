import { type Duration, parseDuration, TesseraError } from '@tessera/core';

/** Options shared by `flow()` and `task()`, as users write them. */
export interface RunOptions {
  /** Name shown in the UI and used as the task key / flow name. Required. */
  name: string;
  /** How many times to retry after a failure. @default 0 */
  retries?: number;
  /**
   * Delay before each retry: milliseconds, a duration string (`'10s'`), or an array for backoff
   * (`['1s', '10s', '1m']`; the last entry repeats). @default 0
   */
  retryDelay?: Duration | readonly Duration[];
  /** Longest one attempt may run (`'30s'`, `5000`); no limit when omitted. */
  timeout?: Duration;
  /** Free-form labels. @default [] */
  tags?: readonly string[];
}

/** The normalised shape internals work with: durations already in ms, defaults applied, frozen. */
export interface CompiledRunOptions {
  readonly name: string;
  readonly retries: number;
  readonly retryDelaysMs: readonly number[];
  readonly timeoutMs: number | null;
  readonly tags: readonly string[];
}

function invalid(kind: string, name: string | undefined, message: string, option: string): TesseraError {
  const who = name ? `${kind} "${name}"` : `${kind}()`;
  return new TesseraError('ERR_VALIDATION', `${who}: ${message}`, { details: { option } });
}

/** Validates and normalises {@link RunOptions}; throws `ERR_VALIDATION` naming the offending option. */
export function compileRunOptions(kind: 'flow' | 'task', options: RunOptions | undefined): CompiledRunOptions {
  if (options === null || typeof options !== 'object') {
    throw invalid(kind, undefined, `expected an options object such as { name: "my-${kind}" }, got ${String(options)}`, 'options');
  }
  const { name } = options;
  if (typeof name !== 'string' || name.trim() === '') {
    throw invalid(kind, undefined, `option "name" is required and must be a non-empty string; got ${JSON.stringify(name)}`, 'name');
  }
  const retries = options.retries ?? 0;
  if (!Number.isInteger(retries) || retries < 0) {
    throw invalid(kind, name, `option "retries" must be a non-negative integer; got ${String(retries)}`, 'retries');
  }
  const rawDelays = options.retryDelay ?? 0;
  const delayList: readonly Duration[] = Array.isArray(rawDelays) ? rawDelays : [rawDelays as Duration];
  const retryDelaysMs = delayList.map((d, i) =>
    parseDuration(d, `${kind} "${name}" retryDelay${Array.isArray(rawDelays) ? `[${i}]` : ''}`),
  );
  if (retryDelaysMs.length === 0) retryDelaysMs.push(0);
  let timeoutMs: number | null = null;
  if (options.timeout !== undefined) {
    timeoutMs = parseDuration(options.timeout, `${kind} "${name}" timeout`);
    if (timeoutMs <= 0) throw invalid(kind, name, `option "timeout" must be greater than 0; omit it for no limit`, 'timeout');
  }
  const tags = options.tags ?? [];
  if (!Array.isArray(tags) || tags.some((t) => typeof t !== 'string')) {
    throw invalid(kind, name, 'option "tags" must be an array of strings', 'tags');
  }
  return Object.freeze({
    name,
    retries,
    retryDelaysMs: Object.freeze(retryDelaysMs),
    timeoutMs,
    tags: Object.freeze([...tags]),
  });
}

/** The delay before retry number `retry` (1-based); the last entry of `delays` repeats. */
export function retryDelayFor(delays: readonly number[], retry: number): number {
  if (delays.length === 0) return 0;
  return delays[Math.min(retry, delays.length) - 1] ?? 0;
}
