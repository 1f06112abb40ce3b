import { buildJwks, generateSigningKey, type JsonWebKeySet, type SigningAlgorithm, type SigningKey } from '@tessera/identity';
import type { JWK } from 'jose';
import { iso } from '../lib/clock.js';
import type { ServiceContext } from './context.js';

/**
 * Holds this server's signing key in memory and publishes its public half in the database, from
 * which every replica serves the JWKS. A key is published before it signs; a retired key stays
 * published until every token it signed has expired (issue #3 adds scheduled rotation).
 */
export class KeyManager {
  private active: SigningKey | undefined;

  constructor(
    private readonly ctx: ServiceContext,
    private readonly alg: SigningAlgorithm = 'RS256',
  ) {}

  async start(): Promise<void> {
    const key = await generateSigningKey(this.alg, new Date(this.ctx.clock.now()));
    const now = iso(this.ctx.clock.now());
    await this.ctx.db
      .insertInto('signing_keys')
      .values({
        kid: key.kid,
        alg: key.alg,
        public_jwk: JSON.stringify(key.publicJwk),
        created_at: now,
        activates_at: now,
        retired_at: null,
        expires_at: null,
      })
      .execute();
    this.active = key;
  }

  /** The key that signs now. */
  signingKey(): SigningKey {
    if (!this.active) throw new Error('KeyManager.start() was not called');
    return this.active;
  }

  /**
   * Marks the key retired on shutdown: it stays in the JWKS until `expiresAt` (the longest lifetime
   * a token it signed can have), so tokens already handed out keep verifying.
   */
  async retire(maxTokenLifetimeMs: number): Promise<void> {
    if (!this.active) return;
    const now = this.ctx.clock.now();
    await this.ctx.db
      .updateTable('signing_keys')
      .set({ retired_at: iso(now), expires_at: iso(now + maxTokenLifetimeMs + 60_000) })
      .where('kid', '=', this.active.kid)
      .execute();
    this.active = undefined;
  }

  /** The JWKS: every key not yet past its `expires_at`. */
  async jwks(): Promise<JsonWebKeySet> {
    const now = iso(this.ctx.clock.now());
    const rows = await this.ctx.db
      .selectFrom('signing_keys')
      .select(['public_jwk'])
      .where('activates_at', '<=', now)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
      .orderBy('created_at', 'desc')
      .execute();
    return buildJwks(rows.map((r) => JSON.parse(r.public_jwk) as JWK));
  }
}
