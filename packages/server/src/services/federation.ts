import { createHash } from 'node:crypto';
import {
  ACCESS_TOKEN_TYPE,
  type ErrorCode,
  JWT_BEARER_GRANT,
  JWT_TOKEN_TYPE,
  type OAuthErrorResponse,
  type OAuthTokenResponse,
  TesseraError,
  TOKEN_EXCHANGE_GRANT,
} from '@tessera/core';
import { glob } from '@tessera/verify';
import {
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  importJWK,
  type JWK,
  type JWTPayload,
  type JWTVerifyGetKey,
  errors as joseErrors,
  jwtVerify,
} from 'jose';
import type { AccessTokenService } from '../auth/access-tokens.js';
import { evaluateCondition, type Principal } from '../auth/principal.js';
import { iso } from '../lib/clock.js';
import type { AuditService } from './audit.js';
import type { ServiceContext } from './context.js';
import type { CompiledTrustPolicy, TrustPolicyService } from './trust-policies.js';
import { algorithmFor, type WorkerIdentityService } from './worker-identities.js';

/** RFC 8693 §3: the token type of an OpenID Connect ID token, accepted like a JWT. */
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';
/** Asymmetric algorithms accepted from external issuers: never `none` or HMAC. */
const EXTERNAL_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];
/** Longest token accepted, characters. */
const MAX_TOKEN_LENGTH = 16 * 1024;
/** A worker's assertion may live at most this long (RFC 7523 §3 leaves it to the server), seconds. */
const MAX_ASSERTION_LIFETIME_S = 300;
/** Discovery documents are re-read after this long, ms. */
const DISCOVERY_TTL_MS = 60 * 60_000;

/**
 * An OAuth error at the token endpoint: RFC 6749 §5.2 `error` plus Tessera's stable `code` and
 * message (which says what was expected, what was found, and what to do).
 */
export class OAuthError extends TesseraError {
  readonly oauthError: OAuthErrorResponse['error'];
  constructor(
    oauthError: OAuthErrorResponse['error'],
    code: ErrorCode,
    message: string,
    options: { status?: number; cause?: unknown } = {},
  ) {
    super(code, message, {
      status: options.status ?? (oauthError === 'invalid_client' ? 401 : oauthError === 'server_error' ? 502 : 400),
      ...(options.cause ? { cause: options.cause } : {}),
    });
    this.oauthError = oauthError;
  }

  /** The RFC 6749 §5.2 body. */
  toOAuthBody(): OAuthErrorResponse {
    return { error: this.oauthError, error_description: this.message, code: this.code, message: this.message };
  }
}

/** Where the token endpoint was reached, for the `aud` of workers' assertions. */
export interface TokenEndpointContext {
  /** The endpoint's URLs: as the issuer names it, and as this request reached it. */
  urls: string[];
  ip: string;
}

interface DiscoveredIssuer {
  keys: JWTVerifyGetKey;
  at: number;
}

/**
 * The token endpoint's two grants:
 * - RFC 8693 token exchange: a platform token (GitHub Actions, GitLab, a Kubernetes service account…)
 *   for a short-lived Tessera access token, under the first trust policy (by name) that matches;
 * - RFC 7523 JWT bearer: a joined worker proves possession of its key and gets an access token.
 * Every outcome is audited (`token.exchange`, `token.assertion`), with reasons but never the tokens.
 */
export class FederationService {
  readonly #issuers = new Map<string, DiscoveredIssuer>();

  constructor(
    private readonly ctx: ServiceContext,
    private readonly issuer: () => string,
    private readonly policies: TrustPolicyService,
    private readonly workers: WorkerIdentityService,
    private readonly accessTokens: AccessTokenService,
    private readonly audit: AuditService,
  ) {}

