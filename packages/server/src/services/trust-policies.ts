import { randomUUID } from 'node:crypto';
import { type PutTrustPolicyRequest, type StateCause, TesseraError, type TrustPolicy, ValidationError } from '@tessera/core';
import { type CompiledCel, compileCel } from '@tessera/verify';
import { isRole, RULE_VARIABLES } from '../auth/principal.js';
import { iso } from '../lib/clock.js';
import { fromJson, toJson } from '../lib/json.js';
import type { TrustPolicyTable } from '../store/schema-auth.js';
import type { AuditService } from './audit.js';
import type { ServiceContext } from './context.js';

/** A trust policy compiled for matching. */
export interface CompiledTrustPolicy {
  policy: TrustPolicy;
  condition: CompiledCel | undefined;
}

const NAME = /^[a-z0-9][a-z0-9._-]{0,99}$/;
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

/**
 * Trust policies: which tokens from which outside issuers may be exchanged for Tessera access
 * tokens, and with what role (RFC 8693 federation). A policy names an issuer (its discovery
 * document and JWKS are fetched), the audience the token must carry, and a subject glob and/or a CEL
 * condition over `claims`, and grants one role (or `worker`).
 *
 * A policy must pin more than issuer and audience: on shared platforms (GitHub Actions, GitLab)
 * anybody can mint a token from the same issuer with any audience they like, so the subject or a
 * condition on the repository is what makes it *your* CI.
 */
export class TrustPolicyService {
  readonly #compiled = new Map<string, { version: number; compiled: CompiledTrustPolicy }>();

  constructor(
    private readonly ctx: ServiceContext,
    private readonly audit: AuditService,
  ) {}

  /** Every policy, by name. */
  async list(): Promise<TrustPolicy[]> {
    const rows = await this.ctx.db.selectFrom('trust_policies').selectAll().orderBy('name').execute();
    return rows.map(toTrustPolicy);
  }

  /** @throws TesseraError `ERR_NOT_FOUND` naming the known policies. */
  async get(name: string): Promise<TrustPolicy> {
    const row = await this.ctx.db.selectFrom('trust_policies').selectAll().where('name', '=', name).executeTakeFirst();
    if (!row) throw await this.notFound(name);
    return toTrustPolicy(row);
  }

  /**
   * Creates or replaces a policy. Every change bumps its version, which refuses access tokens it
   * granted before (they must be exchanged again under the new rules).
   * @throws ValidationError naming the field (issuer not https, no subject nor condition, CEL that
   *   does not compile, unknown role…).
   */
  async put(
    name: string,
    req: PutTrustPolicyRequest,
    actor: StateCause,
    auditPrincipal: Parameters<AuditService['record']>[0]['principal'],
  ): Promise<TrustPolicy> {
    validatePolicy(name, req);
    const now = iso(this.ctx.clock.now());
    const existing = await this.ctx.db.selectFrom('trust_policies').selectAll().where('name', '=', name).executeTakeFirst();
    const fields = {
      issuer: req.issuer,
      audience: req.audience,
      subject: req.subject ?? null,
      condition: req.condition ?? null,
      role: req.role,
      workspace: req.workspace ?? null,
      pool: req.pool ?? null,
      description: req.description ?? null,
      updated_at: now,
      updated_by: toJson(actor),
    };
    if (existing) {
      await this.ctx.db
        .updateTable('trust_policies')
        .set({ ...fields, version: existing.version + 1 })
        .where('id', '=', existing.id)
        .execute();
    } else {
      await this.ctx.db
        .insertInto('trust_policies')
        .values({ id: `tp_${randomUUID()}`, name, ...fields, version: 1, created_at: now, created_by: toJson(actor) })
        .execute();
    }
    const policy = await this.get(name);
    await this.audit.record({
      principal: auditPrincipal,
      action: existing ? 'trust_policy.updated' : 'trust_policy.created',
      target: `trust-policy:${name}`,
      result: 'success',
      detail: {
        issuer: policy.issuer,
        audience: policy.audience,
        subject: policy.subject,
        condition: policy.condition,
        role: policy.role,
        workspace: policy.workspace,
        version: policy.version,
      },
    });
    return policy;
  }

