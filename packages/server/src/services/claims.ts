import type { ClaimedRun, DeploymentIdentity, TokenFilesSpec, WorkerPollRequest, WorkerPollResponse } from '@tessera/core';
import { DEFAULT_AZURE_TOKEN_FILE_LIFETIME_MS, TesseraError } from '@tessera/core';
import { type ExpressionBuilder, type Kysely, sql, type Transaction } from 'kysely';
import { iso } from '../lib/clock.js';
import { fromJson, toJson } from '../lib/json.js';
import { type FlowRunRow, toFlowRun } from '../store/rows.js';
import type { Database } from '../store/schema.js';
import type { ServiceContext } from './context.js';
import type { CredentialService } from './credentials.js';
import { WAKE_ALL } from './events.js';
import { ACTIVE_STATES, type RunService } from './runs.js';
import { DEFAULT_MAX_TOKEN_LIFETIME_MS } from './tokens.js';

const ACTIVE_SQL = sql.join(ACTIVE_STATES.map((t) => sql.lit(t)));

/**
 * The deployments and the queues of a pool whose concurrency limit is reached, as of the statement's
 * snapshot: uncorrelated subqueries, worked out once per statement (one grouped pass over the pool's
 * active runs, index `flow_runs_claimable`), whatever the size of the backlog they hold back. The
 * claim counts again under its lock; these only keep held-back runs out of the candidate batch.
 */
const FULL_DEPLOYMENTS = (poolId: string) => sql`
  select a.deployment_id from flow_runs a join deployments d on d.id = a.deployment_id
   where a.work_pool_id = ${poolId} and a.state_type in (${ACTIVE_SQL}) and d.concurrency_limit is not null
   group by a.deployment_id, d.concurrency_limit having count(*) >= d.concurrency_limit
  union all
  select d.id from deployments d where d.work_pool_id = ${poolId} and d.concurrency_limit = 0`;
const FULL_QUEUES = (poolId: string) => sql`
  select a.work_queue from flow_runs a join work_queues q on q.pool_id = a.work_pool_id and q.name = a.work_queue
   where a.work_pool_id = ${poolId} and a.state_type in (${ACTIVE_SQL}) and q.concurrency_limit is not null
   group by a.work_queue, q.concurrency_limit having count(*) >= q.concurrency_limit
  union all
  select q.name from work_queues q where q.pool_id = ${poolId} and q.concurrency_limit = 0`;
/** A run `r` whose deployment and queue have a free slot (see {@link FULL_DEPLOYMENTS}). */
const WITHIN_LIMITS = (poolId: string) =>
  sql<boolean>`((r.deployment_id is null or r.deployment_id not in (${FULL_DEPLOYMENTS(poolId)})) and (r.work_queue is null or r.work_queue not in (${FULL_QUEUES(poolId)})))`;

/** After a claim found nothing although a run is due (rows locked by another claimer), look again this soon. */
const RECHECK_DUE_MS = 50;
/** A poll whose due runs the limits hold back looks again this often even if no wake-up comes. */
const RECHECK_BLOCKED_MS = 1_000;

type Db = Kysely<Database> | Transaction<Database>;

/**
 * The worker's long poll: heartbeat, cancellations, lost-claim repair and claims in one request.
 * A due run is claimed as soon as it becomes due (wake-ups), not at the next polling interval.
 */
export class ClaimService {
  /** When this replica last looked for each worker's lost runs (see `reconcile`). */
  private readonly lostCheckedAt = new Map<string, number>();
  /** Worker ids whose owner this replica has read, with that owner (see `checkOwner`). */
  private readonly owners = new Map<string, string>();

  constructor(
    private readonly ctx: ServiceContext,
    private readonly runs: RunService,
    private readonly credentials: CredentialService,
  ) {}

