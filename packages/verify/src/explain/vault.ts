import { algorithmCheck } from './generic.js';
import { compareIssuer } from './issuer.js';
import { configError, isRecord, nearMiss, numericDate, q, stringList, tokenAudiences } from './lib.js';
import { describeSubjectDifference } from './subject.js';
import { type DecodedToken, type ExplainCheck, type ExplainOptions, type ExplainResult, verdictOf } from './types.js';

/**
 * HashiCorp Vault (and OpenBao) JWT auth: the mount's config (`auth/jwt/config`) and a role
 * (`auth/jwt/role/NAME`), evaluated in the order `vault-plugin-auth-jwt` and `hashicorp/cap` do.
 * @see https://developer.hashicorp.com/vault/docs/auth/jwt
 */

/** The JWT auth mount's configuration (the parts that judge a token). */
export interface VaultAuthConfig {
  bound_issuer?: string;
  oidc_discovery_url?: string;
  jwks_url?: string;
  jwt_supported_algs?: string[];
}

/** A JWT auth role. */
export interface VaultRole {
  /** Vault's default is `oidc`, which refuses JWT logins. */
  role_type?: string;
  bound_audiences?: string[];
  bound_subject?: string;
  bound_claims?: Record<string, unknown>;
  /** `string` (default: exact) or `glob` (`*` matches any run of characters). */
  bound_claims_type?: string;
  user_claim?: string;
  groups_claim?: string;
  token_bound_cidrs?: string[];
  /** Seconds, or a duration string; 0 or absent: 60 s; negative: none. */
  clock_skew_leeway?: number | string;
  /** Only fills a missing `exp` (latest of iat/nbf + this); 0 or absent: 150 s. */
  expiration_leeway?: number | string;
  /** Only fills a missing `nbf` (exp − this, when iat is also missing); 0 or absent: 150 s. */
  not_before_leeway?: number | string;
}

/** A Vault JWT auth mount configuration and one role. */
export interface VaultRelyingParty {
  config: VaultAuthConfig;
  role: VaultRole;
  /** The role's name, for messages. */
  roleName?: string;
}

/** Vault's defaults for the time leeways, seconds. */
export const VAULT_DEFAULT_LEEWAYS = { clock_skew_leeway: 60, expiration_leeway: 150, not_before_leeway: 150 } as const;

/** Algorithms Vault accepts when `jwt_supported_algs` is not set. */
export const VAULT_DEFAULT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'EdDSA'];

/**
 * Reads a Vault configuration: `{"config": {…auth/jwt/config…}, "role": {…auth/jwt/role/NAME…}}`,
 * or just a role, or the output of `vault read -format=json auth/jwt/role/NAME` (`{"data": …}`).
 */