  /** Handles one token request (the parsed form). @throws {OAuthError} */
  async token(params: Record<string, unknown>, endpoint: TokenEndpointContext): Promise<OAuthTokenResponse> {
    for (const [k, v] of Object.entries(params)) {
      if (Array.isArray(v))
        throw new OAuthError('invalid_request', 'ERR_VALIDATION', `${k}: sent more than once; send each parameter once (RFC 6749 §3.2)`);
    }
    const grant = params.grant_type;
    if (grant === TOKEN_EXCHANGE_GRANT) return this.exchange(params, endpoint);
    if (grant === JWT_BEARER_GRANT) return this.jwtBearer(params, endpoint);
    if (typeof grant !== 'string' || grant === '') {
      throw new OAuthError('invalid_request', 'ERR_VALIDATION', `grant_type: required; use ${TOKEN_EXCHANGE_GRANT} or ${JWT_BEARER_GRANT}`);
    }
    throw new OAuthError(
      'unsupported_grant_type',
      'ERR_VALIDATION',
      `grant_type "${grant.slice(0, 100)}" is not supported; use ${TOKEN_EXCHANGE_GRANT} (federation) or ${JWT_BEARER_GRANT} (workers)`,
    );
  }

  // ── RFC 8693 token exchange ──

  private async exchange(params: Record<string, unknown>, endpoint: TokenEndpointContext): Promise<OAuthTokenResponse> {
    const subjectToken = params.subject_token;
    if (typeof subjectToken !== 'string' || subjectToken === '') {
      throw new OAuthError(
        'invalid_request',
        'ERR_TOKEN_MISSING',
        'subject_token: required: the token from your platform (e.g. the GitHub Actions OIDC token)',
      );
    }
    const tokenType = params.subject_token_type;
    if (tokenType !== JWT_TOKEN_TYPE && tokenType !== ID_TOKEN_TYPE) {
      throw new OAuthError(
        'invalid_request',
        'ERR_VALIDATION',
        `subject_token_type: expected ${JWT_TOKEN_TYPE} (or ${ID_TOKEN_TYPE}), found ${JSON.stringify(tokenType ?? null)}`,
      );
    }
    if (params.requested_token_type !== undefined && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
      throw new OAuthError('invalid_request', 'ERR_VALIDATION', `requested_token_type: only ${ACCESS_TOKEN_TYPE} is issued`);
    }
    if (params.actor_token !== undefined) {
      throw new OAuthError('invalid_request', 'ERR_VALIDATION', 'actor_token: delegation is not supported; send only subject_token');
    }
    for (const p of ['audience', 'resource'] as const) {
      const v = params[p];
      if (v !== undefined && v !== this.accessTokens.audience() && v !== this.issuer()) {
        throw new OAuthError(
          'invalid_target',
          'ERR_AUDIENCE_MISMATCH',
          `${p}: this server issues tokens only for its own API (${this.accessTokens.audience()})`,
        );
      }
    }

    let external: JWTPayload;
    try {
      external = await this.verifyExternal(subjectToken);
    } catch (e) {
      const err = e instanceof OAuthError ? e : new OAuthError('server_error', 'ERR_INTERNAL', 'token exchange failed', { cause: e });
      await this.audit.record({
        principal: externalPrincipal(peek(subjectToken)),
        action: 'token.exchange',
        target: 'token-endpoint',
        result: 'denied',
        detail: { code: err.code, reason: err.message, ip: endpoint.ip },
      });
      throw err;
    }
    const iss = external.iss as string;
    const sub = typeof external.sub === 'string' ? external.sub : '';
    const candidates = await this.policies.forIssuer(iss);
    const reasons: { policy: string; code: ErrorCode; reason: string }[] = [];
    let match: CompiledTrustPolicy | undefined;
    for (const c of candidates) {
      const why = mismatch(c, external, sub);
      if (!why) {
        match = c;
        break;
      }
      reasons.push({ policy: c.policy.name, ...why });
    }
    if (!match) {
      // The most telling reason: an audience no policy accepts, else the first subject/condition miss.
      const audienceOnly = reasons.every((r) => r.code === 'ERR_AUDIENCE_MISMATCH');
      const code: ErrorCode = audienceOnly ? 'ERR_AUDIENCE_MISMATCH' : 'ERR_POLICY_DENIED';
      const relevant = audienceOnly ? reasons : reasons.filter((r) => r.code !== 'ERR_AUDIENCE_MISMATCH');
      const reason = `no trust policy for issuer "${iss}" accepts this token: ${relevant.map((r) => `policy "${r.policy}": ${r.reason}`).join('; ')}`;
      await this.audit.record({
        principal: externalPrincipal(external),
        action: 'token.exchange',
        target: 'token-endpoint',
        result: 'denied',
        detail: { code, reason, ip: endpoint.ip },
      });
      // The caller learns what its own token said, not what the policies expect: on a shared issuer
      // (GitHub, GitLab) anyone can mint a token, and policies (patterns, conditions) are admin-only.
      const aud = external.aud === undefined ? [] : Array.isArray(external.aud) ? external.aud : [external.aud];
      const said = audienceOnly ? `aud ${JSON.stringify(aud)}` : `sub "${sub}"`;
      throw new OAuthError(
        'invalid_grant',
        code,
        `no trust policy for issuer "${iss}" accepts this token (${said}). An admin sees each policy's reason with \`tessera audit --action token.exchange\``,
      );
    }

    const policy = match.policy;
    let principal: Extract<Principal, { kind: 'machine' | 'worker' }>;
    if (policy.role === 'worker') {
      let worker: Awaited<ReturnType<WorkerIdentityService['federated']>>;
      try {
        worker = await this.workers.federated(policy, sub);
      } catch (e) {
        const err = e instanceof TesseraError ? e : new TesseraError('ERR_INTERNAL', 'could not record the worker', { cause: e });
        await this.audit.record({
          principal: externalPrincipal(external),
          action: 'token.exchange',
          target: `trust-policy:${policy.name}`,
          result: 'denied',
          detail: { code: err.code, reason: err.message, ip: endpoint.ip },
        });
        throw new OAuthError('invalid_grant', err.code, err.message);
      }
      principal = { kind: 'worker', id: worker.id, label: worker.name, ...(policy.pool ? { pool: policy.pool } : {}) };
    } else {
      principal = {
        kind: 'machine',
        id: sub,
        label: sub,
        policy: policy.name,
        grants: [{ role: policy.role, ...(policy.workspace ? { workspace: policy.workspace } : {}) }],
      };
    }
    const issued = await this.accessTokens.issue(principal, { policy: { id: policy.id, version: policy.version } });
    await this.audit.record({
      principal,
      action: 'token.exchange',
      target: `trust-policy:${policy.name}`,
      result: 'success',
      detail: { issuer: iss, subject: sub, role: policy.role, jti: issued.jti, expiresAt: issued.expiresAt, ip: endpoint.ip },
    });
    return tokenResponse(issued, principal);
  }

