import { randomBytes } from 'node:crypto';
import type { SigningKeyState } from '@tessera/core';
import { type CryptoKey, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';

/** Signing algorithms the issuer supports. RS256 by default: every relying party accepts it. */
export type SigningAlgorithm = 'RS256' | 'ES256';

/** Every algorithm the issuer signs with, in the order the discovery document lists them. */
export const SIGNING_ALGORITHMS: readonly SigningAlgorithm[] = ['RS256', 'ES256'];

/** A signing key: the private half stays in memory (or a key file); the public JWK is published. */
export interface SigningKey {
  kid: string;
  alg: SigningAlgorithm;
  privateKey: CryptoKey;
  publicJwk: JWK;
  createdAt: Date;
}

/** Options for {@link generateSigningKey}. */
export interface GenerateSigningKeyOptions {
  /**
   * Whether the private key can be exported, which a key file needs. Without a key file keys are
   * not extractable, so no code path can ever write or log them. @default false
   */
  extractable?: boolean;
}

/** A `kid` that says when the key was made (`2026-11-28-a1b2c3`), so an operator reading a token header can tell which generation signed it. */
function newKid(now: Date): string {
  return `${now.toISOString().slice(0, 10)}-${randomBytes(3).toString('hex')}`;
}

/**
 * Generates a fresh signing key with a dated `kid`.
 * @example const key = await generateSigningKey('ES256');
 */
export async function generateSigningKey(
  alg: SigningAlgorithm = 'RS256',
  now: Date = new Date(),
  options: GenerateSigningKeyOptions = {},
): Promise<SigningKey> {
  const extractable = options.extractable === true;
  const { privateKey, publicKey } = await generateKeyPair(alg, alg === 'RS256' ? { modulusLength: 2048, extractable } : { extractable });
  const publicJwk = await exportJWK(publicKey);
  const kid = newKid(now);
  return {
    kid,
    alg,
    privateKey: privateKey as CryptoKey,
    publicJwk: { ...publicJwk, kid, alg, use: 'sig' },
    createdAt: now,
  };
}

/** The JWK members that are public for the key types Tessera uses (RSA, EC). */
const PUBLIC_MEMBERS = ['kty', 'kid', 'alg', 'use', 'n', 'e', 'crv', 'x', 'y'] as const;

/** Copies only the public members of a JWK: whatever it is given, the result holds no private material. */
export function toPublicJwk(jwk: JWK): JWK {
  const out: JWK = {};
  for (const m of PUBLIC_MEMBERS) if (jwk[m] !== undefined) (out as Record<string, unknown>)[m] = jwk[m];
  return out;
}

/**
 * Exports a key's private JWK, for a key file. The key must have been generated `extractable`.
 * Never log the result.
 */
export async function exportPrivateJwk(key: SigningKey): Promise<JWK> {
  const jwk = await exportJWK(key.privateKey);
  return { ...jwk, kid: key.kid, alg: key.alg, use: 'sig' };
}

/**
 * Rebuilds a signing key from a private JWK (from a key file). The imported private key is not
 * extractable; the caller keeps the JWK if it must write it again.
 */
export async function importSigningKey(privateJwk: JWK, createdAt: Date): Promise<SigningKey> {
  const alg = privateJwk.alg as SigningAlgorithm;
  const privateKey = (await importJWK(privateJwk, alg, { extractable: false })) as CryptoKey;
  const kid = privateJwk.kid as string;
  return { kid, alg, privateKey, publicJwk: { ...toPublicJwk(privateJwk), kid, alg, use: 'sig' }, createdAt };
}

/** A JWKS document. */
export interface JsonWebKeySet {
  keys: JWK[];
}

/** Builds the JWKS from published public keys (never private material: only the public members are copied). */
export function buildJwks(publicJwks: JWK[]): JsonWebKeySet {
  return { keys: publicJwks.map(toPublicJwk) };
}

/** The lifecycle times of a key, ms since the epoch (null: not set). */
export interface KeyTimes {
  activatesAt: number;
  retiredAt: number | null;
  expiresAt: number | null;
  revokedAt: number | null;
}

/**
 * The state of a key at `now`, from its times alone, so every replica and every reader agrees
 * without coordination: a successor's activation time is written as the predecessor's retirement
 * time when the rotation is planned.
 */
export function keyState(times: KeyTimes, now: number): SigningKeyState {
  if (times.revokedAt !== null && times.revokedAt <= now) return 'revoked';
  if (times.expiresAt !== null && times.expiresAt <= now) return 'expired';
  if (times.retiredAt !== null && times.retiredAt <= now) return 'retired';
  if (times.activatesAt > now) return 'pending';
  return 'active';
}

/** True when a key in `state` belongs in the JWKS: published before it signs, and until its last token expired. */
export function isPublished(state: SigningKeyState): boolean {
  return state === 'pending' || state === 'active' || state === 'retired';
}

/**
 * When a retired key may leave the JWKS: its last token's expiry (or its retirement, if it signed
 * nothing after that) plus `leewayMs`, because relying parties accept tokens a little past `exp`
 * (AWS about 5 minutes, Vault 150 s by default).
 */
export function keyExpiry(retiredAt: number, lastTokenExpiresAt: number | null, leewayMs: number): number {
  return Math.max(retiredAt, lastTokenExpiresAt ?? retiredAt) + leewayMs;
}
