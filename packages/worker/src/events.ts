import type { FlowRun, StateType } from '@tessera/core';

/** The worker claimed a run from its pool (its process starts right away). */
export interface ClaimedEvent {
  type: 'claimed';
  runId: string;
  /** The run as the server handed it out (the credential is not included). */
  run: FlowRun;
}

/** The run's flow process was spawned. */
export interface StartedEvent {
  type: 'started';
  runId: string;
  pid: number;
}

/**
 * The worker is stopping a run's process: the server asked to cancel it (`requested`: SIGTERM,
 * then SIGKILL after `cancelGraceMs`), no longer expects this worker to run it (`forgotten`:
 * SIGKILL, nothing reported), or the worker is shutting down (`shutdown`).
 */
export interface CancelledEvent {
  type: 'cancelled';
  runId: string;
  reason: 'requested' | 'forgotten' | 'shutdown';
}

/** The run's flow process ended (or could not be started: `code` and `signal` both null). */
export interface ExitedEvent {
  type: 'exited';
  runId: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  durationMs: number;
}

/** The flow process ended without reporting a final state; the worker is reporting CRASHED. */
export interface CrashedEvent {
  type: 'crashed';
  runId: string;
  message: string;
}

/**
 * The worker is done with a run.
 * - `already-final`: the flow process had reported a terminal state itself; nothing was sent.
 * - `accepted`: the worker's CRASHED or CANCELLED proposal is now the run's state.
 * - `aborted`: the server answered ABORT; `state` is what it holds.
 * - `conflict`: the server answered 409 (someone else, e.g. zombie detection, already decided).
 * - `failed`: the server could not be reached for `serverRetryForMs`; the report is lost.
 */
export interface ReportedEvent {
  type: 'reported';
  runId: string;
  outcome: 'already-final' | 'accepted' | 'aborted' | 'conflict' | 'failed';
  /** The run's state as far as the worker knows, when it knows. */
  state: StateType | null;
  /** The server's reason, with `conflict` and `failed`. */
  message?: string;
}

/** A poll failed. Emitted once per outage (and again if the error changes), not per attempt. */
export interface PollErrorEvent {
  type: 'pollError';
  error: Error;
}

/** Everything {@link WorkerOptions.onEvent} receives, for display by the CLI. */
export type WorkerEvent = ClaimedEvent | StartedEvent | CancelledEvent | ExitedEvent | CrashedEvent | ReportedEvent | PollErrorEvent;