  /** Verifies a platform token against its issuer's published keys (discovery + JWKS). */
  private async verifyExternal(token: string): Promise<JWTPayload> {
    if (token.length > MAX_TOKEN_LENGTH) {
      throw new OAuthError(
        'invalid_grant',
        'ERR_TOKEN_TOO_LARGE',
        `subject_token is ${token.length} characters; the limit is ${MAX_TOKEN_LENGTH}`,
      );
    }
    const unverified = peek(token);
    if (!unverified) throw new OAuthError('invalid_grant', 'ERR_TOKEN_MALFORMED', 'subject_token is not a JWT (header.payload.signature)');
    const iss = unverified.iss;
    if (typeof iss !== 'string' || iss === '') throw new OAuthError('invalid_grant', 'ERR_CLAIM_MISSING', 'subject_token has no iss claim');
    // A run token (or an access token) of this server is never exchanged, whatever a policy says: the
    // API access token would outlive the run and its revocation. A run uses its run credential.
    if (iss === this.issuer()) {
      throw new OAuthError(
        'invalid_grant',
        'ERR_ISSUER_MISMATCH',
        "subject_token was issued by this server: its own tokens are not exchanged for API access (a run uses its run credential, TESSERA_RUN_CREDENTIAL); remove any trust policy naming this server's issuer",
      );
    }
    const candidates = await this.policies.forIssuer(iss);
    if (candidates.length === 0) {
      throw new OAuthError(
        'invalid_grant',
        'ERR_ISSUER_MISMATCH',
        `issuer "${iss.slice(0, 200)}" is not trusted: no trust policy names it (issuers are compared exactly, trailing slash included); an admin adds one with \`tessera federation set\``,
      );
    }
    const keys = await this.keysOf(iss);
    try {
      const { payload } = await jwtVerify(token, keys, {
        issuer: iss,
        algorithms: EXTERNAL_ALGORITHMS,
        currentDate: new Date(this.ctx.clock.now()),
        clockTolerance: 30,
        requiredClaims: ['exp', 'iat', 'sub'],
      });
      return payload;
    } catch (e) {
      throw externalRefusal(e, iss);
    }
  }

