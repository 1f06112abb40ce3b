import { createHash, randomUUID } from 'node:crypto';
import {
  type CreateRunRequest,
  type CreateWorkPoolRequest,
  type CreateWorkQueueRequest,
  type Deployment,
  type DeploymentSpec,
  type Flow,
  type FlowRun,
  type ScheduleSpec,
  type StateCause,
  TesseraError,
  type TriggerKind,
  tokenFileAudiences,
  type UpdateWorkPoolRequest,
  ValidationError,
  type WorkPool,
  type WorkQueue,
} from '@tessera/core';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { Cron } from 'croner';
import type { Kysely, Transaction } from 'kysely';
import { iso } from '../lib/clock.js';
import { toJson } from '../lib/json.js';
import { type FlowRunRow, toDeployment, toFlowRun, toWorkPool, toWorkQueue } from '../store/rows.js';
import type { Database } from '../store/schema.js';
import type { ServiceContext } from './context.js';
import { ACTIVE_STATES, type Actor, type RunService, scheduledForOf } from './runs.js';
import { DEFAULT_MAX_TOKEN_LIFETIME_MS } from './tokens.js';
import { checkDeploymentSubject } from './workspace-identity.js';

type Db = Kysely<Database> | Transaction<Database>;

/** Work pools, queues, flows and deployments. */
export class CatalogService {
  private readonly ajv = createAjv();
  private readonly validators = new Map<string, ValidateFunction>();

  constructor(
    private readonly ctx: ServiceContext,
    private readonly runs: RunService,
  ) {}

  async createWorkPool(req: CreateWorkPoolRequest): Promise<WorkPool> {
    const existing = await this.ctx.db.selectFrom('work_pools').select('id').where('name', '=', req.name).executeTakeFirst();
    if (existing) throw new TesseraError('ERR_CONFLICT', `work pool "${req.name}" already exists`);
    const now = iso(this.ctx.clock.now());
    const id = randomUUID();
    await this.ctx.db.transaction().execute(async (trx) => {
      await trx
        .insertInto('work_pools')
        .values({
          id,
          name: req.name,
          description: req.description ?? null,
          concurrency_limit: req.concurrencyLimit ?? null,
          paused: 0,
          created_at: now,
        })
        .execute();
      await trx
        .insertInto('work_queues')
        .values({ id: randomUUID(), pool_id: id, name: 'default', priority: 0, concurrency_limit: null, created_at: now })
        .execute();
    });
    return this.getWorkPool(req.name);
  }

  async ensureWorkPool(name: string): Promise<WorkPool> {
    try {
      return await this.getWorkPool(name);
    } catch {
      try {
        return await this.createWorkPool({ name });
      } catch {
        return this.getWorkPool(name);
      }
    }
  }

  async getWorkPool(name: string): Promise<WorkPool> {
    const row = await this.ctx.db.selectFrom('work_pools').selectAll().where('name', '=', name).executeTakeFirst();
    if (!row) {
      const all = await this.ctx.db.selectFrom('work_pools').select('name').execute();
      throw new TesseraError(
        'ERR_UNKNOWN_POOL',
        `work pool "${name}" does not exist${all.length ? ` (pools: ${all.map((p) => p.name).join(', ')})` : ''}; create it with \`tessera pools create ${name}\``,
        { details: { field: 'workPool' } },
      );
    }
    const queues = await this.ctx.db.selectFrom('work_queues').selectAll().where('pool_id', '=', row.id).orderBy('priority').execute();
    const active = await this.ctx.db
      .selectFrom('flow_runs')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('work_pool_id', '=', row.id)
      .where('state_type', 'in', ['PENDING', 'RUNNING', 'CANCELLING'])
      .executeTakeFirstOrThrow();
    return toWorkPool(row, { activeRuns: Number(active.n), queues: queues.map((q) => toWorkQueue(q, row.name)) });
  }

