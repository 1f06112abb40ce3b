import { randomUUID } from 'node:crypto';
import type { RunTokenClaims } from '@tessera/core';
import { SignJWT } from 'jose';
import type { SigningKey } from './keys.js';

/** How far `nbf` is backdated, seconds: absorbs small clock differences at relying parties. */
export const NBF_BACKDATE_SECONDS = 30;

/** Options for {@link mintRunToken}. */
export interface MintRunTokenOptions {
  key: SigningKey;
  issuer: string;
  audience: string;
  subject: string;
  lifetimeSeconds: number;
  /** Tessera claims (run, flow, deployment…). */
  claims: Omit<RunTokenClaims, 'iss' | 'sub' | 'aud' | 'exp' | 'iat' | 'nbf' | 'jti'>;
  now?: Date;
}

export interface MintRunTokenResult {
  token: string;
  jti: string;
  issuedAt: Date;
  expiresAt: Date;
}

/**
 * Signs a run identity token: `typ: JWT`, `kid` always, exactly one audience, unique `jti`.
 * @see RFC 7519 §4.1 for the registered claims.
 */
export async function mintRunToken(options: MintRunTokenOptions): Promise<MintRunTokenResult> {
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
