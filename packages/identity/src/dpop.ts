import { TesseraError } from '@tessera/core';
import { base64url, calculateJwkThumbprint, compactVerify, decodeProtectedHeader, importJWK, type JWK } from 'jose';

/** Why a DPoP proof was refused: the `reason` of a {@link DpopProofError}. */
export type DpopRejection = 'malformed' | 'typ' | 'alg' | 'jwk' | 'signature' | 'htm' | 'htu' | 'iat' | 'jti' | 'replay';

/**
 * A DPoP proof was refused (`ERR_DPOP_PROOF_INVALID`, HTTP 400); `reason` says which rule failed.
 * @see RFC 9449 §4.3 (checking DPoP proofs)
 */
export class DpopProofError extends TesseraError {
  readonly reason: DpopRejection;
  constructor(reason: DpopRejection, message: string, cause?: unknown) {
    super('ERR_DPOP_PROOF_INVALID', `DPoP proof refused: ${message}`, {
      details: { field: 'DPoP', reason },
      ...(cause === undefined ? {} : { cause }),
    });
    this.reason = reason;
  }
}

/**
 * Algorithms a proof may use: asymmetric only. `none` and HMAC would let anyone who saw a proof make
 * another, which is the whole thing DPoP exists to prevent.
 */
export const DPOP_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512', 'EdDSA', 'Ed25519'];

/** How far a proof's `iat` may be from the server's clock, seconds. */
export const DPOP_MAX_SKEW_SECONDS = 60;

/** JWK members that only a private (or symmetric) key has. A proof's `jwk` must have none. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;

/** Options for {@link verifyDpopProof}. */
export interface VerifyDpopProofOptions {
  /** The request's HTTP method; the proof's `htm` must equal it. */
  method: string;
  /**
   * URLs the request may be addressed as (the token endpoint as the issuer publishes it, and as this
   * request reached the server); the proof's `htu` must equal one, ignoring query and fragment.
   */
  urls: string[];
  /** @default new Date() */
  now?: Date;
  /** @default {@link DPOP_MAX_SKEW_SECONDS} */
  maxSkewSeconds?: number;
  /**
   * Records `(jkt, jti)` until `until` and answers whether it was new. Called last, only for proofs
   * that passed every other check, so garbage cannot fill the replay store.
   */
  remember(jkt: string, jti: string, until: Date): Promise<boolean>;
}

/** A proof that passed every check. */
export interface VerifiedDpopProof {
  /** Base64url SHA-256 JWK thumbprint of the proof's key: the token's `cnf.jkt`. @see RFC 7638 */
  jkt: string;
  jti: string;
  iat: number;
  /** The public key the proof was signed with. */
  jwk: JWK;
}

/**
 * Checks a DPoP proof JWT sent with a token request: `typ: dpop+jwt`, an asymmetric `alg`, an
 * embedded public `jwk` (no private members) that verifies the signature, `htm` and `htu` naming
 * this request, `iat` within ±60 s, and a `jti` not seen before within that window.
 * @throws DpopProofError with the `reason` of the first failed check.
 * @see RFC 9449 §4.2–4.3
 */