  async listWorkPools(): Promise<WorkPool[]> {
    const rows = await this.ctx.db.selectFrom('work_pools').select('name').orderBy('name').execute();
    return Promise.all(rows.map((r) => this.getWorkPool(r.name)));
  }

  async updateWorkPool(name: string, req: UpdateWorkPoolRequest): Promise<WorkPool> {
    const pool = await this.getWorkPool(name);
    await this.ctx.db
      .updateTable('work_pools')
      .set({
        ...(req.description !== undefined ? { description: req.description } : {}),
        ...(req.concurrencyLimit !== undefined ? { concurrency_limit: req.concurrencyLimit } : {}),
        ...(req.paused !== undefined ? { paused: req.paused ? 1 : 0 } : {}),
      })
      .where('id', '=', pool.id)
      .execute();
    this.ctx.wakeups.poolChanged(pool.id);
    return this.getWorkPool(name);
  }

  async createWorkQueue(poolName: string, req: CreateWorkQueueRequest): Promise<WorkQueue> {
    const pool = await this.getWorkPool(poolName);
    if (pool.queues?.some((q) => q.name === req.name))
      throw new TesseraError('ERR_CONFLICT', `work queue "${req.name}" already exists in pool "${poolName}"`);
    const row = {
      id: randomUUID(),
      pool_id: pool.id,
      name: req.name,
      priority: req.priority ?? 0,
      concurrency_limit: req.concurrencyLimit ?? null,
      created_at: iso(this.ctx.clock.now()),
    };
    await this.ctx.db.insertInto('work_queues').values(row).execute();
    return toWorkQueue(row, poolName);
  }

  async ensureFlow(name: string, db: Db = this.ctx.db): Promise<string> {
    const found = await db.selectFrom('flows').select('id').where('name', '=', name).executeTakeFirst();
    if (found) return found.id;
    const id = randomUUID();
    await db
      .insertInto('flows')
      .values({ id, name, created_at: iso(this.ctx.clock.now()) })
      .onConflict((oc) => oc.column('name').doNothing())
      .execute();
    return (await db.selectFrom('flows').select('id').where('name', '=', name).executeTakeFirstOrThrow()).id;
  }

  async listFlows(): Promise<Flow[]> {
    const rows = await this.ctx.db.selectFrom('flows').selectAll().orderBy('name').execute();
    return rows.map((r) => ({ id: r.id, name: r.name, createdAt: r.created_at }));
  }

  private selectDeployments(db: Db = this.ctx.db) {
    return db
      .selectFrom('deployments as d')
      .innerJoin('flows as f', 'f.id', 'd.flow_id')
      .innerJoin('work_pools as p', 'p.id', 'd.work_pool_id')
      .selectAll('d')
      .select(['f.name as flow_name', 'p.name as pool_name']);
  }

  async getDeployment(name: string, db: Db = this.ctx.db): Promise<Deployment> {
    const row = await this.selectDeployments(db).where('d.name', '=', name).executeTakeFirst();
    if (!row) {
      throw new TesseraError(
        'ERR_UNKNOWN_DEPLOYMENT',
        `deployment "${name}" does not exist; list deployments with \`tessera deployments ls\` or create it with \`tessera deploy\``,
      );
    }
    const schedules = await db.selectFrom('schedules').selectAll().where('deployment_id', '=', row.id).orderBy('created_at').execute();
    return toDeployment(row, schedules);
  }

  async listDeployments(): Promise<Deployment[]> {
    const rows = await this.ctx.db.selectFrom('deployments').select('name').orderBy('name').execute();
    return Promise.all(rows.map((r) => this.getDeployment(r.name)));
  }

