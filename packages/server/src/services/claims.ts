import type { ClaimedRun, DeploymentIdentity, TokenFilesSpec, WorkerPollRequest, WorkerPollResponse } from '@tessera/core';
import { DEFAULT_AZURE_TOKEN_FILE_LIFETIME_MS, TesseraError } from '@tessera/core';
import type { Transaction } from 'kysely';
import { iso } from '../lib/clock.js';
import { fromJson } from '../lib/json.js';
import { type FlowRunRow, toFlowRun } from '../store/rows.js';
import type { Database } from '../store/schema.js';
import type { ServiceContext } from './context.js';
import type { CredentialService } from './credentials.js';
import type { RunService } from './runs.js';
import { DEFAULT_MAX_TOKEN_LIFETIME_MS } from './tokens.js';

const ACTIVE_STATES = ['PENDING', 'RUNNING', 'CANCELLING'];

/**
 * The worker's long poll: heartbeat, cancellations, lost-claim repair and claims in one request.
 * A due run is claimed as soon as it becomes due (wake-ups), not at the next polling interval.
 */
export class ClaimService {
  constructor(
    private readonly ctx: ServiceContext,
    private readonly runs: RunService,
    private readonly credentials: CredentialService,
  ) {}

  async poll(poolName: string, req: WorkerPollRequest, signal?: AbortSignal): Promise<WorkerPollResponse> {
    const pool = await this.ctx.db.selectFrom('work_pools').selectAll().where('name', '=', poolName).executeTakeFirst();
    if (!pool)
      throw new TesseraError(
        'ERR_UNKNOWN_POOL',
        `work pool "${poolName}" does not exist; create it with \`tessera pools create ${poolName}\``,
      );
    const waitMs = Math.min(Math.max(req.waitMs ?? 10_000, 0), this.ctx.settings.maxPollWaitMs);
    const deadline = this.ctx.clock.now() + waitMs;
    await this.heartbeat(pool.id, req);
    for (;;) {
      const [housekeeping, runs] = [await this.reconcile(req), req.capacity > 0 ? await this.claim(pool.id, req) : []];
      const now = this.ctx.clock.now();
      if (runs.length > 0 || housekeeping.cancel.length > 0 || housekeeping.forget.length > 0 || now >= deadline || signal?.aborted) {
        await this.heartbeat(pool.id, req);
        return { runs, ...housekeeping };
      }
      const nextDue = req.capacity > 0 ? await this.nextDueTime(pool.id) : null;
      const until = Math.min(deadline, nextDue ?? Number.POSITIVE_INFINITY);
      await this.ctx.wakeups.wait([`pool:${pool.id}`, `worker:${req.workerId}`], until - now + 5, signal);
    }
  }

  private async heartbeat(poolId: string, req: WorkerPollRequest): Promise<void> {
    const now = iso(this.ctx.clock.now());
    await this.ctx.db
      .insertInto('workers')
      .values({ id: req.workerId, name: req.workerName, pool_id: poolId, last_heartbeat_at: now, created_at: now })
      .onConflict((oc) => oc.column('id').doUpdateSet({ last_heartbeat_at: now, name: req.workerName }))
      .execute();
  }

