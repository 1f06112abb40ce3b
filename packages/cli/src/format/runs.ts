import type { FlowRun, RunError, StateHistoryEntry, TaskRun } from '@tessera/core';
import { formatDuration, isTerminal, STATE_NAMES } from '@tessera/core';
import type { Style } from '../lib/style.js';
import { renderTable } from '../lib/table.js';
import { elapsed, formatDate, formatTime, formatTimestamp, zoneName } from '../lib/time.js';
import { colorByState, formatCause, formatState, formatTrigger, shortId, stateSymbol } from './states.js';

/** Everything `tessera runs show` displays. */
export interface RunDetails {
  run: FlowRun;
  states: StateHistoryEntry[];
  taskRuns: TaskRun[];
}

/** How to render times and colours; explicit so output is reproducible in tests. */
export interface FormatOptions {
  style: Style;
  /** IANA zone times are shown in. */
  timeZone: string;
  /** "Now", for durations of runs still going. */
  now: Date;
}

const LABEL_WIDTH = 11;
const label = (name: string, style: Style) => `  ${style.dim(name.padEnd(LABEL_WIDTH))}`;
const indent = (text: string, width = LABEL_WIDTH + 2) =>
  text
    .split('\n')
    .map((l, i) => (i === 0 ? l : `${' '.repeat(width)}${l}`))
    .join('\n');

/** `attempt 2 of 3`, or `not started` before the first attempt. */
export function formatAttempt(run: Pick<FlowRun, 'attempt' | 'maxRetries'>): string {
  if (run.attempt === 0) return 'not started';
  return `attempt ${run.attempt} of ${run.maxRetries + 1}`;
}

/** Compact JSON when short, indented otherwise. */
export function formatJsonValue(value: unknown, maxInline = 100): string {
  if (value === undefined) return 'undefined';
  const compact = JSON.stringify(value);
  if (compact === undefined) return String(value);
  return compact.length <= maxInline ? compact : JSON.stringify(value, null, 2);
}

/** `TypeError ERR_X: message` followed by the stack frames (without repeating the message). */
export function formatRunError(error: RunError, style: Style): string {
  const head = `${error.name}${error.code ? ` ${error.code}` : ''}: ${error.message}`;
  const lines = [style.red(head)];
  if (error.stack) {
    const frames = error.stack.split('\n').filter((l) => /^\s+at /.test(l));
    for (const f of frames) lines.push(style.dim(f.trim()));
  }
  return lines.join('\n');
}

function runDuration(run: FlowRun, now: Date): string | undefined {
  if (!run.startTime) return undefined;
  const end = run.endTime ?? (isTerminal(run.state.type) ? run.updatedAt : now.toISOString());
  const ms = elapsed(run.startTime, end);
  return ms === undefined ? undefined : formatDuration(ms);
}

/**
 * The state history, one transition per line: time (the date when it changes), state, the attempt
 * when it changes, what caused it, and the state's message.
 */
export function formatStateHistory(states: readonly StateHistoryEntry[], options: FormatOptions): string[] {
  const { style, timeZone } = options;
  const sorted = [...states].sort((a, b) => a.timestamp.localeCompare(b.timestamp));
  let lastDate = '';
  let lastAttempt = -1;
  const rows = sorted.map((s) => {
    const date = formatDate(s.timestamp, timeZone);
    const time = formatTime(s.timestamp, timeZone, { ms: true });
    const when = date === lastDate ? `${' '.repeat(date.length)} ${time}` : `${date} ${time}`;
    lastDate = date;
    const attempt = s.attempt !== lastAttempt && s.attempt > 0 ? `attempt ${s.attempt}` : '';
    lastAttempt = s.attempt;
    return [style.dim(when), formatState(s, style), attempt, `by ${formatCause(s.cause)}`, s.message ? style.dim(s.message) : ''];
  });
  if (rows.length === 0) return [style.dim('(no transitions recorded)')];
  return renderTable(['', '', '', '', ''], rows, style).split('\n').slice(1);
}