  /**
   * Creates or updates a deployment. Its id never changes across redeploys. Schedules are matched by
   * definition, so an unchanged schedule keeps its id and its already-created runs; removed schedules
   * lose their future runs.
   */
  async putDeployment(spec: DeploymentSpec, actor: StateCause): Promise<Deployment> {
    const pool = await this.getWorkPool(spec.workPool);
    if (spec.workQueue && !pool.queues?.some((q) => q.name === spec.workQueue)) {
      throw new TesseraError(
        'ERR_VALIDATION',
        `workQueue: pool "${spec.workPool}" has no queue "${spec.workQueue}" (queues: ${pool.queues?.map((q) => q.name).join(', ')})`,
        {
          details: { field: 'workQueue' },
        },
      );
    }
    const schedules = (spec.schedules ?? []).map((s, i) => normaliseSchedule(s, `schedules[${i}]`));
    checkTokenFiles(spec, this.ctx.settings.minTokenLifetimeMs);
    // The `sub` its runs will get must fit GCP's 127 characters: fail the deploy, not every run.
    await checkDeploymentSubject(this.ctx.db, spec);
    if (spec.parameterSchema) {
      try {
        this.compile(spec.parameterSchema);
      } catch (e) {
        throw new TesseraError('ERR_VALIDATION', `parameterSchema: not a valid JSON Schema: ${(e as Error).message}`, {
          details: { field: 'parameterSchema' },
        });
      }
      this.validateParameters(spec.name, spec.parameterSchema, spec.parameters ?? {}, { partial: true });
    }
    const now = iso(this.ctx.clock.now());
    const name = await this.ctx.db.transaction().execute(async (trx) => {
      const flowId = await this.ensureFlow(spec.flowName, trx);
      const existing = await trx.selectFrom('deployments').select('id').where('name', '=', spec.name).executeTakeFirst();
      const values = {
        flow_id: flowId,
        entrypoint: spec.entrypoint,
        path: spec.path,
        work_pool_id: pool.id,
        work_queue: spec.workQueue ?? null,
        description: spec.description ?? null,
        parameters: toJson(spec.parameters ?? {}),
        parameter_schema: spec.parameterSchema ? toJson(spec.parameterSchema) : null,
        tags: toJson(spec.tags ?? []),
        environment: spec.environment ?? 'dev',
        project: spec.project ?? 'default',
        identity: toJson({ ...spec.identity, audiences: spec.identity?.audiences ?? [] }),
        concurrency_limit: spec.concurrencyLimit ?? null,
        retries: spec.retries ?? 0,
        retry_delays: toJson(spec.retryDelaysMs ?? []),
        env: toJson(spec.env ?? {}),
        updated_at: now,
      };
      let id: string;
      if (existing) {
        id = existing.id;
        await trx.updateTable('deployments').set(values).where('id', '=', id).execute();
      } else {
        id = randomUUID();
        await trx
          .insertInto('deployments')
          .values({ id, name: spec.name, created_at: now, ...values })
          .execute();
      }
      const current = await trx.selectFrom('schedules').selectAll().where('deployment_id', '=', id).execute();
      const wanted = new Set(schedules.map((s) => s.fingerprint));
      for (const old of current) {
        if (wanted.has(old.fingerprint)) continue;
        await trx.deleteFrom('schedules').where('id', '=', old.id).execute();
        // Future runs of a removed schedule go away with it; runs already started are left alone.
        await trx
          .deleteFrom('flow_runs')
          .where('deployment_id', '=', id)
          .where('state_type', '=', 'SCHEDULED')
          .where('attempt', '=', 0)
          .where('idempotency_key', 'like', `schedule:${old.id}:%`)
          .execute();
      }
      for (const s of schedules) {
        const found = current.find((c) => c.fingerprint === s.fingerprint);
        if (found) {
          await trx
            .updateTable('schedules')
            .set({ active: s.active ? 1 : 0 })
            .where('id', '=', found.id)
            .execute();
          // A paused schedule's runs created ahead of time (not yet due) would still be claimed: they
          // go, as a removed schedule's do; resuming it creates them again (one per slot, as ever).
          // Runs already due stay: they are the schedule's past, waiting for a worker.
          if (!s.active && found.active) {
            await trx
              .deleteFrom('flow_runs')
              .where('deployment_id', '=', id)
              .where('state_type', '=', 'SCHEDULED')
              .where('attempt', '=', 0)
              .where('next_scheduled_start_time', '>', now)
              .where('idempotency_key', 'like', `schedule:${found.id}:%`)
              .execute();
          }
        } else {
          await trx
            .insertInto('schedules')
            .values({ id: randomUUID(), deployment_id: id, ...s, active: s.active ? 1 : 0, created_by: toJson(actor), created_at: now })
            .execute();
        }
      }
      return spec.name;
    });
    // Its concurrency limit may have been raised: polls its runs held back look again.
    this.ctx.wakeups.slotFreed(pool.id);
    return this.getDeployment(name);
  }

