/**
 * Run state types, as in Prefect. A run's state is a type plus a name: the name is usually the
 * type's own ("Running"), or a sub-state ("Late" and "AwaitingRetry" are Scheduled, "Retrying" is
 * Running).
 */
export const STATE_TYPES = [
  'SCHEDULED',
  'PENDING',
  'RUNNING',
  'COMPLETED',
  'FAILED',
  'CRASHED',
  'CANCELLING',
  'CANCELLED',
  'PAUSED',
] as const;
export type StateType = (typeof STATE_TYPES)[number];

/** The display name of each state type. */
export const STATE_NAMES: Record<StateType, string> = {
  SCHEDULED: 'Scheduled',
  PENDING: 'Pending',
  RUNNING: 'Running',
  COMPLETED: 'Completed',
  FAILED: 'Failed',
  CRASHED: 'Crashed',
  CANCELLING: 'Cancelling',
  CANCELLED: 'Cancelled',
  PAUSED: 'Paused',
};

/** Named sub-states and the type each belongs to. */
export const SUB_STATES = {
  Late: 'SCHEDULED',
  AwaitingRetry: 'SCHEDULED',
  Retrying: 'RUNNING',
} as const satisfies Record<string, StateType>;

export const TERMINAL_STATES: ReadonlySet<StateType> = new Set(['COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED']);

/** True when nothing more can happen to a run in this state (except a server retry rule). */
export function isTerminal(type: StateType): boolean {
  return TERMINAL_STATES.has(type);
}

/** Who or what caused a transition. Every transition records one. */
export type CauseKind = 'worker' | 'flow' | 'person' | 'machine' | 'schedule' | 'server';

export interface StateCause {
  kind: CauseKind;
  /** Worker id, user id, schedule id or server rule name. */
  id: string;
  /** Human-friendly label, e.g. worker name or e-mail. */
  label?: string;
}

/**
 * Legal transitions for flow runs, proposed by a client (worker, flow process, person). The server
 * itself may additionally move a Failed or Crashed run to Scheduled/AwaitingRetry (retry rule) and a
 * lost Pending run back to Scheduled. A run becomes Pending only when a worker claims it (the server
 * refuses Scheduled → Pending from anyone but the run's own credential). Paused holds a run that has
 * not started (Scheduled → Paused → Scheduled): a running process cannot be paused from outside, and
 * a paused run does not hold a concurrency slot.
 */
const FLOW_RUN_TRANSITIONS: Record<StateType, readonly StateType[]> = {
  SCHEDULED: ['PENDING', 'CANCELLED', 'PAUSED', 'SCHEDULED', 'CRASHED'],
  PENDING: ['RUNNING', 'CANCELLING', 'CANCELLED', 'CRASHED', 'FAILED', 'SCHEDULED'],
  RUNNING: ['COMPLETED', 'FAILED', 'CRASHED', 'CANCELLING', 'CANCELLED'],
  CANCELLING: ['CANCELLED', 'CRASHED', 'COMPLETED', 'FAILED'],
  PAUSED: ['SCHEDULED', 'CANCELLED'],
  COMPLETED: [],
  FAILED: [],
  CRASHED: [],
  CANCELLED: [],
};

/** Legal transitions for task runs (reported by the flow process only). */
const TASK_RUN_TRANSITIONS: Record<StateType, readonly StateType[]> = {
  SCHEDULED: ['PENDING', 'RUNNING', 'CANCELLED', 'CRASHED'],
  PENDING: ['RUNNING', 'CANCELLED', 'CRASHED', 'FAILED', 'COMPLETED'],
  RUNNING: ['COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED', 'SCHEDULED'],
  CANCELLING: ['CANCELLED', 'CRASHED'],
  PAUSED: ['RUNNING', 'CANCELLED'],
  COMPLETED: [],
  FAILED: [],
  CRASHED: [],
  CANCELLED: [],
};

/**
 * Returns `null` when moving from `from` to `to` is legal, or the reason it is not.
 * @example checkTransition('flow_run', 'COMPLETED', 'RUNNING') // 'run is already Completed (terminal)…'
 */
export function checkTransition(kind: 'flow_run' | 'task_run', from: StateType, to: StateType): string | null {
  const table = kind === 'flow_run' ? FLOW_RUN_TRANSITIONS : TASK_RUN_TRANSITIONS;
  if (table[from].includes(to)) return null;
  if (isTerminal(from)) {
    return `the ${kind === 'flow_run' ? 'run' : 'task run'} is already ${STATE_NAMES[from]}, a terminal state; it cannot become ${STATE_NAMES[to]}`;
  }
  const allowed = table[from].map((t) => STATE_NAMES[t]).join(', ') || 'nothing';
  return `${STATE_NAMES[from]} cannot become ${STATE_NAMES[to]}; from ${STATE_NAMES[from]} a ${kind === 'flow_run' ? 'run' : 'task run'} can become: ${allowed}`;
}

/** A state as stored and returned by the API. */
export interface State {
  type: StateType;
  name: string;
  message?: string | null;
  timestamp: string;
  cause?: StateCause | null;
}