  /**
   * @param owner `principalId` of the caller. A worker id belongs to the principal that first polled
   *   with it: another principal's poll with it is refused, so no worker can heartbeat, claim, or have
   *   runs declared lost as another. Omitted only by in-process callers (tests).
   * @throws TesseraError `ERR_UNKNOWN_POOL`; `ERR_FORBIDDEN` when the worker id is another principal's.
   */
  async poll(poolName: string, req: WorkerPollRequest, signal?: AbortSignal, owner?: string): Promise<WorkerPollResponse> {
    const pool = await this.ctx.db.selectFrom('work_pools').selectAll().where('name', '=', poolName).executeTakeFirst();
    if (!pool)
      throw new TesseraError(
        'ERR_UNKNOWN_POOL',
        `work pool "${poolName}" does not exist; create it with \`tessera pools create ${poolName}\``,
      );
    if (owner !== undefined) await this.checkOwner(req.workerId, owner);
    const waitMs = Math.min(Math.max(req.waitMs ?? 10_000, 0), this.ctx.settings.maxPollWaitMs);
    const started = this.ctx.clock.now();
    const deadline = started + waitMs;
    const poolKey = `pool:${pool.id}`;
    const slotsKey = `slots:${pool.id}`;
    // A poll that may claim heartbeats inside its first claim's transaction: one commit, not two.
    if (req.capacity <= 0) await this.heartbeat(pool.id, req, owner);
    let housekeeping = { cancel: [] as string[], forget: [] as string[] };
    // What woke the poll: a run became due in the pool (only claims can change), or anything else.
    let woken: string | null = null;
    let first = true;
    const workerKey = `worker:${req.workerId}`;
    for (;;) {
      if (woken !== poolKey && woken !== slotsKey) housekeeping = await this.reconcile(req);
      // Wake-ups that fire while the claim reads the database are kept, not lost before the wait below.
      const seen = this.ctx.wakeups.record([poolKey, slotsKey, workerKey]);
      try {
        const outcome: ClaimOutcome = { blocked: false };
        const runs = req.capacity > 0 ? await this.claim(pool, req, first, outcome, owner) : [];
        first = false;
        const now = this.ctx.clock.now();
        if (runs.length > 0 || housekeeping.cancel.length > 0 || housekeeping.forget.length > 0 || now >= deadline || signal?.aborted) {
          // The heartbeat at the start is fresh unless the poll was held open a while.
          if (now - started >= 1_000) await this.heartbeat(pool.id, req, owner);
          return { runs, ...housekeeping };
        }
        const nextDue = req.capacity > 0 ? await this.nextWakeTime(pool.id, outcome, now) : null;
        const until = Math.min(deadline, nextDue ?? Number.POSITIVE_INFINITY);
        // Held back by the limits: a slot freeing up is worth waking for; otherwise only new due runs are.
        const keys: string[] = outcome.blocked ? [poolKey, slotsKey, workerKey] : [poolKey, workerKey];
        const missed: string | null | undefined = keys.find((k) => seen.fired.has(k)) ?? (seen.fired.has(WAKE_ALL) ? null : undefined);
        seen.stop();
        woken = missed !== undefined ? missed : await this.ctx.wakeups.wait(keys, until - now + 5, signal);
      } finally {
        seen.stop();
      }
    }
  }

  /**
   * @throws TesseraError `ERR_FORBIDDEN` when another principal polls as `workerId`. An owner once set
   * never changes, so a match is remembered: a worker's polls read it once, not on every poll.
   */
  private async checkOwner(workerId: string, owner: string): Promise<void> {
    if (this.owners.get(workerId) === owner) return;
    const row = await this.ctx.db.selectFrom('workers').select('owner').where('id', '=', workerId).executeTakeFirst();
    if (row?.owner && row.owner !== owner) throw foreignWorkerId(workerId);
    if (row?.owner === owner) {
      if (this.owners.size > 10_000) this.owners.clear();
      this.owners.set(workerId, owner);
    }
  }

