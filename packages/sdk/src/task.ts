import { type CompiledRunOptions, compileRunOptions, type RunOptions } from './lib/options.js';
import { callTask, type TaskDefinition } from './lib/task-runner.js';

const TASK = Symbol.for('@tessera/sdk:task');

/** Options of {@link task}. */
export interface TaskOptions extends RunOptions {}

/** The first parameter of a task function, mapped over by `Task.map`. */
export type FirstArg<A extends unknown[]> = A extends [infer F, ...unknown[]] ? F : A extends (infer E)[] ? E : never;
/** The parameters after the first. */
export type RestArgs<A extends unknown[]> = A extends [unknown, ...infer R] ? R : A;

/**
 * A task: call it like the function it wraps. Inside a flow run each call is a task run, reported
 * to the server, with the task's retries and timeout; outside one it runs locally with the same
 * retries and timeout.
 */
export interface Task<A extends unknown[], R> {
  (...args: A): Promise<R>;
  /**
   * Calls the task once per item (each call is its own task run, all in parallel) and resolves to
   * the results in order; `rest` is passed unchanged to every call. Rejects with the first
   * failure, like `Promise.all`.
   * @example const pages = await fetchPage.map([1, 2, 3]);
   */
  map(items: Iterable<FirstArg<A>>, ...rest: RestArgs<A>): Promise<R[]>;
  /** The normalised options (durations in ms). */
  readonly options: CompiledRunOptions;
}

/**
 * Defines a task.
 *
 * @param options `name` is required; `retries` @default 0, `retryDelay` @default 0 (ms, `'10s'`, or an
 *   array for backoff whose last entry repeats), `timeout` per attempt (no limit when omitted).
 * @throws TesseraError `ERR_VALIDATION` / `ERR_INVALID_DURATION` naming the bad option.
 * @example
 * export const fetchPage = task({ name: 'fetch-page', retries: 3, retryDelay: ['1s', '5s'], timeout: '30s' },
 *   async (page: number) => (await fetch(`${api}?page=${page}`, { signal: getRunContext().signal })).json());
 */
export function task<A extends unknown[], R>(options: TaskOptions, fn: (...args: A) => Promise<R>): Task<A, R> {
  if (typeof fn !== 'function') throw new TypeError(`task "${options?.name}": the second argument must be the task's async function`);
  const compiled = compileRunOptions('task', options);
  const def: TaskDefinition = { options: compiled, fn: fn as unknown as TaskDefinition['fn'] };
  const call = ((...args: A) => callTask(def, args)) as Task<A, R>;
  const map = (items: Iterable<FirstArg<A>>, ...rest: RestArgs<A>): Promise<R[]> =>
    Promise.all(Array.from(items, (item) => callTask(def, [item, ...rest]))) as Promise<R[]>;
  Object.defineProperties(call, {
    name: { value: compiled.name },
    map: { value: map },
    options: { value: compiled, enumerable: true },
    [TASK]: { value: def },
  });
  return call;
}

/** True when `value` was made by {@link task}. */
export function isTask(value: unknown): value is Task<unknown[], unknown> {
  return typeof value === 'function' && TASK in value;
}
