import { type Duration, parseDuration, type RunTokenClaims, TesseraError } from '@tessera/core';
import { type CryptoKey, compactVerify } from 'jose';
import { createDpopChecker, type DpopOptions, type DpopRequest } from './dpop.js';
import { VerificationError } from './errors.js';
import { createIntrospector, type IntrospectOptions, type Introspector } from './introspect.js';
import { createJwksCache, type JwksCacheStats, type JwksOptions, truncate } from './jwks.js';
import { describe, type FetchLike, request } from './lib/http.js';
import { decodeSegment, isBase64url } from './lib/segments.js';
import { type CompiledPolicy, compilePolicy, type PolicyOptions } from './policy.js';

/** Asymmetric JWS algorithms a verifier may accept. `none` and HMAC (`HS*`) can never be configured. */
export type VerifierAlgorithm = 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'PS384' | 'PS512' | 'ES256' | 'ES384' | 'ES512' | 'EdDSA';

/** Every algorithm {@link VerifierAlgorithm} names. */
export const ASYMMETRIC_ALGORITHMS: readonly VerifierAlgorithm[] = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
];

/** Largest clock tolerance accepted, seconds: relying parties allow between 0 and 300. */
export const MAX_CLOCK_TOLERANCE_SECONDS = 300;
/** Default cap on a token's length, characters (a Tessera run token is about 1 KB). */
export const DEFAULT_MAX_TOKEN_BYTES = 16 * 1024;
/** Longest `kid` looked up. */
export const MAX_KID_LENGTH = 128;
/** Validated header segments remembered (they repeat: one per issuer key). */
const MAX_CACHED_HEADERS = 64;

/**
 * WebCrypto parameters of the algorithms Tessera signs with, checked by {@link verifySignature} without
 * a second parse of the header and payload (the verifier has already checked both). The others go
 * through jose's `compactVerify`.
 */
/** What WebCrypto says of a key's algorithm (`CryptoKey.algorithm`), for the members read here. */
interface KeyAlgorithmView {
  name: string;
  hash?: { name: string };
  modulusLength?: number;
  namedCurve?: string;
}

const DIRECT: Record<
  string,
  { params: Parameters<typeof crypto.subtle.verify>[0]; key: (a: KeyAlgorithmView) => boolean; signatureBytes?: number }
> = {
  RS256: {
    params: { name: 'RSASSA-PKCS1-v1_5' },
    // RFC 7518 §3.3: a key of 2048 bits or more.
    key: (a) => a.name === 'RSASSA-PKCS1-v1_5' && a.hash?.name === 'SHA-256' && (a.modulusLength ?? 0) >= 2048,
  },
  ES256: {
    params: { name: 'ECDSA', hash: 'SHA-256' },
    key: (a) => a.name === 'ECDSA' && a.namedCurve === 'P-256',
    // RFC 7518 §3.4: R and S, 32 bytes each.
    signatureBytes: 64,
  },
};

/** Keys already found fit for their algorithm (the check reads several properties; keys repeat). */
const fitKeys = new WeakMap<CryptoKey, string>();

/**
 * Checks the JWS signature of `h.p` with `key` for `alg`: the same WebCrypto call jose makes, after
 * the same key checks (a public verification key of the algorithm's type and size).
 */
async function verifySignature(alg: string, key: CryptoKey, token: string, h: string, p: string, s: string): Promise<boolean> {
  const direct = DIRECT[alg];
  if (!direct) {
    await compactVerify(token, key, { algorithms: [alg] });
    return true;
  }
  if (fitKeys.get(key) !== alg) {
    if (key.type !== 'public' || !key.usages.includes('verify') || !direct.key(key.algorithm as KeyAlgorithmView)) {
      throw new TypeError(`the issuer key is not a public ${alg} verification key`);
    }
    fitKeys.set(key, alg);
  }
  const signature = Buffer.from(s, 'base64url');
  if (direct.signatureBytes !== undefined && signature.length !== direct.signatureBytes) return false;
  // The signing input is the ASCII of header.payload, exactly as received (RFC 7515 §5.2).
  const input = Buffer.from(token.slice(0, h.length + 1 + p.length), 'latin1');
  return crypto.subtle.verify(direct.params, key, signature, input);
}

