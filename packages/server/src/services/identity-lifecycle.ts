import { type IntrospectionResponse, isTerminal, type RevokeRunIdentityResponse, type StateCause, type StateType } from '@tessera/core';
import { checkIssuedToken, SIGNING_ALGORITHMS } from '@tessera/identity';
import { iso } from '../lib/clock.js';
import { toJson } from '../lib/json.js';
import type { ServiceContext } from './context.js';
import type { KeyManager } from './keys.js';
import type { RunService } from './runs.js';

/**
 * Binds tokens to their run's life: introspection (RFC 7662) says a token is active only while it
 * verifies *and* the attempt that asked for it is still alive *and* nobody revoked the run's
 * identity. A relying party that introspects therefore stops trusting a token the moment its run
 * ends, not at `exp`.
 */
export class IdentityLifecycleService {
  constructor(
    private readonly ctx: ServiceContext,
    private readonly keys: KeyManager,
    private readonly runs: RunService,
    private readonly issuer: () => string,
  ) {}

  /**
   * Introspects a token. Never throws for a bad token and never says why it is inactive (RFC 7662
   * §2.2: the answer must not help an attacker probe); the server log gets the reason at debug level.
   */
  async introspect(token: string): Promise<{ response: IntrospectionResponse; reason?: string }> {
    const inactive = (reason: string) => ({ response: { active: false as const }, reason });
    const checked = await checkIssuedToken(token, {
      issuer: this.issuer(),
      jwks: await this.keys.jwks(),
      algorithms: SIGNING_ALGORITHMS,
      now: new Date(this.ctx.clock.now()),
    });
    if (!checked.valid) return inactive(checked.reason);
    const claims = checked.claims;
    const issued = await this.ctx.db.selectFrom('issued_tokens').selectAll().where('jti', '=', claims.jti).executeTakeFirst();
    // A token whose issuance was never recorded is not one this server handed out to a run.
    if (!issued || issued.flow_run_id !== claims.run_id || issued.attempt !== claims.run_attempt) return inactive('unknown-jti');
    if (issued.revoked_at) return inactive('token-revoked');
    const revoked = await this.ctx.db
      .selectFrom('identity_revocations')
      .select('flow_run_id')
      .where('flow_run_id', '=', claims.run_id)
      .executeTakeFirst();
    if (revoked) return inactive('identity-revoked');
    const run = await this.ctx.db
      .selectFrom('flow_runs')
      .select(['state_type', 'attempt'])
      .where('id', '=', claims.run_id)
      .executeTakeFirst();
    if (!run) return inactive('run-deleted');
    if (isTerminal(run.state_type as StateType)) return inactive('run-ended');
    if (run.attempt !== claims.run_attempt) return inactive('attempt-ended');
    // The attempt is alive exactly as long as its run credential: revoked at every terminal state, when a
    // claim is given back, and before a retry (Failed → AwaitingRetry keeps the attempt number).
    const live = await this.ctx.db
      .selectFrom('run_credentials')
      .select('hash')
      .where('flow_run_id', '=', claims.run_id)
      .where('attempt', '=', claims.run_attempt)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    if (!live) return inactive('attempt-ended');
    return { response: { active: true, ...claims, token_type: claims.cnf?.jkt ? 'DPoP' : 'Bearer' } };
  }

  /**
   * Revokes a run's identity: every token it was issued turns inactive at once (introspection), and
   * the run — this attempt and any retry — gets no new token (`ERR_IDENTITY_REVOKED`). The run itself
   * goes on; cancel it to stop it. Idempotent.
   */
  async revoke(idOrPrefix: string, actor: StateCause, reason?: string): Promise<RevokeRunIdentityResponse> {
    const run = await this.runs.getRun(idOrPrefix);
    const now = iso(this.ctx.clock.now());
    const revokedBy = `${actor.kind}:${actor.label ?? actor.id}`;
    return this.ctx.db.transaction().execute(async (trx) => {
      const inserted = await trx
        .insertInto('identity_revocations')
        .values({ flow_run_id: run.id, revoked_at: now, revoked_by: toJson(actor), reason: reason ?? null })
        .onConflict((oc) => oc.column('flow_run_id').doNothing())
        .executeTakeFirst();
      const alreadyRevoked = Number(inserted.numInsertedOrUpdatedRows ?? 0n) === 0;
      const updated = await trx
        .updateTable('issued_tokens')
        .set({ revoked_at: now })
        .where('flow_run_id', '=', run.id)
        .where('revoked_at', 'is', null)
        .where('expires_at', '>', now)
        .executeTakeFirst();
      const row = await trx.selectFrom('identity_revocations').selectAll().where('flow_run_id', '=', run.id).executeTakeFirstOrThrow();
      return {
        runId: run.id,
        revokedAt: row.revoked_at,
        revokedBy: alreadyRevoked ? describeCause(row.revoked_by) : revokedBy,
        tokensRevoked: Number(updated.numUpdatedRows),
        alreadyRevoked,
      };
    });
  }
}

function describeCause(json: string): string {
  try {
    const c = JSON.parse(json) as StateCause;
    return `${c.kind}:${c.label ?? c.id}`;
  } catch {
    return 'unknown';
  }
}
