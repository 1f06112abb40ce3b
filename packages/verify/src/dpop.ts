import { createHash } from 'node:crypto';
import { type Duration, parseDuration } from '@tessera/core';
import { calculateJwkThumbprint, compactVerify, importJWK, type JWK } from 'jose';
import { VerificationError } from './errors.js';
import { decodeSegment, isBase64url } from './lib/segments.js';

/**
 * DPoP at a resource server: a token carrying `cnf.jkt` is bound to a key pair, and is accepted only
 * with a fresh proof, signed by that key, for this very request.
 * @see RFC 9449 §4.3 (checking proofs) and §7 (protected resource access)
 */

/** Options for DPoP proofs (the `dpop` option of `createVerifier`). */
export interface DpopOptions {
  /** Algorithms a proof may use (asymmetric only). @default ES256, ES384, ES512, PS256…PS512, RS256…RS512, EdDSA */
  algorithms?: string[];
  /** How old a proof's `iat` may be. @default 60 s */
  maxAgeMs?: Duration;
  /** How far in the future a proof's `iat` may be (clock skew of the client). @default 5 s */
  futureSkewMs?: Duration;
  /**
   * Most proof `jti`s remembered for replay detection. Entries expire after `maxAgeMs +
   * futureSkewMs`, when a replay would fail on `iat` anyway. When it is full of live entries, new
   * proofs are refused (`ERR_DPOP_REPLAY_CACHE_FULL`, 503) rather than forgetting one that could then
   * be replayed: size it for the proofs this instance accepts within `maxAgeMs`. @default 10,000
   */
  replayCacheSize?: number;
}

/** What the request says about itself, for checking `htm`, `htu` and `ath`. */
export interface DpopRequest {
  /** The `DPoP` request header: one proof JWT. */
  proof: string;
  /** The request's HTTP method, e.g. `GET`. */
  method: string;
  /** The request's full URL as the client addressed it (`https://api.example.com/path?x=1`). */
  url: string;
}

const DEFAULT_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512', 'EdDSA', 'Ed25519'];
const ASYMMETRIC = new Set(DEFAULT_ALGORITHMS);
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;
/** Largest proof accepted, characters. */
const MAX_PROOF_LENGTH = 8192;
/** Longest `jti` remembered. */
const MAX_JTI_LENGTH = 256;

/** A checker with its own replay cache: one per verifier. */
export interface DpopChecker {
  /**
   * Checks `request.proof` for an access token bound to `jkt`.
   * @throws {VerificationError} `ERR_DPOP_INVALID` or `ERR_DPOP_REPLAY`
   */
  check(accessToken: string, jkt: string, request: DpopRequest, nowMs: number): Promise<void>;
  /** `jti`s remembered now. */
  replayCacheSize(): number;
  /** Algorithms a proof may use. */
  readonly algorithms: readonly string[];
}

function invalid(message: string, cause?: unknown): VerificationError {
  return new VerificationError('ERR_DPOP_INVALID', message, { claim: 'DPoP', ...(cause === undefined ? {} : { cause }) });
}

/** Compares URLs the way RFC 9449 §4.3 asks: scheme, host, port and path, without query and fragment. */
export function htuOf(url: string): string | undefined {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return undefined;
  }
}

