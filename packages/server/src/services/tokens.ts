import { createHash } from 'node:crypto';
import {
  type DeploymentIdentity,
  type IdentityTokenPreview,
  type IdentityTokenRequest,
  type IssuedIdentityToken,
  parseDuration,
  redactSecrets,
  type StateCause,
  TesseraError,
} from '@tessera/core';
import {
  buildAwsSessionTags,
  createThreadSigner,
  DEFAULT_SUB_TEMPLATE,
  type JwsSigner,
  mintRunToken,
  NBF_BACKDATE_SECONDS,
  parseSubTemplate,
  type RunTokenOwnClaims,
  renderSubject,
  SUB_TEMPLATE_VERSION,
  verifyDpopProof,
} from '@tessera/identity';
import type { Insertable, Kysely } from 'kysely';
import { iso } from '../lib/clock.js';
import { fromJson } from '../lib/json.js';
import { type PreparedQuery, prepared } from '../store/prepared.js';
import type { Database, IssuedTokenTable } from '../store/schema.js';
import type { ServiceContext } from './context.js';
import { hashCredential, principalOf, type RunCredentialPrincipal } from './credentials.js';
import type { KeyManager } from './keys.js';
import { DEFAULT_WORKSPACE, type ResolvedSubTemplate, resolveSubTemplate } from './workspace-identity.js';

/** Lifetime of a token when the caller names none: 5 minutes, like GitHub's and SPIRE's. */
export const DEFAULT_TOKEN_LIFETIME_MS = 5 * 60_000;
/** The longest lifetime a deployment allows when it sets no `identity.maxLifetimeMs`: 1 hour. */
export const DEFAULT_MAX_TOKEN_LIFETIME_MS = 60 * 60_000;
/** Where runs ask for tokens. */
export const TOKEN_ENDPOINT_PATH = '/api/identity/token';
/** The workspace every token names (one per server today). */
export const WORKSPACE = DEFAULT_WORKSPACE;

/** A DPoP proof sent with a token request, and where the request arrived. */
export interface DpopRequest {
  /** The `DPoP` header's value. */
  proof: string;
  /** The request's HTTP method. */
  method: string;
  /** URLs the request may be addressed as (see {@link verifyDpopProof}). */
  urls: string[];
}

/**
 * One read for everything a token request depends on: the run, its flow, deployment, pool and worker,
 * whether its identity was revoked, and the workspace's sub template (hot path: one statement, built
 * and compiled once).
 */
const tokenRunQuery = (db: Kysely<Database>) =>
  db
    .selectFrom('flow_runs as r')
    .innerJoin('flows as f', 'f.id', 'r.flow_id')
    .leftJoin('deployments as d', 'd.id', 'r.deployment_id')
    .leftJoin('work_pools as p', 'p.id', 'r.work_pool_id')
    .leftJoin('workers as w', 'w.id', 'r.worker_id')
    .leftJoin('identity_revocations as ir', 'ir.flow_run_id', 'r.id')
    .leftJoin('workspace_settings as ws', (join) => join.on('ws.workspace', '=', WORKSPACE))
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
      'ir.revoked_at as identity_revoked_at',
      'ws.identity as workspace_identity',
    ]);

const RUN_FOR_TOKEN = prepared((db, p) => tokenRunQuery(db).where('r.id', '=', p(0)));

/**
 * The same, found by the caller's credential, with the credential's own columns: the token endpoint
 * checks the credential and reads the run in one statement (see `RunCredentialAuthenticator`).
 */
const RUN_FOR_TOKEN_BY_CREDENTIAL = prepared((db, p) =>
  tokenRunQuery(db)
    .innerJoin('run_credentials as rc', 'rc.flow_run_id', 'r.id')
    .select(['rc.hash', 'rc.flow_run_id', 'rc.attempt as credential_attempt', 'rc.worker_id', 'rc.revoked_at'])
    .where('rc.hash', '=', p(0)),
);

/** The request's one audience, trimmed. @throws TesseraError `ERR_AUDIENCE_REQUIRED` */
function audienceOf(req: IdentityTokenRequest): string {
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
  return audience;
}

/** A run as {@link RUN_FOR_TOKEN} reads it. */
export type TokenRun = NonNullable<Awaited<ReturnType<(typeof RUN_FOR_TOKEN)['first']>>>;

/**
 * Issues run identity tokens: the caller is a live run credential whose run's identity is not
 * revoked; the audience must be on the deployment's allowlist; the lifetime is capped by the
 * deployment's maximum; `sub` follows the deployment's (or workspace's) template; a DPoP proof, when
 * sent, binds the token to its key (`cnf.jkt`). Each issuance is recorded (jti, audience, expiry,
 * thumbprint — never the token).
 */