  /**
   * Deletes a deployment and its schedules. Its runs that never started are deleted; runs waiting for
   * a retry or paused are cancelled (their history stays); running ones finish, without retries: a
   * run without its deployment has no entrypoint to run again.
   */
  async deleteDeployment(name: string, actor: Actor = { kind: 'server', id: 'catalog' }): Promise<void> {
    const dep = await this.getDeployment(name);
    const poolId = await this.ctx.db.transaction().execute(async (trx) => {
      const row = await trx.selectFrom('deployments').select('work_pool_id').where('id', '=', dep.id).executeTakeFirst();
      await trx
        .deleteFrom('flow_runs')
        .where('deployment_id', '=', dep.id)
        .where('state_type', '=', 'SCHEDULED')
        .where('attempt', '=', 0)
        .execute();
      await trx.deleteFrom('schedules').where('deployment_id', '=', dep.id).execute();
      return row?.work_pool_id;
    });
    const waiting = await this.ctx.db
      .selectFrom('flow_runs')
      .select('id')
      .where('deployment_id', '=', dep.id)
      .where('state_type', 'in', ['SCHEDULED', 'PAUSED'])
      .execute();
    for (const r of waiting) {
      try {
        await this.runs.cancel(r.id, actor, 'its deployment was deleted');
      } catch (e) {
        // Claimed or ended meanwhile: it is handled as the active runs below, or needs nothing.
        if (!(e instanceof TesseraError) || e.code !== 'ERR_ILLEGAL_TRANSITION') throw e;
      }
    }
    await this.ctx.db.transaction().execute(async (trx) => {
      await trx
        .updateTable('flow_runs')
        .set({ max_retries: 0 })
        .where('deployment_id', '=', dep.id)
        .where('state_type', 'in', ACTIVE_STATES)
        .execute();
      await trx.deleteFrom('deployments').where('id', '=', dep.id).execute();
    });
    // Its runs lose the deployment's limit: polls they held back look again.
    if (poolId) this.ctx.wakeups.slotFreed(poolId);
  }

  /** Starts a run of a deployment now (or at `scheduledFor`), after validating its parameters. */
  async runDeployment(name: string, req: CreateRunRequest, actor: StateCause): Promise<FlowRun> {
    const dep = await this.getDeployment(name);
    const parameters = { ...dep.parameters, ...(req.parameters ?? {}) };
    if (dep.parameterSchema) this.validateParameters(dep.name, dep.parameterSchema, parameters);
    const pool = await this.ctx.db.selectFrom('work_pools').select('id').where('name', '=', dep.workPool).executeTakeFirstOrThrow();
    const queue = dep.workQueue
      ? await this.ctx.db
          .selectFrom('work_queues')
          .select('priority')
          .where('pool_id', '=', pool.id)
          .where('name', '=', dep.workQueue)
          .executeTakeFirst()
      : undefined;
    const scheduledFor = scheduledForOf(req.scheduledFor || undefined) ?? this.ctx.clock.now();
    const { run } = await this.runs.createRun({
      flowId: dep.flowId,
      deploymentId: dep.id,
      workPoolId: pool.id,
      workQueue: dep.workQueue,
      priority: queue?.priority ?? 0,
      parameters,
      maxRetries: dep.retries,
      retryDelaysMs: dep.retryDelaysMs,
      scheduledFor,
      triggerKind: triggerKindOf(actor),
      triggeredBy: actor,
      tags: [...dep.tags, ...(req.tags ?? [])],
      idempotencyKey: req.idempotencyKey ? `api:${req.idempotencyKey}` : null,
    });
    return toFlowRun(run as FlowRunRow);
  }

