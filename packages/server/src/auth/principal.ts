import type { StateCause } from '@tessera/core';
import { TesseraError } from '@tessera/core';
import { type CompiledCel, compileCel } from '@tessera/verify';
import type { FastifyRequest } from 'fastify';
import type { RunCredentialPrincipal } from '../services/credentials.js';

/**
 * The auth core every way in shares: who a caller is ({@link Principal}), what it may do
 * ({@link Role}, {@link RoleGrant}, {@link requireRole}), how roles come from claims ({@link roleRules})
 * and how a request is turned into a principal ({@link Authenticator}, {@link AuthRegistry}).
 *
 * Stable contract: people's login (sessions), federation (access tokens) and run credentials all
 * plug in here. See docs/security.md.
 */

/**
 * A role, from least to most powerful; each includes every role before it.
 * - `viewer`: read runs, deployments, pools, workers, logs;
 * - `operator`: run deployments now, cancel runs, change run state;
 * - `developer`: deploy (create, update, delete deployments), create pools and queues;
 * - `admin`: settings, trust policies, keys, workers (join tokens, revocation), audit log.
 */
export type Role = 'viewer' | 'operator' | 'developer' | 'admin';

/** Every role, in order of power (index = rank). */
export const ROLES: readonly Role[] = Object.freeze(['viewer', 'operator', 'developer', 'admin'] as const);

/** True when `value` names a {@link Role}. */
export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}

/** A role, optionally confined to one workspace. No `workspace` = every workspace. */
export interface RoleGrant {
  role: Role;
  workspace?: string;
}

/**
 * Who is calling.
 * - `person`: logged in at an external OIDC provider (session cookie or CLI access token);
 * - `machine`: CI or automation that exchanged its platform's token under trust policy `policy`;
 * - `worker`: a worker that joined (join token + key pair, or federation); may only poll for work;
 * - `run`: a run credential, acting only for its own run;
 * - `local-admin`: local mode only (no identity provider configured, loopback only): a caller with no
 *   credential at all. See docs/security.md for exactly when this applies.
 */
export type Principal =
  | { kind: 'person'; id: string; label: string; provider: string; grants: RoleGrant[]; sessionId?: string }
  | { kind: 'machine'; id: string; label: string; policy: string; grants: RoleGrant[] }
  | { kind: 'worker'; id: string; label: string; pool?: string }
  | { kind: 'run'; run: RunCredentialPrincipal }
  | { kind: 'local-admin'; id: 'local-admin'; label: 'local admin' };

/** The local admin of local mode. */
export const LOCAL_ADMIN: Extract<Principal, { kind: 'local-admin' }> = Object.freeze({
  kind: 'local-admin',
  id: 'local-admin',
  label: 'local admin',
});

/**
 * One way of proving who you are (run credential, access token, session cookie…).
 *
 * `authenticate` answers `undefined` when the request does not carry this authenticator's kind of
 * credential (the next one is tried), a principal when it does and it is valid, and throws a
 * {@link TesseraError} (`ERR_UNAUTHENTICATED`, `ERR_CREDENTIAL_INVALID`, `ERR_CREDENTIAL_REVOKED`…)
 * when it does but is not valid: a bad credential is refused, never passed on to the next one.
 */
export interface Authenticator {
  readonly name: string;
  authenticate(request: FastifyRequest): Promise<Principal | undefined>;
}

/** Options for {@link AuthRegistry}. */
export interface AuthRegistryOptions {
  /**
   * Local mode: a request with no credential at all is the local admin. Only safe because the
   * server then listens on loopback only (startServer refuses anything else).
   * @default true
   */
  localAdmin?: boolean;
}

/**
 * The authenticators a request is tried against, in order. The server registers run credentials
 * (`tsr_…` bearer), then Tessera access tokens (JWT bearer); login adds its session authenticator
 * after those with {@link AuthRegistry.add}.
 */
export class AuthRegistry {
  readonly #authenticators: Authenticator[] = [];
  /** See {@link AuthRegistryOptions.localAdmin}. Login turns this off when it configures a provider. */
  localAdmin: boolean;

  constructor(authenticators: Authenticator[] = [], options: AuthRegistryOptions = {}) {
    this.#authenticators.push(...authenticators);
    this.localAdmin = options.localAdmin ?? true;
  }

  /** Appends an authenticator (tried after those already registered). Names must be unique. */
  add(authenticator: Authenticator): this {
    if (this.#authenticators.some((a) => a.name === authenticator.name)) {
      throw new TesseraError('ERR_CONFIG', `an authenticator named "${authenticator.name}" is already registered`);
    }
    this.#authenticators.push(authenticator);
    return this;
  }

  /** The registered authenticators' names, in the order they are tried. */
  names(): string[] {
    return this.#authenticators.map((a) => a.name);
  }

