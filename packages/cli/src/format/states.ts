import type { FlowRun, Schedule, ScheduleSpec, State, StateCause, StateType } from '@tessera/core';
import { formatDuration } from '@tessera/core';
import type { Style } from '../lib/style.js';

const SYMBOLS: Record<StateType, string> = {
  SCHEDULED: '◷',
  PENDING: '◌',
  RUNNING: '▶',
  COMPLETED: '✓',
  FAILED: '✗',
  CRASHED: '✗',
  CANCELLING: '⊘',
  CANCELLED: '⊘',
  PAUSED: '‖',
};

/** The symbol of a state type (`✓` Completed, `✗` Failed or Crashed, `▶` Running …). */
export function stateSymbol(type: StateType): string {
  return SYMBOLS[type];
}

/** Colours a piece of text by state type; colour only reinforces the symbol and name. */
export function colorByState(type: StateType, text: string, style: Style): string {
  switch (type) {
    case 'COMPLETED':
      return style.green(text);
    case 'FAILED':
    case 'CRASHED':
      return style.red(text);
    case 'CANCELLING':
    case 'CANCELLED':
    case 'PAUSED':
      return style.yellow(text);
    case 'RUNNING':
      return style.cyan(text);
    default:
      return style.blue(text);
  }
}

/** `✓ Completed`, `◷ Late`: symbol and state name, coloured. */
export function formatState(state: Pick<State, 'type' | 'name'>, style: Style): string {
  return colorByState(state.type, `${stateSymbol(state.type)} ${state.name}`, style);
}

/** Short id for display: the first 8 characters (the server resolves unambiguous prefixes). */
export function shortId(id: string): string {
  return id.slice(0, 8);
}

/**
 * Who or what caused a transition: `worker w-1`, `ana@example.com`, `flow process, attempt 1`,
 * `schedule cron "0 2 * * *"`, `server: retry rule`.
 */
export function formatCause(cause: StateCause | null | undefined): string {
  if (!cause) return 'unknown';
  const who = cause.label ?? cause.id;
  switch (cause.kind) {
    case 'worker':
      return `worker ${who}`;
    case 'flow':
      return cause.label ?? 'flow process';
    case 'person':
      return who;
    case 'machine':
      return `machine ${who}`;
    case 'schedule':
      return `schedule ${cause.label ?? shortId(cause.id)}`;
    case 'server':
      return `server: ${who}`;
    default:
      return who;
  }
}

/** How a run was triggered: `schedule "0 2 * * *"`, `ana@example.com (manual)`, `tessera run by ana@example.com`. */
export function formatTrigger(run: Pick<FlowRun, 'triggerKind' | 'triggeredBy'>): string {
  switch (run.triggerKind) {
    case 'schedule':
      return formatCause(run.triggeredBy);
    case 'adhoc':
      return `${formatCause(run.triggeredBy)} via \`tessera run\``;
    case 'manual':
      return `${formatCause(run.triggeredBy)} (manual run)`;
    case 'api':
      return `${formatCause(run.triggeredBy)} via the API`;
    default:
      return formatCause(run.triggeredBy);
  }
}

/** `cron "0 2 * * *" (Europe/Paris)`, `every 10 m`; `(paused)` when inactive. */
export function formatSchedule(s: Schedule | ScheduleSpec): string {
  const cron = 'cron' in s ? s.cron : null;
  const interval = 'intervalMs' in s ? s.intervalMs : 'interval' in s ? s.interval : null;
  let text = cron ? `cron "${cron}"` : interval ? `every ${formatDuration(interval).replace(/ 0 [sm]$/, '')}` : 'schedule';
  if (s.timezone && s.timezone !== 'UTC') text += ` (${s.timezone})`;
  if (s.active === false) text += ' (paused)';
  return text;
}