  /**
   * A validator for a parameter schema, compiled once per distinct schema. Ajv keeps every schema it
   * compiles, keyed by object (a fresh object per run would grow it for ever) and by `$id` (the same
   * `$id` compiled twice fails): so schemas are compiled by content, and let go of by Ajv at once.
   */
  private compile(schema: Record<string, unknown>): ValidateFunction {
    const key = JSON.stringify(schema);
    let validate = this.validators.get(key);
    if (!validate) {
      try {
        validate = this.ajv.compile(schema);
      } finally {
        // Also when it is refused: Ajv registered its `$id` first, and would refuse a fixed schema with it.
        this.ajv.removeSchema(schema);
      }
      if (this.validators.size >= 500) this.validators.clear();
      this.validators.set(key, validate);
    }
    return validate;
  }

  /** Validates parameters against the flow's JSON Schema; every failing field is named. */
  validateParameters(
    deployment: string,
    schema: Record<string, unknown>,
    parameters: Record<string, unknown>,
    options: { partial?: boolean } = {},
  ): void {
    const effective = options.partial ? { ...schema, required: [] } : schema;
    const validate = this.compile(effective);
    if (validate(structuredClone(parameters))) return;
    const issues = (validate.errors ?? []).map((e) => ({ path: paramPath(e), message: e.message ?? 'is invalid' }));
    throw new ValidationError(
      `invalid parameters for deployment "${deployment}": ${issues.map((i) => `${i.path} ${i.message}`).join('; ')}`,
      issues,
      'ERR_INVALID_PARAMETERS',
    );
  }
}