  private async keysOf(issuer: string): Promise<JWTVerifyGetKey> {
    const cached = this.#issuers.get(issuer);
    if (cached && this.ctx.clock.now() - cached.at < DISCOVERY_TTL_MS) return cached.keys;
    const url = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    let doc: { issuer?: unknown; jwks_uri?: unknown };
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(5000), redirect: 'error', headers: { accept: 'application/json' } });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      doc = (await res.json()) as typeof doc;
    } catch (e) {
      throw new OAuthError(
        'server_error',
        'ERR_DISCOVERY_FAILED',
        `cannot read the discovery document of issuer "${issuer}" at ${url} (${(e as Error).message}); try again later`,
        {
          cause: e,
        },
      );
    }
    if (doc.issuer !== issuer) {
      throw new OAuthError(
        'server_error',
        'ERR_DISCOVERY_FAILED',
        `the discovery document at ${url} names issuer ${JSON.stringify(doc.issuer)}, not "${issuer}" (OpenID Discovery §4.3); fix the trust policy's issuer`,
      );
    }
    let jwksUri: URL;
    try {
      jwksUri = new URL(String(doc.jwks_uri));
    } catch {
      throw new OAuthError('server_error', 'ERR_DISCOVERY_FAILED', `the discovery document of "${issuer}" has no valid jwks_uri`);
    }
    if (jwksUri.protocol !== 'https:' && !(jwksUri.protocol === 'http:' && new URL(issuer).protocol === 'http:')) {
      throw new OAuthError('server_error', 'ERR_DISCOVERY_FAILED', `jwks_uri ${jwksUri.href} of "${issuer}" is not https`);
    }
    const keys = createRemoteJWKSet(jwksUri, { timeoutDuration: 5000, cooldownDuration: 30_000, cacheMaxAge: 10 * 60_000 });
    this.#issuers.set(issuer, { keys, at: this.ctx.clock.now() });
    return keys;
  }

  // ── RFC 7523 JWT bearer (workers) ──

  private async jwtBearer(params: Record<string, unknown>, endpoint: TokenEndpointContext): Promise<OAuthTokenResponse> {
    const assertion = params.assertion;
    if (typeof assertion !== 'string' || assertion === '') {
      throw new OAuthError(
        'invalid_request',
        'ERR_TOKEN_MISSING',
        "assertion: required: a JWT signed with the worker's key (RFC 7523 §2.1)",
      );
    }
    const claims = peek(assertion);
    const workerId = typeof claims?.iss === 'string' ? claims.iss : undefined;
    const refuse = async (code: ErrorCode, message: string, oauth: OAuthErrorResponse['error'] = 'invalid_grant') => {
      await this.audit.record({
        principal: workerId ? `worker:${workerId.slice(0, 100)}` : null,
        action: 'token.assertion',
        target: 'token-endpoint',
        result: 'denied',
        detail: { code, reason: message, ip: endpoint.ip },
      });
      return new OAuthError(oauth, code, message);
    };
    if (!claims || !workerId) throw await refuse('ERR_TOKEN_MALFORMED', 'assertion: not a JWT with an iss claim (the worker id)');
    if (assertion.length > MAX_TOKEN_LENGTH) throw await refuse('ERR_TOKEN_TOO_LARGE', 'assertion is too large');
    const worker = await this.workers.find(workerId);
    if (!worker?.public_jwk) {
      throw await refuse('ERR_CREDENTIAL_INVALID', `no joined worker "${workerId.slice(0, 100)}": join first with a join token`);
    }
    if (worker.revoked_at) {
      throw await refuse(
        'ERR_CREDENTIAL_REVOKED',
        `worker "${worker.name}" (${worker.id}) was revoked at ${worker.revoked_at}; an admin must issue a new join token`,
      );
    }
    const jwk = JSON.parse(worker.public_jwk) as JWK;
    const alg = algorithmFor(jwk);
    let verified: JWTPayload;
    try {
      const header = decodeProtectedHeader(assertion);
      if (header.alg !== alg)
        throw await refuse('ERR_ALG_NOT_ALLOWED', `assertion alg ${JSON.stringify(header.alg)}; this worker's key signs ${alg}`);
      ({ payload: verified } = await jwtVerify(assertion, await importJWK(jwk, alg), {
        issuer: worker.id,
        subject: worker.id,
        audience: [...endpoint.urls, this.issuer()],
        algorithms: [alg],
        currentDate: new Date(this.ctx.clock.now()),
        clockTolerance: 30,
        requiredClaims: ['exp', 'jti', 'iat'],
      }));
    } catch (e) {
      if (e instanceof OAuthError) throw e;
      const r = externalRefusal(e, worker.id);
      throw await refuse(r.code, r.message.replace(`issuer "${worker.id}"`, `worker "${worker.name}"`));
    }
    const nowS = Math.floor(this.ctx.clock.now() / 1000);
    const exp = verified.exp as number;
    if (exp - nowS > MAX_ASSERTION_LIFETIME_S + 30) {
      throw await refuse('ERR_CLAIM_INVALID', `assertion exp is ${exp - nowS} s away; at most ${MAX_ASSERTION_LIFETIME_S} s`);
    }
    if (typeof verified.jti !== 'string' || verified.jti.length === 0 || verified.jti.length > 200) {
      throw await refuse('ERR_CLAIM_INVALID', 'assertion jti must be a non-empty string of at most 200 characters');
    }
    // RFC 7523 §3 (7): a jti is single-use; remember it until the assertion would have expired.
    const id = createHash('sha256').update(`${worker.id} ${verified.jti}`).digest('hex');
    await this.ctx.db.deleteFrom('assertion_jtis').where('expires_at', '<', iso(this.ctx.clock.now())).execute();
    const inserted = await this.ctx.db
      .insertInto('assertion_jtis')
      .values({ id, expires_at: iso((exp + 60) * 1000) })
      .onConflict((oc) => oc.column('id').doNothing())
      .executeTakeFirst();
    if (Number(inserted.numInsertedOrUpdatedRows ?? 0) !== 1) {
      throw await refuse(
        'ERR_ASSERTION_REPLAYED',
        `assertion jti "${verified.jti.slice(0, 50)}" was already used: sign a new assertion for every request`,
      );
    }
    await this.workers.touch(worker.id);
    const principal: Extract<Principal, { kind: 'worker' }> = {
      kind: 'worker',
      id: worker.id,
      label: worker.name,
      ...(worker.pool ? { pool: worker.pool } : {}),
    };
    const issued = await this.accessTokens.issue(principal);
    await this.audit.record({
      principal,
      action: 'token.assertion',
      target: `worker:${worker.id}`,
      result: 'success',
      detail: { jti: issued.jti, expiresAt: issued.expiresAt, ip: endpoint.ip },
    });
    return tokenResponse(issued, principal);
  }
}

