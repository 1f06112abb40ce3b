import { z } from 'zod';
import type { RunContext } from './context.js';
import { type FlowDefinition, runFlowLocally, runFlowNested } from './lib/flow-runner.js';
import { type CompiledRunOptions, compileRunOptions, type RunOptions } from './lib/options.js';
import { storage } from './lib/scope.js';

const FLOW = Symbol.for('@tessera/sdk:flow');

/** Options of {@link flow}. */
export interface FlowOptions<S extends z.ZodObject | undefined = z.ZodObject | undefined> extends RunOptions {
  /**
   * A zod 4 object schema for the flow's parameters, validated before the run starts (defaults
   * applied). Its JSON Schema is stored with deployments so the UI and CLI can check input too.
   */
  parameters?: S;
}

/** The normalised options of a flow. */
export interface CompiledFlowOptions extends CompiledRunOptions {
  readonly parameters: z.ZodObject | null;
}

/**
 * A flow: call it to run it. Outside a Tessera run the call executes locally (no server): tasks still
 * retry and time out, nothing is reported. Inside a run it executes inline as part of that run.
 * Started by a worker or `tessera run`, it is a tracked flow run with its own identity.
 */
export interface Flow<P = Record<string, unknown>, R = unknown> {
  (...params: FlowArgs<P>): Promise<R>;
  /** The normalised options (durations in ms). */
  readonly options: CompiledFlowOptions;
}

/**
 * The arguments of a flow call: the parameters object, optional when every field is. With
 * `P = never` (see {@link AnyFlow}) every flow is assignable.
 */
export type FlowArgs<P> = [P] extends [never] ? [params: never] : Partial<P> extends P ? [params?: P] : [params: P];

/** Any flow, whatever its parameters and result; what `isFlow` narrows to. */
export type AnyFlow = Flow<never, unknown>;

/** What {@link describeFlow} returns: a flow's settings as plain JSON. */
export interface FlowDescription {
  name: string;
  retries: number;
  retryDelaysMs: number[];
  timeoutMs: number | null;
  tags: string[];
  /** JSON Schema (draft 2020-12) of the parameters as callers pass them, or null without a schema. */
  parameterSchema: Record<string, unknown> | null;
}

/**
 * Defines a flow.
 *
 * @param options `name` is required; `retries` @default 0, `retryDelay` @default 0, `timeout` (no limit
 *   when omitted), `tags`, `parameters` (zod object schema).
 * @param fn receives the validated parameters and the {@link RunContext}.
 * @throws TesseraError `ERR_VALIDATION` / `ERR_INVALID_DURATION` naming the bad option.
 * @example
 * export const nightly = flow(
 *   { name: 'nightly-etl', retries: 2, retryDelay: '1m', parameters: z.object({ day: z.string() }) },
 *   async ({ day }, ctx) => { ctx.logger.info('loading %s', day); return load(day); },
 * );
 */
export function flow<S extends z.ZodObject, R>(
  options: FlowOptions<S> & { parameters: S },
  fn: (params: z.output<S>, ctx: RunContext) => Promise<R>,
): Flow<z.input<S>, R>;
export function flow<P extends object = Record<string, unknown>, R = unknown>(
  options: FlowOptions<undefined>,
  fn: (params: P, ctx: RunContext) => Promise<R>,
): Flow<P, R>;
export function flow(options: FlowOptions, fn: (params: never, ctx: RunContext) => Promise<unknown>): Flow<object, unknown> {
  if (typeof fn !== 'function') throw new TypeError(`flow "${options?.name}": the second argument must be the flow's async function`);
  const compiled = compileRunOptions('flow', options);
  const schema = options.parameters ?? null;
  if (schema !== null && !isZodObject(schema)) {
    throw new TypeError(`flow "${compiled.name}": option "parameters" must be a zod object schema, e.g. z.object({ day: z.string() })`);
  }
  const def: FlowDefinition = { options: compiled, schema, fn };
  const call = (params?: unknown): Promise<unknown> => {
    const parent = storage.getStore();
    return parent ? runFlowNested(def, params, parent) : runFlowLocally(def, params);
  };
  Object.defineProperties(call, {
    name: { value: compiled.name },
    options: { value: Object.freeze({ ...compiled, parameters: schema }), enumerable: true },
    [FLOW]: { value: def },
  });
  return call as unknown as Flow<object, unknown>;
}

/** True when `value` was made by {@link flow} (also across copies of the SDK). */
export function isFlow(value: unknown): value is AnyFlow {
  return typeof value === 'function' && FLOW in value;
}

/** The compiled definition behind a flow; for the engine. */
export function flowDefinition(value: AnyFlow): FlowDefinition {
  return (value as unknown as Record<symbol, FlowDefinition>)[FLOW] as FlowDefinition;
}

/**
 * A flow's settings as plain JSON, e.g. for `tessera deploy` to send with a deployment.
 * @example describeFlow(nightly).parameterSchema // { type: 'object', properties: { day: … } }
 */
export function describeFlow(value: AnyFlow): FlowDescription {
  if (!isFlow(value)) throw new TypeError('describeFlow() expects a flow made with flow()');
  const { options, schema } = flowDefinition(value);
  return {
    name: options.name,
    retries: options.retries,
    retryDelaysMs: [...options.retryDelaysMs],
    timeoutMs: options.timeoutMs,
    tags: [...options.tags],
    parameterSchema: schema ? (z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>) : null,
  };
}

/**
 * Duck-typed, not `instanceof`: the user's project may load its own copy of zod 4, whose classes
 * differ from the SDK's.
 */
function isZodObject(value: unknown): value is z.ZodObject {
  const internals = (value as { _zod?: { def?: { type?: unknown } } } | null)?._zod;
  return internals?.def?.type === 'object' && typeof (value as { safeParse?: unknown }).safeParse === 'function';
}
