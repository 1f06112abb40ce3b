import { randomUUID } from 'node:crypto';
import { type ErrorCode, TesseraError } from '@tessera/core';
import { SIGNING_ALGORITHMS } from '@tessera/identity';
import type { FastifyRequest } from 'fastify';
import { createLocalJWKSet, decodeProtectedHeader, type JWTPayload, errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { iso } from '../lib/clock.js';
import type { ServiceContext } from '../services/context.js';
import type { KeyManager } from '../services/keys.js';
import { type Authenticator, bearerToken, isRole, type Principal, type RoleGrant } from './principal.js';

/**
 * Tessera API access tokens: short-lived JWTs the server signs for itself (RFC 9068 profile), handed
 * out by the token endpoint (federation, workers' assertions) and by people's login.
 *
 * They can never be confused with run identity tokens, in either direction:
 * - header `typ` is `at+jwt` (RFC 9068 §2.1); run identity tokens are `typ: JWT`, and both sides check it;
 * - `aud` is the API ({@link AccessTokenService.audience}, `<issuer>/api`), which is not an audience a
 *   relying party of run tokens accepts, and run tokens are never accepted here whatever their `aud`;
 * - introspection of run tokens finds no issued-token record for an access token's `jti`.
 *
 * Every request re-checks that what granted the token still stands (the worker is not revoked, the
 * trust policy still exists at the same version), so revocation takes effect at once, not at `exp`.
 */

/** Header `typ` of an access token. @see RFC 9068 §2.1 */
export const ACCESS_TOKEN_JWT_TYP = 'at+jwt';

/** Default access-token lifetime, ms (15 minutes). */
export const DEFAULT_ACCESS_TOKEN_TTL_MS = 15 * 60_000;

/** Claims of a Tessera access token. */
export interface AccessTokenClaims extends JWTPayload {
  iss: string;
  sub: string;
  aud: string;
  exp: number;
  iat: number;
  jti: string;
  /** RFC 9068 §2.2: who the token was issued to (`tessera-cli`, `policy:<name>`, the worker id). */
  client_id: string;
  /** The principal's kind. */
  principal_kind: 'person' | 'machine' | 'worker';
  /** Display name (e-mail, external `sub`, worker name). */
  name: string;
  /** Roles (people and machines). */
  grants?: RoleGrant[];
  /** People: the login provider and session id. */
  provider?: string;
  sid?: string;
  /** Machines and federated workers: the trust policy (name, id, version) that granted the token. */
  policy?: string;
  policy_id?: string;
  policy_version?: number;
  /** Workers: the only pool they may poll. */
  pool?: string;
}

/** Options for {@link AccessTokenService.issue}. */
export interface IssueAccessTokenOptions {
  /** @default the service's TTL (15 min) */
  ttlMs?: number;
  /** RFC 9068 `client_id`. @default by kind: `tessera-cli`, `policy:<name>`, the worker id */
  clientId?: string;
  /** For machines and federated workers: the policy id and version the grant depends on. */
  policy?: { id: string; version: number };
}

/** A minted access token. `accessToken` is secret: never log or store it. */
export interface IssuedAccessToken {
  accessToken: string;
  jti: string;
  expiresIn: number;
  expiresAt: string;
}

/**
 * Checks, per request, that a person's token still stands (e.g. the login session was not ended).
 * Throw a TesseraError (`ERR_CREDENTIAL_REVOKED`) to refuse.
 */
export type PersonTokenCheck = (claims: AccessTokenClaims) => Promise<void>;

type IssuablePrincipal = Extract<Principal, { kind: 'person' | 'machine' | 'worker' }>;

/** Mints and verifies access tokens; see the module comment. */
export class AccessTokenService {
  #personChecks: PersonTokenCheck[] = [];

  constructor(
    private readonly ctx: ServiceContext,
    private readonly keys: KeyManager,
    private readonly issuer: () => string,
    /** Lifetime of access tokens, ms. @default 15 min */
    public ttlMs: number = DEFAULT_ACCESS_TOKEN_TTL_MS,
  ) {}

  /** The `aud` of every access token: the server's API, `<issuer>/api`. */
  audience(): string {
    return `${this.issuer().replace(/\/+$/, '')}/api`;
  }

  /** The longest lifetime set elsewhere for the tokens this service signs (see {@link allowLifetime}). */
  #longestOther = 0;

  /**
   * Says that tokens may be signed with `ms` of lifetime (the CLI login's access tokens): keys stay
   * published after they retire for the longest lifetime any token they signed may have.
   */
  allowLifetime(ms: number): void {
    this.#longestOther = Math.max(this.#longestOther, ms);
  }

  /** The longest lifetime an access token signed by this service may have, ms. */
  longestLifetimeMs(): number {
    return Math.max(this.ttlMs, this.#longestOther);
  }

  /** Adds a per-request check for people's tokens (login sessions). */
  addPersonCheck(check: PersonTokenCheck): void {
    this.#personChecks.push(check);
  }

  /** Signs an access token for a person, machine or worker. */
  async issue(principal: IssuablePrincipal, options: IssueAccessTokenOptions = {}): Promise<IssuedAccessToken> {
    const ttlMs = options.ttlMs ?? this.ttlMs;
    // Whatever a caller asks, its key stays published long enough (a safety net behind allowLifetime).
    this.allowLifetime(ttlMs);
    const now = Math.floor(this.ctx.clock.now() / 1000);
    const exp = now + Math.max(1, Math.floor(ttlMs / 1000));
    const jti = randomUUID();
    const claims: Omit<AccessTokenClaims, 'iss' | 'sub' | 'aud' | 'exp' | 'iat' | 'jti'> = {
      client_id: options.clientId ?? defaultClientId(principal),
      principal_kind: principal.kind,
      name: principal.label,
    };
    if (principal.kind === 'person') {
      claims.grants = principal.grants;
      claims.provider = principal.provider;
      if (principal.sessionId) claims.sid = principal.sessionId;
    } else if (principal.kind === 'machine') {
      claims.grants = principal.grants;
      claims.policy = principal.policy;
    } else if (principal.pool !== undefined) {
      claims.pool = principal.pool;
    }
    if (options.policy) {
      claims.policy_id = options.policy.id;
      claims.policy_version = options.policy.version;
    }
    // Verified only by Tessera, against its database's keys: a key still waiting out its publication will do.
    const key = this.keys.signingKey('RS256', { pending: true });
    const accessToken = await new SignJWT(claims)
      .setProtectedHeader({ alg: key.alg, typ: ACCESS_TOKEN_JWT_TYP, kid: key.kid })
      .setIssuer(this.issuer())
      .setSubject(principal.id)
      .setAudience(this.audience())
      .setIssuedAt(now)
      .setNotBefore(now - 5)
      .setExpirationTime(exp)
      .setJti(jti)
      .sign(key.privateKey);
    return { accessToken, jti, expiresIn: exp - now, expiresAt: iso(exp * 1000) };
  }

  /**
   * Verifies an access token and rebuilds its principal, re-checking that what granted it still stands.
   * @throws TesseraError (401) `ERR_TYP_MISMATCH` for anything but an `at+jwt` (a run identity
   *   token), `ERR_AUDIENCE_MISMATCH`, `ERR_ISSUER_MISMATCH`, `ERR_TOKEN_EXPIRED`,
   *   `ERR_SIGNATURE_INVALID`, `ERR_KEY_NOT_FOUND`, `ERR_TOKEN_MALFORMED`; `ERR_CREDENTIAL_REVOKED`
   *   when the worker was revoked or the trust policy changed or was deleted.
   */
  async verify(token: string): Promise<{ principal: Principal; claims: AccessTokenClaims }> {
    let typ: unknown;
    try {
      typ = decodeProtectedHeader(token).typ;
    } catch {
      throw refuse('ERR_TOKEN_MALFORMED', 'the bearer token is not a JWT, a run credential (tsr_…) or anything else this server issues');
    }
    if (typeof typ !== 'string' || typ.toLowerCase() !== ACCESS_TOKEN_JWT_TYP) {
      throw refuse(
        'ERR_TYP_MISMATCH',
        `the bearer token has typ ${JSON.stringify(typ ?? null)}, not "${ACCESS_TOKEN_JWT_TYP}": a run identity token (or any other JWT) is not an API access token; exchange it at /oauth/token under a trust policy, or log in`,
      );
    }
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, createLocalJWKSet(await this.keys.jwks()), {
        issuer: this.issuer(),
        audience: this.audience(),
        algorithms: [...SIGNING_ALGORITHMS],
        typ: ACCESS_TOKEN_JWT_TYP,
        currentDate: new Date(this.ctx.clock.now()),
        clockTolerance: 5,
        requiredClaims: ['sub', 'exp', 'iat', 'jti', 'principal_kind'],
      }));
    } catch (e) {
      throw this.joseRefusal(e);
    }
    const claims = payload as AccessTokenClaims;
    return { principal: await this.principalOf(claims), claims };
  }

  /** The {@link Authenticator} for access tokens: any bearer that is not a run credential. */
  authenticator(): Authenticator {
    return {
      name: 'access-token',
      authenticate: async (request: FastifyRequest) => {
        const token = bearerToken(request);
        if (!token || token.startsWith('tsr_')) return undefined;
        return (await this.verify(token)).principal;
      },
    };
  }

  private async principalOf(c: AccessTokenClaims): Promise<Principal> {
    const grants = Array.isArray(c.grants) ? c.grants.filter((g) => g && isRole(g.role)) : [];
    if (c.policy_id !== undefined) await this.checkPolicy(c);
    switch (c.principal_kind) {
      case 'person':
        for (const check of this.#personChecks) await check(c);
        return {
          kind: 'person',
          id: c.sub,
          label: String(c.name ?? c.sub),
          provider: String(c.provider ?? ''),
          grants,
          ...(c.sid ? { sessionId: c.sid } : {}),
        };
      case 'machine':
        return { kind: 'machine', id: c.sub, label: String(c.name ?? c.sub), policy: String(c.policy ?? ''), grants };
      case 'worker': {
        const row = await this.ctx.db
          .selectFrom('worker_identities')
          .select(['revoked_at', 'name'])
          .where('id', '=', c.sub)
          .executeTakeFirst();
        if (!row) throw refuse('ERR_CREDENTIAL_REVOKED', `worker ${c.sub} no longer exists: join again with a new join token`);
        if (row.revoked_at) {
          throw refuse(
            'ERR_CREDENTIAL_REVOKED',
            `worker "${row.name}" (${c.sub}) was revoked at ${row.revoked_at}: an admin must issue a new join token`,
          );
        }
        return { kind: 'worker', id: c.sub, label: String(c.name ?? row.name), ...(c.pool ? { pool: c.pool } : {}) };
      }
      default:
        throw refuse('ERR_TOKEN_MALFORMED', `the access token names an unknown principal kind ${JSON.stringify(c.principal_kind)}`);
    }
  }

  private async checkPolicy(c: AccessTokenClaims): Promise<void> {
    const policy = await this.ctx.db
      .selectFrom('trust_policies')
      .select(['version', 'name'])
      .where('id', '=', String(c.policy_id))
      .executeTakeFirst();
    if (!policy) {
      throw refuse('ERR_CREDENTIAL_REVOKED', `trust policy "${c.policy ?? c.policy_id}" that granted this access token was deleted`);
    }
    if (policy.version !== c.policy_version) {
      throw refuse(
        'ERR_CREDENTIAL_REVOKED',
        `trust policy "${policy.name}" changed since this access token was granted (version ${c.policy_version}, now ${policy.version}): exchange your token again`,
      );
    }
  }

  private joseRefusal(e: unknown): TesseraError {
    if (e instanceof joseErrors.JWTExpired) return refuse('ERR_TOKEN_EXPIRED', 'the access token has expired: exchange or log in again');
    if (e instanceof joseErrors.JWTClaimValidationFailed) {
      if (e.claim === 'aud') {
        return refuse(
          'ERR_AUDIENCE_MISMATCH',
          `the token's audience is not this API (${this.audience()}): it was issued for another audience and cannot be used here`,
        );
      }
      if (e.claim === 'iss') return refuse('ERR_ISSUER_MISMATCH', `the token was not issued by this server (${this.issuer()})`);
      if (e.claim === 'typ') return refuse('ERR_TYP_MISMATCH', `the token's typ is not "${ACCESS_TOKEN_JWT_TYP}"`);
      if (e.claim === 'nbf' || e.claim === 'iat') return refuse('ERR_TOKEN_NOT_YET_VALID', 'the access token is not valid yet');
      return refuse('ERR_CLAIM_MISSING', `the access token's "${e.claim}" claim is missing or invalid`);
    }
    if (e instanceof joseErrors.JWKSNoMatchingKey) {
      return refuse(
        'ERR_KEY_NOT_FOUND',
        'the key that signed the access token is no longer published (rotated or revoked): get a new token',
      );
    }
    if (e instanceof joseErrors.JWSSignatureVerificationFailed || e instanceof joseErrors.JOSEAlgNotAllowed) {
      return refuse('ERR_SIGNATURE_INVALID', "the access token signature does not verify with this server's keys");
    }
    return refuse('ERR_TOKEN_MALFORMED', 'the access token is malformed', e);
  }
}

function defaultClientId(p: IssuablePrincipal): string {
  if (p.kind === 'machine') return `policy:${p.policy}`;
  if (p.kind === 'worker') return p.id;
  return 'tessera-cli';
}

/** A 401 refusal of a presented credential. */
function refuse(code: ErrorCode, message: string, cause?: unknown): TesseraError {
  return new TesseraError(code, message, { status: 401, ...(cause === undefined ? {} : { cause }) });
}
