import { randomUUID } from 'node:crypto';
import {
  checkTransition,
  type FlowRun,
  IllegalTransitionError,
  isTerminal,
  type ProposeStateRequest,
  type ProposeStateResponse,
  type RunError,
  redactSecrets,
  STATE_NAMES,
  type StateCause,
  type StateHistoryEntry,
  type StateType,
  SUB_STATES,
  TesseraError,
  type TriggerKind,
} from '@tessera/core';
import type { Kysely, Transaction, Updateable } from 'kysely';
import { iso } from '../lib/clock.js';
import { fromJson, toJson } from '../lib/json.js';
import { generateRunName } from '../lib/names.js';
import { pageSize } from '../lib/paging.js';
import { type FlowRunRow, toFlowRun, toStateEntry } from '../store/rows.js';
import type { Database, FlowRunTable } from '../store/schema.js';
import type { ServiceContext } from './context.js';

type Db = Kysely<Database> | Transaction<Database>;

/** Who is asking. A run credential acts only for its own run and attempt. */
export type Actor =
  | { kind: 'run'; runId: string; attempt: number; workerId: string | null }
  | { kind: 'person' | 'machine' | 'worker' | 'server' | 'schedule'; id: string; label?: string };

/** The claim a server-side verdict was reached about: {@link RunService.proposeState} applies it only to that claim. */
export interface ExpectedRun {
  workerId: string | null;
  attempt: number;
}

export interface NewRun {
  flowId: string;
  deploymentId: string | null;
  workPoolId: string | null;
  workQueue: string | null;
  priority: number;
  parameters: Record<string, unknown>;
  maxRetries: number;
  retryDelaysMs: number[];
  scheduledFor: number;
  triggerKind: TriggerKind;
  triggeredBy: StateCause;
  tags: string[];
  idempotencyKey: string | null;
  /** Initial state; `PENDING` for runs the caller executes itself. */
  initial?: { type: 'SCHEDULED' | 'PENDING'; name?: string };
  attempt?: number;
}

const MAX_RESULT_BYTES = 1_000_000;

/** The states that hold a slot under the concurrency limits: claimed and not yet ended. */
export const ACTIVE_STATES = ['PENDING', 'RUNNING', 'CANCELLING'] as const satisfies readonly StateType[];
const ACTIVE_STATE_TYPES: ReadonlySet<StateType> = new Set(ACTIVE_STATES);

/** Flow runs: creation, state transitions with the server's rules, cancellation, reads. */
export class RunService {
  constructor(private readonly ctx: ServiceContext) {}

  /** The run query with the names the API shows. */
  selectRuns(db: Db = this.ctx.db) {
    return db
      .selectFrom('flow_runs as r')
      .innerJoin('flows as f', 'f.id', 'r.flow_id')
      .leftJoin('deployments as d', 'd.id', 'r.deployment_id')
      .leftJoin('work_pools as p', 'p.id', 'r.work_pool_id')
      .leftJoin('workers as w', 'w.id', 'r.worker_id')
      .selectAll('r')
      .select(['f.name as flow_name', 'd.name as deployment_name', 'p.name as pool_name', 'w.name as worker_name']);
  }

  async getRunRow(id: string, db: Db = this.ctx.db): Promise<FlowRunRow | undefined> {
    return (await this.selectRuns(db).where('r.id', '=', id).executeTakeFirst()) as FlowRunRow | undefined;
  }

  /** Finds a run by full id or unambiguous prefix (at least 4 characters). */
  async getRun(idOrPrefix: string): Promise<FlowRun> {
    const exact = await this.getRunRow(idOrPrefix);
    if (exact) return toFlowRun(exact);
    if (idOrPrefix.length >= 4 && /^[0-9a-f-]+$/i.test(idOrPrefix)) {
      const rows = (await this.selectRuns().where('r.id', 'like', `${idOrPrefix.toLowerCase()}%`).limit(2).execute()) as FlowRunRow[];
      if (rows.length === 1) return toFlowRun(rows[0] as FlowRunRow);
      if (rows.length > 1) {
        throw new TesseraError(
          'ERR_CONFLICT',
          `run id prefix "${idOrPrefix}" is ambiguous (matches ${rows.map((r) => r.id.slice(0, 12)).join(', ')}…); give more characters`,
        );
      }
    }
    throw new TesseraError('ERR_RUN_NOT_FOUND', `no flow run with id "${idOrPrefix}"; list runs with \`tessera runs ls\``);
  }

