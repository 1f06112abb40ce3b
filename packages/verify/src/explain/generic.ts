import { compareIssuer } from './issuer.js';
import { configError, isRecord, nearMiss, q, stringList, timeChecks, tokenAudiences } from './lib.js';
import { type DecodedToken, type ExplainCheck, type ExplainOptions, type ExplainResult, verdictOf } from './types.js';

/** A relying party that verifies tokens itself, like one built on {@link createVerifier}. */
export interface GenericRelyingParty {
  /** The issuer exactly as it expects `iss`. */
  issuer: string;
  /** Audiences it accepts (any match). */
  audience: string | string[];
  /** Accepted algorithms. @default ['RS256', 'ES256'] */
  algorithms?: string[];
  /** Clock skew allowed on `exp`, `nbf` and `iat`, seconds. @default 30 */
  clockTolerance?: number;
  /** Required `typ` header; `null` to skip the check. @default 'JWT' */
  typ?: string | null;
}

/** Reads a generic relying party's configuration (`{ issuer, audience, … }`, as `createVerifier` takes). */
export function parseGenericConfig(raw: unknown): GenericRelyingParty {
  if (!isRecord(raw))
    throw configError('generic relying party: expected a JSON object like {"issuer": "https://…", "audience": "my-service"}');
  if (typeof raw.issuer !== 'string') throw configError('generic relying party: "issuer" must be a string');
  const audience = stringList(raw.audience);
  if (!audience || audience.length === 0) throw configError('generic relying party: "audience" must be a string or a list of strings');
  const algorithms = raw.algorithms === undefined ? undefined : stringList(raw.algorithms);
  if (raw.algorithms !== undefined && !algorithms) throw configError('generic relying party: "algorithms" must be a list of strings');
  if (raw.clockTolerance !== undefined && (typeof raw.clockTolerance !== 'number' || raw.clockTolerance < 0)) {
    throw configError('generic relying party: "clockTolerance" must be a number of seconds');
  }
  return {
    issuer: raw.issuer,
    audience,
    ...(algorithms ? { algorithms } : {}),
    ...(typeof raw.clockTolerance === 'number' ? { clockTolerance: raw.clockTolerance } : {}),
    ...(raw.typ === null || typeof raw.typ === 'string' ? { typ: raw.typ } : {}),
  };
}

/** The `alg` check shared by every relying party. */
export function algorithmCheck(token: DecodedToken, allowed: readonly string[], who: string, answer: string): ExplainCheck {
  const alg = token.header.alg;
  if (typeof alg !== 'string' || alg === 'none' || !allowed.includes(alg)) {
    return {
      id: 'algorithm',
      ok: false,
      message: `alg: ${q(alg)} is not accepted by ${who}; accepted: ${allowed.join(', ')}`,
      detail:
        alg === 'none'
          ? 'an unsigned token ("alg": "none") must never be accepted'
          : 'choose identity.algorithm in tessera.yaml from the accepted list',
      answer,
    };
  }
  return { id: 'algorithm', ok: true, message: `alg: ${alg}` };
}

/** The audience check of relying parties that accept any of a list (`aud` any-match). */
export function audienceCheck(token: DecodedToken, accepted: readonly string[], who: string, answer: string): ExplainCheck {
  const aud = tokenAudiences(token);
  const match = aud.find((a) => accepted.includes(a));
  if (match !== undefined) return { id: 'audience', ok: true, message: `aud: ${q(match)}` };
  const miss = aud.map((a) => nearMiss(a, accepted)).find((m) => m !== undefined);
  return {
    id: 'audience',
    ok: false,
    message: `aud: ${aud.length ? aud.map(q).join(', ') : '(none)'} is not accepted by ${who}; accepted: ${accepted.map(q).join(', ') || '(none)'}`,
    detail: miss
      ? `did you mean ${q(miss)}? Ask for a token with identity.token({ audience: ${q(miss)} })`
      : `ask for a token with one of the accepted audiences (identity.token({ audience })), and allow it in the deployment's identity.audiences`,
    answer,
  };
}

/** The exact-issuer check, with a diagnosis of the usual near misses. */
export function issuerCheck(token: DecodedToken, expected: string, who: string, answer: string): ExplainCheck {
  const iss = token.claims.iss;
  if (typeof iss !== 'string') return { id: 'issuer', ok: false, message: 'iss: missing', answer };
  const cmp = compareIssuer(expected, iss);
  if (cmp.ok) return { id: 'issuer', ok: true, message: `iss: ${q(iss)}` };
  return {
    id: 'issuer',
    ok: false,
    message: `iss: ${q(iss)} is not the issuer ${who} trusts (${q(expected)})`,
    ...(cmp.diagnosis ? { detail: cmp.diagnosis } : {}),
    answer,
  };
}

/**
 * Explains what a service verifying tokens itself (the `@tessera/verify` verifier, or any OIDC
 * library with the same settings) decides: algorithm, `typ`, exact issuer, audience, then time with
 * the configured skew. Answers are the verifier's own error strings.
 */
export function explainGeneric(token: DecodedToken, rp: GenericRelyingParty, options: ExplainOptions = {}): ExplainResult {
  const now = options.now ?? new Date();
  const accepted = stringList(rp.audience) ?? [];
  const skew = rp.clockTolerance ?? 30;
  const checks: ExplainCheck[] = [];
  const algs = rp.algorithms ?? ['RS256', 'ES256'];
  checks.push(algorithmCheck(token, algs, 'this service', `ERR_ALG_NOT_ALLOWED: algorithm not allowed; accepted: ${algs.join(', ')}`));
  const typ = rp.typ === undefined ? 'JWT' : rp.typ;
  if (typ !== null) {
    const actual = token.header.typ;
    const norm = (t: unknown) => (typeof t === 'string' ? t.toLowerCase().replace(/^application\//, '') : t);
    checks.push(
      norm(actual) === norm(typ)
        ? { id: 'type', ok: true, message: `typ: ${q(actual)}` }
        : {
            id: 'type',
            ok: false,
            message: `typ: ${q(actual)}, expected ${q(typ)}`,
            detail: 'another kind of token (an access token, a logout token) must not pass as an identity token',
            answer: `ERR_TYP_MISMATCH: token typ is not "${typ}": another kind of token cannot pass as a run token`,
          },
    );
  }
  checks.push(
    issuerCheck(
      token,
      rp.issuer,
      'this service',
      `ERR_ISSUER_MISMATCH: token iss ${q(token.claims.iss)}, this service expects ${q(rp.issuer)}`,
    ),
  );
  checks.push(
    audienceCheck(
      token,
      accepted,
      'this service',
      `ERR_AUDIENCE_MISMATCH: token aud ${q(token.claims.aud)}, this service expects ${q(rp.audience)}`,
    ),
  );
  checks.push(
    ...timeChecks(token, now, {
      expLeeway: skew,
      nbfLeeway: skew,
      iatLeeway: skew,
      who: 'this service',
      leewayNote: `clock tolerance ${skew} s`,
      answers: {
        expired: () => 'ERR_TOKEN_EXPIRED: the token has expired',
        notYetValid: 'ERR_TOKEN_NOT_YET_VALID: the token is not valid yet (nbf)',
        issuedInFuture: 'ERR_TOKEN_NOT_YET_VALID: the token is not valid yet (iat)',
        missingExp: 'ERR_CLAIM_MISSING: claim "exp" failed: missing',
      },
    }),
  );
  return verdictOf('generic', checks);
}
