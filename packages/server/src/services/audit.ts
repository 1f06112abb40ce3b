import type { AuditEvent } from '@tessera/core';
import { redactSecrets } from '@tessera/core';
import type { FastifyBaseLogger } from 'fastify';
import { type Principal, principalId } from '../auth/principal.js';
import { iso } from '../lib/clock.js';
import { fromJson } from '../lib/json.js';
import type { ServiceContext } from './context.js';

/**
 * What happened, in dotted form. The list is closed so that dashboards and alerts can rely on it.
 * - `auth.login` / `auth.login_failed`: a person's login (issue #5 part B);
 * - `auth.failed`: a presented credential (bearer, cookie) was refused;
 * - `authz.denied`: an authenticated caller lacked the role (or the run) a route needs;
 * - `token.exchange`: RFC 8693 token exchange (success, or denied with the reason);
 * - `token.assertion`: a worker's RFC 7523 assertion (success or failure);
 * - `worker.join_token_created`, `worker.joined`, `worker.join_failed`, `worker.revoked`;
 * - `trust_policy.created`, `trust_policy.updated`, `trust_policy.deleted`.
 */
export type AuditAction =
  | 'auth.login'
  | 'auth.login_failed'
  | 'auth.logout'
  | 'auth.failed'
  | 'authz.denied'
  | 'token.exchange'
  | 'token.assertion'
  | 'worker.join_token_created'
  | 'worker.joined'
  | 'worker.join_failed'
  | 'worker.revoked'
  | 'trust_policy.created'
  | 'trust_policy.updated'
  | 'trust_policy.deleted';

/** One event to record. `detail` holds reasons, codes, names — never a token, credential or secret. */
export interface AuditRecord {
  /** Who acted: a principal, or a string such as `external:<iss>#<sub>` / `anonymous`. */
  principal: Principal | string | null;
  action: AuditAction;
  target?: string | null;
  result: 'success' | 'failure' | 'denied';
  detail?: Record<string, string | number | boolean | null | undefined>;
}

/** Options for {@link AuditService.list}. */
export interface ListAuditOptions {
  action?: string;
  principal?: string;
  /** Only events with an id greater than this (paging forward). */
  afterId?: number;
  /** @default 100, at most 1000 */
  limit?: number;
}

const MAX_FIELD = 500;

/**
 * The audit log: security events with time, principal, action, target and result. Writes never
 * fail the request that caused them (a failed write is logged); every string is passed through
 * the secret redactor and capped in length, as a second line of defence behind callers that only
 * put ids and reasons in.
 */
export class AuditService {
  constructor(
    private readonly ctx: ServiceContext,
    private log?: FastifyBaseLogger,
  ) {}

  /** Where a failed write is reported (the app's logger, once it exists). */
  setLogger(log: FastifyBaseLogger): void {
    this.log = log;
  }

  /** Records an event. Never throws. */
  async record(event: AuditRecord): Promise<void> {
    const { principal, kind } = who(event.principal);
    const detail = event.detail
      ? Object.fromEntries(
          Object.entries(event.detail)
            .filter(([, v]) => v !== undefined)
            .map(([k, v]) => [k, typeof v === 'string' ? clean(v) : v]),
        )
      : null;
    try {
      await this.ctx.db
        .insertInto('audit_events')
        .values({
          at: iso(this.ctx.clock.now()),
          principal: clean(principal),
          principal_kind: kind,
          action: event.action,
          target: event.target ? clean(event.target) : null,
          result: event.result,
          detail: detail && Object.keys(detail).length > 0 ? JSON.stringify(detail) : null,
        })
        .execute();
    } catch (e) {
      this.log?.error({ err: e, action: event.action }, 'audit: could not record a security event');
    }
  }

  /** Events, oldest first (page with `afterId`). */
  async list(options: ListAuditOptions = {}): Promise<AuditEvent[]> {
    let q = this.ctx.db.selectFrom('audit_events').selectAll();
    if (options.action) q = q.where('action', '=', options.action);
    if (options.principal) q = q.where('principal', '=', options.principal);
    if (options.afterId !== undefined) q = q.where('id', '>', options.afterId);
    const limit = Math.min(Math.max(1, options.limit ?? 100), 1000);
    // Without a cursor, the newest `limit` events (still answered oldest first).
    const rows =
      options.afterId === undefined
        ? (await q.orderBy('id', 'desc').limit(limit).execute()).reverse()
        : await q.orderBy('id', 'asc').limit(limit).execute();
    return rows.map((r) => ({
      id: Number(r.id),
      at: r.at,
      principal: r.principal,
      principalKind: r.principal_kind,
      action: r.action,
      target: r.target,
      result: r.result,
      detail: fromJson<Record<string, unknown> | null>(r.detail, null),
    }));
  }
}

function who(p: AuditRecord['principal']): { principal: string; kind: string } {
  if (p === null) return { principal: 'anonymous', kind: 'anonymous' };
  if (typeof p === 'string') return { principal: p, kind: p.split(':')[0] ?? 'external' };
  return { principal: principalId(p), kind: p.kind };
}

function clean(s: string): string {
  const r = redactSecrets(s);
  return r.length > MAX_FIELD ? `${r.slice(0, MAX_FIELD)}…` : r;
}