  async listRuns(filter: { state?: string; deployment?: string; limit?: number }): Promise<FlowRun[]> {
    let q = this.selectRuns();
    if (filter.state) {
      const wanted = filter.state.toUpperCase();
      q = q.where((eb) => eb.or([eb('r.state_type', '=', wanted), eb('r.state_name', '=', filter.state as string)]));
    }
    if (filter.deployment) q = q.where('d.name', '=', filter.deployment);
    const rows = (await q
      .orderBy('r.created_at', 'desc')
      .orderBy('r.id')
      .limit(pageSize(filter.limit, 50, 1000))
      .execute()) as FlowRunRow[];
    return rows.map(toFlowRun);
  }

  async history(runId: string): Promise<StateHistoryEntry[]> {
    const rows = await this.ctx.db.selectFrom('flow_run_states').selectAll().where('flow_run_id', '=', runId).orderBy('id').execute();
    return rows.map(toStateEntry);
  }

  /**
   * Creates a run, or returns the existing one when its idempotency key was seen before for this
   * deployment (so a schedule slot never gets two runs, whatever restarts happen).
   */
  async createRun(spec: NewRun, db: Db = this.ctx.db): Promise<{ run: FlowRunRow; created: boolean }> {
    const now = this.ctx.clock.now();
    const id = randomUUID();
    const initial = spec.initial ?? { type: 'SCHEDULED' as const };
    const stateName = initial.name ?? STATE_NAMES[initial.type];
    const scheduledIso = iso(spec.scheduledFor);
    const insert = db.insertInto('flow_runs').values({
      id,
      name: generateRunName(),
      flow_id: spec.flowId,
      deployment_id: spec.deploymentId,
      work_pool_id: spec.workPoolId,
      work_queue: spec.workQueue,
      priority: spec.priority,
      state_type: initial.type,
      state_name: stateName,
      state_message: null,
      state_timestamp: iso(now),
      parameters: toJson(spec.parameters),
      attempt: spec.attempt ?? 0,
      max_retries: spec.maxRetries,
      retry_delays: toJson(spec.retryDelaysMs),
      expected_start_time: scheduledIso,
      next_scheduled_start_time: initial.type === 'SCHEDULED' ? scheduledIso : null,
      start_time: null,
      end_time: null,
      worker_id: null,
      claimed_at: null,
      trigger_kind: spec.triggerKind,
      triggered_by: toJson(spec.triggeredBy),
      result: null,
      error: null,
      tags: toJson(spec.tags),
      idempotency_key: spec.idempotencyKey,
      created_at: iso(now),
      updated_at: iso(now),
    });
    const res = spec.idempotencyKey
      ? await insert.onConflict((oc) => oc.columns(['deployment_id', 'idempotency_key']).doNothing()).executeTakeFirst()
      : await insert.executeTakeFirst();
    if (spec.idempotencyKey && Number(res.numInsertedOrUpdatedRows ?? 0n) === 0) {
      const existing = await this.selectRuns(db)
        .where('r.deployment_id', spec.deploymentId === null ? 'is' : '=', spec.deploymentId)
        .where('r.idempotency_key', '=', spec.idempotencyKey)
        .executeTakeFirstOrThrow();
      return { run: existing as FlowRunRow, created: false };
    }
    await db
      .insertInto('flow_run_states')
      .values({
        flow_run_id: id,
        attempt: spec.attempt ?? 0,
        type: initial.type,
        name: stateName,
        message: null,
        timestamp: iso(now),
        cause: toJson(spec.triggeredBy),
      })
      .execute();
    // Wake the pool's long polls even for a run due later: a poll already waiting computed its
    // wake-up time before this run existed, and would otherwise sleep through its slot.
    if (initial.type === 'SCHEDULED' && spec.workPoolId) this.ctx.wakeups.poolChanged(spec.workPoolId);
    return { run: (await this.getRunRow(id, db)) as FlowRunRow, created: true };
  }

