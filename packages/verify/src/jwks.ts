import { type Duration, parseDuration } from '@tessera/core';
import { type CryptoKey, importJWK, type JWK } from 'jose';
import { VerificationError } from './errors.js';
import { describe, type FetchLike, request } from './lib/http.js';

/**
 * Where the keys come from, and how long they are trusted. Durations are milliseconds or strings
 * such as `'30s'`.
 */
export interface JwksOptions {
  /** The JWKS URL. @default the discovery document's `jwks_uri` */
  uri?: string;
  /**
   * A fixed key set: no fetching at all (air-gapped services; the issuer's keys copied at deploy
   * time). Rotation then needs a redeploy.
   */
  keys?: JWK[];
  /** Freshness when the response has no `Cache-Control: max-age`. @default 5 minutes */
  defaultTtlMs?: Duration;
  /** Lower bound on `max-age` (a `max-age=0` issuer would otherwise be fetched per request). @default 30 s */
  minTtlMs?: Duration;
  /** Upper bound on `max-age` (so a new key is seen within this even if the issuer says a year). @default 1 hour */
  maxTtlMs?: Duration;
  /**
   * At most one refetch per this interval because of an unknown `kid`: tokens with random `kid`s
   * cannot make this service hammer the issuer. @default 30 s
   */
  cooldownMs?: Duration;
  /**
   * How long past their freshness the cached keys may still be used while the issuer cannot be
   * reached. Beyond it the verifier fails closed with `ERR_JWKS_UNAVAILABLE`. @default 1 hour
   */
  maxStaleMs?: Duration;
  /** Timeout of one JWKS request. @default 5 s */
  timeoutMs?: Duration;
}

/** Counters for tests and metrics. */
export interface JwksCacheStats {
  /** JWKS requests started (successful or not). */
  fetches: number;
  /** JWKS requests that failed. */
  failures: number;
  /** Keys held now. */
  keys: number;
  /** When the keys were last fetched successfully (ms since the epoch), if ever. */
  fetchedAt: number | undefined;
  /** When the cached keys stop being fresh (ms since the epoch), if ever fetched. */
  freshUntil: number | undefined;
}

/** A JWKS cache: keys by `kid`, fetched on demand, shared by every verification. */
export interface JwksCache {
  /**
   * The verification key for `kid` and `alg`, fetching or refetching the JWKS as the rules allow.
   * @throws {VerificationError} `ERR_KEY_NOT_FOUND`, `ERR_JWKS_UNAVAILABLE` (or `ERR_DISCOVERY_FAILED` from the URI resolver)
   */
  getKey(kid: string, alg: string): Promise<CryptoKey>;
  /**
   * The key for `kid` and `alg` when it is cached, imported and fresh, synchronously; otherwise
   * `undefined` (call {@link JwksCache.getKey}). The hot path of a warm verifier.
   */
  peek(kid: string, alg: string): CryptoKey | undefined;
  /** Fetch counters and freshness. */
  stats(): JwksCacheStats;
}

/** Internal options: the public ones plus the verifier's clock, fetch and URI resolver. */
export interface JwksCacheOptions extends JwksOptions {
  /** Resolves the JWKS URL (from discovery); called before each fetch unless `uri` is set. */
  resolveUri?: () => Promise<string>;
  now?: () => number;
  fetch?: FetchLike;
}

/** Largest JWKS accepted, bytes. */
const MAX_JWKS_BYTES = 256 * 1024;
/** Most keys kept from one JWKS. */
const MAX_KEYS = 100;
/** After a failed fetch, the next attempt waits at least this long (or the cooldown, if shorter). */
const RETRY_AFTER_FAILURE_MS = 5_000;