  /**
   * Records the worker as alive. The row's owner never changes once set (a row from before owners
   * were recorded is adopted), even if two principals race to first use one id.
   */
  private async heartbeat(poolId: string, req: WorkerPollRequest, owner: string | undefined, db: Db = this.ctx.db): Promise<void> {
    const now = iso(this.ctx.clock.now());
    const row = await db
      .insertInto('workers')
      .values({ id: req.workerId, name: req.workerName, pool_id: poolId, last_heartbeat_at: now, created_at: now, owner: owner ?? null })
      .onConflict((oc) => {
        const update = oc
          .column('id')
          .doUpdateSet({ last_heartbeat_at: now, name: req.workerName, ...(owner !== undefined ? { owner } : {}) });
        return owner === undefined
          ? update
          : update.where((eb) => eb.or([eb('workers.owner', 'is', null), eb('workers.owner', '=', owner)]));
      })
      .returning('id')
      .executeTakeFirst();
    // Nothing written: another principal owns the id (it won a race to first use it).
    if (owner !== undefined && !row) throw foreignWorkerId(req.workerId);
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
    // Runs this worker lost track of can only be older than lostClaimAfterMs: looking for them a few
    // times per such period is enough, and spares a query on most polls of a busy worker.
    const now = this.ctx.clock.now();
    const lastLookedAt = this.lostCheckedAt.get(req.workerId);
    if (lastLookedAt !== undefined && now - lastLookedAt < Math.min(this.ctx.settings.lostClaimAfterMs / 5, 5_000)) {
      return { cancel, forget };
    }
    this.lostCheckedAt.set(req.workerId, now);
    if (this.lostCheckedAt.size > 10_000) this.lostCheckedAt.clear();
    const lostBefore = iso(now - this.ctx.settings.lostClaimAfterMs);
    let lost = this.ctx.db
      .selectFrom('flow_runs')
      .select(['id', 'state_type', 'attempt'])
      .where('worker_id', '=', req.workerId)
      .where('state_type', 'in', ACTIVE_STATES)
      .where('claimed_at', '<', lostBefore);
    if (req.running.length > 0) lost = lost.where('id', 'not in', req.running);
    const actor = { kind: 'server' as const, id: 'lost-run', label: 'worker does not know this run' };
    for (const r of await lost.execute()) {
      // Only for this worker's claim of this attempt: the run may have moved on since the read.
      const claim = { workerId: req.workerId, attempt: r.attempt };
      try {
        if (r.state_type === 'PENDING') {
          await this.runs.proposeState(r.id, { state: { type: 'SCHEDULED' }, scheduledFor: iso(this.ctx.clock.now()) }, actor, claim);
        } else if (r.state_type === 'CANCELLING') {
          await this.runs.proposeState(r.id, { state: { type: 'CANCELLED', message: 'its worker no longer runs it' } }, actor, claim);
        } else {
          await this.runs.proposeState(
            r.id,
            {
              state: { type: 'CRASHED', message: 'its worker no longer runs it (worker restarted or lost track of the process)' },
              error: { name: 'Crashed', message: 'worker lost track of the flow process' },
            },
            actor,
            claim,
          );
        }
      } catch (e) {
        if (!(e instanceof TesseraError) || (e.code !== 'ERR_ILLEGAL_TRANSITION' && e.code !== 'ERR_CONFLICT')) throw e;
      }
    }
    return { cancel, forget };
  }

  /**
   * When a poll that claimed nothing should look again without being woken: when the pool's next run
   * becomes due. A run the claim saw due and did not take is either held back (a concurrency limit, a
   * paused pool: a slot freeing up or the unpausing wakes the poll, so only runs due after the claim
   * count, and a look once a second covers what no wake-up announces, such as rows another claimer
   * had locked) or was locked by another claimer a moment ago (look again shortly).
   */
  private async nextWakeTime(poolId: string, outcome: ClaimOutcome, now: number): Promise<number | null> {
    const claimedAt = outcome.at ?? now;
    const dueAfter = (eb: ExpressionBuilder<Database, 'work_pools'>, after?: string) => {
      let q = eb
        .selectFrom('flow_runs')
        .select((e) => e.fn.min('next_scheduled_start_time').as('t'))
        .where('work_pool_id', '=', poolId)
        .where('state_type', '=', 'SCHEDULED');
      if (after !== undefined) q = q.where('next_scheduled_start_time', '>', after);
      return q;
    };
    const row = await this.ctx.db
      .selectFrom('work_pools')
      .select((eb) => ['paused', dueAfter(eb).as('next'), dueAfter(eb, iso(claimedAt)).as('later')])
      .where('id', '=', poolId)
      .executeTakeFirst();
    if (!row?.next) return null;
    const next = Date.parse(row.next as string);
    if (next > now) return next;
    if (outcome.blocked || row.paused) return Math.min(row.later ? Date.parse(row.later as string) : Infinity, now + RECHECK_BLOCKED_MS);
    return now + RECHECK_DUE_MS;
  }