  /**
   * Records a transition: appends to the history and updates the run, guarded by the state it was
   * read in (compare-and-set), so two concurrent proposals cannot both win.
   * @returns false when the run changed under us.
   */
  async writeTransition(
    db: Db,
    run: FlowRunTable,
    to: { type: StateType; name: string; message?: string | null },
    cause: StateCause,
    patch: Updateable<FlowRunTable> = {},
  ): Promise<boolean> {
    const now = iso(this.ctx.clock.now());
    const res = await db
      .updateTable('flow_runs')
      .set({ ...patch, state_type: to.type, state_name: to.name, state_message: to.message ?? null, state_timestamp: now, updated_at: now })
      .where('id', '=', run.id)
      .where('state_type', '=', run.state_type)
      .where('attempt', '=', run.attempt)
      .where('updated_at', '=', run.updated_at)
      .executeTakeFirst();
    if (Number(res.numUpdatedRows) !== 1) return false;
    await db
      .insertInto('flow_run_states')
      .values({
        flow_run_id: run.id,
        attempt: (patch.attempt as number | undefined) ?? run.attempt,
        type: to.type,
        name: to.name,
        message: to.message ?? null,
        timestamp: now,
        cause: toJson(cause),
      })
      .execute();
    if (isTerminal(to.type)) {
      // The run credential dies with the attempt: nothing can act for this run any more.
      await db
        .updateTable('run_credentials')
        .set({ revoked_at: now })
        .where('flow_run_id', '=', run.id)
        .where('revoked_at', 'is', null)
        .execute();
    }
    return true;
  }

  /**
   * Applies a proposed state under the server's rules: legal transitions only (409 otherwise), a run
   * credential may act only for its own run and current attempt, and a Failed or Crashed run with
   * retries left is moved to Scheduled/AwaitingRetry.
   */
  async proposeState(runId: string, req: ProposeStateRequest, actor: Actor, expected?: ExpectedRun): Promise<ProposeStateResponse> {
    for (let tries = 0; tries < 5; tries++) {
      const outcome = await this.ctx.db.transaction().execute(async (trx) => this.tryPropose(trx, runId, req, actor, expected));
      if (outcome !== 'retry') {
        if (outcome.wakePool) this.ctx.wakeups.poolChanged(outcome.wakePool);
        if (outcome.freedPool) this.ctx.wakeups.slotFreed(outcome.freedPool);
        return outcome.response;
      }
    }
    throw new TesseraError('ERR_CONFLICT', `run ${runId} is changing too fast to apply the proposed state; retry`);
  }