/** Options for {@link createVerifier}. */
export interface VerifierOptions {
  /** The issuer exactly as it appears in `iss`: compared byte for byte, no trailing-slash or case folding. */
  issuer: string;
  /** The audience this service expects: one string, or several accepted ones (the token must name at least one). */
  audience: string | string[];
  /** Asymmetric algorithms accepted. @default ['RS256', 'ES256'] */
  algorithms?: VerifierAlgorithm[];
  /**
   * Allowed clock skew for `exp`, `nbf` and `iat`: a number of **seconds** (as jose), or a duration
   * string such as `'30s'`. At most 300 s. @default 30
   */
  clockTolerance?: number | string;
  /** Longest token accepted, characters; longer ones fail with `ERR_TOKEN_TOO_LARGE` before any parsing. @default 16384 */
  maxTokenBytes?: number;
  /** Conditions over the claims (CEL), compiled now. @see PolicyOptions */
  policy?: PolicyOptions;
  /**
   * Ask the issuer whether the token is still active (its run has not ended). `true` uses the
   * discovery document's `introspection_endpoint`. @default false
   */
  introspect?: boolean | IntrospectOptions;
  /** DPoP proof rules, for tokens bound to a key (`cnf.jkt`). */
  dpop?: DpopOptions;
  /** JWKS location and cache rules. @see JwksOptions */
  jwks?: JwksOptions;
  /** The clock, ms since the epoch (tests pass a fake one). @default Date.now */
  now?: () => number;
  /** The `fetch` used for discovery, JWKS and introspection. @default globalThis.fetch */
  fetch?: FetchLike;
}

/** Per-request options of {@link Verifier.verify}. */
export interface VerifyOptions {
  /**
   * The request's DPoP proof, method and URL. Required for a token bound to a key (`cnf.jkt`);
   * refused for a token that is not.
   */
  dpop?: DpopRequest;
}

/** The claims of a verified run token: the typed Tessera claims plus whatever else the token carries. */
export type VerifiedClaims = RunTokenClaims & Record<string, unknown>;

/** A configured verifier; create one per service and share it (it holds the JWKS cache). */
export interface Verifier {
  /**
   * Verifies a run token and returns its claims.
   * @throws {VerificationError} with the `code` of the first check that failed
   */
  verify(token: string, options?: VerifyOptions): Promise<VerifiedClaims>;
  /** The issuer this verifier trusts. */
  readonly issuer: string;
  /** The token algorithms it accepts. */
  readonly algorithms: readonly string[];
  /** The algorithms a DPoP proof may use (middlewares list them in `WWW-Authenticate: DPoP algs=…`). */
  readonly dpopAlgorithms: readonly string[];
  /** JWKS fetch counters and freshness. */
  jwksStats(): JwksCacheStats;
  /** Introspection requests made so far. */
  introspections(): number;
}

/** Claims every Tessera run token has, with their types. */
const REQUIRED_STRINGS = ['sub', 'jti', 'workspace', 'flow', 'run_id'] as const;
const OPTIONAL_STRINGS = ['project', 'environment', 'trigger_kind', 'triggered_by', 'task', 'task_run_id'] as const;
const NULLABLE_STRINGS = ['deployment', 'deployment_id', 'work_pool', 'worker'] as const;

function configError(option: string, message: string): TesseraError {
  return new TesseraError('ERR_CONFIG', `createVerifier: ${option} ${message}`);
}

