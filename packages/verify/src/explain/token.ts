import { compactVerify, createLocalJWKSet, decodeJwt, decodeProtectedHeader, type JSONWebKeySet } from 'jose';
import { VerificationError } from '../errors.js';
import { isRecord, q } from './lib.js';
import type { DecodedToken, ExplainCheck } from './types.js';

/**
 * Decodes a compact JWT without verifying it, for explaining. Never use the result to trust anything.
 * @throws VerificationError `ERR_TOKEN_MALFORMED` when it is not a compact JWS with JSON header and claims.
 */
export function decodeToken(token: string): DecodedToken {
  const t = token.trim();
  if (t.split('.').length !== 3) {
    throw new VerificationError('ERR_TOKEN_MALFORMED', 'not a compact JWT (expected three dot-separated parts)');
  }
  try {
    return { header: { ...decodeProtectedHeader(t) }, claims: { ...decodeJwt(t) } };
  } catch (e) {
    throw new VerificationError('ERR_TOKEN_MALFORMED', `cannot decode the token: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * Checks a token's signature against a JWKS (as fetched from the issuer's `jwks_uri`): the key is
 * chosen by `kid` from the set, never taken from the token.
 */
export async function checkSignature(token: string, jwks: unknown): Promise<ExplainCheck> {
  if (!isRecord(jwks) || !Array.isArray(jwks.keys)) {
    return { id: 'signature', ok: false, message: 'signature: the issuer published no JWKS ({"keys": [...]})' };
  }
  const header = (() => {
    try {
      return decodeProtectedHeader(token.trim());
    } catch {
      return {};
    }
  })();
  try {
    const { protectedHeader } = await compactVerify(token.trim(), createLocalJWKSet(jwks as unknown as JSONWebKeySet));
    return { id: 'signature', ok: true, message: `signature: verifies with ${protectedHeader.alg}, kid ${q(protectedHeader.kid)}` };
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ERR_JWKS_NO_MATCHING_KEY') {
      return {
        id: 'signature',
        ok: false,
        message: `signature: no key in the issuer's JWKS has kid ${q(header.kid)}`,
        detail: 'the token comes from another issuer, or its key was retired (tokens outlive nothing: ask for a new one)',
        answer: 'the relying party cannot find the signing key',
      };
    }
    return {
      id: 'signature',
      ok: false,
      message: `signature: does not verify (${(e as Error).message})`,
      detail: 'the token was altered, or signed by another issuer with the same kid',
      answer: 'the signature is invalid',
    };
  }
}
