import { randomUUID } from 'node:crypto';
import { type RunTokenClaims, TesseraError } from '@tessera/core';
import { SignJWT } from 'jose';
import type { SigningKey } from './keys.js';

/** How far `nbf` is backdated, seconds: absorbs small clock differences at relying parties. */
export const NBF_BACKDATE_SECONDS = 30;

/** Options for {@link mintRunToken}. */
export interface MintRunTokenOptions {
  /** The key that signs; its `kid` goes in the header. */
  key: SigningKey;
  /** The issuer URL, exactly as the discovery document names it. */
  issuer: string;
  /** The one audience (a string, never an array: relying parties that accept "any of" would widen it). */
  audience: string;
  /** `sub`, already rendered from its template (see {@link renderSubject}). */
  subject: string;
  /** Whole seconds from `iat` to `exp`. */
  lifetimeSeconds: number;
  /** Tessera claims (run, flow, deployment…, `cnf` for a DPoP-bound token). */
  claims: Omit<RunTokenClaims, 'iss' | 'sub' | 'aud' | 'exp' | 'iat' | 'nbf' | 'jti'>;
  /** @default new Date() */
  now?: Date;
}

/** A minted token and what the server records about it (never the token itself). */
export interface MintRunTokenResult {
  /** The signed JWT. Secret: never log or store it. */
  token: string;
  jti: string;
  issuedAt: Date;
  expiresAt: Date;
}

/**
 * Signs a run identity token: `typ: JWT`, `kid` always, exactly one audience, `nbf` backdated by
 * {@link NBF_BACKDATE_SECONDS}, unique `jti` (a random UUID).
 * @see RFC 7519 §4.1 for the registered claims.
 */
export async function mintRunToken(options: MintRunTokenOptions): Promise<MintRunTokenResult> {
  if (typeof options.audience !== 'string' || options.audience === '') {
    throw new TesseraError('ERR_AUDIENCE_REQUIRED', 'mintRunToken: audience must be one non-empty string');
  }
  if (!Number.isInteger(options.lifetimeSeconds) || options.lifetimeSeconds <= 0) {
    throw new TesseraError('ERR_VALIDATION', `mintRunToken: lifetimeSeconds must be a positive integer, got ${options.lifetimeSeconds}`);
  }
  const now = options.now ?? new Date();
  const iat = Math.floor(now.getTime() / 1000);
  const exp = iat + options.lifetimeSeconds;
  const jti = randomUUID();
  const token = await new SignJWT({ ...options.claims })
    .setProtectedHeader({ alg: options.key.alg, typ: 'JWT', kid: options.key.kid })
    .setIssuer(options.issuer)
    .setSubject(options.subject)
    .setAudience(options.audience)
    .setIssuedAt(iat)
    .setNotBefore(iat - NBF_BACKDATE_SECONDS)
    .setExpirationTime(exp)
    .setJti(jti)
    .sign(options.key.privateKey);
  return { token, jti, issuedAt: new Date(iat * 1000), expiresAt: new Date(exp * 1000) };
}