export async function verifyDpopProof(proof: unknown, options: VerifyDpopProofOptions): Promise<VerifiedDpopProof> {
  if (typeof proof !== 'string' || proof.split('.').length !== 3 || proof.length > 8192) {
    throw new DpopProofError('malformed', 'the DPoP header must hold one compact JWS (header.payload.signature)');
  }
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(proof);
  } catch (e) {
    throw new DpopProofError('malformed', 'the proof header is not base64url-encoded JSON', e);
  }
  if (header.typ !== 'dpop+jwt') {
    throw new DpopProofError('typ', `expected header typ "dpop+jwt", found ${JSON.stringify(header.typ ?? null)}`);
  }
  const alg = header.alg;
  if (typeof alg !== 'string' || !DPOP_ALGORITHMS.includes(alg)) {
    throw new DpopProofError('alg', `expected an asymmetric alg (${DPOP_ALGORITHMS.join(', ')}), found ${JSON.stringify(alg ?? null)}`);
  }
  const jwk = header.jwk as JWK | undefined;
  if (!jwk || typeof jwk !== 'object' || Array.isArray(jwk) || typeof jwk.kty !== 'string' || jwk.kty === 'oct') {
    throw new DpopProofError('jwk', 'expected the public key as a JWK in the header member "jwk"');
  }
  const leaked = PRIVATE_MEMBERS.filter((m) => (jwk as Record<string, unknown>)[m] !== undefined);
  if (leaked.length > 0) {
    throw new DpopProofError(
      'jwk',
      `the header jwk has private key members (${leaked.join(', ')}); send only the public key, and treat this private key as compromised`,
    );
  }
  let key: Awaited<ReturnType<typeof importJWK>>;
  try {
    key = await importJWK(jwk, alg);
  } catch (e) {
    throw new DpopProofError('jwk', `the header jwk is not a usable ${alg} public key (${(e as Error).message})`, e);
  }
  let payloadBytes: Uint8Array;
  try {
    ({ payload: payloadBytes } = await compactVerify(proof, key, { algorithms: [alg] }));
  } catch (e) {
    throw new DpopProofError('signature', 'the signature does not verify with the header jwk', e);
  }
  let payload: Record<string, unknown>;
  try {
    payload = JSON.parse(new TextDecoder().decode(payloadBytes)) as Record<string, unknown>;
    if (!payload || typeof payload !== 'object' || Array.isArray(payload)) throw new Error('not an object');
  } catch (e) {
    throw new DpopProofError('malformed', 'the proof payload is not a JSON object', e);
  }
  if (payload.htm !== options.method) {
    throw new DpopProofError('htm', `expected htm "${options.method}", found ${JSON.stringify(payload.htm ?? null)}`);
  }
  const htu = typeof payload.htu === 'string' ? normaliseHtu(payload.htu) : undefined;
  const allowed = options.urls.map(normaliseHtu).filter((u): u is string => Boolean(u));
  if (!htu || !allowed.includes(htu)) {
    throw new DpopProofError(
      'htu',
      `expected htu ${allowed.map((u) => `"${u}"`).join(' or ')}, found ${JSON.stringify(payload.htu ?? null)}`,
    );
  }
  const now = Math.floor((options.now ?? new Date()).getTime() / 1000);
  const skew = options.maxSkewSeconds ?? DPOP_MAX_SKEW_SECONDS;
  if (typeof payload.iat !== 'number' || !Number.isFinite(payload.iat) || Math.abs(payload.iat - now) > skew) {
    throw new DpopProofError(
      'iat',
      `expected iat within ${skew} s of the server's time (${now}), found ${JSON.stringify(payload.iat ?? null)}; make a fresh proof for each request and check the clock`,
    );
  }
  if (typeof payload.jti !== 'string' || payload.jti.length === 0 || payload.jti.length > 256) {
    throw new DpopProofError('jti', 'expected a unique jti string (1 to 256 characters)');
  }
  const jkt = await calculateJwkThumbprint(jwk, 'sha256');
  // A proof can be accepted until iat + skew; remembering it that long is enough to refuse any replay.
  const fresh = await options.remember(jkt, payload.jti, new Date((payload.iat + skew + 1) * 1000));
  if (!fresh)
    throw new DpopProofError(
      'replay',
      `this proof (jti "${payload.jti.slice(0, 64)}") was already used; make a new proof for every request`,
    );
  return { jkt, jti: payload.jti, iat: payload.iat, jwk };
}

/** `htu` compared per RFC 9449 §4.3: scheme and host case-insensitive, default port dropped, no query or fragment. */
function normaliseHtu(value: string): string | undefined {
  try {
    const url = new URL(value);
    url.search = '';
    url.hash = '';
    return url.href;
  } catch {
    return undefined;
  }
}

/** Base64url SHA-256 of `accessToken`: the `ath` claim of a proof that accompanies a bound token. @see RFC 9449 §4.2 */
export async function accessTokenHash(accessToken: string): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(accessToken));
  return base64url.encode(new Uint8Array(digest));
}