  /** Deletes a policy; access tokens it granted are refused from the next request on. */
  async delete(name: string, auditPrincipal: Parameters<AuditService['record']>[0]['principal']): Promise<void> {
    const row = await this.ctx.db.selectFrom('trust_policies').select(['id']).where('name', '=', name).executeTakeFirst();
    if (!row) throw await this.notFound(name);
    await this.ctx.db.deleteFrom('trust_policies').where('id', '=', row.id).execute();
    this.#compiled.delete(row.id);
    await this.audit.record({
      principal: auditPrincipal,
      action: 'trust_policy.deleted',
      target: `trust-policy:${name}`,
      result: 'success',
    });
  }

  /** The policies that trust `issuer` (byte-for-byte), compiled, by name. */
  async forIssuer(issuer: string): Promise<CompiledTrustPolicy[]> {
    const rows = await this.ctx.db.selectFrom('trust_policies').selectAll().where('issuer', '=', issuer).orderBy('name').execute();
    return rows.map((row) => {
      const cached = this.#compiled.get(row.id);
      if (cached && cached.version === row.version) return cached.compiled;
      const policy = toTrustPolicy(row);
      const compiled = {
        policy,
        condition: policy.condition ? compileCel(policy.condition, { variables: [...RULE_VARIABLES] }) : undefined,
      };
      this.#compiled.set(row.id, { version: row.version, compiled });
      return compiled;
    });
  }

  private async notFound(name: string): Promise<TesseraError> {
    const names = (await this.ctx.db.selectFrom('trust_policies').select('name').orderBy('name').execute()).map((r) => r.name);
    return new TesseraError(
      'ERR_NOT_FOUND',
      `no trust policy "${name}"; ${names.length ? `known: ${names.join(', ')}` : 'none exist yet: create one with `tessera federation set`'}`,
    );
  }
}

/** Checks a policy before it is stored; issues name the field. */
export function validatePolicy(name: string, req: PutTrustPolicyRequest): void {
  const issues: { path: string; message: string }[] = [];
  if (!NAME.test(name)) issues.push({ path: 'name', message: `"${name}" must be 1-100 of a-z 0-9 . _ - and start with a letter or digit` });
  let url: URL | undefined;
  try {
    url = new URL(req.issuer);
  } catch {
    issues.push({ path: 'issuer', message: `"${req.issuer}" is not a URL` });
  }
  if (url && url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname))) {
    issues.push({ path: 'issuer', message: `"${req.issuer}" must be https (plain http only on loopback, for tests)` });
  }
  if (!req.audience) issues.push({ path: 'audience', message: 'required: the aud the external token must carry' });
  if (!req.subject && !req.condition) {
    issues.push({
      path: 'subject',
      message:
        'give a subject glob or a condition: on shared issuers (GitHub, GitLab) anyone can mint a token with any audience, so issuer + audience alone trusts everybody',
    });
  }
  if (req.role !== 'worker' && !isRole(req.role)) {
    issues.push({ path: 'role', message: `"${String(req.role)}" is not a role; use viewer, operator, developer, admin or worker` });
  }
  if (req.pool && req.role !== 'worker') issues.push({ path: 'pool', message: 'only a worker policy (role: worker) names a pool' });
  if (req.workspace && req.role === 'worker')
    issues.push({ path: 'workspace', message: 'a worker policy is not confined to a workspace; use pool' });
  if (req.condition) {
    try {
      compileCel(req.condition, { variables: [...RULE_VARIABLES] });
    } catch (e) {
      issues.push({ path: 'condition', message: `${(e as Error).message} (the condition sees one variable, claims)` });
    }
  }
  if (issues.length > 0) {
    throw new ValidationError(`invalid trust policy: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, issues);
  }
}

function toTrustPolicy(r: TrustPolicyTable): TrustPolicy {
  return {
    id: r.id,
    name: r.name,
    issuer: r.issuer,
    audience: r.audience,
    subject: r.subject,
    condition: r.condition,
    role: r.role as TrustPolicy['role'],
    workspace: r.workspace,
    pool: r.pool,
    description: r.description,
    version: r.version,
    createdAt: r.created_at,
    createdBy: fromJson<StateCause>(r.created_by, { kind: 'server', id: 'unknown' }),
    updatedAt: r.updated_at,
    updatedBy: fromJson<StateCause>(r.updated_by, { kind: 'server', id: 'unknown' }),
  };
}
