/**
 * `@tessera/worker`: claims runs of a work pool from the Tessera server and executes each in its
 * own flow process, carrying the run's credential.
 * @packageDocumentation
 */
export type {
  CancelledEvent,
  ClaimedEvent,
  CrashedEvent,
  ExitedEvent,
  PollErrorEvent,
  ReportedEvent,
  StartedEvent,
  WorkerEvent,
} from './events.js';
export type { StopOptions, WorkerLogger, WorkerOptions } from './options.js';
export { createWorker, Worker } from './worker.js';
