import type { RunTokenClaims } from '@tessera/core';
import { createLocalJWKSet, type JSONWebKeySet, jwtVerify } from 'jose';
import type { SigningAlgorithm } from './keys.js';

/** Why a token is not active, as far as its signature and times go (never shown to the caller: RFC 7662 says only `active: false`). */
export type InactiveReason = 'malformed' | 'signature' | 'unknown-kid' | 'expired' | 'not-yet-valid' | 'issuer' | 'typ' | 'claims';

/** Options for {@link checkIssuedToken}. */
export interface CheckIssuedTokenOptions {
  /** The issuer exactly as tokens name it. */
  issuer: string;
  /** The issuer's published keys (the JWKS it serves now). */
  jwks: JSONWebKeySet;
  /** Algorithms the issuer signs with. */
  algorithms: readonly SigningAlgorithm[];
  /** @default new Date() */
  now?: Date;
}

/** The result of {@link checkIssuedToken}. */
export type CheckIssuedTokenResult = { valid: true; claims: RunTokenClaims } | { valid: false; reason: InactiveReason };

/**
 * The issuer-side half of introspection: is this a token this issuer signed, with a key it still
 * publishes, not expired, not before its `nbf`, with `typ: JWT` and the run claims? Whether its run
 * is still alive is the server's half. Never throws for a bad token: it answers `valid: false`.
 * @see RFC 7662 §2.2 (a token that is not valid for any reason is simply inactive)
 */
export async function checkIssuedToken(token: string, options: CheckIssuedTokenOptions): Promise<CheckIssuedTokenResult> {
  if (typeof token !== 'string' || token.length > 16_384 || token.split('.').length !== 3) return { valid: false, reason: 'malformed' };
  try {
    const { payload } = await jwtVerify(token, createLocalJWKSet(options.jwks), {
      issuer: options.issuer,
      algorithms: [...options.algorithms],
      typ: 'JWT',
      currentDate: options.now ?? new Date(),
      requiredClaims: ['sub', 'aud', 'exp', 'iat', 'jti', 'run_id', 'run_attempt'],
    });
    if (typeof payload.aud !== 'string' || typeof payload.run_id !== 'string' || typeof payload.run_attempt !== 'number') {
      return { valid: false, reason: 'claims' };
    }
    return { valid: true, claims: payload as unknown as RunTokenClaims };
  } catch (e) {
    return { valid: false, reason: reasonOf(e) };
  }
}

function reasonOf(e: unknown): InactiveReason {
  const code = (e as { code?: string }).code;
  const claim = (e as { claim?: string }).claim;
  switch (code) {
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return 'unknown-kid';
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return 'signature';
    case 'ERR_JWT_EXPIRED':
      return 'expired';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (claim === 'iss') return 'issuer';
      if (claim === 'nbf' || claim === 'iat') return 'not-yet-valid';
      if (claim === 'typ') return 'typ';
      return 'claims';
    default:
      return 'malformed';
  }
}