export class TokenService {
  /** Per run: the times of its requests in the last minute, oldest first, from index `head` on. */
  private readonly recent = new Map<string, { times: number[]; head: number }>();
  /** Issuance records waiting for the next group commit (see {@link record}). */
  private pendingRecords: { row: Insertable<IssuedTokenTable>; resolve(): void; reject(e: unknown): void }[] = [];
  private recordFlushScheduled = false;
  private recordFlushRunning = false;

  constructor(
    private readonly ctx: ServiceContext,
    private readonly keys: KeyManager,
    private readonly issuer: () => string,
    /** Who signs (threads started at the first token; see `createThreadSigner`). */
    private readonly signer: JwsSigner = createThreadSigner(),
  ) {
    // A key this replica lets go of leaves the signer threads too.
    keys.onKeyDropped((key) => signer.forget(key));
  }

  /** Stops the signing threads (tokens asked for afterwards are signed on libuv's pool). */
  close(): Promise<void> {
    return this.signer.close();
  }

  /**
   * Issues one token for the caller's run.
   * @throws TesseraError `ERR_AUDIENCE_REQUIRED`, `ERR_RATE_LIMITED`, `ERR_CREDENTIAL_REVOKED`,
   *   `ERR_IDENTITY_REVOKED`, `ERR_NO_IDENTITY`, `ERR_AUDIENCE_NOT_ALLOWED`, `ERR_VALIDATION`
   *   (lifetime, task run), `ERR_DPOP_PROOF_INVALID`, `ERR_KEY_PENDING` (503: this replica's key made at
   *   start does not sign yet; see `KeyManager.signingKey`).
   */
  async issue(
    principal: RunCredentialPrincipal,
    req: IdentityTokenRequest,
    dpop?: DpopRequest,
    /** The run as {@link authenticateWithRun} read it with the credential, if it did. */
    preloaded?: TokenRun,
  ): Promise<IssuedIdentityToken> {
    const audience = audienceOf(req);
    this.rateLimit(principal.runId);
    const run = preloaded?.id === principal.runId ? preloaded : await this.runFor(principal.runId);
    if (run.attempt !== principal.attempt) {
      throw new TesseraError(
        'ERR_CREDENTIAL_REVOKED',
        `this run credential is for attempt ${principal.attempt}; the run is on attempt ${run.attempt}`,
      );
    }
    const parts = await this.tokenParts(run, audience, req);
    // Before the proof is remembered: a request refused for want of a key (ERR_KEY_PENDING) can be sent
    // again with the same proof, and does not count against the rate limit.
    let key: ReturnType<KeyManager['signingKey']>;
    try {
      key = this.keys.signingKey(parts.identity.algorithm ?? 'RS256');
    } catch (e) {
      this.uncount(principal.runId);
      throw e;
    }
    const now = new Date(this.ctx.clock.now());
    const bound = dpop
      ? await verifyDpopProof(dpop.proof, {
          method: dpop.method,
          urls: dpop.urls,
          now,
          remember: (jkt, jti, until) => this.rememberProof(jkt, jti, until),
        })
      : undefined;
    const { lifetimeMs, sub, taskRunId } = parts;
    const claims = this.claimsOf(parts, bound);
    const minted = await mintRunToken({
      key,
      signer: this.signer,
      issuer: this.issuer(),
      audience,
      subject: sub,
      lifetimeSeconds: Math.floor(lifetimeMs / 1000),
      now,
      claims,
    });
    // Recorded (committed) before the token is handed out, as before; only grouped with the records of
    // concurrent requests into one INSERT.
    await this.record({
      jti: minted.jti,
      flow_run_id: run.id,
      attempt: run.attempt,
      task_run_id: taskRunId ?? null,
      aud: audience,
      sub,
      kid: key.kid,
      issued_at: iso(minted.issuedAt.getTime()),
      expires_at: iso(minted.expiresAt.getTime()),
      revoked_at: null,
      cnf_jkt: bound?.jkt ?? null,
    });
    return {
      token: minted.token,
      tokenType: 'JWT',
      expiresAt: minted.expiresAt.toISOString(),
      jti: minted.jti,
      kid: key.kid,
      alg: key.alg,
      sub,
      aud: audience,
      ...(bound ? { cnf: { jkt: bound.jkt } } : {}),
    };
  }

