import type { StateCause } from '@tessera/core';
import { Cron } from 'croner';
import { iso } from '../lib/clock.js';
import { fromJson } from '../lib/json.js';
import type { ServiceContext } from './context.js';
import type { RunService } from './runs.js';

/**
 * Keeps upcoming runs created ahead of time for every active schedule, and marks runs Late.
 * Idempotent: every slot has an idempotency key (`schedule:<id>:<time>`) under a unique index, so
 * restarts (or, later, several replicas) never create two runs for one slot.
 */
export class Scheduler {
  constructor(
    private readonly ctx: ServiceContext,
    private readonly runs: RunService,
  ) {}

  /** One pass. Returns how many runs were created and how many were marked Late. */
  async tick(): Promise<{ created: number; late: number }> {
    const now = this.ctx.clock.now();
    const horizon = now + this.ctx.settings.scheduleHorizonMs;
    const schedules = await this.ctx.db
      .selectFrom('schedules as s')
      .innerJoin('deployments as d', 'd.id', 's.deployment_id')
      .selectAll('s')
      .select(['d.flow_id', 'd.work_pool_id', 'd.work_queue', 'd.parameters', 'd.retries', 'd.retry_delays', 'd.tags'])
      .where('s.active', '=', 1)
      .execute();
    let created = 0;
    for (const s of schedules) {
      // Continue from the latest slot already created. Slots the scheduler missed while it could not
      // run (a stalled or failed-over leader, a restart) are created late, but only while they would
      // not be Late yet: a server down for a day does not flood the pool with a day of runs.
      const last = await this.ctx.db
        .selectFrom('flow_runs')
        .select((eb) => eb.fn.max('expected_start_time').as('t'))
        .where('deployment_id', '=', s.deployment_id)
        .where('idempotency_key', 'like', `schedule:${s.id}:%`)
        .executeTakeFirst();
      const lastSlot = last?.t ? Date.parse(last.t as string) : undefined;
      const from =
        lastSlot === undefined
          ? Math.max(now - 1000, Date.parse(s.created_at) - 1000)
          : Math.max(lastSlot, now - Math.max(1000, this.ctx.settings.lateAfterMs));
      const slots = nextSlots(s, from, horizon, this.ctx.settings.maxScheduledRuns);
      const upcoming = await this.ctx.db
        .selectFrom('flow_runs')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('deployment_id', '=', s.deployment_id)
        .where('idempotency_key', 'like', `schedule:${s.id}:%`)
        .where('state_type', '=', 'SCHEDULED')
        .where('expected_start_time', '>', iso(now))
        .executeTakeFirstOrThrow();
      const room = Math.max(0, this.ctx.settings.maxScheduledRuns - Number(upcoming.n));
      const queue = s.work_queue
        ? await this.ctx.db
            .selectFrom('work_queues')
            .select('priority')
            .where('pool_id', '=', s.work_pool_id)
            .where('name', '=', s.work_queue)
            .executeTakeFirst()
        : undefined;
      const creator = fromJson<StateCause | null>(s.created_by, null);
      const triggeredBy: StateCause = {
        kind: 'schedule',
        id: s.id,
        label: `${s.cron ? `cron "${s.cron}"${s.timezone !== 'UTC' ? ` ${s.timezone}` : ''}` : `every ${s.interval_ms! / 1000} s`}${creator ? ` (created by ${creator.label ?? creator.id})` : ''}`,
      };
      for (const slot of slots.slice(0, room)) {
        const res = await this.runs.createRun({
          flowId: s.flow_id,
          deploymentId: s.deployment_id,
          workPoolId: s.work_pool_id,
          workQueue: s.work_queue,
          priority: queue?.priority ?? 0,
          parameters: fromJson(s.parameters, {}),
          maxRetries: s.retries,
          retryDelaysMs: fromJson(s.retry_delays, []),
          scheduledFor: slot,
          triggerKind: 'schedule',
          triggeredBy,
          tags: fromJson(s.tags, []),
          idempotencyKey: `schedule:${s.id}:${iso(slot)}`,
        });
        if (res.created) created++;
      }
    }
    const late = await this.markLate(now);
    return { created, late };
  }

  private async markLate(now: number): Promise<number> {
    const lateBefore = iso(now - this.ctx.settings.lateAfterMs);
    const rows = await this.ctx.db
      .selectFrom('flow_runs')
      .selectAll()
      .where('state_type', '=', 'SCHEDULED')
      .where('state_name', '=', 'Scheduled')
      .where('next_scheduled_start_time', '<', lateBefore)
      .limit(500)
      .execute();
    let n = 0;
    for (const run of rows) {
      const ok = await this.runs.writeTransition(
        this.ctx.db,
        run,
        { type: 'SCHEDULED', name: 'Late', message: 'not started on time: is a worker polling this pool?' },
        { kind: 'server', id: 'late-runs', label: 'late-run rule' },
      );
      if (ok) n++;
    }
    return n;
  }
}

/** Slot times of a schedule strictly after `from` and at most `until`, at most `max` of them. */
export function nextSlots(
  s: { cron: string | null; interval_ms: number | null; anchor: string | null; timezone: string },
  from: number,
  until: number,
  max: number,
): number[] {
  const out: number[] = [];
  if (s.cron) {
    const cron = new Cron(s.cron, { timezone: s.timezone, paused: true });
    let cursor = new Date(from);
    while (out.length < max) {
      const next = cron.nextRun(cursor);
      if (!next || next.getTime() > until) break;
      out.push(next.getTime());
      cursor = next;
    }
    return out;
  }
  const every = s.interval_ms as number;
  const anchor = Date.parse(s.anchor ?? '2020-01-01T00:00:00Z');
  let t = anchor + Math.floor((from - anchor) / every + 1) * every;
  while (out.length < max && t <= until) {
    if (t > from) out.push(t);
    t += every;
  }
  return out;
}
