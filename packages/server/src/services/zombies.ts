import { TesseraError } from '@tessera/core';
import { iso } from '../lib/clock.js';
import type { ServiceContext } from './context.js';
import type { RunService } from './runs.js';

/**
 * Zombie detection: a run whose worker stopped heartbeating for `heartbeatTimeoutMs` is Crashed
 * (and retried when it has retries left, by the retry rule). A Cancelling run of a dead worker is
 * Cancelled: the process is gone, which is what the user asked for.
 */
export class ZombieDetector {
  /**
   * Heartbeats missed while this server was down, or could not reach the database, do not count
   * against workers: silence is only measured from this instant.
   */
  private startedAt: number;

  constructor(
    private readonly ctx: ServiceContext,
    private readonly runs: RunService,
  ) {
    this.startedAt = ctx.clock.now();
  }

  /**
   * The database was unreachable at `at` (a connection loss, a PostgreSQL restart): workers could not
   * heartbeat either, so their silence is measured from here on, not from before the outage.
   */
  resetClock(at: number): void {
    this.startedAt = Math.max(this.startedAt, at);
  }

  async tick(): Promise<number> {
    const now = this.ctx.clock.now();
    const cutoff = now - this.ctx.settings.heartbeatTimeoutMs;
    if (cutoff < this.startedAt) return 0;
    const rows = await this.ctx.db
      .selectFrom('flow_runs as r')
      .innerJoin('workers as w', 'w.id', 'r.worker_id')
      .select(['r.id', 'r.state_type', 'r.attempt', 'r.worker_id', 'w.name as worker_name', 'w.last_heartbeat_at'])
      .where('r.state_type', 'in', ['PENDING', 'RUNNING', 'CANCELLING'])
      .where('w.last_heartbeat_at', '<', iso(cutoff))
      .limit(500)
      .execute();
    let n = 0;
    for (const r of rows) {
      const actor = { kind: 'server' as const, id: 'zombie-detector', label: 'zombie detector' };
      const silence = `worker "${r.worker_name}" sent no heartbeat since ${r.last_heartbeat_at} (timeout ${this.ctx.settings.heartbeatTimeoutMs / 1000} s)`;
      try {
        // Only for the claim found silent: the run may have moved on since this read.
        const claim = { workerId: r.worker_id, attempt: r.attempt };
        const res =
          r.state_type === 'CANCELLING'
            ? await this.runs.proposeState(r.id, { state: { type: 'CANCELLED', message: silence } }, actor, claim)
            : await this.runs.proposeState(
                r.id,
                { state: { type: 'CRASHED', message: silence }, error: { name: 'WorkerLost', message: silence } },
                actor,
                claim,
              );
        if (res.status === 'ACCEPT') n++;
      } catch (e) {
        // Moved on meanwhile (illegal now), or changing too fast: the next tick looks again.
        if (!(e instanceof TesseraError) || (e.code !== 'ERR_ILLEGAL_TRANSITION' && e.code !== 'ERR_CONFLICT')) throw e;
      }
    }
    return n;
  }
}