  /**
   * The token `runId` would get now for `req.audience`, unsigned and unrecorded, built by the same code
   * as {@link issue} (for `tessera token explain --run`). No rate limit, no credential: the caller is
   * a person allowed to read the run.
   * @throws TesseraError as {@link issue} for the run, its identity and the request, but for the audience:
   *   whether it is allowed is part of the answer.
   */
  async preview(runId: string, req: IdentityTokenRequest): Promise<IdentityTokenPreview> {
    const audience = audienceOf(req);
    const run = await this.runFor(runId);
    // Not refused for its audience: the preview says whether Tessera would issue it, and shows it anyway.
    const parts = await this.tokenParts(run, audience, req, false);
    const key = this.keys.signingKey(parts.identity.algorithm ?? 'RS256', { pending: true, peek: true });
    const iat = Math.floor(this.ctx.clock.now() / 1000);
    return {
      header: { alg: key.alg, typ: 'JWT', kid: key.kid },
      claims: {
        iss: this.issuer(),
        sub: parts.sub,
        aud: audience,
        iat,
        nbf: iat - NBF_BACKDATE_SECONDS,
        exp: iat + Math.floor(parts.lifetimeMs / 1000),
        jti: '(not issued)',
        ...this.claimsOf(parts, undefined),
      },
      runState: run.state_type,
      audienceAllowed: parts.identity.audiences.includes(audience),
      allowedAudiences: parts.identity.audiences,
    };
  }

  /**
   * Checks a run credential exactly as `CredentialService.authenticate` does, reading the run it is for
   * in the same statement: the token endpoint's credential lookup and run read, in one.
   * @throws TesseraError `ERR_CREDENTIAL_INVALID`, `ERR_CREDENTIAL_REVOKED`.
   */
  async authenticateWithRun(credential: string): Promise<{ principal: RunCredentialPrincipal; preloaded: TokenRun }> {
    const hash = hashCredential(credential);
    const row = await RUN_FOR_TOKEN_BY_CREDENTIAL.first(this.ctx.db, [hash]);
    const principal = principalOf(row && { ...row, attempt: row.credential_attempt }, hash);
    return { principal, preloaded: row as TokenRun };
  }

  private async runFor(runId: string): Promise<TokenRun> {
    const run = await RUN_FOR_TOKEN.first(this.ctx.db, [runId]);
    if (!run) throw new TesseraError('ERR_RUN_NOT_FOUND', `run ${runId} no longer exists`);
    return run;
  }

