import type { FlowRun, StateType, TaskRunEvent } from '@tessera/core';
import { formatDuration, isTerminal, STATE_NAMES } from '@tessera/core';
import type { Style } from '../lib/style.js';
import { visibleWidth } from '../lib/style.js';
import { colorByState, formatState, shortId, stateSymbol } from './states.js';

interface TaskView {
  id: string;
  /** Calls of the same task share it (`greet` for greet-1, greet-2 …). */
  key: string;
  name: string;
  type: StateType;
  stateName: string;
  attempt: number;
  startedAt?: number;
  endedAt?: number;
}

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/**
 * The state of a run followed live (`tessera run`): the flow run and each task run, fed by the
 * SDK's events. Pure: rendering is separate from the terminal, so it can be tested.
 */
export class RunProgress {
  run: FlowRun | undefined;
  private readonly tasks = new Map<string, TaskView>();
  private readonly startedAt: number;

  constructor(now = Date.now()) {
    this.startedAt = now;
  }

  /** Records a flow-run state. */
  applyRun(run: FlowRun): void {
    this.run = run;
  }

  /** Records a task-run event; returns the task's duration when the event ended it. */
  applyTask(e: TaskRunEvent): { durationMs?: number } {
    const t = Date.parse(e.timestamp);
    const view = this.tasks.get(e.taskRunId) ?? {
      id: e.taskRunId,
      key: e.taskKey || e.name,
      name: e.name,
      type: e.state.type,
      stateName: '',
      attempt: e.attempt,
    };
    view.type = e.state.type;
    view.stateName = e.state.name ?? STATE_NAMES[e.state.type];
    view.attempt = e.attempt;
    if (e.state.type === 'RUNNING' && view.startedAt === undefined) view.startedAt = t;
    if (isTerminal(e.state.type)) view.endedAt = t;
    this.tasks.set(e.taskRunId, view);
    return isTerminal(e.state.type) && view.startedAt !== undefined ? { durationMs: t - view.startedAt } : {};
  }

  /** Counts of task runs: total, finished, failed. */
  counts(): { total: number; done: number; failed: number; running: number } {
    let done = 0;
    let failed = 0;
    let running = 0;
    for (const t of this.tasks.values()) {
      if (isTerminal(t.type)) done++;
      if (t.type === 'FAILED' || t.type === 'CRASHED') failed++;
      if (t.type === 'RUNNING') running++;
    }
    return { total: this.tasks.size, done, failed, running };
  }

  /**
   * The compact live view: a header (spinner, run, state, elapsed, task counts) and one line of
   * task chips (`✓ extract 3.1 s  ▶ transform ×12 (8/12)  ◌ load`), cut to `width`.
   */
  render(options: { style: Style; now: number; frame: number; width: number; title: string }): string[] {
    const { style, now, frame, width, title } = options;
    const spinner = style.cyan(SPINNER[frame % SPINNER.length] ?? '-');
    const state = this.run ? formatState(this.run.state, style) : style.dim('starting');
    const id = this.run ? ` run ${shortId(this.run.id)}` : '';
    const c = this.counts();
    const tasks = c.total === 0 ? '' : `  ${style.dim(`tasks ${c.done}/${c.total} done${c.failed ? `, ${c.failed} failed` : ''}`)}`;
    const header = `${spinner} ${style.bold(title)}${id}  ${state}  ${style.dim(formatDuration(now - this.startedAt))}${tasks}`;
    const chips = this.chips(style, now);
    const lines = [truncate(header, width)];
    if (chips.length) lines.push(truncate(fitChips(chips, width - 2), width));
    return lines;
  }

  private chips(style: Style, now: number): string[] {
    const groups = new Map<string, TaskView[]>();
    for (const t of this.tasks.values()) groups.set(t.key, [...(groups.get(t.key) ?? []), t]);
    const out: string[] = [];
    for (const [key, views] of groups) {
      if (views.length === 1) {
        const v = views[0] as TaskView;
        const name = v.name;
        const d = v.startedAt === undefined ? '' : ` ${formatDuration((v.endedAt ?? now) - v.startedAt)}`;
        const retry = v.attempt > 1 ? ` (attempt ${v.attempt})` : '';
        out.push(colorByState(v.type, `${stateSymbol(v.type)} ${name}`, style) + style.dim(`${d}${retry}`));
      } else {
        const done = views.filter((v) => isTerminal(v.type)).length;
        const type: StateType = views.some((v) => v.type === 'FAILED' || v.type === 'CRASHED')
          ? 'FAILED'
          : views.some((v) => !isTerminal(v.type))
            ? 'RUNNING'
            : views.every((v) => v.type === 'COMPLETED')
              ? 'COMPLETED'
              : 'CANCELLED';
        out.push(colorByState(type, `${stateSymbol(type)} ${key} ×${views.length}`, style) + style.dim(` (${done}/${views.length})`));
      }
    }
    return out;
  }
}

function fitChips(chips: string[], width: number): string {
  let line = '';
  for (let i = 0; i < chips.length; i++) {
    const next = line ? `${line}   ${chips[i]}` : (chips[i] as string);
    const rest = chips.length - i - 1;
    const more = rest > 0 ? `   +${rest} more` : '';
    if (visibleWidth(next) + visibleWidth(more) > width && line) return `  ${line}   +${chips.length - i} more`;
    line = next;
  }
  return `  ${line}`;
}

/** Cuts a string to a visible width, keeping ANSI escapes intact and resetting after a cut. */
export function truncate(s: string, width: number): string {
  if (visibleWidth(s) <= width) return s;
  let out = '';
  let seen = 0;
  for (let i = 0; i < s.length; ) {
    if (s[i] === '\x1b') {
      // biome-ignore lint/suspicious/noControlCharactersInRegex: matching ANSI escapes is the point
      const m = /^\x1b\[[0-9;]*[A-Za-z]/.exec(s.slice(i));
      if (m) {
        out += m[0];
        i += m[0].length;
        continue;
      }
    }
    const ch = String.fromCodePoint(s.codePointAt(i) as number);
    if (seen >= width - 1) {
      return `${out}…\x1b[0m`;
    }
    out += ch;
    seen++;
    i += ch.length;
  }
  return out;
}