  /**
   * Claims up to `capacity` due runs of the pool `given` unless it is paused, honouring pool, queue
   * and deployment concurrency limits, in one transaction whose statements do not grow with the
   * number of runs: candidates are locked (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent
   * claimers on any replica take different runs without waiting), then moved to Pending, their
   * history written and their credentials issued in one statement each. With `heartbeat`, the
   * worker's heartbeat is recorded in the same transaction (the first claim of a poll).
   */
  async claim(
    given: { id: string; paused: number },
    req: WorkerPollRequest,
    heartbeat = false,
    outcome: ClaimOutcome = { blocked: false },
    /** See {@link poll}. */
    owner?: string,
  ): Promise<ClaimedRun[]> {
    const poolId = given.id;
    const claimed: { row: ClaimRow; credential: string }[] = [];
    await this.ctx.db.transaction().execute(async (trx) => {
      if (heartbeat) await this.heartbeat(poolId, req, owner, trx);
      if (heartbeat && given.paused) return;
      const activeCount = async (column: 'work_pool_id' | 'deployment_id', value: string) => {
        const r = await trx
          .selectFrom('flow_runs')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where(column, '=', value)
          .where('state_type', 'in', ACTIVE_STATES)
          .executeTakeFirstOrThrow();
        return Number(r.n);
      };
      const now = this.ctx.clock.now();
      outcome.at = now;
      // Everything the claim and its answer need comes with the candidates (the pool's state, names,
      // the deployment's entrypoint, the limits), so that the claim's statements do not grow with
      // the runs it takes. Only the runs' rows are locked, not the pool's, deployments' or flows'.
      const candidates = (await this.ctx.dialect
        .lockForClaim(
          trx
            .selectFrom('flow_runs as r')
            .innerJoin('work_pools as p', 'p.id', 'r.work_pool_id')
            .innerJoin('flows as f', 'f.id', 'r.flow_id')
            .leftJoin('deployments as d', 'd.id', 'r.deployment_id')
            .selectAll('r')
            .select([
              'p.name as pool_name',
              'p.concurrency_limit as pool_limit',
              'f.name as flow_name',
              'd.name as deployment_name',
              'd.entrypoint as entrypoint',
              'd.path as path',
              'd.env as env',
              'd.identity as identity',
              'd.concurrency_limit as deployment_limit',
            ])
            .select((eb) =>
              eb
                .selectFrom('work_queues as q')
                .select('q.concurrency_limit')
                .whereRef('q.pool_id', '=', 'r.work_pool_id')
                .whereRef('q.name', '=', 'r.work_queue')
                .as('queue_limit'),
            )
            .where('r.work_pool_id', '=', poolId)
            .where('p.paused', '=', 0)
            .where('r.state_type', '=', 'SCHEDULED')
            .where('r.next_scheduled_start_time', '<=', iso(now))
            // Runs of a deployment or queue already at its limit are passed over here, not after the
            // LIMIT below: otherwise a backlog held back by one deployment's limit fills every batch
            // and starves the runs of all the others.
            .where(WITHIN_LIMITS(poolId))
            .orderBy('r.priority')
            .orderBy('r.next_scheduled_start_time')
            .limit(req.capacity * 4),
          'r',
        )
        .execute()) as ClaimRow[];
      if (candidates.length === 0) {
        // Due runs that only the deployment and queue limits hold back (not rows another claimer has
        // locked, which are within the limits): the poll waits for a slot to free.
        const held = await trx
          .selectFrom('flow_runs as r')
          .select('r.id')
          .where('r.work_pool_id', '=', poolId)
          .where('r.state_type', '=', 'SCHEDULED')
          .where('r.next_scheduled_start_time', '<=', iso(now))
          .where(sql<boolean>`not ${WITHIN_LIMITS(poolId)}`)
          .limit(1)
          .executeTakeFirst();
        outcome.blocked = held !== undefined;
        return;
      }
      let budget = req.capacity;
      const poolLimit = (candidates[0] as ClaimRow).pool_limit;
      // Counted under a limit: the pool's claims take turns from here (PostgreSQL), so each counts
      // the runs the one before it claimed. Unlimited pools keep claiming side by side.
      if (poolLimit !== null || candidates.some((c) => c.deployment_limit != null || c.queue_limit != null)) {
        await this.ctx.dialect.serializeLimitedClaims(trx, poolId);
      }
      if (poolLimit !== null) budget = Math.min(budget, poolLimit - (await activeCount('work_pool_id', poolId)));
      // Due runs are there, and the limits hold them all back.
      outcome.blocked = budget <= 0;
      if (budget <= 0) return;
      const deploymentActive = new Map<string, number>();
      const queueActive = new Map<string, number>();
      const chosen: ClaimRow[] = [];
      for (const run of candidates) {
        if (chosen.length >= budget) break;
        if (run.deployment_id) {
          const limit = run.deployment_limit;
          if (limit !== undefined && limit !== null) {
            const active = deploymentActive.get(run.deployment_id) ?? (await activeCount('deployment_id', run.deployment_id));
            if (active >= limit) continue;
            deploymentActive.set(run.deployment_id, active + 1);
          }
        }
        if (run.work_queue) {
          const qlimit = run.queue_limit;
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
        chosen.push(run);
      }
      outcome.blocked = chosen.length === 0;
      if (chosen.length === 0) return;
      const at = iso(now);
      // The rows are locked by this transaction (PostgreSQL) or this is the only writer (SQLite):
      // the state guard is what a compare-and-set needs here.
      const moved = await trx
        .updateTable('flow_runs')
        .set((eb) => ({
          state_type: 'PENDING',
          state_name: 'Pending',
          state_message: null,
          state_timestamp: at,
          updated_at: at,
          attempt: eb('attempt', '+', 1),
          worker_id: req.workerId,
          claimed_at: at,
          next_scheduled_start_time: null,
        }))
        .where(
          'id',
          'in',
          chosen.map((c) => c.id),
        )
        .where('state_type', '=', 'SCHEDULED')
        .returning(['id', 'attempt'])
        .execute();
      if (moved.length === 0) return;
      const cause = toJson({ kind: 'worker', id: req.workerId, label: req.workerName });
      await trx
        .insertInto('flow_run_states')
        .values(
          moved.map((m) => ({
            flow_run_id: m.id,
            attempt: m.attempt,
            type: 'PENDING',
            name: 'Pending',
            message: null,
            timestamp: at,
            cause,
          })),
        )
        .execute();
      const credentials = await this.credentials.issueMany(
        trx,
        moved.map((m) => ({ runId: m.id, attempt: m.attempt, workerId: req.workerId })),
      );
      const byId = new Map(chosen.map((c) => [c.id, c]));
      moved.forEach((m, i) => {
        const before = byId.get(m.id) as ClaimRow;
        // The row as the update left it, without reading it again.
        const row: ClaimRow = {
          ...before,
          state_type: 'PENDING',
          state_name: 'Pending',
          state_message: null,
          state_timestamp: at,
          updated_at: at,
          attempt: m.attempt,
          worker_id: req.workerId,
          claimed_at: at,
          next_scheduled_start_time: null,
          worker_name: req.workerName,
        };
        claimed.push({ row, credential: credentials[i] as string });
      });
    });
    return claimed.map(({ row, credential }) => {
      const tokenFiles = compileTokenFiles(fromJson<Partial<DeploymentIdentity>>(row.identity, {}));
      return {
        run: toFlowRun(row),
        credential,
        entrypoint: row.entrypoint ?? '',
        path: row.path ?? '',
        env: fromJson<Record<string, string>>(row.env, {}),
        ...(tokenFiles ? { tokenFiles } : {}),
      };
    });
  }
}

/**
 * What a claim that took nothing saw: `blocked` when due runs were there but the concurrency limits
 * held them all back; `at`, the time it judged what was due by.
 */
interface ClaimOutcome {
  blocked: boolean;
  at?: number;
}

/** A claim candidate: the run row with the names and deployment fields its claim answer needs. */
type ClaimRow = FlowRunRow & {
  entrypoint: string | null;
  path: string | null;
  env: string | null;
  identity: string | null;
  pool_limit: number | null;
  deployment_limit: number | null;
  queue_limit: number | null;
};

/** The token files a worker must project for a deployment, with the Azure lifetime default applied; none: `undefined`. */
function compileTokenFiles(identity: Partial<DeploymentIdentity>): TokenFilesSpec | undefined {
  const files = identity.tokenFiles;
  if (!files || Object.keys(files).length === 0) return undefined;
  if (!files.azure || files.azure.lifetimeMs !== undefined) return files;
  const max = identity.maxLifetimeMs ?? DEFAULT_MAX_TOKEN_LIFETIME_MS;
  return { ...files, azure: { ...files.azure, lifetimeMs: Math.min(DEFAULT_AZURE_TOKEN_FILE_LIFETIME_MS, max) } };
}

/** A poll with a worker id another principal owns. */
function foreignWorkerId(workerId: string): TesseraError {
  return new TesseraError(
    'ERR_FORBIDDEN',
    `workerId: worker ${workerId} polls with another credential; a worker id belongs to the credential that first polled with it. Each worker process picks its own id (tessera worker start does)`,
    { details: { field: 'workerId' } },
  );
}
