import { createHash } from 'node:crypto';
import { type Duration, parseDuration } from '@tessera/core';
import { VerificationError } from './errors.js';
import { describe, type FetchLike, request } from './lib/http.js';

/**
 * Online check of a token at the issuer (RFC 7662): a run token is signed for minutes, but the run
 * may end sooner; introspection tells that the run (this attempt) is over, and the token with it.
 */
export interface IntrospectOptions {
  /** The introspection endpoint. @default the discovery document's `introspection_endpoint` */
  url?: string;
  /**
   * How long an `active: true` answer is reused for the same token (an inactive one is kept until
   * the token expires: a finished run does not come back). `0` asks every time. @default 5 s
   */
  cacheTtlMs?: Duration;
  /** Timeout of one request. @default 5 s */
  timeoutMs?: Duration;
}

/** The verifier's introspection step. */
export interface Introspector {
  /**
   * @throws {VerificationError} `ERR_TOKEN_INACTIVE` when the issuer says the token is no longer
   *   active; `ERR_INTROSPECTION_FAILED` when it cannot be asked (fails closed)
   */
  check(token: string, claims: { jti?: unknown; exp: number }, nowMs: number): Promise<void>;
  /** Requests made (for tests). */
  requests(): number;
}

const MAX_ENTRIES = 10_000;

/** Creates the introspection step of a verifier. */
export function createIntrospector(
  options: IntrospectOptions & { resolveUrl: () => Promise<string | undefined>; fetch: FetchLike },
): Introspector {
  const ttl = parseDuration(options.cacheTtlMs ?? 5_000, 'introspect.cacheTtlMs');
  const timeoutMs = parseDuration(options.timeoutMs ?? 5_000, 'introspect.timeoutMs');
  // sha256(token) → { active, until }; never the token itself.
  const cache = new Map<string, { active: boolean; until: number }>();
  let count = 0;

  function store(key: string, active: boolean, until: number, nowMs: number): void {
    for (const [k, v] of cache) {
      if (v.until > nowMs && cache.size < MAX_ENTRIES) break;
      cache.delete(k);
    }
    cache.set(key, { active, until });
  }

  return {
    requests: () => count,
    async check(token, claims, nowMs) {
      const key = createHash('sha256').update(token).digest('base64url');
      const hit = cache.get(key);
      let active: boolean;
      if (hit && hit.until > nowMs) {
        active = hit.active;
      } else {
        const url = options.url ?? (await options.resolveUrl());
        if (!url) {
          throw new VerificationError(
            'ERR_INTROSPECTION_FAILED',
            "the issuer's discovery document has no introspection_endpoint; set introspect.url or turn introspection off",
          );
        }
        count++;
        let body: unknown;
        try {
          const res = await request(
            url,
            {
              method: 'POST',
              headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
              body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
            },
            { fetch: options.fetch, timeoutMs, maxBytes: 64 * 1024 },
          );
          if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
          body = JSON.parse(res.text);
        } catch (e) {
          throw new VerificationError(
            'ERR_INTROSPECTION_FAILED',
            `cannot ask the issuer whether the token is active at ${url}: ${describe(e)}`,
            {
              cause: e,
            },
          );
        }
        if (!body || typeof body !== 'object' || typeof (body as { active?: unknown }).active !== 'boolean') {
          throw new VerificationError(
            'ERR_INTROSPECTION_FAILED',
            `the introspection endpoint ${url} did not answer { "active": true|false }`,
          );
        }
        active = (body as { active: boolean }).active;
        const expMs = claims.exp * 1000;
        store(key, active, active ? Math.min(nowMs + ttl, expMs) : expMs, nowMs);
      }
      if (!active) {
        throw new VerificationError(
          'ERR_TOKEN_INACTIVE',
          `the issuer says token ${typeof claims.jti === 'string' ? `jti ${claims.jti} ` : ''}is no longer active: its run (attempt) has ended or it was revoked`,
        );
      }
    },
  };
}