/** Why a policy does not accept the token, or undefined when it does. */
function mismatch(c: CompiledTrustPolicy, claims: JWTPayload, sub: string): { code: ErrorCode; reason: string } | undefined {
  const p = c.policy;
  const aud = claims.aud === undefined ? [] : Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!aud.includes(p.audience)) {
    return { code: 'ERR_AUDIENCE_MISMATCH', reason: `token aud ${JSON.stringify(aud)} does not include "${p.audience}"` };
  }
  if (p.subject && !glob(p.subject, sub)) {
    return { code: 'ERR_POLICY_DENIED', reason: `token sub "${sub}" does not match "${p.subject}"` };
  }
  if (c.condition && !evaluateCondition(c.condition, claims as Record<string, unknown>)) {
    return { code: 'ERR_POLICY_DENIED', reason: `condition ${JSON.stringify(p.condition)} is not true for this token` };
  }
  return undefined;
}

function tokenResponse(
  issued: { accessToken: string; expiresIn: number },
  principal: Extract<Principal, { kind: 'machine' | 'worker' }>,
): OAuthTokenResponse {
  return {
    access_token: issued.accessToken,
    token_type: 'Bearer',
    expires_in: issued.expiresIn,
    issued_token_type: ACCESS_TOKEN_TYPE,
    principal:
      principal.kind === 'machine'
        ? { kind: 'machine', id: principal.id, label: principal.label, grants: principal.grants }
        : { kind: 'worker', id: principal.id, label: principal.label, ...(principal.pool ? { pool: principal.pool } : {}) },
  };
}

