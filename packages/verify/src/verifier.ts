import type { RunTokenClaims } from '@tessera/core';
import { createRemoteJWKSet, type JWTPayload, errors as joseErrors, jwtVerify } from 'jose';
import { VerificationError } from './errors.js';

/** Options for {@link createVerifier}. */
export interface VerifierOptions {
  /** The issuer exactly as it appears in `iss` (no trailing-slash drift). */
  issuer: string;
  /** The audience this service expects: one string, or several accepted ones. */
  audience: string | string[];
  /** Asymmetric algorithms accepted. @default ['RS256', 'ES256'] */
  algorithms?: ('RS256' | 'ES256' | 'PS256' | 'EdDSA')[];
  /** Allowed clock skew, seconds. @default 30 */
  clockTolerance?: number;
}

export interface Verifier {
  /** Verifies a run token and returns its claims, or throws {@link VerificationError}. */
  verify(token: string): Promise<RunTokenClaims>;
}

const REQUIRED = ['sub', 'jti', 'iat', 'exp', 'run_id', 'run_attempt', 'flow'] as const;

/**
 * A verifier for Tessera run tokens: keys only from the issuer's JWKS found through discovery
 * (never from token headers), exact issuer, audience, `typ: JWT`, algorithm allowlist, time checks
 * with bounded skew, required Tessera claims. Issue #4 grows this into the full toolkit.
 */
export function createVerifier(options: VerifierOptions): Verifier {
  const algorithms = options.algorithms ?? ['RS256', 'ES256'];
  let jwks: ReturnType<typeof createRemoteJWKSet> | undefined;
  const keys = async () => {
    if (jwks) return jwks;
    const url = `${options.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    let doc: { issuer?: string; jwks_uri?: string };
    try {
      const res = await fetch(url);
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      doc = (await res.json()) as typeof doc;
    } catch (e) {
      throw new VerificationError(
        'ERR_DISCOVERY_FAILED',
        `cannot read the issuer's discovery document at ${url}: ${(e as Error).message}`,
        { cause: e },
      );
    }
    if (doc.issuer !== options.issuer) {
      throw new VerificationError(
        'ERR_DISCOVERY_FAILED',
        `discovery document at ${url} names issuer "${doc.issuer}", expected exactly "${options.issuer}"`,
      );
    }
    if (!doc.jwks_uri) throw new VerificationError('ERR_DISCOVERY_FAILED', `discovery document at ${url} has no jwks_uri`);
    jwks = createRemoteJWKSet(new URL(doc.jwks_uri), { cooldownDuration: 30_000, cacheMaxAge: 10 * 60_000 });
    return jwks;
  };
  return {
    async verify(token: string): Promise<RunTokenClaims> {
      if (typeof token !== 'string' || token.split('.').length !== 3) {
        throw new VerificationError('ERR_TOKEN_MALFORMED', 'not a compact JWS (expected three dot-separated parts)');
      }
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(token, await keys(), {
          issuer: options.issuer,
          audience: options.audience,
          algorithms,
          typ: 'JWT',
          clockTolerance: options.clockTolerance ?? 30,
          requiredClaims: ['exp', 'iat', 'sub'],
        }));
      } catch (e) {
        throw translate(e, options);
      }
      for (const claim of REQUIRED) {
        if (payload[claim] === undefined)
          throw new VerificationError('ERR_CLAIM_MISSING', `required claim "${claim}" is missing`, { claim });
      }
      return payload as unknown as RunTokenClaims;
    },
  };
}

function translate(e: unknown, options: VerifierOptions): VerificationError {
  if (e instanceof VerificationError) return e;
  if (e instanceof joseErrors.JWTExpired)
    return new VerificationError('ERR_TOKEN_EXPIRED', 'the token has expired', { claim: 'exp', cause: e });
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    const claim = e.claim;
    const payload = e.payload as Record<string, unknown>;
    if (claim === 'iss')
      return new VerificationError('ERR_ISSUER_MISMATCH', `token iss "${String(payload.iss)}", this service expects "${options.issuer}"`, {
        claim,
        cause: e,
      });
    if (claim === 'aud') {
      return new VerificationError(
        'ERR_AUDIENCE_MISMATCH',
        `token aud ${JSON.stringify(payload.aud)}, this service expects ${JSON.stringify(options.audience)}`,
        { claim, cause: e },
      );
    }
    if (claim === 'nbf' || (claim === 'iat' && e.reason === 'check_failed'))
      return new VerificationError('ERR_TOKEN_NOT_YET_VALID', `the token is not valid yet (${claim})`, { claim, cause: e });
    if (claim === 'typ')
      return new VerificationError('ERR_TYP_MISMATCH', `token typ is not "JWT": another kind of token cannot pass as a run token`, {
        claim,
        cause: e,
      });
    return new VerificationError('ERR_CLAIM_MISSING', `claim "${claim}" failed: ${e.reason}`, { claim, cause: e });
  }
  if (e instanceof joseErrors.JOSEAlgNotAllowed)
    return new VerificationError(
      'ERR_ALG_NOT_ALLOWED',
      `algorithm not allowed; accepted: ${(options.algorithms ?? ['RS256', 'ES256']).join(', ')}`,
      { cause: e },
    );
  if (e instanceof joseErrors.JWKSNoMatchingKey)
    return new VerificationError('ERR_KEY_NOT_FOUND', "no key in the issuer's JWKS matches the token's kid", { cause: e });
  if (e instanceof joseErrors.JWSSignatureVerificationFailed)
    return new VerificationError('ERR_SIGNATURE_INVALID', 'the signature does not verify', { cause: e });
  if (e instanceof joseErrors.JWSInvalid || e instanceof joseErrors.JWTInvalid)
    return new VerificationError('ERR_TOKEN_MALFORMED', (e as Error).message, { cause: e });
  return new VerificationError('ERR_TOKEN_MALFORMED', (e as Error).message ?? String(e), { cause: e });
}
