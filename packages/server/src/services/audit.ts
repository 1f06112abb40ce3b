import type { AuditEvent } from '@tessera/core';
import { redactSecrets } from '@tessera/core';
import type { FastifyBaseLogger } from 'fastify';
import { type Principal, principalId } from '../auth/principal.js';
import { iso } from '../lib/clock.js';
import { fromJson } from '../lib/json.js';
import { pageSize } from '../lib/paging.js';
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
 * Failures and denials of callers nobody could identify, recorded one by one per address and
 * minute; past that, one record says so and the rest are only counted (`suppressed`), so that
 * anyone able to send requests cannot grow the audit table without bound or bury real events.
 */
export const ANONYMOUS_FAILURES_PER_MINUTE = 30;
/** The same budget for all addresses together. */
export const ANONYMOUS_FAILURES_PER_MINUTE_ALL = 600;
const WINDOW_MS = 60_000;

/**
 * The audit log: security events with time, principal, action, target and result. Writes never
 * fail the request that caused them (a failed write is logged); every string is passed through
 * the secret redactor and capped in length, as a second line of defence behind callers that only
 * put ids and reasons in.
 */
export class AuditService {
  /** Per caller address (or identified caller): the current minute's start and how many failures it recorded. */
  private readonly windows = new Map<string, { since: number; count: number }>();
  /** The same, for all addresses together. */
  private all = { since: 0, count: 0 };
  /** Anonymous failures not recorded one by one (see {@link ANONYMOUS_FAILURES_PER_MINUTE}). */
  suppressed = 0;

  constructor(
    private readonly ctx: ServiceContext,
    private log?: FastifyBaseLogger,
  ) {}

  /** Where a failed write is reported (the app's logger, once it exists). */
  setLogger(log: FastifyBaseLogger): void {
    this.log = log;
  }

  /** Records an event (anonymous failures within their per-address budget). Never throws. */
  async record(event: AuditRecord): Promise<void> {
    if (event.result !== 'success' && !this.withinBudget(event)) return;
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

  /**
   * Whether a failure or denial is recorded. Callers nobody could identify: the first
   * {@link ANONYMOUS_FAILURES_PER_MINUTE} from an address each minute, and at most
   * {@link ANONYMOUS_FAILURES_PER_MINUTE_ALL} from all addresses together (addresses are cheap to vary:
   * IPv6, or `X-Forwarded-For` with `trust_proxy: true`). Identified callers: the same per-address
   * budget, per caller (a leaked run credential or a client looping on a 403 must not fill the table
   * either; the record past the budget names it, so who did it stays known). The first event over a
   * budget is recorded with a note; the rest of that minute's are only counted.
   */
  private withinBudget(event: AuditRecord): boolean {
    const now = this.ctx.clock.now();
    const identified = typeof event.principal === 'object' && event.principal !== null;
    const key = identified
      ? `principal ${principalId(event.principal as Principal)}`
      : typeof event.detail?.ip === 'string'
        ? event.detail.ip
        : 'unknown';
    let w = this.windows.get(key);
    if (!w || now - w.since >= WINDOW_MS) {
      // Windows that ended are forgotten.
      if (this.windows.size >= 10_000) for (const [k, v] of this.windows) if (now - v.since >= WINDOW_MS) this.windows.delete(k);
      w = { since: now, count: 0 };
      this.windows.set(key, w);
    }
    const own = this.over(event, w, ANONYMOUS_FAILURES_PER_MINUTE, `from ${key}`);
    if (own !== undefined) return own;
    // Only what an address may record counts towards all addresses' budget: one address cannot use it up.
    if (!identified) {
      if (now - this.all.since >= WINDOW_MS) this.all = { since: now, count: 0 };
      const all = this.over(event, this.all, ANONYMOUS_FAILURES_PER_MINUTE_ALL, 'from unidentified callers');
      if (all !== undefined) return all;
    }
    return true;
  }

  /**
   * Counts one event in window `w`: `undefined` while within `limit`, `true` for the first one over
   * it (recorded, with a note saying the rest are counted), `false` for the rest.
   */
  private over(event: AuditRecord, w: { since: number; count: number }, limit: number, who: string): boolean | undefined {
    w.count++;
    if (w.count <= limit) return undefined;
    this.suppressed++;
    if (w.count > limit + 1) return false;
    event.detail = {
      ...event.detail,
      suppressed: true,
      note: `more than ${limit} failures ${who} within a minute: the rest until ${iso(w.since + WINDOW_MS)} are counted (tessera_audit_suppressed_total), not recorded`,
    };
    return true;
  }

  /** Events, oldest first (page with `afterId`). */
  async list(options: ListAuditOptions = {}): Promise<AuditEvent[]> {
    let q = this.ctx.db.selectFrom('audit_events').selectAll();
    if (options.action) q = q.where('action', '=', options.action);
    if (options.principal) q = q.where('principal', '=', options.principal);
    if (options.afterId !== undefined) q = q.where('id', '>', options.afterId);
    const limit = pageSize(options.limit, 100, 1000);
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