/** The claims of a JWT without verifying it, or undefined. */
function peek(token: string): JWTPayload | undefined {
  try {
    return token.length <= MAX_TOKEN_LENGTH ? decodeJwt(token) : undefined;
  } catch {
    return undefined;
  }
}

/** Who an external token claims to be, for the audit log (unverified when it failed). */
function externalPrincipal(claims: JWTPayload | undefined): string {
  if (!claims) return 'external:unknown';
  return `external:${String(claims.iss ?? '?').slice(0, 200)}#${String(claims.sub ?? '?').slice(0, 200)}`;
}

function externalRefusal(e: unknown, iss: string): OAuthError {
  if (e instanceof OAuthError) return e;
  if (e instanceof joseErrors.JWTExpired)
    return new OAuthError('invalid_grant', 'ERR_TOKEN_EXPIRED', `the token from issuer "${iss}" has expired; get a fresh one`);
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    if (e.claim === 'iss') return new OAuthError('invalid_grant', 'ERR_ISSUER_MISMATCH', `the token's iss is not "${iss}"`);
    if (e.claim === 'aud')
      return new OAuthError('invalid_grant', 'ERR_AUDIENCE_MISMATCH', 'the assertion aud must be the token endpoint URL or the issuer');
    if (e.claim === 'nbf' || e.claim === 'iat')
      return new OAuthError('invalid_grant', 'ERR_TOKEN_NOT_YET_VALID', `the token is not valid yet (${e.claim})`);
    return new OAuthError('invalid_grant', 'ERR_CLAIM_MISSING', `the token's "${e.claim}" claim is missing or invalid (${e.reason})`);
  }
  if (e instanceof joseErrors.JOSEAlgNotAllowed)
    return new OAuthError('invalid_grant', 'ERR_ALG_NOT_ALLOWED', `token alg is not allowed; accepted: ${EXTERNAL_ALGORITHMS.join(', ')}`);
  if (e instanceof joseErrors.JWKSNoMatchingKey)
    return new OAuthError('invalid_grant', 'ERR_KEY_NOT_FOUND', `no key of issuer "${iss}" matches the token's kid`);
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) {
    return new OAuthError('invalid_grant', 'ERR_SIGNATURE_INVALID', `the signature does not verify with the keys of issuer "${iss}"`);
  }
  if (e instanceof joseErrors.JWKSTimeout || e instanceof joseErrors.JWKSInvalid) {
    return new OAuthError('server_error', 'ERR_JWKS_UNAVAILABLE', `cannot read the JWKS of issuer "${iss}"; try again later`, { cause: e });
  }
  return new OAuthError('invalid_grant', 'ERR_TOKEN_MALFORMED', `the token is malformed (${(e as Error).message})`, { cause: e });
}
