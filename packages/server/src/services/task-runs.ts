import {
  checkTransition,
  type LogEntry,
  redactAndCut,
  redactSecrets,
  type StateType,
  type TaskRun,
  type TaskRunEvent,
  TesseraError,
} from '@tessera/core';
import { iso } from '../lib/clock.js';
import { toJson } from '../lib/json.js';
import { pageSize } from '../lib/paging.js';
import { toTaskRun } from '../store/rows.js';
import type { ServiceContext } from './context.js';

const MAX_LOG_MESSAGE = 16_000;

/** Task-run state reports and logs, both sent by the flow process in batches. */
export class TaskRunService {
  constructor(private readonly ctx: ServiceContext) {}

  /**
   * Applies a batch of task-run events in order, in one transaction. Each event must belong to the
   * caller's run. An illegal transition rejects the batch with 409 naming the task run.
   */
  async applyEvents(runId: string, events: TaskRunEvent[]): Promise<number> {
    for (const e of events) {
      if (e.flowRunId !== runId)
        throw new TesseraError(
          'ERR_FORBIDDEN',
          `task run ${e.taskRunId} belongs to run ${e.flowRunId}, not to the run this credential is for`,
        );
    }
    await this.ctx.db.transaction().execute(async (trx) => {
      const ids = [...new Set(events.map((e) => e.taskRunId))];
      const current = new Map<string, { state_type: string; flow_run_id: string; start_time: string | null }>();
      for (let i = 0; i < ids.length; i += 500) {
        const rows = await trx
          .selectFrom('task_runs')
          .select(['id', 'state_type', 'flow_run_id', 'start_time'])
          .where('id', 'in', ids.slice(i, i + 500))
          .execute();
        for (const r of rows) current.set(r.id, r);
      }
      // Whatever a client sends is masked before it is stored, as for flow runs (runs.ts): a task that
      // fails with a token in its message must not put it in the database.
      for (const e of events) {
        const to = e.state.type;
        const name = e.state.name ?? to.charAt(0) + to.slice(1).toLowerCase();
        const ts = e.timestamp;
        const existing = current.get(e.taskRunId);
        const terminal = to === 'COMPLETED' || to === 'FAILED' || to === 'CRASHED' || to === 'CANCELLED';
        if (!existing) {
          await trx
            .insertInto('task_runs')
            .values({
              id: e.taskRunId,
              flow_run_id: runId,
              task_key: e.taskKey,
              name: e.name,
              state_type: to,
              state_name: name,
              state_message: e.state.message ? redactSecrets(e.state.message) : null,
              state_timestamp: ts,
              attempt: e.attempt,
              max_retries: e.maxRetries,
              start_time: to === 'RUNNING' ? ts : null,
              end_time: terminal ? ts : null,
              error: e.error ? redactSecrets(toJson(e.error)) : null,
              created_at: ts,
            })
            .execute();
          current.set(e.taskRunId, { state_type: to, flow_run_id: runId, start_time: to === 'RUNNING' ? ts : null });
          continue;
        }
        if (existing.flow_run_id !== runId) throw new TesseraError('ERR_FORBIDDEN', `task run ${e.taskRunId} belongs to another run`);
        const reason = existing.state_type === to ? null : checkTransition('task_run', existing.state_type as StateType, to);
        if (reason) throw new TesseraError('ERR_ILLEGAL_TRANSITION', `task run "${e.name}" (${e.taskRunId.slice(0, 8)}): ${reason}`);
        await trx
          .updateTable('task_runs')
          .set({
            state_type: to,
            state_name: name,
            state_message: e.state.message ? redactSecrets(e.state.message) : null,
            state_timestamp: ts,
            attempt: e.attempt,
            ...(to === 'RUNNING' && !existing.start_time ? { start_time: ts } : {}),
            ...(terminal ? { end_time: ts } : {}),
            ...(e.error ? { error: redactSecrets(toJson(e.error)) } : {}),
          })
          .where('id', '=', e.taskRunId)
          .execute();
        existing.state_type = to;
        if (to === 'RUNNING' && !existing.start_time) existing.start_time = ts;
      }
    });
    return events.length;
  }

  async list(runId: string): Promise<TaskRun[]> {
    const rows = await this.ctx.db
      .selectFrom('task_runs')
      .selectAll()
      .where('flow_run_id', '=', runId)
      .orderBy('created_at')
      .orderBy('id')
      .limit(10_000)
      .execute();
    return rows.map(toTaskRun);
  }

  /** Stores log lines. Secrets are masked here too, whatever the client did. */
  async appendLogs(runId: string, entries: LogEntry[]): Promise<number> {
    if (entries.length === 0) return 0;
    for (const e of entries) {
      if (e.flowRunId !== runId)
        throw new TesseraError('ERR_FORBIDDEN', 'log lines may only be sent for the run this credential belongs to');
    }
    const now = iso(this.ctx.clock.now());
    for (let i = 0; i < entries.length; i += 200) {
      await this.ctx.db
        .insertInto('logs')
        .values(
          entries.slice(i, i + 200).map((e) => ({
            flow_run_id: runId,
            task_run_id: e.taskRunId ?? null,
            level: e.level,
            message: redactAndCut(e.message, MAX_LOG_MESSAGE),
            timestamp: e.timestamp ?? now,
          })),
        )
        .execute();
    }
    return entries.length;
  }

  async logs(runId: string, afterId = 0, limit = 1000): Promise<LogEntry[]> {
    const rows = await this.ctx.db
      .selectFrom('logs')
      .selectAll()
      .where('flow_run_id', '=', runId)
      .where('id', '>', afterId)
      .orderBy('id')
      .limit(pageSize(limit, 1000, 5000))
      .execute();
    return rows.map((r) => ({
      id: Number(r.id),
      flowRunId: r.flow_run_id,
      taskRunId: r.task_run_id,
      level: r.level as LogEntry['level'],
      message: r.message,
      timestamp: r.timestamp,
    }));
  }
}
