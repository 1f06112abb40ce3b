/**
 * `@tessera/sdk`: define flows and tasks, log, and get identity tokens from inside runs.
 * @packageDocumentation
 */
export { getRunContext, type RunContext } from './context.js';
export { TaskRunError, type TaskRunErrorOptions } from './errors.js';
export type { RunEvent } from './events.js';
export {
  type AnyFlow,
  type CompiledFlowOptions,
  describeFlow,
  type Flow,
  type FlowArgs,
  type FlowDescription,
  type FlowOptions,
  flow,
  isFlow,
} from './flow.js';
export { type DpopBoundToken, type DpopProofOptions, type IdentityTokenOptions, identity } from './identity.js';
export type { CompiledRunOptions, RunOptions } from './lib/options.js';
export { getLogger, type Logger, type LogLevel, log } from './logging.js';
export { type RunFlowAttachedOptions, type RunFlowAttachedResult, runFlowAttached } from './runner/attached.js';
export { loadFlowFromEntrypoint } from './runner/entrypoint.js';
export { runFlowProcess } from './runner/process.js';
export { type FirstArg, isTask, type RestArgs, type Task, type TaskOptions, task } from './task.js';
