import type { AdhocRunResponse, CreateAdhocRunRequest, WorkerPollRequest } from '@tessera/core';
import { TesseraError } from '@tessera/core';
import type { FastifyInstance } from 'fastify';
import { causeOfPrincipal, principalId, requireWorkerPool } from '../auth/principal.js';
import { iso } from '../lib/clock.js';
import type { Services } from '../services/index.js';
import type { Actor } from '../services/runs.js';
import { toWorker } from '../store/rows.js';
import { type Principal, requireOwnRun, route } from './route.js';
import * as S from './schemas.js';

function actorOf(principal: Principal | null): Actor {
  if (principal?.kind === 'run')
    return { kind: 'run', runId: principal.run.runId, attempt: principal.run.attempt, workerId: principal.run.workerId };
  const cause = causeOfPrincipal(principal);
  return { kind: cause.kind === 'flow' ? 'server' : cause.kind, id: cause.id, ...(cause.label ? { label: cause.label } : {}) } as Actor;
}

function num(v: string | undefined): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new TesseraError('ERR_VALIDATION', `query parameter: "${v}" is not a number`);
  return n;
}

/** The REST API under /api. */
export function registerApiRoutes(app: FastifyInstance, s: Services): void {
  // ── work pools ──
  route(app, {
    method: 'POST',
    url: '/api/work-pools',
    access: 'developer',
    summary: 'Create a work pool',
    tags: ['work pools'],
    body: S.createWorkPool,
    status: 201,
    handler: ({ body }) => s.catalog.createWorkPool(body),
  });
  route(app, {
    method: 'GET',
    url: '/api/work-pools',
    access: 'viewer',
    summary: 'List work pools',
    tags: ['work pools'],
    handler: async () => ({ items: await s.catalog.listWorkPools() }),
  });
  route(app, {
    method: 'GET',
    url: '/api/work-pools/:name',
    access: 'viewer',
    summary: 'Get a work pool',
    tags: ['work pools'],
    handler: ({ params }) => s.catalog.getWorkPool(params.name as string),
  });
  route(app, {
    method: 'PATCH',
    url: '/api/work-pools/:name',
    access: 'operator',
    summary: 'Update a work pool (limit, pause)',
    tags: ['work pools'],
    body: S.updateWorkPool,
    handler: ({ params, body }) => s.catalog.updateWorkPool(params.name as string, body),
  });
  route(app, {
    method: 'POST',
    url: '/api/work-pools/:name/queues',
    access: 'developer',
    summary: 'Create a work queue in a pool',
    tags: ['work pools'],
    body: S.createWorkQueue,
    status: 201,
    handler: ({ params, body }) => s.catalog.createWorkQueue(params.name as string, body),
  });

  // ── workers ──
  route(app, {
    method: 'POST',
    url: '/api/work-pools/:name/workers/poll',
    access: 'worker',
    summary: 'Worker long poll: heartbeat, claim due runs, receive cancellations',
    tags: ['workers'],
    body: S.workerPoll,
    handler: async ({ params, body, reply, principal }) => {
      requireWorkerPool(principal, params.name as string);
      // Stop waiting when the worker hangs up ('close' on the response, not the request: the
      // request emits it as soon as its body is read).
      const abort = new AbortController();
      reply.raw.once('close', () => abort.abort());
      return s.claims.poll(
        params.name as string,
        body as WorkerPollRequest,
        abort.signal,
        principal ? principalId(principal) : 'anonymous',
      );
    },
  });
  route(app, {
    method: 'GET',
    url: '/api/workers',
    access: 'viewer',
    summary: 'List workers',
    tags: ['workers'],
    handler: async () => {
      const rows = await s.ctx.db
        .selectFrom('workers as w')
        .innerJoin('work_pools as p', 'p.id', 'w.pool_id')
        .selectAll('w')
        .select('p.name as pool_name')
        .orderBy('w.last_heartbeat_at', 'desc')
        .limit(500)
        .execute();
      const offlineBefore = iso(s.ctx.clock.now() - s.ctx.settings.heartbeatTimeoutMs);
      return { items: rows.map((r) => toWorker(r, offlineBefore)) };
    },
  });

  // ── flows and deployments ──
  route(app, {
    method: 'GET',
    url: '/api/flows',
    access: 'viewer',
    summary: 'List flows',
    tags: ['flows'],
    handler: async () => ({ items: await s.catalog.listFlows() }),
  });
  route(app, {
    method: 'PUT',
    url: '/api/deployments/:name',
    access: 'developer',
    summary: 'Create or update a deployment',
    tags: ['deployments'],
    body: S.deploymentSpec,
    handler: ({ params, body, principal }) => {
      if (body.name !== params.name)
        throw new TesseraError('ERR_VALIDATION', `name: "${body.name}" differs from the URL's "${params.name}"`, {
          details: { field: 'name' },
        });
      return s.catalog.putDeployment(body, causeOfPrincipal(principal));
    },
  });
  route(app, {
    method: 'GET',
    url: '/api/deployments',
    access: 'viewer',
    summary: 'List deployments',
    tags: ['deployments'],
    handler: async () => ({ items: await s.catalog.listDeployments() }),
  });
  route(app, {
    method: 'GET',
    url: '/api/deployments/:name',
    access: 'viewer',
    summary: 'Get a deployment',
    tags: ['deployments'],
    handler: ({ params }) => s.catalog.getDeployment(params.name as string),
  });
  route(app, {
    method: 'DELETE',
    url: '/api/deployments/:name',
    access: 'developer',
    summary: 'Delete a deployment and its future scheduled runs',
    tags: ['deployments'],
    handler: async ({ params, principal }) => void (await s.catalog.deleteDeployment(params.name as string, actorOf(principal))),
  });
  route(app, {
    method: 'POST',
    url: '/api/deployments/:name/runs',
    access: 'operator',
    summary: 'Run a deployment now (or at scheduledFor)',
    tags: ['deployments'],
    body: S.createRun,
    status: 201,
    handler: ({ params, body, principal }) => s.catalog.runDeployment(params.name as string, body, causeOfPrincipal(principal)),
  });

  // ── flow runs ──
  route(app, {
    method: 'POST',
    url: '/api/flow-runs',
    access: 'developer',
    summary: 'Start a run that the caller executes itself (tessera run); returns its run credential',
    tags: ['flow runs'],
    body: S.createAdhocRun,
    status: 201,
    handler: async ({ body, principal }): Promise<AdhocRunResponse> =>
      s.startAdhocRun(body as CreateAdhocRunRequest, causeOfPrincipal(principal)),
  });
  route(app, {
    method: 'GET',
    url: '/api/flow-runs',
    access: 'viewer',
    summary: 'List flow runs, newest first',
    tags: ['flow runs'],
    handler: async ({ query }) => {
      const limit = num(query.limit);
      return {
        items: await s.runs.listRuns({
          ...(query.state ? { state: query.state } : {}),
          ...(query.deployment ? { deployment: query.deployment } : {}),
          ...(limit !== undefined ? { limit } : {}),
        }),
      };
    },
  });
  route(app, {
    method: 'GET',
    url: '/api/flow-runs/:id',
    access: 'run-or-viewer',
    summary: 'Get a flow run by id or unambiguous prefix',
    tags: ['flow runs'],
    handler: async ({ params, principal }) => {
      requireOwnRun(principal, params.id as string);
      const run = await s.runs.getRun(params.id as string);
      requireOwnRun(principal, run.id);
      return run;
    },
  });
  route(app, {
    method: 'GET',
    url: '/api/flow-runs/:id/states',
    access: 'viewer',
    summary: "A run's state history with the cause of each transition",
    tags: ['flow runs'],
    handler: async ({ params }) => ({ items: await s.runs.history((await s.runs.getRun(params.id as string)).id) }),
  });
  route(app, {
    method: 'POST',
    url: '/api/flow-runs/:id/state',
    access: 'run-or-operator',
    summary: 'Propose a state; illegal transitions answer 409 with the reason',
    tags: ['flow runs'],
    body: S.proposeState,
    handler: ({ params, body, principal }) => {
      requireOwnRun(principal, params.id as string);
      return s.runs.proposeState(params.id as string, body, actorOf(principal));
    },
  });
  route(app, {
    method: 'POST',
    url: '/api/flow-runs/:id/cancel',
    access: 'operator',
    summary: 'Cancel a run',
    tags: ['flow runs'],
    handler: ({ params, principal }) => s.runs.cancel(params.id as string, actorOf(principal)),
  });
  route(app, {
    method: 'GET',
    url: '/api/flow-runs/:id/task-runs',
    access: 'viewer',
    summary: "A run's task runs",
    tags: ['flow runs'],
    handler: async ({ params }) => ({ items: await s.taskRuns.list((await s.runs.getRun(params.id as string)).id) }),
  });
  route(app, {
    method: 'GET',
    url: '/api/flow-runs/:id/logs',
    access: 'viewer',
    summary: "A run's log lines (secrets masked)",
    tags: ['flow runs'],
    handler: async ({ params, query }) => ({
      items: await s.taskRuns.logs((await s.runs.getRun(params.id as string)).id, num(query.afterId) ?? 0, num(query.limit) ?? 1000),
    }),
  });

  // ── reports from the flow process ──
  route(app, {
    method: 'POST',
    url: '/api/task-runs/events',
    access: 'run',
    summary: 'Report task-run state changes in a batch',
    tags: ['flow runs'],
    body: S.taskRunEvents,
    handler: async ({ body, principal }) => ({
      accepted: await s.taskRuns.applyEvents((principal as Extract<Principal, { kind: 'run' }>).run.runId, body.events),
    }),
  });
  route(app, {
    method: 'POST',
    url: '/api/logs',
    access: 'run',
    summary: 'Send log lines in a batch',
    tags: ['flow runs'],
    body: S.logs,
    handler: async ({ body, principal }) => ({
      accepted: await s.taskRuns.appendLogs((principal as Extract<Principal, { kind: 'run' }>).run.runId, body.entries),
    }),
  });

  // ── identity: routes/identity.ts ──
}