  /**
   * Compares what the worker says it runs with what the server expects of it:
   * - runs it holds that are Cancelling → cancel;
   * - runs it holds that are terminal or assigned elsewhere → forget (stop them: no run twice);
   * - runs assigned to it that it never mentions → a lost claim response (given back) or a lost run (crashed).
   */
  private async reconcile(req: WorkerPollRequest): Promise<{ cancel: string[]; forget: string[] }> {
    const cancel: string[] = [];
    const forget: string[] = [];
    if (req.running.length > 0) {
      const rows = await this.ctx.db
        .selectFrom('flow_runs')
        .select(['id', 'state_type', 'worker_id'])
        .where('id', 'in', req.running)
        .execute();
      const byId = new Map(rows.map((r) => [r.id, r]));
      for (const id of req.running) {
        const r = byId.get(id);
        // Forget (kill) only what this worker must not run: a run now assigned elsewhere (or given
        // back), or one declared Crashed behind its back (zombie detection). A run that completed,
        // failed or was cancelled normally is still listed while its process exits: leave it be.
        if (!r || r.worker_id !== req.workerId || r.state_type === 'CRASHED' || r.state_type === 'SCHEDULED') forget.push(id);
        else if (r.state_type === 'CANCELLING') cancel.push(id);
      }
    }
    const lostBefore = iso(this.ctx.clock.now() - this.ctx.settings.lostClaimAfterMs);
    let lost = this.ctx.db
      .selectFrom('flow_runs')
      .select(['id', 'state_type'])
      .where('worker_id', '=', req.workerId)
      .where('state_type', 'in', ACTIVE_STATES)
      .where('claimed_at', '<', lostBefore);
    if (req.running.length > 0) lost = lost.where('id', 'not in', req.running);
    for (const r of await lost.execute()) {
      const cause = { kind: 'server' as const, id: 'lost-run', label: 'worker does not know this run' };
      try {
        if (r.state_type === 'PENDING') {
          await this.runs.proposeState(
            r.id,
            { state: { type: 'SCHEDULED' }, scheduledFor: iso(this.ctx.clock.now()) },
            { kind: 'server', id: cause.id, label: cause.label },
          );
        } else if (r.state_type === 'CANCELLING') {
          await this.runs.proposeState(
            r.id,
            { state: { type: 'CANCELLED', message: 'its worker no longer runs it' } },
            { kind: 'server', id: cause.id, label: cause.label },
          );
        } else {
          await this.runs.proposeState(
            r.id,
            {
              state: { type: 'CRASHED', message: 'its worker no longer runs it (worker restarted or lost track of the process)' },
              error: { name: 'Crashed', message: 'worker lost track of the flow process' },
            },
            { kind: 'server', id: cause.id, label: cause.label },
          );
        }
      } catch (e) {
        if (!(e instanceof TesseraError) || e.code !== 'ERR_ILLEGAL_TRANSITION') throw e;
      }
    }
    return { cancel, forget };
  }

  private async nextDueTime(poolId: string): Promise<number | null> {
    const row = await this.ctx.db
      .selectFrom('flow_runs')
      .select((eb) => eb.fn.min('next_scheduled_start_time').as('next'))
      .where('work_pool_id', '=', poolId)
      .where('state_type', '=', 'SCHEDULED')
      .executeTakeFirst();
    return row?.next ? Date.parse(row.next as string) : null;
  }