function clockToleranceSeconds(value: number | string | undefined): number {
  if (value === undefined) return 30;
  const seconds = typeof value === 'number' ? value : parseDuration(value as Duration, 'clockTolerance') / 1000;
  if (!Number.isFinite(seconds) || seconds < 0 || seconds > MAX_CLOCK_TOLERANCE_SECONDS) {
    throw configError('clockTolerance', `must be between 0 and ${MAX_CLOCK_TOLERANCE_SECONDS} seconds, got ${String(value)}`);
  }
  return seconds;
}

function normalizeOptions(options: VerifierOptions) {
  if (!options || typeof options.issuer !== 'string' || options.issuer === '') throw configError('issuer', 'is required');
  try {
    new URL(options.issuer);
  } catch {
    throw configError('issuer', `must be a URL, got ${JSON.stringify(options.issuer)}`);
  }
  const audiences = Array.isArray(options.audience) ? options.audience : [options.audience];
  if (audiences.length === 0 || audiences.some((a) => typeof a !== 'string' || a === '')) {
    throw configError('audience', 'must be a non-empty string or a non-empty array of them');
  }
  const algorithms = options.algorithms ?? ['RS256', 'ES256'];
  if (!Array.isArray(algorithms) || algorithms.length === 0) throw configError('algorithms', 'must list at least one algorithm');
  for (const a of algorithms) {
    if (!ASYMMETRIC_ALGORITHMS.includes(a)) {
      throw configError(
        'algorithms',
        `"${a}" is not allowed: only asymmetric algorithms (${ASYMMETRIC_ALGORITHMS.join(', ')}); never none or HMAC`,
      );
    }
  }
  const maxTokenBytes = options.maxTokenBytes ?? DEFAULT_MAX_TOKEN_BYTES;
  if (!Number.isInteger(maxTokenBytes) || maxTokenBytes < 256) throw configError('maxTokenBytes', 'must be an integer ≥ 256');
  return Object.freeze({
    issuer: options.issuer,
    audiences: Object.freeze([...audiences]),
    algorithms: Object.freeze([...algorithms]) as readonly string[],
    tolerance: clockToleranceSeconds(options.clockTolerance),
    maxTokenBytes,
  });
}

interface Metadata {
  jwksUri: string;
  introspectionEndpoint: string | undefined;
}

/** Discovery, once, shared by every caller; a failure is retried at most every 5 s. */
function createDiscovery(issuer: string, fetchFn: FetchLike, now: () => number): () => Promise<Metadata> {
  // OIDC Discovery §4: remove a terminating "/" before appending the well-known path.
  const url = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  let result: Metadata | undefined;
  let inflight: Promise<Metadata> | undefined;
  let failedAt = Number.NEGATIVE_INFINITY;
  let failure: VerificationError | undefined;

  const fail = (message: string, cause?: unknown) =>
    new VerificationError('ERR_DISCOVERY_FAILED', message, cause === undefined ? {} : { cause });

  async function load(): Promise<Metadata> {
    let doc: Record<string, unknown>;
    try {
      const res = await request(
        url,
        { headers: { accept: 'application/json' } },
        { fetch: fetchFn, timeoutMs: 5_000, maxBytes: 64 * 1024 },
      );
      if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
      doc = JSON.parse(res.text) as Record<string, unknown>;
    } catch (e) {
      throw fail(`cannot read the issuer's discovery document at ${url}: ${describe(e)}`, e);
    }
    if (doc.issuer !== issuer) {
      throw fail(
        `discovery document at ${url} names issuer ${JSON.stringify(doc.issuer)}, this service expects exactly ${JSON.stringify(issuer)}; fix the verifier's issuer option (a trailing slash or http/https counts)`,
      );
    }
    const jwksUri = doc.jwks_uri;
    if (typeof jwksUri !== 'string') throw fail(`discovery document at ${url} has no jwks_uri`);
    let parsed: URL;
    try {
      parsed = new URL(jwksUri);
    } catch {
      throw fail(`discovery document at ${url} has an invalid jwks_uri`);
    }
    if (new URL(issuer).protocol === 'https:' && parsed.protocol !== 'https:') {
      throw fail(`jwks_uri ${jwksUri} is not https while the issuer is: keys must not travel in clear text`);
    }
    const introspection = typeof doc.introspection_endpoint === 'string' ? doc.introspection_endpoint : undefined;
    return { jwksUri, introspectionEndpoint: introspection };
  }

  return async () => {
    if (result) return result;
    if (inflight) return inflight;
    if (failure && now() - failedAt < 5_000) throw failure;
    const p = load().then(
      (m) => {
        result = m;
        inflight = undefined;
        return m;
      },
      (e: VerificationError) => {
        failure = e;
        failedAt = now();
        inflight = undefined;
        throw e;
      },
    );
    inflight = p;
    return p;
  };
}