const KEY_TYPE_FOR_ALG: Record<string, { kty: string; crv?: string }> = {
  RS256: { kty: 'RSA' },
  RS384: { kty: 'RSA' },
  RS512: { kty: 'RSA' },
  PS256: { kty: 'RSA' },
  PS384: { kty: 'RSA' },
  PS512: { kty: 'RSA' },
  ES256: { kty: 'EC', crv: 'P-256' },
  ES384: { kty: 'EC', crv: 'P-384' },
  ES512: { kty: 'EC', crv: 'P-521' },
  EdDSA: { kty: 'OKP', crv: 'Ed25519' },
  Ed25519: { kty: 'OKP', crv: 'Ed25519' },
};

const PUBLIC_MEMBERS = ['kty', 'kid', 'alg', 'use', 'key_ops', 'n', 'e', 'crv', 'x', 'y'] as const;

/** True when `jwk` can verify `alg` signatures: right key type and curve, and no conflicting `alg`/`use`/`key_ops`. */
export function jwkFitsAlg(jwk: JWK, alg: string): boolean {
  const want = KEY_TYPE_FOR_ALG[alg];
  if (!want || jwk.kty !== want.kty) return false;
  if (want.crv && jwk.crv !== want.crv) return false;
  if (jwk.alg !== undefined && jwk.alg !== alg && !(isEdDsa(jwk.alg) && isEdDsa(alg))) return false;
  return true;
}

function isEdDsa(alg: string): boolean {
  return alg === 'EdDSA' || alg === 'Ed25519';
}

/**
 * Keeps the public members of usable signature keys: a `kid`, a known `kty`, `use` absent or `sig`,
 * `key_ops` absent or containing `verify`. Private members are dropped, never kept in memory.
 */
function usableKeys(body: unknown): Map<string, JWK[]> {
  if (!body || typeof body !== 'object' || !Array.isArray((body as { keys?: unknown }).keys)) {
    throw new Error('the JWKS has no "keys" array');
  }
  const out = new Map<string, JWK[]>();
  let count = 0;
  for (const raw of (body as { keys: unknown[] }).keys) {
    if (count >= MAX_KEYS) break;
    if (!raw || typeof raw !== 'object') continue;
    const k = raw as Record<string, unknown>;
    if (typeof k.kid !== 'string' || k.kid === '') continue;
    if (k.kty !== 'RSA' && k.kty !== 'EC' && k.kty !== 'OKP') continue;
    if (k.use !== undefined && k.use !== 'sig') continue;
    if (k.key_ops !== undefined && !(Array.isArray(k.key_ops) && k.key_ops.includes('verify'))) continue;
    const jwk: JWK = {};
    for (const m of PUBLIC_MEMBERS) if (k[m] !== undefined) (jwk as Record<string, unknown>)[m] = k[m];
    const list = out.get(k.kid);
    if (list) list.push(jwk);
    else out.set(k.kid, [jwk]);
    count++;
  }
  return out;
}

/** Freshness from `Cache-Control` (and `Age`), bounded. */
function ttlFrom(headers: Headers, defaults: { defaultTtl: number; minTtl: number; maxTtl: number }): number {
  const cc = headers.get('cache-control')?.toLowerCase() ?? '';
  let ttl = defaults.defaultTtl;
  if (/(^|,)\s*(no-store|no-cache)\s*(,|$)/.test(cc)) ttl = 0;
  else {
    const m = /(?:^|,)\s*max-age\s*=\s*"?(\d{1,10})"?\s*(?:,|$)/.exec(cc);
    if (m) {
      const age = Number(headers.get('age'));
      ttl = (Number(m[1]) - (Number.isFinite(age) && age > 0 ? age : 0)) * 1000;
    }
  }
  return Math.min(defaults.maxTtl, Math.max(defaults.minTtl, ttl));
}

