import { type Duration, type PutTrustPolicyRequest, parseDuration, TesseraError } from '@tessera/core';
import type { Services } from '../services/index.js';
import type { LoginOptions } from './oidc-login.js';

/** Auth settings of {@link ServerOptions}. See docs/security.md (and docs/login.md for `providers`, `sessions`). */
export interface AuthOptions extends LoginOptions {
  /**
   * Local mode: a request with no credential at all is the local admin, and the server listens on
   * loopback only. Turn it off to require a credential on every non-public route (and to listen
   * beyond loopback).
   * @default true, unless identity `providers` are configured (login ends local mode)
   */
  localAdmin?: boolean;
  /** Lifetime of Tessera access tokens (federation, workers, login). @default '15m' */
  accessTokenTtl?: Duration;
  /**
   * Trust policies declared in configuration, by name: created or updated at startup (recorded as
   * changed by `server:config`). The way to bootstrap federation on a server with no local admin.
   */
  trustPolicies?: Record<string, PutTrustPolicyRequest>;
}

/** Whether local mode is on for these options. */
export function isLocalMode(options: AuthOptions | undefined): boolean {
  return options?.localAdmin ?? !(options?.providers && options.providers.length > 0);
}

/** Applies {@link AuthOptions} to freshly built services (before the app serves requests). */
export async function configureAuth(services: Services, options: AuthOptions = {}): Promise<void> {
  services.auth.localAdmin = isLocalMode(options);
  if (options.accessTokenTtl !== undefined) {
    const ms = parseDuration(options.accessTokenTtl, 'auth.accessTokenTtl');
    if (ms < 60_000 || ms > 24 * 3_600_000) {
      throw new TesseraError('ERR_CONFIG', `auth.accessTokenTtl: ${ms} ms is out of range; between 1m and 24h (default 15m)`);
    }
    services.accessTokens.ttlMs = ms;
  }
  for (const [name, policy] of Object.entries(options.trustPolicies ?? {})) {
    const existing = (await services.trustPolicies.list()).find((p) => p.name === name);
    const same =
      existing &&
      existing.issuer === policy.issuer &&
      existing.audience === policy.audience &&
      existing.subject === (policy.subject ?? null) &&
      existing.condition === (policy.condition ?? null) &&
      existing.role === policy.role &&
      existing.workspace === (policy.workspace ?? null) &&
      existing.pool === (policy.pool ?? null);
    if (!same)
      await services.trustPolicies.put(name, policy, { kind: 'server', id: 'config', label: 'server configuration' }, 'server:config');
  }
}