  private async tryPropose(
    trx: Transaction<Database>,
    runId: string,
    req: ProposeStateRequest,
    actor: Actor,
    expected?: ExpectedRun,
  ): Promise<'retry' | { response: ProposeStateResponse; wakePool?: string; freedPool?: string }> {
    const run = await this.getRunRow(runId, trx);
    if (!run) throw new TesseraError('ERR_RUN_NOT_FOUND', `no flow run with id "${runId}"`);
    // A verdict reached on an earlier read (a silent worker, a lost claim) is only for the claim it
    // judged: if the run moved on since (another attempt, another worker), it does not apply.
    if (expected && (expected.workerId !== run.worker_id || expected.attempt !== run.attempt)) {
      return { response: { status: 'ABORT', run: toFlowRun(run) } };
    }
    if (actor.kind === 'run') {
      if (actor.runId !== run.id) throw new TesseraError('ERR_FORBIDDEN', 'this run credential belongs to another run');
      if (actor.attempt !== run.attempt) {
        throw new TesseraError(
          'ERR_CREDENTIAL_REVOKED',
          `this run credential is for attempt ${actor.attempt}; the run is now on attempt ${run.attempt}`,
        );
      }
    }
    const from = run.state_type as StateType;
    const to = req.state.type;
    const name = normaliseStateName(to, req.state.name);
    // Re-sending the state a run already has (a retried request whose answer was lost) is not an
    // error. A later attempt's Running is stored as Retrying, so compare with what would be stored.
    const storedName = to === 'RUNNING' && run.attempt > 1 && name === 'Running' ? 'Retrying' : name;
    if (from === to && (isTerminal(from) || storedName === run.state_name)) {
      // The run's own process (its current attempt's credential) asked for this state and has it:
      // ACCEPT, so it goes on as if the first answer had arrived. Anyone else: nothing changed.
      const own = actor.kind === 'run' && !isTerminal(from);
      return { response: { status: own ? 'ACCEPT' : 'ABORT', run: toFlowRun(run) } };
    }
    const reason =
      checkTransition('flow_run', from, to) ??
      // Pending means claimed: a worker holds it (and its slot under the limits). Set by hand it would
      // belong to nobody, hold a slot forever, and no lost-claim repair would ever find it.
      (from === 'SCHEDULED' && to === 'PENDING' && actor.kind !== 'run' ? 'a run becomes Pending only when a worker claims it' : null);
    if (reason) throw new IllegalTransitionError(`cannot move run ${run.id.slice(0, 8)} to ${name}: ${reason}`, { from, to });
    const cause = causeOf(actor, run, to);
    const now = this.ctx.clock.now();
    const patch: Updateable<FlowRunTable> = {};
    let stateName = name;
    // Whatever a client sends is masked before it is stored: a flow that returns or throws a token
    // must not put it in the database.
    const message = req.state.message ? redactSecrets(req.state.message) : null;

    if (to === 'RUNNING') {
      if (!run.start_time) patch.start_time = iso(now);
      if (run.attempt > 1 && stateName === 'Running') stateName = 'Retrying';
    }
    if (to === 'COMPLETED') {
      const result = redactSecrets(toJson(req.result ?? null));
      if (result.length > MAX_RESULT_BYTES) {
        throw new TesseraError(
          'ERR_VALIDATION',
          `result: the flow's return value is ${result.length} bytes as JSON; the limit is ${MAX_RESULT_BYTES}. Store large results elsewhere and return a reference.`,
        );
      }
      patch.result = result;
      patch.error = null;
    }
    if (to === 'FAILED' || to === 'CRASHED') {
      patch.error = redactSecrets(toJson(req.error ?? { name: 'Error', message: message ?? `run ${STATE_NAMES[to].toLowerCase()}` }));
    }
    if (to === 'SCHEDULED') {
      // Given back before it started (e.g. by its worker): claimable again, same attempt count.
      patch.next_scheduled_start_time = iso(scheduledForOf(req.scheduledFor) ?? now);
      patch.worker_id = null;
      patch.claimed_at = null;
      if (from === 'PENDING') patch.attempt = Math.max(0, run.attempt - 1);
    }
    if (isTerminal(to)) patch.end_time = iso(now);

    if (!(await this.writeTransition(trx, run, { type: to, name: stateName, message }, cause, patch))) return 'retry';
    if (to === 'SCHEDULED' && from === 'PENDING') {
      await trx
        .updateTable('run_credentials')
        .set({ revoked_at: iso(now) })
        .where('flow_run_id', '=', run.id)
        .where('revoked_at', 'is', null)
        .execute();
      // The next claim reuses this attempt number: tokens issued under the claim given back must not
      // turn active again (introspection) once another worker's claim of the same attempt runs.
      await trx
        .updateTable('issued_tokens')
        .set({ revoked_at: iso(now) })
        .where('flow_run_id', '=', run.id)
        .where('attempt', '=', run.attempt)
        .where('revoked_at', 'is', null)
        .execute();
    }

    let retryScheduled = false;
    let wakePool: string | undefined;
    // A run someone cancelled is not retried, however its process ended (user code may turn the
    // cancellation into an ordinary error, reported Failed).
    if ((to === 'FAILED' || to === 'CRASHED') && from !== 'CANCELLING') {
      retryScheduled = await this.scheduleRetryIfAllowed(trx, run.id, req.error);
      if (retryScheduled && run.work_pool_id) wakePool = run.work_pool_id;
    }
    if (to === 'SCHEDULED' && run.work_pool_id) wakePool = run.work_pool_id;
    // A run that leaves Pending, Running or Cancelling frees a slot under the pool's, queue's and
    // deployment's concurrency limits: polls held open in front of a run those limits blocked claim it now.
    const freedPool = ACTIVE_STATE_TYPES.has(from) && !ACTIVE_STATE_TYPES.has(to) ? run.work_pool_id : null;
    const updated = (await this.getRunRow(run.id, trx)) as FlowRunRow;
    return {
      response: { status: 'ACCEPT', run: toFlowRun(updated), ...(retryScheduled ? { retryScheduled } : {}) },
      ...(wakePool ? { wakePool } : {}),
      ...(freedPool ? { freedPool } : {}),
    };
  }