/**
 * Creates a JWKS cache (written here rather than jose's `createRemoteJWKSet` so the rules below are
 * ours to state and test):
 * - freshness from `Cache-Control: max-age`, bounded by `minTtlMs`/`maxTtlMs`;
 * - an unknown `kid` triggers one refetch, at most once per `cooldownMs`, so a rotated key is
 *   picked up at once and random `kid`s cannot hammer the issuer;
 * - concurrent callers share one request (single-flight);
 * - when the issuer cannot be reached, cached keys keep working for `maxStaleMs` past freshness,
 *   then every verification fails closed with `ERR_JWKS_UNAVAILABLE`;
 * - redirects are followed within the same origin only; body ≤ 256 KB; at most 100 keys.
 */
export function createJwksCache(options: JwksCacheOptions): JwksCache {
  const now = options.now ?? Date.now;
  const fetchFn = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const defaultTtl = parseDuration(options.defaultTtlMs ?? 300_000, 'jwks.defaultTtlMs');
  const minTtl = parseDuration(options.minTtlMs ?? 30_000, 'jwks.minTtlMs');
  const maxTtl = parseDuration(options.maxTtlMs ?? 3_600_000, 'jwks.maxTtlMs');
  const cooldown = parseDuration(options.cooldownMs ?? 30_000, 'jwks.cooldownMs');
  const maxStale = parseDuration(options.maxStaleMs ?? 3_600_000, 'jwks.maxStaleMs');
  const timeoutMs = parseDuration(options.timeoutMs ?? 5_000, 'jwks.timeoutMs');
  const retryAfterFailure = Math.min(cooldown, RETRY_AFTER_FAILURE_MS);

  let keys: Map<string, JWK[]> | undefined;
  let imported = new Map<string, Promise<CryptoKey>>();
  // The same keys once their import has resolved, for the synchronous path.
  let ready = new Map<string, CryptoKey>();
  let fetchedAt: number | undefined;
  let freshUntil = Number.NEGATIVE_INFINITY;
  // Only refetches caused by an unknown kid count against the cooldown: the first fetch, or one on
  // expiry, must not delay seeing a key the issuer published a second later.
  let lastUnknownKidFetchAt = Number.NEGATIVE_INFINITY;
  let lastFailureAt = Number.NEGATIVE_INFINITY;
  let lastError: string | undefined;
  let lastDiscoveryError: VerificationError | undefined;
  let inflight: Promise<void> | undefined;
  let fetches = 0;
  let failures = 0;
  let lastUri: string | undefined;

  if (options.keys) {
    keys = usableKeys({ keys: options.keys });
    fetchedAt = now();
    freshUntil = Number.POSITIVE_INFINITY;
  }

  async function load(): Promise<void> {
    fetches++;
    try {
      // Discovery failures surface as ERR_DISCOVERY_FAILED, unchanged.
      const uri = options.uri ?? (await options.resolveUri?.());
      if (!uri) throw new Error('no JWKS URL (set jwks.uri, or an issuer whose discovery document has jwks_uri)');
      lastUri = uri;
      const res = await request(uri, { headers: { accept: 'application/json' } }, { fetch: fetchFn, timeoutMs, maxBytes: MAX_JWKS_BYTES });
      if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
      const next = usableKeys(JSON.parse(res.text));
      keys = next;
      imported = new Map();
      ready = new Map();
      fetchedAt = now();
      freshUntil = fetchedAt + ttlFrom(res.headers, { defaultTtl, minTtl, maxTtl });
      lastError = undefined;
    } catch (e) {
      failures++;
      lastFailureAt = now();
      lastError = e instanceof VerificationError ? e.message : describe(e);
      lastDiscoveryError = e instanceof VerificationError && e.code === 'ERR_DISCOVERY_FAILED' ? e : undefined;
      throw e;
    }
  }

  /** Starts a fetch unless one is running; every caller awaits the same one. */
  function refresh(): Promise<void> {
    if (!inflight) {
      const p = load().finally(() => {
        if (inflight === p) inflight = undefined;
      });
      inflight = p;
    }
    return inflight;
  }

  function unavailable(why: string, cause?: unknown): VerificationError {
    return new VerificationError(
      'ERR_JWKS_UNAVAILABLE',
      `${why}; the issuer's JWKS${lastUri ? ` at ${lastUri}` : ''} cannot be fetched${lastError ? ` (${lastError})` : ''}. Check that the issuer is up and reachable from this service`,
      cause === undefined ? {} : { cause },
    );
  }

  function find(kid: string, alg: string): JWK | undefined {
    const list = keys?.get(kid);
    if (!list) return undefined;
    for (const jwk of list) if (jwkFitsAlg(jwk, alg)) return jwk;
    return undefined;
  }

  return {
    async getKey(kid: string, alg: string): Promise<CryptoKey> {
      if (!keys) {
        if (inflight) await inflight.catch(() => {});
        else if (now() - lastFailureAt >= retryAfterFailure) {
          try {
            await refresh();
          } catch (e) {
            if (e instanceof VerificationError && e.code === 'ERR_DISCOVERY_FAILED') throw e;
            throw unavailable('no keys cached yet', e);
          }
        }
        if (!keys) throw lastDiscoveryError ?? unavailable('no keys cached yet');
      } else if (now() >= freshUntil && !inflight && now() - lastFailureAt >= retryAfterFailure) {
        await refresh().catch(() => {});
      } else if (inflight && now() >= freshUntil) {
        await inflight.catch(() => {});
      }
      const t = now();
      if (t - freshUntil > maxStale) {
        const age = fetchedAt === undefined ? 'never' : `${Math.round((t - fetchedAt) / 1000)} s ago`;
        throw unavailable(
          `cached keys too stale to trust (fetched ${age}, jwks.maxStaleMs ${Math.round(maxStale / 1000)} s past freshness)`,
        );
      }
      let jwk = find(kid, alg);
      if (!jwk && !options.keys) {
        if (inflight) {
          await inflight.catch(() => {});
        } else if (t - lastUnknownKidFetchAt >= cooldown) {
          lastUnknownKidFetchAt = t;
          await refresh().catch(() => {});
        }
        jwk = find(kid, alg);
      }
      if (!jwk) {
        const other = keys?.has(kid);
        throw new VerificationError(
          'ERR_KEY_NOT_FOUND',
          other
            ? `the issuer's key ${JSON.stringify(truncate(kid))} cannot verify ${alg} signatures`
            : `no key ${JSON.stringify(truncate(kid))} in the issuer's JWKS (${keys?.size ?? 0} keys); a token signed by another issuer, or by a key not yet published`,
          { claim: 'kid' },
        );
      }
      const cacheKey = `${kid}\u0000${alg}`;
      let key = imported.get(cacheKey);
      if (!key) {
        const map = ready;
        key = importJWK(jwk, alg) as Promise<CryptoKey>;
        imported.set(cacheKey, key);
        key.then(
          (k) => map.set(cacheKey, k),
          () => imported.delete(cacheKey),
        );
      }
      try {
        return await key;
      } catch (e) {
        throw new VerificationError(
          'ERR_KEY_NOT_FOUND',
          `the issuer's key ${JSON.stringify(truncate(kid))} cannot be used for ${alg}: ${describe(e)}`,
          {
            claim: 'kid',
            cause: e,
          },
        );
      }
    },
    peek(kid: string, alg: string): CryptoKey | undefined {
      if (ready.size === 0 || now() >= freshUntil) return undefined;
      return ready.get(`${kid}\u0000${alg}`);
    },
    stats(): JwksCacheStats {
      let n = 0;
      for (const list of keys?.values() ?? []) n += list.length;
      return { fetches, failures, keys: n, fetchedAt, freshUntil: fetchedAt === undefined ? undefined : freshUntil };
    },
  };
}

/** Untrusted strings echoed in messages are shortened. */
export function truncate(s: string, max = 64): string {
  return s.length > max ? `${s.slice(0, max)}…` : s;
}
