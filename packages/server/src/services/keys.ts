import { buildJwks, generateSigningKey, type JsonWebKeySet, type SigningAlgorithm, type SigningKey } from '@tessera/identity';
import type { JWK } from 'jose';
import { iso } from '../lib/clock.js';
import type { ServiceContext } from './context.js';

/**
 * Holds this server's signing keys (one per algorithm) in memory and publishes their public halves
 * in the database, from which every replica serves the JWKS. A key is published before it signs; a
 * retired key stays published until every token it signed has expired.
 */
export class KeyManager {
  private readonly active = new Map<SigningAlgorithm, SigningKey>();

  constructor(
    private readonly ctx: ServiceContext,
    private readonly algorithms: SigningAlgorithm[] = ['RS256', 'ES256'],
  ) {}

  async start(): Promise<void> {
    for (const alg of this.algorithms) {
      const key = await generateSigningKey(alg, new Date(this.ctx.clock.now()));
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
      this.active.set(alg, key);
    }
  }

  /** The key that signs now with `alg`. */
  signingKey(alg: SigningAlgorithm = 'RS256'): SigningKey {
    const key = this.active.get(alg);
    if (!key) throw new Error(`no active ${alg} signing key: KeyManager.start() was not called`);
    return key;
  }

  /**
   * Retires the keys on shutdown: they stay in the JWKS until `expiresAt` (the longest lifetime a
   * token they signed can have), so tokens already handed out keep verifying.
   */
  async retire(maxTokenLifetimeMs: number): Promise<void> {
    const now = this.ctx.clock.now();
    for (const key of this.active.values()) {
      await this.ctx.db
        .updateTable('signing_keys')
        .set({ retired_at: iso(now), expires_at: iso(now + maxTokenLifetimeMs + 60_000) })
        .where('kid', '=', key.kid)
        .execute();
    }
    this.active.clear();
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
