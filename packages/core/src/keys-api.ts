import type { TokenAlgorithm } from './api.js';

/**
 * Where a signing key is in its life. Keys move one way:
 * `pending` (published in the JWKS, not signing yet) → `active` (signs new tokens) → `retired`
 * (no longer signs, still published until every token it signed has expired) → `expired` (gone
 * from the JWKS). `revoked` keys were removed from the JWKS at once (`tessera keys rotate
 * --revoke-current`): tokens they signed no longer verify.
 */
export type SigningKeyState = 'pending' | 'active' | 'retired' | 'expired' | 'revoked';

/** One signing key as `GET /api/keys` describes it: public facts only, never private material. */
export interface SigningKeyInfo {
  kid: string;
  alg: TokenAlgorithm;
  state: SigningKeyState;
  /** True while the key is in the JWKS (pending, active, retired). */
  published: boolean;
  /** True when this server process holds the private half (it can sign with it). */
  held: boolean;
  /** When it was made and published. */
  createdAt: string;
  /** When it starts (or started) signing. */
  activatesAt: string;
  /** When it stops (or stopped) signing; null while no successor is scheduled. */
  retiredAt: string | null;
  /** When it leaves (or left) the JWKS; null until known (its last token's expiry plus the leeway). */
  expiresAt: string | null;
  /** When it was revoked (removed from the JWKS at once); null otherwise. */
  revokedAt: string | null;
  /** Tokens it signed that the server recorded. */
  tokensIssued: number;
  /** Expiry of the last token it signed, if any. */
  lastTokenExpiresAt: string | null;
}

/** The key-rotation settings in force on the server, ms. */
export interface KeyRotationSettings {
  /** How long a new key is published before it signs. */
  prePublishMs: number;
  /**
   * How long a key made at start (no key file; a new replica) is published before it signs, when this
   * database has published keys before. 0: it signs at once.
   */
  startPublishMs: number;
  /** How often keys rotate on schedule; 0 disables scheduled rotation. */
  rotationIntervalMs: number;
  /** How long a retired key stays published after its last token's `exp`. */
  expiryLeewayMs: number;
  /** True when private keys are persisted in a key file (they survive a restart). */
  keyFile: boolean;
}

/** `GET /api/keys`. */
export interface ListSigningKeysResponse {
  items: SigningKeyInfo[];
  settings: KeyRotationSettings;
  /** The next scheduled rotation per algorithm (null when scheduled rotation is off). */
  nextRotationAt: Partial<Record<TokenAlgorithm, string | null>>;
  /** The server's time, so clients can judge the states. */
  now: string;
}

/** `POST /api/keys/rotate`. */
export interface RotateSigningKeysRequest {
  /**
   * Emergency rotation for a compromised key: the new key signs at once and the current key leaves
   * the JWKS at once, so the tokens it signed stop verifying. @default false
   */
  revokeCurrent?: boolean;
  /** Rotate only these algorithms. @default every algorithm the server signs with */
  algorithms?: TokenAlgorithm[];
}

/** The answer to a rotation. */
export interface RotateSigningKeysResponse {
  /** The new keys (pending, or active at once with `revokeCurrent`). */
  created: SigningKeyInfo[];
  /** Keys removed from the JWKS at once (`revokeCurrent`). */
  revoked: SigningKeyInfo[];
  /** Pending keys replaced by this rotation before they ever signed. */
  superseded: SigningKeyInfo[];
}

/**
 * `GET /api/keys/publication`: what to serve from a static site (a public bucket) standing in for
 * the issuer: the discovery document and the JWKS, pending and retired-but-unexpired keys included.
 */
export interface KeyPublication {
  /** The issuer the documents name. */
  issuer: string;
  /** The server's own issuer (the `iss` of its tokens); differs from `issuer` when misconfigured. */
  serverIssuer: string;
  /** `.well-known/openid-configuration`. */
  openidConfiguration: Record<string, unknown>;
  /** `.well-known/jwks.json`. */
  jwks: { keys: Record<string, unknown>[] };
  /** The next scheduled rotation (null when scheduled rotation is off): its new key is not in `jwks`. */
  nextRotationAt: string | null;
  /**
   * After `nextRotationAt`, publish again before this time: the new key's activation less the time
   * relying parties may cache the JWKS. Null when scheduled rotation is off; then publish after
   * every `tessera keys rotate`.
   */
  republishBy: string | null;
  /** How long the site's caches may keep the files, as asked (`cacheMaxAge`), ms. */
  cacheMaxAgeMs: number;
  /**
   * What could make a relying party meet a `kid` the published files lack: a pending key that signs
   * sooner than the site's caches refresh; keys that exist only in the server's memory (a restart makes
   * new ones, which no copy has). One sentence each, for people.
   */
  warnings: string[];
}