export function parseVaultConfig(raw: unknown): VaultRelyingParty {
  if (!isRecord(raw)) throw configError('vault: expected {"config": {…}, "role": {…}} or a role object');
  const unwrap = (v: unknown) => (isRecord(v) && isRecord(v.data) ? v.data : v);
  const top = unwrap(raw);
  if (!isRecord(top)) throw configError('vault: expected an object');
  const roleRaw = unwrap(top.role ?? top);
  const configRaw = unwrap(top.config ?? {});
  if (!isRecord(roleRaw) || !isRecord(configRaw)) throw configError('vault: "role" and "config" must be objects');
  const strings = (v: unknown, field: string): string[] | undefined => {
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'string')
      return v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
    const l = stringList(v);
    if (!l) throw configError(`vault: "${field}" must be a list of strings`);
    return l;
  };
  const str = (v: unknown, field: string): string | undefined => {
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string') throw configError(`vault: "${field}" must be a string`);
    return v;
  };
  if (roleRaw.bound_claims !== undefined && roleRaw.bound_claims !== null && !isRecord(roleRaw.bound_claims)) {
    throw configError('vault: "bound_claims" must map claim names to a value or a list of values');
  }
  const leeway = (v: unknown, field: string): number | string | undefined => {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' && typeof v !== 'string') throw configError(`vault: "${field}" must be seconds or a duration`);
    return v;
  };
  const role: VaultRole = {};
  const set = <K extends keyof VaultRole>(k: K, v: VaultRole[K] | undefined) => {
    if (v !== undefined) role[k] = v;
  };
  set('role_type', str(roleRaw.role_type, 'role_type'));
  set('bound_audiences', strings(roleRaw.bound_audiences, 'bound_audiences'));
  set('bound_subject', str(roleRaw.bound_subject, 'bound_subject'));
  if (isRecord(roleRaw.bound_claims) && Object.keys(roleRaw.bound_claims).length > 0) role.bound_claims = roleRaw.bound_claims;
  set('bound_claims_type', str(roleRaw.bound_claims_type, 'bound_claims_type'));
  set('user_claim', str(roleRaw.user_claim, 'user_claim'));
  set('groups_claim', str(roleRaw.groups_claim, 'groups_claim'));
  set('token_bound_cidrs', strings(roleRaw.token_bound_cidrs ?? roleRaw.bound_cidrs, 'token_bound_cidrs'));
  set('clock_skew_leeway', leeway(roleRaw.clock_skew_leeway, 'clock_skew_leeway'));
  set('expiration_leeway', leeway(roleRaw.expiration_leeway, 'expiration_leeway'));
  set('not_before_leeway', leeway(roleRaw.not_before_leeway, 'not_before_leeway'));
  const config: VaultAuthConfig = {};
  const bi = str(configRaw.bound_issuer, 'bound_issuer');
  if (bi !== undefined) config.bound_issuer = bi;
  const du = str(configRaw.oidc_discovery_url, 'oidc_discovery_url');
  if (du !== undefined) config.oidc_discovery_url = du;
  const ju = str(configRaw.jwks_url, 'jwks_url');
  if (ju !== undefined) config.jwks_url = ju;
  const algs = strings(configRaw.jwt_supported_algs, 'jwt_supported_algs');
  if (algs?.length) config.jwt_supported_algs = algs;
  return { config, role, ...(typeof top.name === 'string' ? { roleName: top.name } : {}) };
}