// ajv-formats is CommonJS; its default export arrives wrapped under NodeNext.
const addFormats = (addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule;

function createAjv(): Ajv2020 {
  const ajv = new Ajv2020({ allErrors: true, strict: false, useDefaults: true });
  (addFormats as unknown as (a: Ajv2020) => void)(ajv);
  return ajv;
}

function paramPath(e: ErrorObject): string {
  const base = e.instancePath.replace(/^\//, '').replace(/\//g, '.');
  if (e.keyword === 'required') return [base, (e.params as { missingProperty: string }).missingProperty].filter(Boolean).join('.');
  if (e.keyword === 'additionalProperties')
    return [base, (e.params as { additionalProperty: string }).additionalProperty].filter(Boolean).join('.');
  return base || '(parameters)';
}

interface NormalisedSchedule {
  fingerprint: string;
  cron: string | null;
  interval_ms: number | null;
  anchor: string | null;
  timezone: string;
  active: boolean;
}

/** Validates one schedule; `where` names the field in errors. */
export function normaliseSchedule(s: ScheduleSpec, where: string): NormalisedSchedule {
  const timezone = s.timezone ?? 'UTC';
  try {
    new Intl.DateTimeFormat('en', { timeZone: timezone });
  } catch {
    throw new TesseraError(
      'ERR_INVALID_SCHEDULE',
      `${where}.timezone: "${timezone}" is not a known IANA time zone (e.g. "Europe/Paris", "UTC")`,
      { details: { field: `${where}.timezone` } },
    );
  }
  if ('cron' in s) {
    try {
      new Cron(s.cron, { timezone, paused: true });
    } catch (e) {
      throw new TesseraError(
        'ERR_INVALID_SCHEDULE',
        `${where}.cron: "${s.cron}" is not a valid cron expression (${(e as Error).message})`,
        { details: { field: `${where}.cron` } },
      );
    }
    return {
      fingerprint: fingerprint(['cron', s.cron, timezone]),
      cron: s.cron,
      interval_ms: null,
      anchor: null,
      timezone,
      active: s.active ?? true,
    };
  }
  if (!Number.isFinite(s.interval) || s.interval < 1000) {
    throw new TesseraError('ERR_INVALID_SCHEDULE', `${where}.interval: ${s.interval} ms is too short; the minimum is 1 s`, {
      details: { field: `${where}.interval` },
    });
  }
  const anchor = s.anchor ?? '2020-01-01T00:00:00.000Z';
  if (Number.isNaN(Date.parse(anchor))) {
    throw new TesseraError('ERR_INVALID_SCHEDULE', `${where}.anchor: "${anchor}" is not an ISO-8601 time`, {
      details: { field: `${where}.anchor` },
    });
  }
  const anchorIso = new Date(anchor).toISOString();
  return {
    fingerprint: fingerprint(['interval', String(s.interval), anchorIso, timezone]),
    cron: null,
    interval_ms: s.interval,
    anchor: anchorIso,
    timezone,
    active: s.active ?? true,
  };
}

function fingerprint(parts: string[]): string {
  return createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 32);
}

const CLOUD_NAMES = { aws: 'AWS', gcp: 'GCP', azure: 'Azure' } as const;

/**
 * Refuses token files the worker could never fill: an audience the deployment does not allow, a
 * lifetime outside its bounds, or a GCP endpoint that would receive the token over plain HTTP.
 * Checked at deploy time so the mistake surfaces in `tessera deploy`, not as a crashed run.
 */
function checkTokenFiles(spec: DeploymentSpec, minLifetimeMs: number): void {
  const files = spec.identity?.tokenFiles;
  if (!files) return;
  const allowed = spec.identity?.audiences ?? [];
  const maxLifetimeMs = spec.identity?.maxLifetimeMs ?? DEFAULT_MAX_TOKEN_LIFETIME_MS;
  const invalid = (field: string, message: string) => new TesseraError('ERR_VALIDATION', `${field}: ${message}`, { details: { field } });
  for (const { cloud, audience } of tokenFileAudiences(files)) {
    const where = `identity.tokenFiles.${cloud}`;
    if (!allowed.includes(audience)) {
      const isDefault = files[cloud]?.audience === undefined;
      throw invalid(
        `${where}.audience`,
        `"${audience}"${isDefault ? ` (the ${CLOUD_NAMES[cloud]} default)` : ''} is not in identity.audiences of deployment "${spec.name}" (allowed: ${allowed.join(', ') || 'none'}); add "${audience}" to identity.audiences${cloud === 'gcp' ? '' : `, or set ${where}.audience to one of them`}`,
      );
    }
    const lifetimeMs = files[cloud]?.lifetimeMs;
    if (lifetimeMs !== undefined && (lifetimeMs < minLifetimeMs || lifetimeMs > maxLifetimeMs)) {
      throw invalid(
        `${where}.lifetimeMs`,
        `${lifetimeMs / 1000} s is outside what deployment "${spec.name}" allows (${minLifetimeMs / 1000} s to ${maxLifetimeMs / 1000} s, the upper bound being identity.maxLifetimeMs)`,
      );
    }
  }
  const gcp = files.gcp;
  for (const key of ['tokenUrl', 'serviceAccountImpersonationUrl'] as const) {
    const value = gcp?.[key];
    if (value === undefined) continue;
    let url: URL | undefined;
    try {
      url = new URL(value);
    } catch {
      url = undefined;
    }
    const loopback = url !== undefined && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
    if (!url || !(url.protocol === 'https:' || (url.protocol === 'http:' && loopback))) {
      // The run's token travels to this URL: over plain HTTP anyone on the path could replay it.
      throw invalid(`identity.tokenFiles.gcp.${key}`, `"${value}" is not an https URL; use e.g. https://sts.googleapis.com/v1/token`);
    }
  }
}

/** How a run started, from who started it: a schedule, a person (`manual`), or software (`api`: CI, a service, a flow). */
export function triggerKindOf(actor: StateCause): TriggerKind {
  if (actor.kind === 'schedule') return 'schedule';
  return actor.kind === 'person' ? 'manual' : 'api';
}