  /**
   * Finds who is calling: the first authenticator that recognises the request's credential decides.
   * With no credential at all: the local admin in local mode, else `null` (anonymous).
   * @throws TesseraError `ERR_UNAUTHENTICATED` for an `Authorization` header nobody recognises, or
   *   whatever the deciding authenticator throws for an invalid credential.
   */
  async authenticate(request: FastifyRequest): Promise<Principal | null> {
    for (const a of this.#authenticators) {
      const principal = await a.authenticate(request);
      if (principal) return principal;
    }
    const header = request.headers.authorization;
    if (header !== undefined) {
      if (!/^Bearer\s+\S+$/i.test(header)) {
        throw new TesseraError('ERR_UNAUTHENTICATED', 'malformed Authorization header: expected "Bearer <token>"');
      }
      throw new TesseraError(
        'ERR_CREDENTIAL_INVALID',
        'unrecognised bearer token: expected a run credential (tsr_…) or a Tessera access token (tessera login, or exchange a token at /oauth/token)',
      );
    }
    if (!this.localAdmin) return null;
    const problem = notFromThisMachine(request);
    if (problem) {
      throw new TesseraError(
        'ERR_FORBIDDEN',
        `local mode acts as the local admin only for this machine's own tools and pages, and ${problem}: refused. Send a credential, or configure an identity provider (docs/login.md)`,
      );
    }
    return LOCAL_ADMIN;
  }
}

/**
 * Why a request without a credential must not act as the local admin, if it must not. Local mode
 * listens on loopback only, but a web page the developer has open can still reach it: a cross-site
 * form or `fetch` (CSRF), or a name of the attacker's that resolves to 127.0.0.1 (DNS rebinding,
 * which also lets the page read the answers). So the `Host` must be a loopback name, and a browser's
 * request must come from the server's own origin (`Sec-Fetch-Site`, `Origin`). Command-line tools
 * send neither header.
 */
export function notFromThisMachine(request: FastifyRequest): string | undefined {
  const host = request.headers.host;
  let hostname: string | undefined;
  try {
    hostname = host ? new URL(`http://${host}`).hostname : undefined;
  } catch {
    hostname = undefined;
  }
  if (!hostname || !(hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname))) {
    return 'this request names a host that is not a loopback address (a DNS-rebinding web page?)';
  }
  const site = request.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') return `this is a ${site} request from a web page`;
  const origin = request.headers.origin;
  if (origin !== undefined && origin !== `http://${host}` && origin !== `https://${host}`) {
    return 'this request comes from a web page of another origin';
  }
  return undefined;
}

/** The bearer token of a request, if it sends one (`Authorization: Bearer <token>`). */
export function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (!header) return undefined;
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  return match ? (match[1] as string) : undefined;
}

/** One role-binding rule: when the CEL condition over `claims` is true, grant `role` (in `workspace`). */
export interface RoleRule {
  role: Role;
  workspace?: string;
  /** A CEL expression over `claims`, e.g. `"data-eng" in claims.groups`. */
  when: string;
}

/** The variables a role rule or trust-policy condition may reference. */
export const RULE_VARIABLES: readonly string[] = Object.freeze(['claims']);

/**
 * Compiles role-binding rules once; the result maps a token's claims to the grants they earn.
 *
 * Each `when` is CEL (see `compileCel` in @tessera/verify) over one variable, `claims`: the
 * provider's verified claims. A rule that fails to evaluate (a claim it reads is missing, a type
 * mismatch) grants nothing — absence of a claim never grants a role.
 *
 * @example
 * const grantsOf = roleRules([{ role: 'developer', when: '"data-eng" in claims.groups' }]);
 * grantsOf({ groups: ['data-eng'] }); // [{ role: 'developer' }]
 * @throws CelError `ERR_CEL_INVALID` (at startup) naming the rule that does not compile.
 */
export function roleRules(rules: readonly RoleRule[]): (claims: Record<string, unknown>) => RoleGrant[] {
  const compiled: { grant: RoleGrant; cel: CompiledCel }[] = rules.map((rule, i) => {
    if (!isRole(rule.role)) {
      throw new TesseraError('ERR_CONFIG', `roles[${i}].role: "${String(rule.role)}" is not a role; use one of ${ROLES.join(', ')}`);
    }
    return {
      grant: { role: rule.role, ...(rule.workspace ? { workspace: rule.workspace } : {}) },
      cel: compileCel(rule.when, { variables: [...RULE_VARIABLES] }),
    };
  });
  return (claims) => {
    const grants: RoleGrant[] = [];
    for (const { grant, cel } of compiled) {
      if (evaluateCondition(cel, claims)) grants.push({ ...grant });
    }
    return grants;
  };
}

