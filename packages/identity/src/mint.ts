import { randomFillSync } from 'node:crypto';
import { type RunTokenClaims, TesseraError } from '@tessera/core';
import type { SigningKey } from './keys.js';
import { type JwsSigner, poolSigner } from './signer.js';

/** Claims {@link mintRunToken} sets itself from its options. */
const REGISTERED_CLAIMS = ['iss', 'sub', 'aud', 'iat', 'nbf', 'exp', 'jti'] as const;

/** The claims a caller of {@link mintRunToken} gives: every run-token claim but the registered ones it sets. */
export type RunTokenOwnClaims = Omit<RunTokenClaims, (typeof REGISTERED_CLAIMS)[number]>;

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
  claims: RunTokenOwnClaims;
  /** @default new Date() */
  now?: Date;
  /** Who makes the signature. @default {@link poolSigner} (libuv's pool) */
  signer?: JwsSigner;
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
 * {@link NBF_BACKDATE_SECONDS}, unique `jti` (a UUIDv7, see {@link uuidV7}).
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
  const jti = uuidV7(now.getTime());
  const registered = {
    iss: options.issuer,
    sub: options.subject,
    aud: options.audience,
    iat,
    nbf: iat - NBF_BACKDATE_SECONDS,
    exp,
    jti,
  };
  let json: string;
  if (REGISTERED_CLAIMS.some((name) => Object.hasOwn(options.claims, name))) {
    // A caller passing registered claims (a whole decoded payload): the options win, as in a merge.
    json = JSON.stringify({ ...options.claims, ...registered });
  } else {
    // The usual path: two JSON texts joined, not a merged object. Spreading the caller's claims into
    // a new object made V8 build new hidden classes for every token (about 4 KB in the old
    // generation each, freed only by a full GC).
    const rest = JSON.stringify(options.claims);
    json = rest === '{}' ? JSON.stringify(registered) : `${JSON.stringify(registered).slice(0, -1)},${rest.slice(1)}`;
  }
  const token = await signCompactJwtText(options.key, json, options.signer);
  return { token, jti, issuedAt: new Date(iat * 1000), expiresAt: new Date(exp * 1000) };
}

/** Encoded protected headers by key: one per key, so they are built once. */
const encodedHeaders = new WeakMap<SigningKey, string>();

/**
 * Signs `payload` as a compact JWS (RFC 7515) with `{ alg, typ: "JWT", kid }`, with `signer` (by
 * default on libuv's pool, see {@link poolSigner}). ES256 signatures are IEEE P1363 (R‖S), as JWS
 * requires (RFC 7518 §3.4). Verified in tests by jose, PyJWT and the cloud SDKs.
 */
export function signCompactJwt(key: SigningKey, payload: Record<string, unknown>, signer: JwsSigner = poolSigner): Promise<string> {
  return signCompactJwtText(key, JSON.stringify(payload), signer);
}

/** {@link signCompactJwt} for a payload already serialised: `json` must be one JSON object. */
export async function signCompactJwtText(key: SigningKey, json: string, signer: JwsSigner = poolSigner): Promise<string> {
  let header = encodedHeaders.get(key);
  if (header === undefined) {
    header = Buffer.from(JSON.stringify({ alg: key.alg, typ: 'JWT', kid: key.kid })).toString('base64url');
    encodedHeaders.set(key, header);
  }
  const input = `${header}.${Buffer.from(json).toString('base64url')}`;
  return `${input}.${await signer.sign(key, input)}`;
}

/** Random bytes drawn 4 KiB at a time: one system call per 256 ids, not one each. */
const randomPool = Buffer.alloc(4096);
let randomOffset = randomPool.length;

/**
 * A UUID version 7 (RFC 9562 §5.7): 48 bits of Unix time in milliseconds, then 74 random bits. The
 * server records every `jti` in an index; ids that grow with time are appended to it instead of
 * landing at random pages, which halves the cost of recording an issuance. The time it shows is the
 * token's `iat` anyway; 74 random bits keep ids unique and unguessable.
 */
export function uuidV7(ms: number = Date.now()): string {
  if (randomOffset + 10 > randomPool.length) {
    randomFillSync(randomPool);
    randomOffset = 0;
  }
  const b = Buffer.allocUnsafe(16);
  b.writeUIntBE(Math.max(0, Math.floor(ms)) % 2 ** 48, 0, 6);
  randomPool.copy(b, 6, randomOffset, randomOffset + 10);
  randomPool.fill(0, randomOffset, randomOffset + 10);
  randomOffset += 10;
  b[6] = 0x70 | ((b[6] as number) & 0x0f);
  b[8] = 0x80 | ((b[8] as number) & 0x3f);
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