  /** Claims up to `capacity` due runs of the pool, honouring pool, queue and deployment concurrency limits. */
  async claim(poolId: string, req: WorkerPollRequest): Promise<ClaimedRun[]> {
    const claimed: { id: string; credential: string }[] = [];
    await this.ctx.db.transaction().execute(async (trx) => {
      const pool = await trx.selectFrom('work_pools').selectAll().where('id', '=', poolId).executeTakeFirstOrThrow();
      if (pool.paused) return;
      let budget = req.capacity;
      const activeCount = async (column: 'work_pool_id' | 'deployment_id', value: string) => {
        const r = await trx
          .selectFrom('flow_runs')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where(column, '=', value)
          .where('state_type', 'in', ACTIVE_STATES)
          .executeTakeFirstOrThrow();
        return Number(r.n);
      };
      if (pool.concurrency_limit !== null) budget = Math.min(budget, pool.concurrency_limit - (await activeCount('work_pool_id', poolId)));
      if (budget <= 0) return;
      const now = this.ctx.clock.now();
      const candidates = await this.ctx.dialect
        .lockForClaim(
          trx
            .selectFrom('flow_runs')
            .selectAll()
            .where('work_pool_id', '=', poolId)
            .where('state_type', '=', 'SCHEDULED')
            .where('next_scheduled_start_time', '<=', iso(now))
            .orderBy('priority')
            .orderBy('next_scheduled_start_time')
            .limit(budget * 4),
        )
        .execute();
      const deploymentActive = new Map<string, number>();
      const queueActive = new Map<string, number>();
      const limits = await this.limitsFor(
        trx,
        poolId,
        candidates.map((c) => c.deployment_id).filter((d): d is string => d !== null),
      );
      for (const run of candidates) {
        if (budget <= 0) break;
        if (run.deployment_id) {
          const limit = limits.deployments.get(run.deployment_id);
          if (limit !== undefined && limit !== null) {
            const active = deploymentActive.get(run.deployment_id) ?? (await activeCount('deployment_id', run.deployment_id));
            if (active >= limit) continue;
            deploymentActive.set(run.deployment_id, active + 1);
          }
        }
        if (run.work_queue) {
          const qlimit = limits.queues.get(run.work_queue);
          if (qlimit !== undefined && qlimit !== null) {
            const active =
              queueActive.get(run.work_queue) ??
              Number(
                (
                  await trx
                    .selectFrom('flow_runs')
                    .select((eb) => eb.fn.countAll<number>().as('n'))
                    .where('work_pool_id', '=', poolId)
                    .where('work_queue', '=', run.work_queue)
                    .where('state_type', 'in', ACTIVE_STATES)
                    .executeTakeFirstOrThrow()
                ).n,
              );
            if (active >= qlimit) continue;
            queueActive.set(run.work_queue, active + 1);
          }
        }
        const attempt = run.attempt + 1;
        const ok = await this.runs.writeTransition(
          trx,
          run,
          { type: 'PENDING', name: 'Pending', message: null },
          { kind: 'worker', id: req.workerId, label: req.workerName },
          { attempt, worker_id: req.workerId, claimed_at: iso(now), next_scheduled_start_time: null },
        );
        if (!ok) continue;
        const credential = await this.credentials.issue(trx, run.id, attempt, req.workerId);
        claimed.push({ id: run.id, credential });
        budget--;
      }
    });
    if (claimed.length === 0) return [];
    const rows = (await this.runs
      .selectRuns()
      .where(
        'r.id',
        'in',
        claimed.map((c) => c.id),
      )
      .execute()) as FlowRunRow[];
    const deployments = await this.ctx.db
      .selectFrom('deployments')
      .select(['id', 'entrypoint', 'path', 'env', 'identity'])
      .where(
        'id',
        'in',
        rows
          .map((r) => r.deployment_id ?? '')
          .filter(Boolean)
          .concat(['']),
      )
      .execute();
    const depById = new Map(deployments.map((d) => [d.id, d]));
    return claimed.map(({ id, credential }) => {
      const row = rows.find((r) => r.id === id) as FlowRunRow;
      const dep = row.deployment_id ? depById.get(row.deployment_id) : undefined;
      const tokenFiles = compileTokenFiles(fromJson<Partial<DeploymentIdentity>>(dep?.identity, {}));
      return {
        run: toFlowRun(row),
        credential,
        entrypoint: dep?.entrypoint ?? '',
        path: dep?.path ?? '',
        env: fromJson<Record<string, string>>(dep?.env, {}),
        ...(tokenFiles ? { tokenFiles } : {}),
      };
    });
  }

  private async limitsFor(trx: Transaction<Database>, poolId: string, deploymentIds: string[]) {
    const deps = deploymentIds.length
      ? await trx.selectFrom('deployments').select(['id', 'concurrency_limit']).where('id', 'in', deploymentIds).execute()
      : [];
    const queues = await trx.selectFrom('work_queues').select(['name', 'concurrency_limit']).where('pool_id', '=', poolId).execute();
    return {
      deployments: new Map<string, number | null>(deps.map((d) => [d.id, d.concurrency_limit])),
      queues: new Map<string, number | null>(queues.map((q) => [q.name, q.concurrency_limit])),
    };
  }
}

/** The token files a worker must project for a deployment, with the Azure lifetime default applied; none: `undefined`. */
function compileTokenFiles(identity: Partial<DeploymentIdentity>): TokenFilesSpec | undefined {
  const files = identity.tokenFiles;
  if (!files || Object.keys(files).length === 0) return undefined;
  if (!files.azure || files.azure.lifetimeMs !== undefined) return files;
  const max = identity.maxLifetimeMs ?? DEFAULT_MAX_TOKEN_LIFETIME_MS;
  return { ...files, azure: { ...files.azure, lifetimeMs: Math.min(DEFAULT_AZURE_TOKEN_FILE_LIFETIME_MS, max) } };
}
