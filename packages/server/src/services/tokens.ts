import {
  type DeploymentIdentity,
  type IdentityTokenRequest,
  type IdentityTokenResponse,
  parseDuration,
  type StateCause,
  TesseraError,
} from '@tessera/core';
import { buildDefaultSubject, mintRunToken } from '@tessera/identity';
import { iso } from '../lib/clock.js';
import { fromJson } from '../lib/json.js';
import type { ServiceContext } from './context.js';
import type { RunCredentialPrincipal } from './credentials.js';
import type { KeyManager } from './keys.js';

export const DEFAULT_TOKEN_LIFETIME_MS = 5 * 60_000;
export const DEFAULT_MAX_TOKEN_LIFETIME_MS = 60 * 60_000;
export const WORKSPACE = 'default';

/**
 * Issues run identity tokens: the caller is a live run credential; the audience must be on the
 * deployment's allowlist; the lifetime is capped by the deployment's maximum; each issuance is
 * recorded (jti, audience, expiry, never the token).
 */
export class TokenService {
  private readonly recent = new Map<string, number[]>();

  constructor(
    private readonly ctx: ServiceContext,
    private readonly keys: KeyManager,
    private readonly issuer: () => string,
  ) {}

  async issue(principal: RunCredentialPrincipal, req: IdentityTokenRequest): Promise<IdentityTokenResponse> {
    const audience = typeof req.audience === 'string' ? req.audience.trim() : '';
    if (!audience) {
      throw new TesseraError(
        'ERR_AUDIENCE_REQUIRED',
        'audience: required. Name the service that will verify the token, e.g. identity.token({ audience: "sts.amazonaws.com" })',
        {
          details: { field: 'audience' },
        },
      );
    }
    this.rateLimit(principal.runId);
    const run = await this.ctx.db
      .selectFrom('flow_runs as r')
      .innerJoin('flows as f', 'f.id', 'r.flow_id')
      .leftJoin('deployments as d', 'd.id', 'r.deployment_id')
      .leftJoin('work_pools as p', 'p.id', 'r.work_pool_id')
      .leftJoin('workers as w', 'w.id', 'r.worker_id')
      .select([
        'r.id',
        'r.attempt',
        'r.state_type',
        'r.trigger_kind',
        'r.triggered_by',
        'f.name as flow',
        'd.id as deployment_id',
        'd.name as deployment',
        'd.environment',
        'd.project',
        'r.tags',
        'd.identity',
        'p.name as pool',
        'w.name as worker',
      ])
      .where('r.id', '=', principal.runId)
      .executeTakeFirst();
    if (!run) throw new TesseraError('ERR_RUN_NOT_FOUND', `run ${principal.runId} no longer exists`);
    if (run.attempt !== principal.attempt) {
      throw new TesseraError(
        'ERR_CREDENTIAL_REVOKED',
        `this run credential is for attempt ${principal.attempt}; the run is on attempt ${run.attempt}`,
      );
    }
    if (!run.deployment || !run.deployment_id) {
      throw new TesseraError(
        'ERR_NO_IDENTITY',
        'this run has no deployment, so no audience is allowed for it; deploy the flow with `identity.audiences` in tessera.yaml to give its runs identity tokens',
      );
    }
    const identity = fromJson<DeploymentIdentity>(run.identity, { audiences: [] });
    if (!identity.audiences.includes(audience)) {
      const suggestion = closest(audience, identity.audiences);
      throw new TesseraError(
        'ERR_AUDIENCE_NOT_ALLOWED',
        `audience "${audience}" is not allowed for deployment "${run.deployment}" — allowed: ${identity.audiences.join(', ') || '(none: add identity.audiences to the deployment)'}.${suggestion ? ` Did you mean "${suggestion}"?` : ''}`,
        { details: { field: 'audience' } },
      );
    }
    const maxLifetime = identity.maxLifetimeMs ?? DEFAULT_MAX_TOKEN_LIFETIME_MS;
    const lifetimeMs = req.lifetime === undefined ? DEFAULT_TOKEN_LIFETIME_MS : parseDuration(req.lifetime, 'lifetime');
    if (lifetimeMs < 60_000 || lifetimeMs > maxLifetime) {
      throw new TesseraError(
        'ERR_VALIDATION',
        `lifetime: ${Math.round(lifetimeMs / 1000)} s is outside what deployment "${run.deployment}" allows (60 s to ${maxLifetime / 1000} s)`,
        {
          details: { field: 'lifetime' },
        },
      );
    }
    let taskRunId: string | undefined;
    let taskName: string | undefined;
    if (req.taskRunId) {
      const task = await this.ctx.db
        .selectFrom('task_runs')
        .select(['id', 'name'])
        .where('id', '=', req.taskRunId)
        .where('flow_run_id', '=', run.id)
        .executeTakeFirst();
      taskRunId = req.taskRunId;
      // The task run may not have reached the server yet (events are batched); trust only its id shape then.
      taskName = task?.name ?? req.taskName;
    }
    const triggeredBy = fromJson<StateCause>(run.triggered_by, { kind: 'server', id: 'unknown' });
    const sub = buildDefaultSubject({ workspace: WORKSPACE, deployment: run.deployment, environment: run.environment ?? 'dev' });
    const key = this.keys.signingKey(identity.algorithm ?? 'RS256');
    const now = new Date(this.ctx.clock.now());
    const minted = await mintRunToken({
      key,
      issuer: this.issuer(),
      audience,
      subject: sub,
      lifetimeSeconds: Math.floor(lifetimeMs / 1000),
      now,
      claims: {
        workspace: WORKSPACE,
        project: run.project ?? 'default',
        flow: run.flow,
        deployment: run.deployment,
        deployment_id: run.deployment_id,
        environment: run.environment ?? 'dev',
        run_id: run.id,
        run_attempt: run.attempt,
        work_pool: run.pool,
        worker: run.worker,
        trigger_kind: run.trigger_kind,
        triggered_by: `${triggeredBy.kind}:${triggeredBy.label ?? triggeredBy.id}`,
        tags: fromJson<string[]>(run.tags, []),
        sub_template_version: 1,
        ...(taskRunId ? { task_run_id: taskRunId } : {}),
        ...(taskName ? { task: taskName } : {}),
      },
    });
    await this.ctx.db
      .insertInto('issued_tokens')
      .values({
        jti: minted.jti,
        flow_run_id: run.id,
        attempt: run.attempt,
        task_run_id: taskRunId ?? null,
        aud: audience,
        sub,
        kid: key.kid,
        issued_at: iso(minted.issuedAt.getTime()),
        expires_at: iso(minted.expiresAt.getTime()),
      })
      .execute();
    return {
      token: minted.token,
      tokenType: 'JWT',
      expiresAt: minted.expiresAt.toISOString(),
      jti: minted.jti,
      kid: key.kid,
      alg: key.alg,
      sub,
      aud: audience,
    };
  }