/**
 * Evaluates a compiled condition over `claims`; true only for a boolean `true`. A failed
 * evaluation (missing claim…) is `false`: absence never grants.
 */
export function evaluateCondition(cel: CompiledCel, claims: Record<string, unknown>): boolean {
  try {
    return cel.evaluate({ claims }) === true;
  } catch {
    return false;
  }
}

function rank(role: Role): number {
  return ROLES.indexOf(role);
}

/** The grants a principal holds; the local admin holds `admin` everywhere. Runs and workers hold none. */
export function grantsOf(principal: Principal): readonly RoleGrant[] {
  switch (principal.kind) {
    case 'person':
    case 'machine':
      return principal.grants;
    case 'local-admin':
      return [{ role: 'admin' }];
    default:
      return [];
  }
}

/**
 * True when the principal holds `role` (or a stronger one). With `workspace`, a grant confined to
 * that workspace counts; without, the action is not confined to one workspace and only a grant for
 * every workspace counts.
 */
export function hasRole(principal: Principal | null, role: Role, workspace?: string): boolean {
  if (!principal) return false;
  const needed = rank(role);
  return grantsOf(principal).some((g) => rank(g.role) >= needed && (g.workspace === undefined || g.workspace === workspace));
}

/**
 * Refuses unless the principal holds `role` (see {@link hasRole}).
 * @throws TesseraError `ERR_UNAUTHENTICATED` (401) with no principal, `ERR_FORBIDDEN` (403) naming the
 *   role needed and the roles held.
 */
export function requireRole(principal: Principal | null, role: Role, workspace?: string): void {
  if (!principal) throw new TesseraError('ERR_UNAUTHENTICATED', 'authentication required: log in (tessera login) or send a bearer token');
  if (hasRole(principal, role, workspace)) return;
  const where = workspace ? ` in workspace "${workspace}"` : '';
  throw new TesseraError('ERR_FORBIDDEN', `${describePrincipal(principal)} needs role "${role}"${where}; ${heldRoles(principal)}`, {
    details: { required: role, ...(workspace ? { workspace } : {}) },
  });
}

function heldRoles(principal: Principal): string {
  if (principal.kind === 'run') return 'a run credential can only act for its own run (its state, task runs, logs and identity tokens)';
  if (principal.kind === 'worker') return 'a worker can only poll for work';
  const grants = grantsOf(principal);
  if (grants.length === 0) return 'it holds no role: ask an admin for a role binding';
  return `it holds ${grants.map((g) => (g.workspace ? `${g.role} (workspace ${g.workspace})` : g.role)).join(', ')}`;
}

/** A short human description of a principal, for messages and the audit log (never a secret). */
export function describePrincipal(principal: Principal): string {
  switch (principal.kind) {
    case 'person':
      return `person "${principal.label}"`;
    case 'machine':
      return `machine "${principal.label}" (trust policy ${principal.policy})`;
    case 'worker':
      return `worker "${principal.label}"`;
    case 'run':
      return `run credential of run ${principal.run.runId}`;
    case 'local-admin':
      return 'the local admin';
  }
}

/** A stable id for a principal, for `created_by` columns and the audit log. */
export function principalId(principal: Principal): string {
  return principal.kind === 'run' ? `run:${principal.run.runId}#${principal.run.attempt}` : `${principal.kind}:${principal.id}`;
}

/**
 * Who a principal is, in the shape runs and state histories record (`triggered_by`, causes).
 * The local admin is recorded as a person (id `local-admin`), as before this module existed.
 */
export function causeOfPrincipal(principal: Principal | null): StateCause {
  if (!principal) return { kind: 'server', id: 'anonymous' };
  switch (principal.kind) {
    case 'person':
      return { kind: 'person', id: principal.id, label: principal.label };
    case 'machine':
      return { kind: 'machine', id: principal.id, label: principal.label };
    case 'worker':
      return { kind: 'worker', id: principal.id, label: principal.label };
    case 'run':
      return { kind: 'flow', id: `${principal.run.runId}#${principal.run.attempt}` };
    case 'local-admin':
      return { kind: 'person', id: principal.id, label: principal.label };
  }
}

/**
 * A worker confined to one work pool (its join token or trust policy named one) may poll only that pool.
 * @throws TesseraError `ERR_FORBIDDEN` naming the pool it may poll.
 */
export function requireWorkerPool(principal: Principal | null, pool: string): void {
  if (principal?.kind === 'worker' && principal.pool !== undefined && principal.pool !== pool) {
    throw new TesseraError('ERR_FORBIDDEN', `worker "${principal.label}" may poll only work pool "${principal.pool}", not "${pool}"`, {
      details: { pool: principal.pool },
    });
  }
}
