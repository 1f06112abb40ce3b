import type { ApiClient, FlowRun, LogEntry, StateHistoryEntry, TaskRun } from '@tessera/core';
import { isTerminal } from '@tessera/core';

/** Callbacks of {@link followRun}. */
export interface FollowRunHandlers {
  /** Each new state transition, oldest first (also those between two polls). */
  onState?: (entry: StateHistoryEntry, run: FlowRun) => void;
  /** Each task run whose state changed since the last poll. */
  onTask?: (task: TaskRun) => void;
  /** Each new log line. */
  onLog?: (entry: LogEntry) => void;
}

/** Options of {@link followRun}. */
export interface FollowRunOptions extends FollowRunHandlers {
  /** Poll period, ms. @default 1000 */
  intervalMs?: number;
  signal?: AbortSignal;
  /** Report transitions that happened before following started. @default true */
  includeHistory?: boolean;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

/**
 * Follows a run until it reaches a terminal state, by polling the REST API, and returns the run
 * in that state. Transitions are read from the state history, so none is missed between polls.
 */
export async function followRun(client: ApiClient, runId: string, options: FollowRunOptions = {}): Promise<FlowRun> {
  const interval = options.intervalMs ?? 1000;
  const seenStates = new Set<string>();
  const taskStates = new Map<string, string>();
  let afterId: number | undefined;
  let first = true;
  for (;;) {
    const run = await client.getFlowRun(runId);
    // Transitions and task changes seen in this poll, replayed in time order.
    const changes: { at: string; emit: () => void }[] = [];
    const { onState, onTask } = options;
    if (onState) {
      const { items } = await client.getFlowRunStates(run.id);
      for (const s of items) {
        if (seenStates.has(s.id)) continue;
        seenStates.add(s.id);
        if (first && options.includeHistory === false) continue;
        changes.push({ at: s.timestamp, emit: () => onState(s, run) });
      }
    }
    if (onTask) {
      const { items } = await client.listTaskRuns(run.id);
      for (const t of items) {
        const key = `${t.state.type}/${t.state.name}/${t.attempt}`;
        if (taskStates.get(t.id) === key) continue;
        taskStates.set(t.id, key);
        if (first && options.includeHistory === false) continue;
        changes.push({ at: t.state.timestamp, emit: () => onTask(t) });
      }
    }
    changes.sort((x, y) => x.at.localeCompare(y.at));
    for (const c of changes) c.emit();
    if (options.onLog) afterId = await drainLogs(client, run.id, afterId, options.onLog);
    first = false;
    if (isTerminal(run.state.type) || options.signal?.aborted) {
      // Logs flushed by the flow process just before it ended.
      if (options.onLog) await drainLogs(client, run.id, afterId, options.onLog);
      return run;
    }
    await sleep(interval, options.signal);
  }
}

/** Fetches all logs after `afterId`, page by page; returns the last id seen. */
export async function drainLogs(
  client: ApiClient,
  runId: string,
  afterId: number | undefined,
  onLog: (e: LogEntry) => void,
): Promise<number | undefined> {
  let last = afterId;
  for (;;) {
    const { items } = await client.getLogs(runId, { ...(last !== undefined ? { afterId: last } : {}), limit: 500 });
    for (const e of items) {
      onLog(e);
      if (e.id !== undefined) last = e.id;
    }
    if (items.length < 500) return last;
  }
}