  /** Everything a token of `run` for `audience` is made of but the proof binding: the checks of the run's identity and the request, `sub`. */
  private async tokenParts(run: TokenRun, audience: string, req: IdentityTokenRequest, enforceAudience = true) {
    if (run.identity_revoked_at) {
      throw new TesseraError(
        'ERR_IDENTITY_REVOKED',
        `the identity of run ${run.id} was revoked at ${run.identity_revoked_at}: it gets no more identity tokens, and the ones it had are inactive. Start a new run if it needs them.`,
      );
    }
    if (!run.deployment || !run.deployment_id) {
      throw new TesseraError(
        'ERR_NO_IDENTITY',
        'this run has no deployment, so no audience is allowed for it; deploy the flow with `identity.audiences` in tessera.yaml to give its runs identity tokens',
      );
    }
    const identity = fromJson<DeploymentIdentity>(run.identity, { audiences: [] });
    if (enforceAudience && !identity.audiences.includes(audience)) {
      const suggestion = closest(audience, identity.audiences);
      throw new TesseraError(
        'ERR_AUDIENCE_NOT_ALLOWED',
        `audience "${redactSecrets(audience)}" is not allowed for deployment "${run.deployment}" — allowed: ${identity.audiences.join(', ') || '(none: add identity.audiences to the deployment)'}.${suggestion ? ` Did you mean "${suggestion}"?` : ''}`,
        { details: { field: 'audience' } },
      );
    }
    const maxLifetime = identity.maxLifetimeMs ?? DEFAULT_MAX_TOKEN_LIFETIME_MS;
    const lifetimeMs = req.lifetime === undefined ? DEFAULT_TOKEN_LIFETIME_MS : lifetimeOf(req.lifetime);
    const minLifetime = this.ctx.settings.minTokenLifetimeMs;
    if (lifetimeMs < minLifetime || lifetimeMs > maxLifetime) {
      throw new TesseraError(
        'ERR_VALIDATION',
        `lifetime: ${Math.round(lifetimeMs / 1000)} s is outside what deployment "${run.deployment}" allows (${minLifetime / 1000} s to ${maxLifetime / 1000} s)`,
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
        .select(['id', 'task_key', 'flow_run_id'])
        .where('id', '=', req.taskRunId)
        .executeTakeFirst();
      if (task && task.flow_run_id !== run.id) {
        throw new TesseraError(
          'ERR_VALIDATION',
          `taskRunId: task run ${req.taskRunId} belongs to another flow run; name a task run of this run`,
          {
            details: { field: 'taskRunId' },
          },
        );
      }
      taskRunId = req.taskRunId;
      // The task run may not have reached the server yet (events are batched); trust only its id shape then.
      taskName = task?.task_key ?? req.taskName;
    }
    const triggeredBy = fromJson<StateCause>(run.triggered_by, { kind: 'server', id: 'unknown' });
    const environment = run.environment ?? 'dev';
    const project = run.project ?? 'default';
    const template = identity.subTemplate
      ? await resolveSubTemplate(this.ctx.db, identity.subTemplate)
      : workspaceTemplate(run.workspace_identity);
    const sub = renderSubject(
      template.keys,
      {
        workspace: WORKSPACE,
        project,
        flow: run.flow,
        deployment: run.deployment,
        deployment_id: run.deployment_id,
        environment,
        work_pool: run.pool ?? '',
      },
      template.source === 'deployment' ? 'identity.subTemplate' : 'subTemplate',
    );
    const { deployment, deployment_id: deploymentId } = run;
    return { run, deployment, deploymentId, identity, lifetimeMs, taskRunId, taskName, sub, template, environment, project, triggeredBy };
  }

  /** The token's own claims, in one fixed order (see below). */
  private claimsOf(parts: Awaited<ReturnType<TokenService['tokenParts']>>, bound: { jkt: string } | undefined): RunTokenOwnClaims {
    const { run, deployment, deploymentId, identity, taskRunId, taskName, template, environment, project, triggeredBy } = parts;
    // One shape for every token (optional claims appended in a fixed order), not conditional spreads:
    // V8 then reuses the same hidden classes instead of building new ones per token.
    const claims: RunTokenOwnClaims = {
      workspace: WORKSPACE,
      project,
      flow: run.flow,
      deployment,
      deployment_id: deploymentId,
      environment,
      run_id: run.id,
      run_attempt: run.attempt,
      work_pool: run.pool,
      worker: run.worker,
      trigger_kind: run.trigger_kind,
      triggered_by: `${triggeredBy.kind}:${triggeredBy.label ?? triggeredBy.id}`,
      tags: fromJson<string[]>(run.tags, []),
      sub_template_version: template.version,
    };
    if (taskRunId) claims.task_run_id = taskRunId;
    if (taskName) claims.task = taskName;
    if (bound) claims.cnf = { jkt: bound.jkt };
    if (identity.awsSessionTags) {
      // From the claims just built, so the tags and the claims cannot differ.
      claims['https://aws.amazon.com/tags'] = buildAwsSessionTags(claims);
    }
    return claims;
  }

  /**
   * Records one issuance; resolves once its row is committed. Records that arrive in the same turn of
   * the event loop (concurrent requests) are written by one multi-row INSERT: one statement and one
   * commit instead of one each. A failed batch is retried row by row, so a bad row (its run deleted
   * meanwhile) fails only its own request.
   */
  private record(row: Insertable<IssuedTokenTable>): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pendingRecords.push({ row, resolve, reject });
      if (!this.recordFlushScheduled && !this.recordFlushRunning) {
        this.recordFlushScheduled = true;
        setImmediate(() => {
          this.recordFlushScheduled = false;
          void this.flushRecords();
        });
      }
    });
  }

  private async flushRecords(): Promise<void> {
    if (this.recordFlushRunning) return;
    this.recordFlushRunning = true;
    try {
      while (this.pendingRecords.length > 0) {
        const batch = this.pendingRecords.splice(0, RECORD_BATCH_MAX);
        try {
          await insertRecords(batch.length).execute(
            this.ctx.db,
            batch.flatMap((b) => RECORD_COLUMNS.map((c) => b.row[c] ?? null)),
          );
          for (const b of batch) b.resolve();
        } catch (batchError) {
          if (batch.length === 1) {
            batch[0]?.reject(batchError);
            continue;
          }
          for (const b of batch) {
            try {
              await insertRecords(1).execute(
                this.ctx.db,
                RECORD_COLUMNS.map((c) => b.row[c] ?? null),
              );
              b.resolve();
            } catch (e) {
              b.reject(e);
            }
          }
        }
      }
    } finally {
      this.recordFlushRunning = false;
    }
  }

  /** Records a DPoP proof until it can no longer be accepted; false when it was seen before (a replay). */
  private async rememberProof(jkt: string, jti: string, until: Date): Promise<boolean> {
    const now = iso(this.ctx.clock.now());
    await this.ctx.db.deleteFrom('dpop_proofs').where('expires_at', '<', now).execute();
    const id = createHash('sha256').update(`${jkt} ${jti}`).digest('hex');
    const res = await this.ctx.db
      .insertInto('dpop_proofs')
      .values({ id, expires_at: iso(until.getTime()) })
      .onConflict((oc) => oc.column('id').doNothing())
      .executeTakeFirst();
    return Number(res.numInsertedOrUpdatedRows ?? 0n) === 1;
  }

  /** Takes back the last request {@link rateLimit} counted for `runId` (it was refused before any work). */
  private uncount(runId: string): void {
    const w = this.recent.get(runId);
    if (w && w.times.length > w.head) w.times.pop();
  }

  private rateLimit(runId: string): void {
    const now = this.ctx.clock.now();
    const windowStart = now - 60_000;
    let w = this.recent.get(runId);
    if (!w) {
      w = { times: [], head: 0 };
      this.recent.set(runId, w);
    }
    // Drop what left the window from the front (amortised O(1): no copy per request).
    while (w.head < w.times.length && (w.times[w.head] as number) <= windowStart) w.head++;
    if (w.head > 64 && w.head * 2 > w.times.length) {
      w.times = w.times.slice(w.head);
      w.head = 0;
    }
    if (w.times.length - w.head >= this.ctx.settings.tokenRateLimitPerMinute) {
      const retryAfterSeconds = Math.max(1, Math.ceil(((w.times[w.head] ?? now) + 60_000 - now) / 1000));
      throw new TesseraError(
        'ERR_RATE_LIMITED',
        `this run asked for more than ${this.ctx.settings.tokenRateLimitPerMinute} identity tokens in a minute; reuse a token until shortly before it expires (retry in ${retryAfterSeconds} s)`,
        { details: { limitPerMinute: this.ctx.settings.tokenRateLimitPerMinute, retryAfterSeconds } },
      );
    }
    w.times.push(now);
    if (this.recent.size > 10_000) for (const [k, v] of this.recent) if ((v.times.at(-1) ?? 0) <= windowStart) this.recent.delete(k);
  }
}

