import { randomBytes } from 'node:crypto';
import { type CryptoKey, exportJWK, generateKeyPair, type JWK } from 'jose';

/** Signing algorithms the issuer supports. RS256 by default: every relying party accepts it. */
export type SigningAlgorithm = 'RS256' | 'ES256';

/** A signing key: the private half stays in memory; the public JWK is published. */
export interface SigningKey {
  kid: string;
  alg: SigningAlgorithm;
  privateKey: CryptoKey;
  publicJwk: JWK;
  createdAt: Date;
}

/**
 * Generates a fresh signing key with a `kid` that says when it was made (`2026-11-28-k3f9a`), so an
 * operator reading a token header can tell which generation signed it.
 */
export async function generateSigningKey(alg: SigningAlgorithm = 'RS256', now: Date = new Date()): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(
    alg,
    alg === 'RS256' ? { modulusLength: 2048, extractable: false } : { extractable: false },
  );
  const publicJwk = await exportJWK(publicKey);
  const kid = `${now.toISOString().slice(0, 10)}-${randomBytes(3).toString('hex')}`;
  return {
    kid,
    alg,
    privateKey: privateKey as CryptoKey,
    publicJwk: { ...publicJwk, kid, alg, use: 'sig' },
    createdAt: now,
  };
}

/** A JWKS document. */
export interface JsonWebKeySet {
  keys: JWK[];
}

/** Builds the JWKS from published public keys (never private material: only the public members are copied). */
export function buildJwks(publicJwks: JWK[]): JsonWebKeySet {
  const PUBLIC_MEMBERS = ['kty', 'kid', 'alg', 'use', 'n', 'e', 'crv', 'x', 'y'] as const;
  return {
    keys: publicJwks.map((jwk) => {
      const out: JWK = {};
      for (const m of PUBLIC_MEMBERS) if (jwk[m] !== undefined) (out as Record<string, unknown>)[m] = jwk[m];
      return out;
    }),
  };
}