function describeAudiences(audiences: readonly string[]): string {
  return audiences.length === 1 ? JSON.stringify(audiences[0]) : `one of ${audiences.map((a) => JSON.stringify(a)).join(', ')}`;
}

/** Names the first differing character of two strings, so look-alikes (Cyrillic "е" for "e") are visible. */
function firstDifference(found: string, expected: string): string {
  const a = Array.from(found);
  const b = Array.from(expected);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] !== b[i]) {
      const cp = (c: string | undefined) =>
        c === undefined ? 'end' : `U+${(c.codePointAt(0) as number).toString(16).toUpperCase().padStart(4, '0')}`;
      return ` (they differ at character ${i + 1}: ${cp(a[i])} in the token, ${cp(b[i])} expected)`;
    }
  }
  return '';
}

function iso(seconds: number): string {
  const d = new Date(seconds * 1000);
  return Number.isNaN(d.getTime()) ? String(seconds) : d.toISOString();
}

function isNumericDate(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

/**
 * Creates a verifier for Tessera run tokens. Every check has its own error code (see
 * docs/verify.md): compact JWS only, size cap, asymmetric `alg` allowlist, no `crit`, `typ: JWT`,
 * `kid` required and used only to look a key up in the issuer's JWKS (found through discovery;
 * `jku`, `x5u`, `jwk` and `x5c` headers are ignored), no duplicate JSON members, exact `iss`, `aud`,
 * `exp`/`nbf`/`iat` with bounded skew, required Tessera claims with their types, DPoP proof for
 * `cnf.jkt`-bound tokens, the policy, and optionally introspection.
 *
 * Options are checked now: a bad algorithm, tolerance or policy expression throws here, at startup.
 *
 * @example
 * const verifier = createVerifier({
 *   issuer: 'https://tessera.example.com',
 *   audience: 'billing-api',
 *   policy: { allow: ['environment == "prod"'], deny: ['glob("*:deployment:scratch-*", sub)'] },
 * });
 * const claims = await verifier.verify(token);
 * @see RFC 8725 (JWT best current practices), RFC 7519 §7.2, RFC 9449 §7
 */
export function createVerifier(options: VerifierOptions): Verifier {
  const o = normalizeOptions(options);
  const now = options.now ?? Date.now;
  const fetchFn: FetchLike = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const discover = createDiscovery(o.issuer, fetchFn, now);
  const jwks = createJwksCache({
    ...options.jwks,
    now,
    fetch: fetchFn,
    resolveUri: async () => (await discover()).jwksUri,
  });
  const policy: CompiledPolicy | undefined = options.policy ? compilePolicy(options.policy) : undefined;
  const dpop = createDpopChecker(options.dpop);
  const introspector: Introspector | undefined = options.introspect
    ? createIntrospector({
        ...(options.introspect === true ? {} : options.introspect),
        fetch: fetchFn,
        resolveUrl: async () => {
          const endpoint = (await discover()).introspectionEndpoint;
          // The token itself is sent there: never in clear text when the issuer is https.
          if (endpoint && new URL(o.issuer).protocol === 'https:' && !endpoint.startsWith('https://')) {
            throw new VerificationError(
              'ERR_INTROSPECTION_FAILED',
              `introspection_endpoint ${endpoint.slice(0, 200)} is not https while the issuer is: tokens must not travel in clear text`,
            );
          }
          return endpoint;
        },
      })
    : undefined;
  const allowedAlgs = new Set(o.algorithms);
  const headers = new Map<string, { alg: string; kid: string }>();

  async function verify(token: string, verifyOptions: VerifyOptions = {}): Promise<VerifiedClaims> {
    // 1. Shape, before anything is decoded.
    if (typeof token !== 'string' || token.length === 0) {
      throw new VerificationError('ERR_TOKEN_MALFORMED', 'no token (expected a compact JWS string)');
    }
    if (token.length > o.maxTokenBytes) {
      throw new VerificationError('ERR_TOKEN_TOO_LARGE', `token is ${token.length} characters, the limit is ${o.maxTokenBytes}`);
    }
    const parts = token.split('.');
    if (parts.length !== 3) {
      throw new VerificationError(
        'ERR_TOKEN_MALFORMED',
        parts.length === 5
          ? 'token has 5 parts: an encrypted JWE, not a signed JWS; Tessera run tokens are signed JWTs (3 parts)'
          : `token has ${parts.length} dot-separated parts, a compact JWS has 3 (header.payload.signature)`,
      );
    }
    const [h, p, s] = parts as [string, string, string];
    if (h.length === 0 || p.length === 0) throw new VerificationError('ERR_TOKEN_MALFORMED', 'token has an empty header or payload');
    if (!isBase64url(h) || !isBase64url(p) || !isBase64url(s)) {
      throw new VerificationError('ERR_TOKEN_MALFORMED', 'token has characters outside base64url (A–Z a–z 0–9 - _, no padding)');
    }

    // 2. Header: alg, crit, typ, kid. Key-carrying headers (jku, x5u, jwk, x5c) are never read.
    let checked = headers.get(h);
    if (!checked) {
      checked = checkHeader(h);
      // The outcome depends on the segment alone, so it can be reused; bounded, since attackers
      // choose headers too.
      if (headers.size >= MAX_CACHED_HEADERS) headers.clear();
      headers.set(h, checked);
    }
    const { alg, kid } = checked;
    if (s.length === 0) {
      throw new VerificationError('ERR_SIGNATURE_INVALID', 'token has no signature (stripped); only signed tokens are accepted');
    }

    // 3. Key from the issuer's JWKS only, then the signature.
    const key: CryptoKey = jwks.peek(kid, alg) ?? (await jwks.getKey(kid, alg));
    let valid: boolean;
    let cause: unknown;
    try {
      valid = await verifySignature(alg, key, token, h, p, s);
    } catch (e) {
      valid = false;
      cause = e;
    }
    if (!valid) {
      throw new VerificationError(
        'ERR_SIGNATURE_INVALID',
        `the signature does not verify with the issuer's key ${JSON.stringify(truncate(kid))}`,
        cause === undefined ? {} : { cause },
      );
    }

    // 4. Claims.
    const claims = decodeSegment(p, 'token payload', 'ERR_TOKEN_MALFORMED');
    checkRegisteredClaims(claims, now() / 1000);
    checkRunClaims(claims);

    // 5. Sender constraint.
    const cnf = claims.cnf;
    if (cnf !== undefined) {
      const jkt = (cnf as { jkt?: unknown } | null)?.jkt;
      if (!cnf || typeof cnf !== 'object' || typeof jkt !== 'string' || jkt === '') {
        throw new VerificationError('ERR_CLAIM_INVALID', 'token cnf has no jkt: only DPoP binding (cnf.jkt) is supported', {
          claim: 'cnf',
        });
      }
      if (!verifyOptions.dpop) {
        throw new VerificationError(
          'ERR_DPOP_REQUIRED',
          'token is bound to a key (cnf.jkt): send it as "Authorization: DPoP <token>" with a DPoP proof header',
          { claim: 'cnf' },
        );
      }
      // After the policy: a token this service refuses anyway takes no room in the replay cache.
      policy?.check(claims);
      await dpop.check(token, jkt, verifyOptions.dpop, now());
    } else if (verifyOptions.dpop) {
      throw new VerificationError(
        'ERR_DPOP_INVALID',
        'a DPoP proof came with a token that is not bound to a key (no cnf.jkt); send it as a Bearer token',
        { claim: 'cnf' },
      );
    }

    // 6. Policy (for a bound token, checked before its proof above), then (network last) introspection.
    if (cnf === undefined) policy?.check(claims);
    if (introspector) await introspector.check(token, claims as { jti?: unknown; exp: number }, now());
    return claims as VerifiedClaims;
  }

  /** Validates a header segment: alg allowlist, no crit, typ JWT, kid present and short. */
  function checkHeader(segment: string): { alg: string; kid: string } {
    const header = decodeSegment(segment, 'token header', 'ERR_TOKEN_MALFORMED');
    const alg = header.alg;
    if (typeof alg !== 'string' || !allowedAlgs.has(alg)) {
      throw new VerificationError(
        'ERR_ALG_NOT_ALLOWED',
        `token alg ${JSON.stringify(typeof alg === 'string' ? truncate(alg) : alg)}, this service accepts ${o.algorithms.join(', ')}`,
        { claim: 'alg' },
      );
    }
    if (header.crit !== undefined) {
      throw new VerificationError(
        'ERR_CRIT_UNSUPPORTED',
        `token header marks ${JSON.stringify(header.crit)} as critical; this verifier understands no JWS extension, so it must refuse (RFC 7515 §4.1.11)`,
        { claim: 'crit' },
      );
    }
    const typ = header.typ;
    if (typeof typ !== 'string' || (typ.toLowerCase() !== 'jwt' && typ.toLowerCase() !== 'application/jwt')) {
      throw new VerificationError(
        'ERR_TYP_MISMATCH',
        `token typ ${JSON.stringify(typ)}, expected "JWT"${typ === 'dpop+jwt' ? ': this is a DPoP proof, not an access token' : ': another kind of token cannot pass as a run token'}`,
        { claim: 'typ' },
      );
    }
    const kid = header.kid;
    if (typeof kid !== 'string' || kid.length === 0 || kid.length > MAX_KID_LENGTH) {
      throw new VerificationError(
        'ERR_KID_INVALID',
        typeof kid === 'string' && kid.length > 0
          ? `token kid is ${kid.length} characters, the limit is ${MAX_KID_LENGTH}`
          : 'token header has no kid (a string naming the issuer key that signed it)',
        { claim: 'kid' },
      );
    }
    return { alg, kid };
  }

  function checkRegisteredClaims(claims: Record<string, unknown>, nowS: number): void {
    const iss = claims.iss;
    if (iss !== o.issuer) {
      throw new VerificationError(
        'ERR_ISSUER_MISMATCH',
        iss === undefined
          ? `token has no iss, this service expects ${JSON.stringify(o.issuer)}`
          : `token iss ${JSON.stringify(iss)}, this service expects ${JSON.stringify(o.issuer)}${typeof iss === 'string' ? firstDifference(iss, o.issuer) : ''}`,
        { claim: 'iss' },
      );
    }
    const aud = claims.aud;
    const audOk =
      typeof aud === 'string'
        ? o.audiences.includes(aud)
        : Array.isArray(aud) && aud.length > 0 && aud.every((a) => typeof a === 'string') && aud.some((a) => o.audiences.includes(a));
    if (!audOk) {
      throw new VerificationError(
        'ERR_AUDIENCE_MISMATCH',
        aud === undefined
          ? `token has no aud, this service expects ${describeAudiences(o.audiences)}`
          : `token aud ${JSON.stringify(aud)}, this service expects ${describeAudiences(o.audiences)}`,
        { claim: 'aud' },
      );
    }
    const tol = o.tolerance;
    const { exp, nbf, iat } = claims;
    if (exp === undefined)
      throw new VerificationError('ERR_CLAIM_MISSING', 'token has no exp: tokens without an expiry are refused', { claim: 'exp' });
    if (!isNumericDate(exp)) throw new VerificationError('ERR_CLAIM_INVALID', 'token exp is not a number', { claim: 'exp' });
    if (nowS >= exp + tol) {
      throw new VerificationError(
        'ERR_TOKEN_EXPIRED',
        `token expired at ${iso(exp)}, ${Math.round(nowS - exp)} s ago (clock tolerance ${tol} s); ask for a new token`,
        { claim: 'exp' },
      );
    }
    if (nbf !== undefined) {
      if (!isNumericDate(nbf)) throw new VerificationError('ERR_CLAIM_INVALID', 'token nbf is not a number', { claim: 'nbf' });
      if (nowS + tol < nbf) {
        throw new VerificationError(
          'ERR_TOKEN_NOT_YET_VALID',
          `token is not valid before ${iso(nbf)}, ${Math.round(nbf - nowS)} s from now (clock tolerance ${tol} s); check this host's clock`,
          { claim: 'nbf' },
        );
      }
    }
    if (iat === undefined) throw new VerificationError('ERR_CLAIM_MISSING', 'token has no iat', { claim: 'iat' });
    if (!isNumericDate(iat)) throw new VerificationError('ERR_CLAIM_INVALID', 'token iat is not a number', { claim: 'iat' });
    if (iat > nowS + tol) {
      throw new VerificationError(
        'ERR_IAT_IN_FUTURE',
        `token was issued at ${iso(iat)}, ${Math.round(iat - nowS)} s in the future (clock tolerance ${tol} s); check this host's and the issuer's clocks`,
        { claim: 'iat' },
      );
    }
  }

  return Object.freeze({
    verify,
    issuer: o.issuer,
    algorithms: o.algorithms,
    dpopAlgorithms: dpop.algorithms,
    jwksStats: () => jwks.stats(),
    introspections: () => introspector?.requests() ?? 0,
  });
}

function missing(claim: string): VerificationError {
  return new VerificationError('ERR_CLAIM_MISSING', `token has no ${claim}: not a Tessera run token`, { claim });
}

function wrongType(claim: string, expected: string, value: unknown): VerificationError {
  const found = value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
  return new VerificationError('ERR_CLAIM_INVALID', `token ${claim} is ${found}, expected ${expected}`, { claim });
}

/** Tessera's own claims: present where required, and of the right type wherever present. */
function checkRunClaims(claims: Record<string, unknown>): void {
  for (const c of REQUIRED_STRINGS) {
    const v = claims[c];
    if (v === undefined) throw missing(c);
    if (typeof v !== 'string' || v === '') throw wrongType(c, 'a non-empty string', v);
  }
  const attempt = claims.run_attempt;
  if (attempt === undefined) throw missing('run_attempt');
  if (typeof attempt !== 'number' || !Number.isInteger(attempt) || attempt < 1) throw wrongType('run_attempt', 'an integer ≥ 1', attempt);
  for (const c of OPTIONAL_STRINGS) {
    const v = claims[c];
    if (v !== undefined && typeof v !== 'string') throw wrongType(c, 'a string', v);
  }
  for (const c of NULLABLE_STRINGS) {
    const v = claims[c];
    if (v !== undefined && v !== null && typeof v !== 'string') throw wrongType(c, 'a string or null', v);
  }
  const tags = claims.tags;
  if (tags !== undefined && !(Array.isArray(tags) && tags.every((t) => typeof t === 'string'))) {
    throw wrongType('tags', 'an array of strings', tags);
  }
  const version = claims.sub_template_version;
  if (version !== undefined && !(typeof version === 'number' && Number.isInteger(version))) {
    throw wrongType('sub_template_version', 'an integer', version);
  }
}