  private rateLimit(runId: string): void {
    const now = this.ctx.clock.now();
    const windowStart = now - 60_000;
    const times = (this.recent.get(runId) ?? []).filter((t) => t > windowStart);
    if (times.length >= this.ctx.settings.tokenRateLimitPerMinute) {
      throw new TesseraError(
        'ERR_RATE_LIMITED',
        `this run asked for more than ${this.ctx.settings.tokenRateLimitPerMinute} identity tokens in a minute; reuse a token until shortly before it expires`,
      );
    }
    times.push(now);
    this.recent.set(runId, times);
    if (this.recent.size > 10_000) for (const [k, v] of this.recent) if ((v.at(-1) ?? 0) < windowStart) this.recent.delete(k);
  }
}

/** The allowed value within edit distance 3 of `value`, if any (catches sts.amazon.com vs sts.amazonaws.com). */
function closest(value: string, options: string[]): string | undefined {
  let best: { option: string; d: number } | undefined;
  for (const option of options) {
    const d = levenshtein(value.toLowerCase(), option.toLowerCase());
    if (d <= Math.max(3, Math.floor(option.length / 4)) && (!best || d < best.d)) best = { option, d };
  }
  return best?.option;
}

function levenshtein(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0] as number;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j] as number;
      prev[j] = Math.min((prev[j] as number) + 1, (prev[j - 1] as number) + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length] as number;
}