/** Rows per INSERT of issuance records: 11 parameters each, well under every driver's limit. */
const RECORD_BATCH_MAX = 256;

/** The columns of an issuance record, in the order {@link insertRecords} takes them. */
const RECORD_COLUMNS = [
  'jti',
  'flow_run_id',
  'attempt',
  'task_run_id',
  'aud',
  'sub',
  'kid',
  'issued_at',
  'expires_at',
  'revoked_at',
  'cnf_jkt',
] as const satisfies readonly (keyof IssuedTokenTable)[];

const recordInserts = new Map<number, PreparedQuery<unknown>>();

/** The INSERT of `n` issuance records (one prepared query per batch size seen). */
function insertRecords(n: number): PreparedQuery<unknown> {
  let q = recordInserts.get(n);
  if (!q) {
    q = prepared((db, p) =>
      db
        .insertInto('issued_tokens')
        .values(
          Array.from({ length: n }, (_, r) =>
            Object.fromEntries(RECORD_COLUMNS.map((c, j) => [c, p(r * RECORD_COLUMNS.length + j)])),
          ) as never,
        ),
    );
    recordInserts.set(n, q);
  }
  return q;
}

/**
 * The workspace's `sub` template from its stored settings (the `identity` JSON of `workspace_settings`,
 * read with the run), or the default: what `resolveSubTemplate` answers for a deployment that sets none.
 */
function workspaceTemplate(stored: string | null | undefined): ResolvedSubTemplate {
  const keys = fromJson<{ subTemplate?: unknown }>(stored, {}).subTemplate;
  if (!keys) return { version: SUB_TEMPLATE_VERSION, keys: DEFAULT_SUB_TEMPLATE, source: 'default' };
  return { ...parseSubTemplate(keys, 'subTemplate'), source: 'workspace' };
}

/**
 * A requested lifetime in ms. What was sent is not quoted back: a token pasted into the wrong field
 * must not come back in an error. @throws TesseraError `ERR_VALIDATION` naming the field.
 */
function lifetimeOf(value: number | string): number {
  try {
    return parseDuration(value, 'lifetime');
  } catch {
    throw new TesseraError(
      'ERR_VALIDATION',
      'lifetime: not a valid duration; send seconds as a string like "600s", "10m" or "1h", or milliseconds as a number',
      { details: { field: 'lifetime' } },
    );
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