/** Task-run display: one line per task, or per name when a task ran many times (`transform ×12`). */
export function formatTaskRuns(taskRuns: readonly TaskRun[], options: FormatOptions): string[] {
  const { style, now } = options;
  if (taskRuns.length === 0) return [style.dim('(no task runs)')];
  const sorted = [...taskRuns].sort((a, b) => (a.startTime ?? a.createdAt).localeCompare(b.startTime ?? b.createdAt));
  // Calls of the same task (greet-1, greet-2 …) share a task key; many calls become one line.
  const groups = new Map<string, TaskRun[]>();
  for (const t of sorted) groups.set(t.taskKey || t.name, [...(groups.get(t.taskKey || t.name) ?? []), t]);
  const rows: string[][] = [];
  for (const [key, runs] of groups) {
    const durationOf = (t: TaskRun) =>
      elapsed(t.startTime, t.endTime ?? (t.startTime && !isTerminal(t.state.type) ? now.toISOString() : null));
    if (runs.length === 1) {
      const t = runs[0] as TaskRun;
      const d = durationOf(t);
      const retried = t.attempt > 1 ? (t.attempt === 2 ? 'retried once' : `retried ${t.attempt - 1} times`) : '';
      const failed = t.state.type === 'FAILED' || t.state.type === 'CRASHED';
      const note = failed && t.maxRetries > 0 ? `attempt ${t.attempt} of ${t.maxRetries + 1}` : retried;
      rows.push([
        t.name,
        formatState(t.state, style),
        d === undefined ? '' : formatDuration(d),
        note,
        t.error ? style.red(t.error.message.split('\n')[0] ?? '') : '',
      ]);
    } else {
      const name = key;
      const counts = new Map<string, { type: TaskRun['state']['type']; n: number }>();
      for (const t of runs) {
        const c = counts.get(t.state.name) ?? { type: t.state.type, n: 0 };
        c.n++;
        counts.set(t.state.name, c);
      }
      const summary = [...counts]
        .map(([stateName, c]) => colorByState(c.type, `${stateSymbol(c.type)} ${c.n} ${stateName}`, style))
        .join(', ');
      const total = runs.reduce((sum, t) => sum + (durationOf(t) ?? 0), 0);
      const retried = runs.filter((t) => t.attempt > 1).length;
      const firstError = runs.find((t) => t.error)?.error;
      rows.push([
        `${name} ×${runs.length}`,
        summary,
        `${formatDuration(total)} total`,
        retried ? `${retried} retried` : '',
        firstError ? style.red(firstError.message.split('\n')[0] ?? '') : '',
      ]);
    }
  }
  return renderTable(['', '', '', '', ''], rows, style).split('\n').slice(1);
}

/**
 * Renders `tessera runs show`: what ran, where it is now and why, each transition with its cause,
 * the task runs, the error with its stack, and the result. Pure: all I/O stays in the command.
 */
export function formatRunDetails(details: RunDetails, options: FormatOptions): string {
  const { run, states, taskRuns } = details;
  const { style, timeZone, now } = options;
  const out: string[] = [];
  const title = run.deploymentName ?? run.flowName;
  out.push(`${style.bold(title)} / run ${style.bold(shortId(run.id))}  ${style.dim(run.name)}`);
  const stateText = `${formatState(run.state, style)}  ${formatAttempt(run)}${run.state.message ? `  ${style.dim(run.state.message)}` : ''}`;
  out.push(`${label('state', style)}${stateText}`);
  const where = [run.flowName];
  if (run.deploymentName) where.push(`deployment ${run.deploymentName}`);
  if (run.workPool) where.push(`pool ${run.workPool}${run.workQueue ? `/${run.workQueue}` : ''}`);
  out.push(`${label('flow', style)}${where.join('  ·  ')}`);
  out.push(`${label('triggered', style)}by ${formatTrigger(run)}  ${style.dim(`at ${formatTimestamp(run.createdAt, timeZone)}`)}`);
  const timing: string[] = [];
  if (run.startTime) timing.push(`started ${formatTimestamp(run.startTime, timeZone)}`);
  else if (run.state.type === 'SCHEDULED')
    timing.push(`expected to start ${formatTimestamp(run.nextScheduledStartTime ?? run.expectedStartTime, timeZone)}`);
  if (run.endTime)
    timing.push(
      `ended ${formatTime(run.endTime, timeZone, { date: formatDate(run.endTime, timeZone) !== formatDate(run.startTime ?? run.endTime, timeZone) })}`,
    );
  const took = runDuration(run, now);
  if (took) timing.push(run.endTime || isTerminal(run.state.type) ? `took ${took}` : `running for ${took}`);
  if (timing.length) out.push(`${label('time', style)}${timing.join(style.dim('  ·  '))}`);
  if (run.workerName || run.workerId) out.push(`${label('worker', style)}${run.workerName ?? shortId(run.workerId ?? '')}`);
  if (Object.keys(run.parameters).length > 0) out.push(`${label('parameters', style)}${indent(formatJsonValue(run.parameters))}`);
  if (run.tags.length > 0) out.push(`${label('tags', style)}${run.tags.join(', ')}`);
  const zoneNote = style.dim(
    `(times in ${zoneName(timeZone, run.createdAt)}${zoneName(timeZone, run.createdAt) === timeZone ? '' : `, ${timeZone}`})`,
  );
  out.push(`${label('states', style)}${zoneNote}`);
  for (const l of formatStateHistory(states, options)) out.push(`${' '.repeat(LABEL_WIDTH + 2)}${l}`);
  const n = taskRuns.length;
  out.push(`${label('tasks', style)}${n === 0 ? style.dim('(no task runs)') : style.dim(`${n} task run${n === 1 ? '' : 's'}`)}`);
  if (n > 0) for (const l of formatTaskRuns(taskRuns, options)) out.push(`${' '.repeat(LABEL_WIDTH + 2)}${l}`);
  if (run.error) out.push(`${label('error', style)}${indent(formatRunError(run.error, style))}`);
  if (run.state.type === 'COMPLETED' || (run.result !== null && run.result !== undefined)) {
    out.push(`${label('result', style)}${indent(formatJsonValue(run.result ?? null))}`);
  }
  return out.join('\n');
}

