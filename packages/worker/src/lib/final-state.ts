import type { ProposeStateRequest, StateType } from '@tessera/core';
import type { ProcessExit } from './flow-process.js';

/** Why the worker is deciding a run's final state. */
export interface FinalStateInput {
  exit: ProcessExit | undefined;
  /** The run's state type as last read from the server, if it could be read. */
  current: StateType | undefined;
  /** The server asked this worker to cancel the run. */
  cancelRequested: boolean;
  /** The worker stopped the process because it is shutting down. */
  shutdown: boolean;
  /** A reason the process was never started (missing working directory…). */
  notStarted?: string;
  stderrTail: readonly string[];
}

/** Longest crash message; stderr lines are dropped from the front to fit. */
const MAX_MESSAGE = 4000;

function describeExit(exit: ProcessExit | undefined): string {
  if (!exit) return 'flow process was not started';
  if (exit.error) return `flow process could not be started (${exit.error.message})`;
  return `flow process exited with code ${exit.code ?? 'none'} (signal ${exit.signal ?? 'none'})`;
}

function withStderr(head: string, tail: readonly string[]): string {
  if (tail.length === 0) return `${head}; it wrote nothing to stderr`;
  const lines = [...tail];
  let message = `${head}; last stderr:\n${lines.join('\n')}`;
  while (message.length > MAX_MESSAGE && lines.length > 1) {
    lines.shift();
    message = `${head}; last stderr:\n…\n${lines.join('\n')}`;
  }
  return message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE)}…` : message;
}

/**
 * What the worker proposes for a run whose process ended while the run was not terminal:
 * CANCELLED when a cancellation was asked for (by the server, or seen as Cancelling), otherwise
 * CRASHED with a message that says how the process ended and what it last wrote to stderr.
 */
export function decideFinalState(
  input: FinalStateInput,
): ProposeStateRequest & { state: { type: Extract<StateType, 'CANCELLED' | 'CRASHED'> } } {
  if (input.cancelRequested || input.current === 'CANCELLING') {
    const how = input.notStarted ? 'before its flow process started' : describeExit(input.exit);
    return { state: { type: 'CANCELLED', message: `cancelled; ${how}` } };
  }
  if (input.shutdown) {
    return { state: { type: 'CRASHED', message: `worker shut down; ${describeExit(input.exit)}` } };
  }
  const message = input.notStarted
    ? `flow process could not be started: ${input.notStarted}`
    : withStderr(`${describeExit(input.exit)} before reporting a final state`, input.stderrTail);
  return { state: { type: 'CRASHED', message }, error: { name: 'FlowProcessCrashed', message } };
}