  /**
   * The retry rule: a Failed or Crashed run with retries left goes back to Scheduled/AwaitingRetry
   * after its retry delay. Parameter validation failures are not retried: they would fail again.
   */
  async scheduleRetryIfAllowed(db: Db, runId: string, error: RunError | undefined): Promise<boolean> {
    const run = await db.selectFrom('flow_runs').selectAll().where('id', '=', runId).executeTakeFirstOrThrow();
    if (run.state_type !== 'FAILED' && run.state_type !== 'CRASHED') return false;
    if (error?.code === 'ERR_INVALID_PARAMETERS' || error?.code === 'ERR_ENTRYPOINT') return false;
    if (run.attempt < 1 || run.attempt > run.max_retries) return false;
    const delays = fromJson<number[]>(run.retry_delays, []);
    const delay = delays.length === 0 ? 0 : (delays[Math.min(run.attempt - 1, delays.length - 1)] as number);
    const due = this.ctx.clock.now() + delay;
    const ok = await this.writeTransition(
      db,
      run,
      {
        type: 'SCHEDULED',
        name: 'AwaitingRetry',
        message: `retry ${run.attempt} of ${run.max_retries}${delay ? ` in ${Math.round(delay / 100) / 10} s` : ''}`,
      },
      { kind: 'server', id: 'retry-rule', label: 'retry rule' },
      { next_scheduled_start_time: iso(due), worker_id: null, claimed_at: null, end_time: null },
    );
    return ok;
  }