/** A leeway in seconds, as Vault reads it: 0 or absent → the default, negative → none. */
export function vaultLeeway(value: number | string | undefined, fallback: number): number {
  let seconds: number;
  if (value === undefined) seconds = 0;
  else if (typeof value === 'number') seconds = value;
  else {
    const m = /^(-?\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
    if (!m) throw configError(`vault: leeway ${q(value)} is not seconds or a duration like "60s"`);
    const n = Number(m[1]);
    seconds = m[2] === 'ms' ? n / 1000 : m[2] === 'm' ? n * 60 : m[2] === 'h' ? n * 3600 : n;
  }
  if (seconds < 0) return 0;
  if (seconds === 0) return fallback;
  return Math.floor(seconds);
}

/**
 * Vault's glob (`ryanuber/go-glob`): only `*` is special, matching any run of characters; `?` is a
 * plain character. Linear: each literal piece is found once, left to right.
 */
export function vaultGlob(pattern: string, value: string): boolean {
  if (!pattern.includes('*')) return pattern === value;
  const parts = pattern.split('*');
  const first = parts[0] as string;
  const last = parts[parts.length - 1] as string;
  if (!value.startsWith(first)) return false;
  let pos = first.length;
  for (let i = 1; i < parts.length - 1; i++) {
    const at = value.indexOf(parts[i] as string, pos);
    if (at === -1) return false;
    pos = at + (parts[i] as string).length;
  }
  return value.length - last.length >= pos && value.endsWith(last);
}

/** A claim by name, or by JSON pointer (`/a/b`) as `bound_claims` keys may be. */
function claimAt(claims: Record<string, unknown>, name: string): unknown {
  if (!name.startsWith('/')) return claims[name];
  let cur: unknown = claims;
  for (const raw of name.slice(1).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (isRecord(cur)) cur = cur[key];
    else if (Array.isArray(cur) && /^\d+$/.test(key)) cur = cur[Number(key)];
    else return undefined;
  }
  return cur;
}

function asList(v: unknown): unknown[] | undefined {
  if (Array.isArray(v)) return v;
  if (typeof v === 'string' || typeof v === 'boolean') return [v];
  return undefined;
}

const E = (m: string) => `error validating token: ${m}`;

/**
 * Explains whether Vault's JWT auth would log a token in with a role, in Vault's own order: role
 * type, algorithm, `bound_issuer`, `bound_subject`, `bound_audiences` (any match), time
 * (`clock_skew_leeway` on exp/nbf/iat; `expiration_leeway`/`not_before_leeway` only fill a missing
 * exp/nbf), the 1.16.3 rule that a token with `aud` needs bound audiences, `user_claim`, then
 * `bound_claims` (exact, or `*` globs with `bound_claims_type: glob`; list values are OR).
 */
export function explainVault(token: DecodedToken, rp: VaultRelyingParty, options: ExplainOptions = {}): ExplainResult {
  const now = Math.floor((options.now ?? new Date()).getTime() / 1000);
  const { config, role } = rp;
  const checks: ExplainCheck[] = [];
  const name = rp.roleName ? `role ${q(rp.roleName)}` : 'the role';
  const roleType = role.role_type ?? 'oidc';
  checks.push(
    roleType === 'jwt'
      ? { id: 'vault.role-type', ok: true, message: `${name}: role_type "jwt"` }
      : {
          id: 'vault.role-type',
          ok: false,
          message: `${name}: role_type ${q(roleType)}${role.role_type === undefined ? " (Vault's default)" : ''}; JWT logins need role_type "jwt"`,
          detail: 'vault write auth/jwt/role/NAME role_type=jwt …',
          answer: 'role with oidc role_type is not allowed',
        },
  );
  const bound =
    (role.bound_audiences?.length ?? 0) > 0 || !!role.bound_subject || !!role.bound_claims || (role.token_bound_cidrs?.length ?? 0) > 0;
  if (!bound) {
    checks.push({
      id: 'vault.bound-constraint',
      ok: false,
      message: `${name}: no bound_audiences, bound_subject, bound_claims or token_bound_cidrs`,
      detail: 'Vault refuses to save such a role; pin bound_subject (and bound_claims deployment_id) to one deployment',
      answer: 'must have at least one bound constraint when creating/updating a role',
    });
  }
  if (!role.user_claim) {
    checks.push({
      id: 'vault.user-claim',
      ok: false,
      message: `${name}: no user_claim`,
      detail: 'set user_claim=sub',
      answer: 'a user claim must be defined on the role',
    });
  }
  if (role.token_bound_cidrs?.length) {
    checks.push({
      id: 'vault.cidrs',
      ok: true,
      flag: 'unknown',
      message: `${name}: token_bound_cidrs ${role.token_bound_cidrs.join(', ')} (the caller's address is not simulated)`,
    });
  }
  const iss = typeof token.claims.iss === 'string' ? token.claims.iss : '';
  if (config.oidc_discovery_url) {
    const cmp = compareIssuer(config.oidc_discovery_url, iss);
    checks.push(
      cmp.ok
        ? { id: 'vault.discovery', ok: true, message: `oidc_discovery_url ${q(config.oidc_discovery_url)} is the token's issuer` }
        : {
            id: 'vault.discovery',
            ok: false,
            message: `oidc_discovery_url ${q(config.oidc_discovery_url)} is not the token's issuer ${q(iss)}`,
            detail: `${cmp.diagnosis ?? 'another issuer'}: Vault verifies signatures with that issuer's keys only`,
            answer: E('error verifying token signature: no known key successfully validated the token signature'),
          },
    );
  }
  const algs = config.jwt_supported_algs ?? VAULT_DEFAULT_ALGORITHMS;
  checks.push(
    algorithmCheck(
      token,
      algs,
      'Vault (jwt_supported_algs)',
      E('invalid algorithm (alg) header parameter: token signed with unexpected algorithm'),
    ),
  );
  if (config.bound_issuer) {
    const cmp = compareIssuer(config.bound_issuer, iss);
    checks.push(
      cmp.ok
        ? { id: 'issuer', ok: true, message: `bound_issuer ${q(iss)}` }
        : {
            id: 'issuer',
            ok: false,
            message: `bound_issuer ${q(config.bound_issuer)} ≠ token iss ${q(iss)}`,
            ...(cmp.diagnosis ? { detail: cmp.diagnosis } : {}),
            answer: E('invalid issuer (iss) claim'),
          },
    );
  } else {
    checks.push({
      id: 'issuer',
      ok: true,
      flag: 'warning',
      message: 'bound_issuer: not set, so iss is not checked',
      detail: `set bound_issuer=${iss || 'https://…'} on auth/jwt/config`,
    });
  }
  const sub = typeof token.claims.sub === 'string' ? token.claims.sub : '';
  if (role.bound_subject) {
    const diff = describeSubjectDifference(role.bound_subject, sub);
    checks.push(
      role.bound_subject === sub
        ? { id: 'subject', ok: true, message: `bound_subject ${q(sub)}` }
        : {
            id: 'subject',
            ok: false,
            message: `bound_subject ${q(role.bound_subject)} ≠ token sub ${q(sub)}${diff ? ` (${diff})` : ''}`,
            ...(/\*/.test(role.bound_subject)
              ? {
                  detail:
                    'bound_subject is compared exactly: a "*" there is a plain character (use bound_claims with bound_claims_type=glob)',
                }
              : {}),
            answer: E('invalid subject (sub) claim'),
          },
    );
  }
  const aud = tokenAudiences(token);
  const bound_audiences = role.bound_audiences ?? [];
  if (bound_audiences.length > 0) {
    const match = aud.find((a) => bound_audiences.includes(a));
    const near = aud.map((a) => nearMiss(a, bound_audiences)).find((x) => x);
    checks.push(
      match !== undefined
        ? { id: 'audience', ok: true, message: `bound_audiences: ${q(match)}` }
        : {
            id: 'audience',
            ok: false,
            message: `bound_audiences ${bound_audiences.map(q).join(', ')} do not include token aud ${aud.map(q).join(', ') || '(none)'}`,
            ...(near ? { detail: `did you mean ${q(near)}?` } : {}),
            answer: E('invalid audience (aud) claim: audience claim does not match any expected audience'),
          },
    );
  }
  // Time, as hashicorp/cap's validator: derive missing exp/nbf, then apply the clock skew leeway.
  const skew = vaultLeeway(role.clock_skew_leeway, VAULT_DEFAULT_LEEWAYS.clock_skew_leeway);
  const expLeeway = vaultLeeway(role.expiration_leeway, VAULT_DEFAULT_LEEWAYS.expiration_leeway);
  const nbfLeeway = vaultLeeway(role.not_before_leeway, VAULT_DEFAULT_LEEWAYS.not_before_leeway);
  const iat = numericDate(token.claims, 'iat') ?? 0;
  let exp = numericDate(token.claims, 'exp') ?? 0;
  let nbf = numericDate(token.claims, 'nbf') ?? 0;
  if (iat === 0 && exp === 0 && nbf === 0) {
    checks.push({
      id: 'expiry',
      ok: false,
      message: 'exp, nbf, iat: none in the token',
      answer: E('no issued at (iat), not before (nbf), or expiration time (exp) claims in token'),
    });
  } else {
    let derived = '';
    if (exp === 0) {
      exp = Math.max(iat, nbf) + expLeeway;
      derived = ` (no exp: Vault uses iat/nbf + expiration_leeway ${expLeeway} s)`;
    }
    if (nbf === 0) nbf = iat !== 0 ? iat : exp - nbfLeeway;
    const note = `clock_skew_leeway ${skew} s`;
    if (now + skew < nbf) {
      checks.push({
        id: 'not-before',
        ok: false,
        message: `nbf: not valid for another ${nbf - now} s (${note})`,
        answer: E('invalid not before (nbf) claim: token not yet valid'),
      });
    }
    if (now - skew > exp) {
      checks.push({
        id: 'expiry',
        ok: false,
        message: `exp: expired ${now - exp} s ago${derived} (${note}; expiration_leeway only fills a missing exp)`,
        detail: 'ask for a fresh token just before logging in',
        answer: E('invalid expiration time (exp) claim: token is expired'),
      });
    } else {
      checks.push({
        id: 'expiry',
        ok: true,
        message:
          now > exp
            ? `exp: expired ${now - exp} s ago, within clock_skew_leeway ${skew} s${derived}`
            : `exp: expires in ${exp - now} s${derived}`,
        ...(now > exp ? { flag: 'warning' as const } : {}),
      });
    }
    if (iat !== 0 && now + skew < iat) {
      checks.push({
        id: 'issued-at',
        ok: false,
        message: `iat: issued ${iat - now} s in the future (${note})`,
        answer: E('invalid issued at (iat) claim: token issued in the future'),
      });
    }
  }
  if (aud.length > 0 && bound_audiences.length === 0) {
    checks.push({
      id: 'vault.no-bound-audiences',
      ok: false,
      message: `bound_audiences: none, but the token has aud ${aud.map(q).join(', ')}`,
      detail: `since Vault 1.16.3 such a token is refused; set bound_audiences=${aud[0]}`,
      answer: 'audience claim found in JWT but no audiences bound to the role',
    });
  }
  if (role.user_claim) {
    const v = token.claims[role.user_claim];
    checks.push(
      v === undefined
        ? {
            id: 'vault.user-claim',
            ok: false,
            message: `user_claim ${q(role.user_claim)}: not in the token`,
            detail: 'use user_claim=sub (every Tessera token has it)',
            answer: `claim ${q(role.user_claim)} not found in token`,
          }
        : typeof v !== 'string'
          ? {
              id: 'vault.user-claim',
              ok: false,
              message: `user_claim ${q(role.user_claim)}: ${q(v)} is not a string`,
              answer: `claim ${q(role.user_claim)} could not be converted to string`,
            }
          : { id: 'vault.user-claim', ok: true, message: `user_claim ${q(role.user_claim)} → ${q(v)}` },
    );
  }
  if (role.groups_claim && claimAt(token.claims, role.groups_claim) === undefined) {
    checks.push({
      id: 'vault.groups-claim',
      ok: false,
      message: `groups_claim ${q(role.groups_claim)}: not in the token`,
      answer: `failed to fetch groups: ${q(role.groups_claim)} claim not found in token`,
    });
  }
  const globs = role.bound_claims_type === 'glob';
  for (const [claim, expected] of Object.entries(role.bound_claims ?? {})) {
    const actual = claimAt(token.claims, claim);
    const expectedList = asList(expected);
    const shown = (expectedList ?? [expected]).map(q).join(' or ');
    const label = `bound_claims ${claim} = ${shown}${globs ? ' (glob)' : ''}`;
    if (actual === undefined || actual === null) {
      checks.push({
        id: 'vault.bound-claims',
        ok: false,
        message: `${label}: the token has no ${claim}`,
        answer: `error validating claims: claim ${q(claim)} is missing`,
      });
      continue;
    }
    const actualList = asList(actual);
    if (!actualList) {
      checks.push({
        id: 'vault.bound-claims',
        ok: false,
        message: `${label}: token ${claim} is ${q(actual)}, not a string or list`,
        answer: `error validating claims: received claim is not a string or list: ${String(actual)}`,
      });
      continue;
    }
    const found = (expectedList ?? []).some((e) =>
      actualList.some((a) => (globs ? typeof e === 'string' && typeof a === 'string' && vaultGlob(e, a) : a === e)),
    );
    if (found) {
      checks.push({ id: 'vault.bound-claims', ok: true, message: label });
      continue;
    }
    const single = actualList.length === 1 && typeof actualList[0] === 'string' ? (actualList[0] as string) : undefined;
    const one = expectedList?.length === 1 && typeof expectedList[0] === 'string' ? (expectedList[0] as string) : undefined;
    const diff = single !== undefined && one !== undefined ? describeSubjectDifference(one, single) : undefined;
    let detail = `token ${claim} is ${q(actual)}${diff ? ` (${diff})` : ''}`;
    if (!globs && (expectedList ?? []).some((e) => typeof e === 'string' && e.includes('*')))
      detail += '; "*" is literal unless bound_claims_type=glob';
    if (typeof actual === 'number')
      detail += '; bound claim values are compared as JSON values: a number in the token never equals a string';
    checks.push({
      id: 'vault.bound-claims',
      ok: false,
      message: label,
      detail,
      answer: `error validating claims: claim ${q(claim)} does not match any associated bound claim values`,
    });
  }
  return verdictOf('vault', checks);
}