/** One row per run for `tessera runs ls`. */
export function formatRunsTable(runs: readonly FlowRun[], options: FormatOptions): string {
  const { style, timeZone, now } = options;
  if (runs.length === 0) return style.dim('no runs match; start one with `tessera deployments run NAME` or `tessera run FILE.ts:flow`');
  const zone = zoneName(timeZone, now);
  const rows = runs.map((r) => {
    const started = r.startTime ?? r.nextScheduledStartTime ?? r.expectedStartTime;
    const sameDay = formatDate(started, timeZone) === formatDate(now, timeZone);
    return [
      shortId(r.id),
      r.deploymentName ?? `${r.flowName} (ad hoc)`,
      r.name,
      formatState(r.state, style),
      r.attempt > 0 ? `${r.attempt}/${r.maxRetries + 1}` : '-',
      `${r.startTime ? '' : style.dim('expected ')}${formatTime(started, timeZone, { date: !sameDay })}`,
      runDuration(r, now) ?? '',
      formatTrigger(r),
    ];
  });
  return renderTable(['ID', 'DEPLOYMENT', 'NAME', 'STATE', 'ATTEMPT', `START (${zone})`, 'DURATION', 'TRIGGERED BY'], rows, style);
}

/** One line for a state transition while following a run: `02:00:00 CET  ▶ Running  attempt 1  by worker w-1`. */
export function formatStateChangeLine(entry: StateHistoryEntry, options: FormatOptions): string {
  const { style, timeZone } = options;
  const t = entry.timestamp;
  const parts = [
    style.dim(`${formatTime(t, timeZone)} ${zoneName(timeZone, t)}`),
    formatState(entry, style),
    entry.attempt > 0 ? `attempt ${entry.attempt}` : '',
    entry.cause ? style.dim(`by ${formatCause(entry.cause)}`) : '',
    entry.message ? style.dim(entry.message.split('\n')[0] ?? '') : '',
  ];
  return parts.filter(Boolean).join('  ');
}

/** One line for a task-run state change: `02:00:01 CET    extract  ✓ Completed  3.1 s`. */
export function formatTaskChangeLine(
  task: {
    name: string;
    state: { type: TaskRun['state']['type']; name?: string; message?: string | null };
    attempt: number;
    durationMs?: number | undefined;
    timestamp: string;
  },
  options: FormatOptions,
): string {
  const { style, timeZone } = options;
  const state = { type: task.state.type, name: task.state.name ?? STATE_NAMES[task.state.type] };
  const parts = [
    style.dim(`${formatTime(task.timestamp, timeZone)} ${zoneName(timeZone, task.timestamp)}`),
    `  task ${style.bold(task.name)}`,
    formatState(state, style),
    task.durationMs !== undefined ? formatDuration(task.durationMs) : '',
    task.attempt > 1 ? `attempt ${task.attempt}` : '',
    task.state.message ? style.dim(task.state.message.split('\n')[0] ?? '') : '',
  ];
  return parts.filter(Boolean).join('  ');
}