  /** Cancels a run: directly when it has not started, through Cancelling (the worker stops it) when it has. */
  async cancel(idOrPrefix: string, actor: Actor, message = 'cancel requested'): Promise<FlowRun> {
    const { id } = await this.getRun(idOrPrefix);
    for (let tries = 0; tries < 5; tries++) {
      const out = await this.ctx.db.transaction().execute(async (trx) => {
        const run = (await this.getRunRow(id, trx)) as FlowRunRow;
        const from = run.state_type as StateType;
        // An ad-hoc run (`tessera run`) is stopped by the process that runs it, which nothing watches:
        // if it is gone, the run would stay Cancelling for ever. Cancelling it again ends it.
        if (from === 'CANCELLING' && run.trigger_kind === 'adhoc' && !run.worker_id) {
          const cause = causeOf(actor, run, 'CANCELLED');
          const ended = { end_time: iso(this.ctx.clock.now()), next_scheduled_start_time: null };
          const forced = {
            type: 'CANCELLED' as const,
            name: STATE_NAMES.CANCELLED,
            message: 'cancelled again: its process did not confirm the first cancel',
          };
          if (!(await this.writeTransition(trx, run, forced, cause, ended))) return 'retry' as const;
          return { run: (await this.getRunRow(id, trx)) as FlowRunRow };
        }
        if (from === 'CANCELLING' || from === 'CANCELLED') return { run };
        if (isTerminal(from)) {
          throw new IllegalTransitionError(`run ${run.id.slice(0, 8)} is already ${run.state_name}; there is nothing to cancel`, {
            from,
            to: 'CANCELLED',
          });
        }
        const cause = causeOf(actor, run, 'CANCELLING');
        const startedOrClaimed = from === 'PENDING' || from === 'RUNNING';
        const to: StateType = startedOrClaimed && (run.worker_id || run.trigger_kind === 'adhoc') ? 'CANCELLING' : 'CANCELLED';
        const patch: Updateable<FlowRunTable> =
          to === 'CANCELLED' ? { end_time: iso(this.ctx.clock.now()), next_scheduled_start_time: null } : {};
        if (!(await this.writeTransition(trx, run, { type: to, name: STATE_NAMES[to], message }, cause, patch))) return 'retry' as const;
        return {
          run: (await this.getRunRow(id, trx)) as FlowRunRow,
          worker: to === 'CANCELLING' ? run.worker_id : null,
          // A claimed run cancelled outright (it had no worker) frees a concurrency slot.
          freed: to === 'CANCELLED' && ACTIVE_STATE_TYPES.has(from) ? run.work_pool_id : null,
        };
      });
      if (out !== 'retry') {
        if ('worker' in out && out.worker) this.ctx.wakeups.workerChanged(out.worker);
        if ('freed' in out && out.freed) this.ctx.wakeups.slotFreed(out.freed);
        return toFlowRun(out.run);
      }
    }
    throw new TesseraError('ERR_CONFLICT', `run ${id} is changing too fast to cancel; retry`);
  }
}

function normaliseStateName(type: StateType, name: string | undefined): string {
  if (!name) return STATE_NAMES[type];
  if (name === STATE_NAMES[type]) return name;
  const sub = (SUB_STATES as Record<string, StateType>)[name];
  if (sub === type) return name;
  throw new TesseraError(
    'ERR_VALIDATION',
    `state.name: "${name}" is not a state of type ${type}; use "${STATE_NAMES[type]}"${Object.entries(SUB_STATES)
      .filter(([, t]) => t === type)
      .map(([n]) => ` or "${n}"`)
      .join('')}`,
  );
}

/** Who a transition is attributed to, for the history. */
export function causeOf(actor: Actor, run: FlowRunRow, to: StateType): StateCause {
  if (actor.kind !== 'run') return { kind: actor.kind, id: actor.id, ...(actor.label ? { label: actor.label } : {}) };
  // The worker reports what it observes from outside the process (crash, cancellation done);
  // the flow process reports its own progress.
  if ((to === 'CRASHED' || to === 'CANCELLED' || to === 'SCHEDULED') && run.worker_id) {
    return { kind: 'worker', id: run.worker_id, ...(run.worker_name ? { label: run.worker_name } : {}) };
  }
  return { kind: 'flow', id: `${run.id}#${run.attempt}`, label: `flow process, attempt ${run.attempt}` };
}

/**
 * A proposed `scheduledFor` as epoch ms, stored as `iso()` like every time: compared as text, an
 * offset (`…T14:00:00+02:00`) or a word would sort wrong and make the run due at the wrong time, or never.
 * @throws TesseraError `ERR_VALIDATION` naming `scheduledFor`.
 */
export function scheduledForOf(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const ms = Date.parse(value);
  if (Number.isNaN(ms) || !/^\d{4}-\d{2}-\d{2}T/.test(value)) {
    throw new TesseraError(
      'ERR_VALIDATION',
      `scheduledFor: "${value.slice(0, 64)}" is not an ISO-8601 time; send one such as 2026-11-29T12:00:00Z`,
      { details: { field: 'scheduledFor' } },
    );
  }
  return ms;
}