/** Creates a DPoP proof checker. */
export function createDpopChecker(options: DpopOptions = {}): DpopChecker {
  const algorithms = options.algorithms ?? DEFAULT_ALGORITHMS;
  for (const a of algorithms) {
    if (!ASYMMETRIC.has(a)) throw new TypeError(`dpop.algorithms: "${a}" is not an asymmetric JWS algorithm`);
  }
  const allowed = new Set(algorithms);
  const maxAge = parseDuration(options.maxAgeMs ?? 60_000, 'dpop.maxAgeMs');
  const futureSkew = parseDuration(options.futureSkewMs ?? 5_000, 'dpop.futureSkewMs');
  const capacity = options.replayCacheSize ?? 10_000;
  // jti → expiry (ms). A Map iterates in insertion order, so the first entries are the oldest.
  const seen = new Map<string, number>();

  /** `false` for a replay; throws when full of entries that are all still live. */
  function remember(key: string, until: number, nowMs: number): boolean {
    const prev = seen.get(key);
    if (prev !== undefined && prev > nowMs) return false;
    if (prev !== undefined) seen.delete(key);
    if (seen.size >= capacity) {
      // Entries go in about in expiry order (iat + a fixed window), so the expired ones are at the old end.
      for (const [k, exp] of seen) {
        if (exp > nowMs) break;
        seen.delete(k);
      }
    }
    if (seen.size >= capacity) {
      // Dropping a live entry would let the proof it stands for be replayed: whoever can send
      // `capacity` valid proofs could evict a victim's. Refuse instead (fail closed).
      throw new VerificationError(
        'ERR_DPOP_REPLAY_CACHE_FULL',
        `the DPoP replay cache holds ${capacity} proofs still within their ${Math.round((maxAge + futureSkew) / 1000)} s window: this proof cannot be checked for replay now. Retry shortly; raise dpop.replayCacheSize if this load is expected`,
        { claim: 'jti' },
      );
    }
    seen.set(key, until);
    return true;
  }

  return {
    replayCacheSize: () => seen.size,
    algorithms: Object.freeze([...allowed]),
    async check(accessToken, jkt, request, nowMs) {
      const proof = request.proof;
      if (typeof proof !== 'string' || proof.length === 0) throw invalid('no DPoP proof');
      if (proof.length > MAX_PROOF_LENGTH) throw invalid(`the DPoP proof is longer than ${MAX_PROOF_LENGTH} characters`);
      const parts = proof.split('.');
      if (parts.length !== 3 || !parts.every((p) => p.length > 0 && isBase64url(p))) {
        throw invalid('the DPoP header must hold one compact JWS (header.payload.signature, base64url)');
      }
      const header = decodeSegment(parts[0] as string, 'DPoP proof header', 'ERR_DPOP_INVALID', undefined, 'ERR_DPOP_INVALID');
      if (header.typ !== 'dpop+jwt') {
        throw invalid(`proof typ ${JSON.stringify(header.typ)}, expected "dpop+jwt"`);
      }
      if (typeof header.alg !== 'string' || !allowed.has(header.alg)) {
        throw invalid(`proof alg ${JSON.stringify(header.alg)} is not allowed; accepted: ${[...allowed].join(', ')}`);
      }
      if (header.crit !== undefined) throw invalid('proof header has "crit": no extension is understood');
      const jwk = header.jwk as JWK | undefined;
      if (!jwk || typeof jwk !== 'object' || Array.isArray(jwk)) throw invalid('proof header has no "jwk" (the public key)');
      for (const m of PRIVATE_MEMBERS) {
        if ((jwk as Record<string, unknown>)[m] !== undefined) throw invalid(`proof jwk has the private member "${m}"`);
      }
      let thumbprint: string;
      let key: Awaited<ReturnType<typeof importJWK>>;
      try {
        thumbprint = await calculateJwkThumbprint(jwk, 'sha256');
        key = await importJWK(jwk, header.alg);
      } catch (e) {
        throw invalid('proof jwk is not a usable public key for its alg', e);
      }
      if (thumbprint !== jkt) {
        throw invalid(`proof key thumbprint ${thumbprint} does not match the token's cnf.jkt ${jkt}: the proof was made with another key`);
      }
      let payloadBytes: Uint8Array;
      try {
        ({ payload: payloadBytes } = await compactVerify(proof, key, { algorithms: [header.alg] }));
      } catch (e) {
        throw invalid('the proof signature does not verify with its jwk', e);
      }
      const claims = decodeSegment(parts[1] as string, 'DPoP proof payload', 'ERR_DPOP_INVALID', payloadBytes, 'ERR_DPOP_INVALID');
      if (typeof claims.jti !== 'string' || claims.jti === '' || claims.jti.length > MAX_JTI_LENGTH) {
        throw invalid(`proof jti must be a string of 1 to ${MAX_JTI_LENGTH} characters`);
      }
      if (claims.htm !== request.method) {
        throw invalid(`proof htm ${JSON.stringify(claims.htm)}, this request is ${request.method}`);
      }
      const want = htuOf(request.url);
      const got = typeof claims.htu === 'string' ? htuOf(claims.htu) : undefined;
      if (!want || got !== want) {
        throw invalid(`proof htu ${JSON.stringify(claims.htu)}, this request is ${want ?? request.url} (query and fragment ignored)`);
      }
      if (typeof claims.iat !== 'number' || !Number.isFinite(claims.iat)) throw invalid('proof iat must be a number');
      const iatMs = claims.iat * 1000;
      if (iatMs > nowMs + futureSkew) throw invalid(`proof iat is ${Math.round((iatMs - nowMs) / 1000)} s in the future`);
      if (iatMs < nowMs - maxAge) {
        throw invalid(`proof is ${Math.round((nowMs - iatMs) / 1000)} s old; proofs are accepted for ${Math.round(maxAge / 1000)} s`);
      }
      const ath = createHash('sha256').update(accessToken, 'ascii').digest('base64url');
      if (claims.ath !== ath) {
        throw invalid(
          claims.ath === undefined
            ? 'proof has no ath (hash of the access token)'
            : 'proof ath does not match this access token: the proof was made for another token',
        );
      }
      // Last, so only proofs that passed every other check take room in the cache.
      if (!remember(`${jkt}\u0000${claims.jti}`, iatMs + maxAge + futureSkew, nowMs)) {
        throw new VerificationError(
          'ERR_DPOP_REPLAY',
          `proof jti ${JSON.stringify(claims.jti)} was already used: each request needs a new proof`,
          {
            claim: 'jti',
          },
        );
      }
    },
  };
}
