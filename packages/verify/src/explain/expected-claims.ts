import type { Deployment, FlowRun } from '@tessera/core';
import type { DecodedToken } from './types.js';

/** Options for {@link expectedRunToken}. */
export interface ExpectedRunTokenOptions {
  /** The issuer, exactly as its discovery document names it. */
  issuer: string;
  audience: string;
  /** `sub` as the issuer builds it for this deployment (see `buildDefaultSubject` in `@tessera/identity`). */
  subject: string;
  deployment: Deployment;
  /** The run whose tokens to imitate; without one, a run of `deployment` in general. */
  run?: FlowRun;
  /** @default new Date() */
  now?: Date;
  /** @default 300 */
  lifetimeSeconds?: number;
  /** @default 'default' */
  workspace?: string;
}

/**
 * The header and claims a run's identity token would carry if asked for now, built the way the
 * issuer builds them (docs/identity.md) — for explaining a relying party's decision before any
 * token exists. `jti` is a placeholder; nothing here is signed.
 */
export function expectedRunToken(options: ExpectedRunTokenOptions): DecodedToken {
  const { deployment: d, run } = options;
  const iat = Math.floor((options.now ?? new Date()).getTime() / 1000);
  const triggeredBy = run?.triggeredBy;
  return {
    header: { alg: d.identity?.algorithm ?? 'RS256', typ: 'JWT' },
    claims: {
      iss: options.issuer,
      sub: options.subject,
      aud: options.audience,
      iat,
      nbf: iat - 30,
      exp: iat + (options.lifetimeSeconds ?? 300),
      jti: '(not issued)',
      workspace: options.workspace ?? 'default',
      project: d.project ?? 'default',
      flow: run?.flowName ?? d.flowName,
      deployment: d.name,
      deployment_id: d.id,
      environment: d.environment ?? 'dev',
      ...(run
        ? {
            run_id: run.id,
            run_attempt: Math.max(1, run.attempt),
            work_pool: run.workPool ?? d.workPool,
            worker: run.workerName,
            trigger_kind: run.triggerKind,
            triggered_by: triggeredBy ? `${triggeredBy.kind}:${triggeredBy.label ?? triggeredBy.id}` : 'unknown',
            tags: run.tags,
          }
        : { work_pool: d.workPool }),
      sub_template_version: 1,
    },
  };
}
