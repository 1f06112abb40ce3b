import { randomUUID } from 'node:crypto';
import {
  type Duration,
  type KeyRotationSettings,
  type ListSigningKeysResponse,
  parseDuration,
  type RotateSigningKeysRequest,
  type RotateSigningKeysResponse,
  type SigningKeyInfo,
  TesseraError,
} from '@tessera/core';
import {
  buildJwks,
  exportPrivateJwk,
  generateSigningKey,
  importSigningKey,
  isPublished,
  type JsonWebKeySet,
  keyExpiry,
  keyState,
  readKeyFile,
  SIGNING_ALGORITHMS,
  type SigningAlgorithm,
  type SigningKey,
  writeKeyFile,
} from '@tessera/identity';
import type { JWK } from 'jose';
import { iso } from '../lib/clock.js';
import { fromJson, toJson } from '../lib/json.js';
import type { KeyRotationTable, SigningKeyTable } from '../store/schema.js';
import type { ServiceContext } from './context.js';

/** How long the JWKS may be cached by relying parties (`Cache-Control: max-age`), ms. */
export const JWKS_MAX_AGE_MS = 300_000;

/**
 * A retired key's expiry is computed only this long after it stopped signing, so a token signed
 * just before retirement and recorded a moment later is counted.
 */
const IN_FLIGHT_GRACE_MS = 30_000;

/** How long a rotation requested for every replica is kept: a replica silent longer is gone anyway. */
const BROADCAST_KEEP_MS = 86_400_000;

/** Key rotation settings as callers give them (durations as ms or `'10m'`). */
export interface KeySettingsOptions {
  /**
   * How long a new key is in the JWKS before it signs. Relying parties cache the JWKS (we serve it
   * with `max-age=300`; jose caches 10 minutes but refetches an unknown `kid` after 30 s), so this
   * must exceed what their caches hold. @default '10m'
   */
  prePublish?: Duration;
  /**
   * How long a key made at start is published before it signs, when this database has served a JWKS
   * before: at every start without a key file, and at the first start of a new replica. Relying
   * parties may hold a JWKS fetched just before the start (we serve it with `max-age=300`), and a
   * static copy (`tessera keys publish`) holds none of the new keys. Until it signs, token requests
   * to this replica answer 503 `ERR_KEY_PENDING` with `Retry-After`. 0: sign at once. Never longer
   * than `prePublish`. On a new database the first keys sign at once: no JWKS was ever served.
   * @default '5m' (the JWKS cache lifetime)
   */
  startPublish?: Duration;
  /** How often keys rotate on schedule; 0 turns scheduled rotation off. @default '30d' */
  rotationInterval?: Duration;
  /**
   * How long a retired key stays in the JWKS after the last token it signed expired: relying parties
   * accept tokens a little past `exp` (AWS about 5 minutes, Vault 150 s). @default '10m'
   */
  expiryLeeway?: Duration;
}

/** Options for {@link KeyManager.start}. */
export interface KeyManagerStartOptions extends KeySettingsOptions {
  /**
   * A file where private keys (a private JWK Set) are kept with mode 0600, so the same keys sign after
   * a restart. Without it, private keys exist only in this process's memory. @default none
   */
  keyFile?: string;
  /**
   * This replica's id (see `ReplicaRegistry`): the keys it generates are recorded as its own, and at
   * start it retires only keys that are its own or whose replica is gone, never a live replica's.
   * @default the id in the service context, else a random one
   */
  replicaId?: string;
}

/** Compiled key settings, ms. */
export interface KeySettings {
  prePublishMs: number;
  startPublishMs: number;
  rotationIntervalMs: number;
  expiryLeewayMs: number;
}

export const DEFAULT_KEY_SETTINGS: KeySettings = {
  prePublishMs: 10 * 60_000,
  startPublishMs: JWKS_MAX_AGE_MS,
  rotationIntervalMs: 30 * 86_400_000,
  expiryLeewayMs: 10 * 60_000,
};

/** A key whose private half this process holds, with its lifecycle times (ms). */
interface HeldKey {
  key: SigningKey;
  /** Only with a key file: what is written to it. */
  privateJwk: JWK | undefined;
  activatesAt: number;
  retiredAt: number | null;
  /** Signed access tokens while still pending (see `signingKey`'s `pending`): retire it, never drop it at once. */
  signedEarly?: boolean;
}

type KeyRow = SigningKeyTable;

const ms = (v: string | null): number | null => (v === null ? null : Date.parse(v));

/**
 * The issuer's signing keys. Private halves live in this process's memory (and in the key file when
 * one is configured); public halves and every key's lifecycle times live in the database, from which
 * every replica serves the same JWKS.
 *
 * With several replicas, each generates and holds its own keys (recorded with its replica id) and
 * publishes each one before it signs. Rotation is requested centrally — by the leader when a
 * replica's keys reach the rotation interval, or by `rotate()` on any replica for all of them — and
 * carried out by each replica on its own keys (see docs/keys.md).
 *
 * Rotation never breaks a relying party: a new key is published `prePublish` before it signs, and an
 * old key stays published until the last token it signed (recorded in `issued_tokens`) has expired,
 * plus a leeway. A key's state follows from its times alone (see `keyState`), and a rotation writes
 * the successor's activation time as the predecessor's retirement time, so the hand-over happens at
 * one instant with no background job involved.
 */
export class KeyManager {
  private readonly held = new Map<string, HeldKey>();
  /** Told of every private key this replica lets go of (retired past its tokens, revoked, superseded). */
  private readonly dropListeners: ((key: SigningKey) => void)[] = [];
  private settings: KeySettings = DEFAULT_KEY_SETTINGS;
  private keyFile: string | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private replicaId = '';
  /** Rotation requests requested before this replica started do not concern it: its keys are newer. */
  private startedAt = 0;
  /** Broadcast rotation requests this replica has applied (targeted ones are deleted once applied). */
  private readonly applied = new Set<string>();
  /** See {@link coverUnrecordedTokens}. */
  private accessTokenSigning: { alg: SigningAlgorithm; lifetimeMs: () => number } | undefined;

  constructor(
    private readonly ctx: ServiceContext,
    private readonly algorithms: readonly SigningAlgorithm[] = SIGNING_ALGORITHMS,
  ) {}

  /** The settings in force. */
  get rotationSettings(): KeyRotationSettings {
    return { ...this.settings, keyFile: this.keyFile !== undefined };
  }

  /**
   * Loads or generates the keys. With a key file, its keys sign again (a missing file is created).
   * Without one, fresh keys are generated: on a new database they sign at once (no JWKS was ever
   * served, so none can be cached); otherwise they are published now and sign `startPublish` later,
   * once every cache of the JWKS served so far has expired (see {@link KeySettingsOptions.startPublish}).
   * Keys a previous process left active are retired: they stay published until their tokens have expired.
   * @throws TesseraError `ERR_KEY_FILE_INSECURE` when the key file is readable by others.
   */
  async start(options: KeyManagerStartOptions = {}): Promise<void> {
    this.settings = compileKeySettings(options);
    this.keyFile = options.keyFile;
    this.replicaId = options.replicaId ?? this.ctx.replica?.id ?? randomUUID();
    return this.exclusive(async () => {
      const now = this.ctx.clock.now();
      this.startedAt = now;
      // Read before this start adds rows of its own.
      const firstActivation = await this.firstActivation(now);
      let fileChanged = false;
      if (this.keyFile) {
        const jwks = (await readKeyFile(this.keyFile)) ?? [];
        fileChanged = jwks.length === 0;
        for (const jwk of jwks) {
          const row = await this.row(jwk.kid as string);
          const key = await importSigningKey(jwk, new Date(row ? Date.parse(row.created_at) : now));
          if (!this.algorithms.includes(key.alg)) continue;
          if (row) {
            const state = keyState(rowTimes(row), now);
            if (state === 'expired' || state === 'revoked') {
              fileChanged = true;
              continue;
            }
            this.held.set(key.kid, { key, privateJwk: jwk, activatesAt: Date.parse(row.activates_at), retiredAt: ms(row.retired_at) });
            // The key file's keys are this process's now, whichever replica id wrote them.
            await this.ctx.db.updateTable('signing_keys').set({ replica_id: this.replicaId }).where('kid', '=', key.kid).execute();
          } else {
            // The database lost it (a new database, or a key file from elsewhere): publish it again; it
            // signs when a key made now would.
            await this.insert(key, now, firstActivation);
            this.held.set(key.kid, { key, privateJwk: jwk, activatesAt: firstActivation, retiredAt: null });
          }
        }
      }
      // Keys a previous process left signing: nobody holds their private half any more. Only keys
      // that were this replica's, or whose replica is gone: another live replica's keys sign on.
      await this.retireOrphans(now, [...this.held.keys()]);

      for (const alg of this.algorithms) {
        const signing = this.signingCandidates(alg, now);
        if (signing.length === 0 && !this.pending(alg, now)) {
          await this.create(alg, now, firstActivation);
          fileChanged = true;
        }
        // Two keys signing with one algorithm (an old key file on a new database): keep the newest.
        for (const extra of signing.slice(1)) await this.setRetired(extra, now);
      }
      if (fileChanged) await this.saveKeyFile();
    });
  }

  /**
   * The key that signs now with `alg`: the most recently activated held key that is not retired.
   * Synchronous and in memory: it is on the hot path of every token.
   * @param options.pending also a key still waiting out its pre-publication, when none signs yet:
   *   for tokens only Tessera verifies (its access tokens), against keys it reads from its database.
   * @param options.peek with `pending`, nothing is signed (a preview): a pending key returned is not
   *   marked as having signed early, which would keep it published longer after a rotation.
   * @throws TesseraError `ERR_KEY_PENDING` (503, `details.retryAfterSeconds`) while the only key of
   *   `alg` is published but not yet signing (made at start; see `startPublish`).
   */
  signingKey(alg: SigningAlgorithm = 'RS256', options: { pending?: boolean; peek?: boolean } = {}): SigningKey {
    const now = this.ctx.clock.now();
    const [current] = this.signingCandidates(alg, now);
    if (current) return current.key;
    const pending = this.pending(alg, now);
    if (pending && options.pending) {
      if (!options.peek) pending.signedEarly = true;
      return pending.key;
    }
    if (pending) {
      const retryAfterSeconds = Math.max(1, Math.ceil((pending.activatesAt - now) / 1000));
      throw new TesseraError(
        'ERR_KEY_PENDING',
        `this server's ${alg} signing key was made at its start and signs from ${iso(pending.activatesAt)}: relying parties that cached the JWKS must see it first. Retry in ${retryAfterSeconds} s. Operators: keep keys across restarts with --key-file (docs/keys.md)`,
        { details: { alg, activatesAt: iso(pending.activatesAt), retryAfterSeconds } },
      );
    }
    throw new TesseraError('ERR_INTERNAL', `no active ${alg} signing key: the key manager was not started, or ${alg} is not enabled`);
  }

  /** Algorithms whose only key is published but not signing yet, with when it starts (ISO). */
  pendingAlgorithms(): Partial<Record<SigningAlgorithm, string>> {
    const now = this.ctx.clock.now();
    const out: Partial<Record<SigningAlgorithm, string>> = {};
    for (const alg of this.algorithms) {
      const pending = this.signingCandidates(alg, now).length === 0 ? this.pending(alg, now) : undefined;
      if (pending) out[alg] = iso(pending.activatesAt);
    }
    return out;
  }

  /**
   * This replica's periodic work (every replica, every background-loop tick): applies the rotations
   * requested for its keys (scheduled by the leader, or asked through any replica), notices keys of
   * its own that were retired or revoked elsewhere, and forgets keys that left the JWKS.
   */
  async tick(): Promise<void> {
    return this.exclusive(async () => {
      const now = this.ctx.clock.now();
      await this.applyRotations(now);
      await this.reconcileHeld(now);
      await this.dropExpired(now);
    });
  }

  /**
   * The singleton part of key management (the leader only, see `Singleton`): requests the scheduled
   * rotation of each replica's keys when they are due, retires the keys of replicas that are gone,
   * and settles the expiry of retired keys from the tokens they signed.
   * @param leaderSince since when this replica has been the leader: a replica only counts as gone
   * once the leader itself has watched it stay silent for `replicaTimeoutMs` (after a database
   * outage, every replica looks silent for a while).
   */
  async maintain(leaderSince: number): Promise<void> {
    return this.exclusive(async () => {
      const now = this.ctx.clock.now();
      if (now - leaderSince >= this.ctx.settings.replicaTimeoutMs) await this.retireOrphans(now, [...this.held.keys()]);
      if (this.settings.rotationIntervalMs > 0) await this.scheduleRotations(now);
      await this.settleExpiries(now);
      await this.ctx.db
        .deleteFrom('key_rotations')
        .where('replica_id', 'is', null)
        .where('requested_at', '<', iso(now - BROADCAST_KEEP_MS))
        .execute();
    });
  }

  /**
   * Rotates now. Normally the new key is published at once and signs `prePublish` later, when the
   * current key retires. With `revokeCurrent` the new key signs at once and the current key leaves
   * the JWKS at once, so every token it signed stops verifying (for a compromised key).
   */
  async rotate(request: RotateSigningKeysRequest = {}): Promise<RotateSigningKeysResponse> {
    const algorithms = request.algorithms ?? [...this.algorithms];
    for (const alg of algorithms) {
      if (!this.algorithms.includes(alg)) {
        throw new TesseraError(
          'ERR_VALIDATION',
          `algorithms: ${alg} is not an algorithm this server signs with (${this.algorithms.join(', ')})`,
          {
            details: { field: 'algorithms' },
          },
        );
      }
    }
    return this.exclusive(async () => {
      const now = this.ctx.clock.now();
      const revokeCurrent = request.revokeCurrent === true;
      // Every replica rotates its own keys: this one now, the others at their next tick.
      const rotation: KeyRotationTable = {
        id: randomUUID(),
        requested_at: iso(now),
        replica_id: null,
        algorithms: toJson(algorithms),
        revoke_current: revokeCurrent ? 1 : 0,
        requested_by: toJson({ kind: 'server', id: this.replicaId, label: 'keys rotate' }),
      };
      await this.applyRotations(now);
      await this.ctx.db.insertInto('key_rotations').values(rotation).execute();
      this.applied.add(rotation.id);
      const kids = { created: [] as string[], revoked: [] as string[], superseded: [] as string[] };
      for (const alg of algorithms) {
        const r = await this.rotateOne(alg, revokeCurrent, now);
        kids.created.push(r.created);
        kids.revoked.push(...r.revoked);
        kids.superseded.push(...r.superseded);
      }
      if (revokeCurrent) {
        // A leak is an emergency: every key of these algorithms still in the JWKS leaves it now, not
        // at the next tick: every replica's signing key, but also keys retired and still published
        // until their tokens expire (a leaked key file holds their private halves too) and keys
        // waiting to sign. Only the keys this rotation made stay. Each replica notices at its next
        // tick and signs with a fresh key (reconcileHeld).
        const others = await this.ctx.db
          .selectFrom('signing_keys')
          .select('kid')
          .where('alg', 'in', algorithms)
          .where('revoked_at', 'is', null)
          .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', iso(now))]))
          .where('kid', 'not in', kids.created.length > 0 ? kids.created : [''])
          .execute();
        if (others.length > 0) {
          const list = others.map((o) => o.kid);
          await this.ctx.db
            .updateTable('signing_keys')
            .set({ retired_at: iso(now), expires_at: iso(now), revoked_at: iso(now) })
            .where('kid', 'in', list)
            .execute();
          kids.revoked.push(...list);
        }
      }
      const all = await this.describe();
      const pick = (list: string[]) => all.filter((k) => list.includes(k.kid));
      return { created: pick(kids.created), revoked: pick(kids.revoked), superseded: pick(kids.superseded) };
    });
  }

  /**
   * On shutdown. Without a key file the private keys die with this process, so they are retired: they
   * stay published until every token they signed has expired. With a key file they sign again after
   * the restart and stay as they are.
   */
  async stop(): Promise<void> {
    return this.exclusive(async () => {
      if (!this.keyFile) {
        const now = this.ctx.clock.now();
        for (const held of this.held.values()) if (held.retiredAt === null || held.retiredAt > now) await this.setRetired(held, now);
      }
      for (const held of [...this.held.values()]) this.drop(held);
    });
  }

  /**
   * Keys of `alg` also sign tokens nobody records (Tessera's access tokens, which live `lifetimeMs()`):
   * a retired one then stays published at least that long after it stopped signing, plus the leeway.
   */
  coverUnrecordedTokens(alg: SigningAlgorithm, lifetimeMs: () => number): void {
    this.accessTokenSigning = { alg, lifetimeMs };
  }

  /** Calls `listener` with each private key this replica lets go of, so that copies elsewhere (signer threads) go too. */
  onKeyDropped(listener: (key: SigningKey) => void): void {
    this.dropListeners.push(listener);
  }

  private drop(held: HeldKey): void {
    this.held.delete(held.key.kid);
    for (const listener of this.dropListeners) {
      try {
        listener(held.key);
      } catch {
        // A listener's failure must not keep the key here.
      }
    }
  }

  /** The JWKS: pending keys (published before they sign), the active ones, and retired keys whose tokens may still be valid. */
  async jwks(): Promise<JsonWebKeySet> {
    return buildJwks((await this.publishedRows()).map(({ row }) => JSON.parse(row.public_jwk) as JWK));
  }

  /** Every replica's keys that are published but do not sign yet, with when they start (for `keys publish`). */
  async pendingKeys(): Promise<{ kid: string; alg: SigningAlgorithm; activatesAt: string }[]> {
    return (await this.publishedRows())
      .filter(({ state }) => state === 'pending')
      .map(({ row }) => ({ kid: row.kid, alg: row.alg as SigningAlgorithm, activatesAt: row.activates_at }));
  }

  /** The keys in the JWKS now, newest first, with their states. */
  private async publishedRows(): Promise<{ row: KeyRow; state: ReturnType<typeof keyState> }[]> {
    const now = this.ctx.clock.now();
    const rows = await this.ctx.db
      .selectFrom('signing_keys')
      .selectAll()
      .where('revoked_at', 'is', null)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', iso(now))]))
      .orderBy('created_at', 'desc')
      .execute();
    return rows.map((row) => ({ row, state: keyState(rowTimes(row), now) })).filter(({ state }) => isPublished(state));
  }

  /** Every key the database knows, newest first, with its state and the tokens it signed. */
  async list(): Promise<ListSigningKeysResponse> {
    const now = this.ctx.clock.now();
    const nextRotationAt: ListSigningKeysResponse['nextRotationAt'] = {};
    for (const alg of this.algorithms) nextRotationAt[alg] = this.nextRotation(alg);
    return { items: await this.describe(), settings: this.rotationSettings, nextRotationAt, now: iso(now) };
  }

  /** When the next scheduled rotation of `alg` creates a new key (ISO), or null when scheduled rotation is off. */
  nextRotation(alg: SigningAlgorithm): string | null {
    const latest = this.latest(alg);
    if (!latest || this.settings.rotationIntervalMs <= 0) return null;
    return iso(latest.activatesAt + this.settings.rotationIntervalMs);
  }

  // ── internals ──

  /** Serialises start, tick, rotate and stop: each reads and writes several rows and the key file. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => {});
    return next;
  }

  /** Held keys of `alg` that may sign at `now`, most recently activated first. */
  private signingCandidates(alg: SigningAlgorithm, now: number): HeldKey[] {
    return [...this.held.values()]
      .filter((h) => h.key.alg === alg && h.activatesAt <= now && (h.retiredAt === null || h.retiredAt > now))
      .sort((a, b) => b.activatesAt - a.activatesAt);
  }

  /** The held key of `alg` that signs next: the earliest of those not yet signing. */
  private pending(alg: SigningAlgorithm, now: number): HeldKey | undefined {
    return [...this.held.values()]
      .filter((h) => h.key.alg === alg && h.activatesAt > now && (h.retiredAt === null || h.retiredAt > h.activatesAt))
      .sort((a, b) => a.activatesAt - b.activatesAt)[0];
  }

  /**
   * When a key made while none of its algorithm signs may start signing: at once when this database
   * has published no key within a JWKS cache lifetime (no JWKS lacking it can be held anywhere), else
   * `startPublish` from now. Revoked and expired keys count: a JWKS listing them may still be cached.
   */
  private async firstActivation(now: number): Promise<number> {
    if (this.settings.startPublishMs <= 0) return now;
    const published = await this.ctx.db
      .selectFrom('signing_keys')
      .select('kid')
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', iso(now - JWKS_MAX_AGE_MS))]))
      .limit(1)
      .executeTakeFirst();
    return published ? now + this.settings.startPublishMs : now;
  }

  /** The held key of `alg` activated last (or to activate last: a pending key). */
  private latest(alg: SigningAlgorithm): HeldKey | undefined {
    return [...this.held.values()].filter((h) => h.key.alg === alg).sort((a, b) => b.activatesAt - a.activatesAt)[0];
  }

  /**
   * Retires unheld keys that nobody can sign with any more: those without a replica (made before
   * replicas were recorded), this replica's own from a previous process (same id), and those of
   * replicas that stopped or have been silent for `replicaTimeoutMs`. Never a live replica's.
   */
  private async retireOrphans(now: number, heldKids: string[]): Promise<void> {
    const cutoff = iso(now - this.ctx.settings.replicaTimeoutMs);
    let orphans = this.ctx.db
      .updateTable('signing_keys')
      .set({ retired_at: iso(now) })
      .where('revoked_at', 'is', null)
      .where((eb) => eb.or([eb('retired_at', 'is', null), eb('retired_at', '>', iso(now))]))
      .where((eb) =>
        eb.or([
          eb('replica_id', 'is', null),
          eb('replica_id', '=', this.replicaId),
          eb(
            'replica_id',
            'not in',
            eb.selectFrom('replicas').select('id').where('stopped_at', 'is', null).where('last_seen_at', '>=', cutoff),
          ),
        ]),
      );
    if (heldKids.length > 0) orphans = orphans.where('kid', 'not in', heldKids);
    await orphans.execute();
  }

  /** Leader: asks each live replica to rotate the keys that reached the rotation interval. */
  private async scheduleRotations(now: number): Promise<void> {
    const cutoff = iso(now - this.ctx.settings.replicaTimeoutMs);
    const latest = await this.ctx.db
      .selectFrom('signing_keys as k')
      .innerJoin('replicas as r', 'r.id', 'k.replica_id')
      .select(['k.replica_id', 'k.alg', (eb) => eb.fn.max('k.activates_at').as('latest')])
      .where('k.revoked_at', 'is', null)
      .where('r.stopped_at', 'is', null)
      .where((eb) => eb.or([eb('r.last_seen_at', '>=', cutoff), eb('r.id', '=', this.replicaId)]))
      .groupBy(['k.replica_id', 'k.alg'])
      .execute();
    const due = new Map<string, SigningAlgorithm[]>();
    for (const row of latest) {
      const at = Date.parse(row.latest as string);
      if (at <= now && at + this.settings.rotationIntervalMs <= now && row.replica_id) {
        due.set(row.replica_id, [...(due.get(row.replica_id) ?? []), row.alg as SigningAlgorithm]);
      }
    }
    if (due.size === 0) return;
    // A request still waiting for its replica is not asked again.
    const waiting = new Set(
      (
        await this.ctx.db
          .selectFrom('key_rotations')
          .select('replica_id')
          .where('replica_id', 'in', [...due.keys()])
          .execute()
      ).map((r) => r.replica_id),
    );
    for (const [replicaId, algorithms] of due) {
      if (waiting.has(replicaId)) continue;
      await this.ctx.db
        .insertInto('key_rotations')
        .values({
          id: randomUUID(),
          requested_at: iso(now),
          replica_id: replicaId,
          algorithms: toJson(algorithms),
          revoke_current: 0,
          requested_by: toJson({ kind: 'server', id: 'key-rotation', label: 'scheduled key rotation' }),
        })
        .execute();
    }
  }

  /** Applies, to this replica's own keys, the rotations requested for it or for every replica. */
  private async applyRotations(now: number): Promise<void> {
    const requests = await this.ctx.db
      .selectFrom('key_rotations')
      .selectAll()
      .where((eb) =>
        eb.or([
          eb('replica_id', '=', this.replicaId),
          eb.and([eb('replica_id', 'is', null), eb('requested_at', '>=', iso(this.startedAt))]),
        ]),
      )
      .orderBy('requested_at')
      .orderBy('id')
      .execute();
    let failure: unknown;
    for (const r of requests) {
      if (this.applied.has(r.id)) continue;
      // Taken off the list before it is applied: a rotation that fails half-way (the key file cannot
      // be written: a read-only mount, a full disk) is not started again at every tick, each time
      // throwing away the key the last try made and pushing the hand-over back.
      if (r.replica_id === null) this.applied.add(r.id);
      else await this.ctx.db.deleteFrom('key_rotations').where('id', '=', r.id).execute();
      for (const alg of fromJson<SigningAlgorithm[]>(r.algorithms, [])) {
        if (!this.algorithms.includes(alg)) continue;
        // One algorithm failing does not keep the others from rotating.
        try {
          await this.rotateOne(alg, r.revoke_current === 1, now);
        } catch (e) {
          failure ??= e;
        }
      }
    }
    // Reported (the background loop logs it), once the requests are all handled.
    if (failure !== undefined) throw failure;
  }

  /**
   * Keys of this replica retired or revoked by another replica (an emergency rotation, or a leader
   * that took this replica for dead): adopt what the database says, and if an algorithm is left
   * with nothing to sign with, make a key that signs at once, as at start.
   */
  private async reconcileHeld(now: number): Promise<void> {
    const live = [...this.held.values()].filter((h) => h.retiredAt === null || h.retiredAt > now);
    if (live.length === 0 && this.held.size === 0) return;
    /** The key each algorithm was signing with before this look. */
    const signedWith = new Map<SigningAlgorithm, HeldKey>();
    for (const alg of this.algorithms) {
      const [current] = this.signingCandidates(alg, now);
      if (current) signedWith.set(alg, current);
    }
    /** Algorithms that had a key signing before this look (a lost one is replaced at once, an emergency). */
    const wasSigning = new Set(signedWith.keys());
    /** Rows of the keys looked at: whether a retired one is still published. */
    let rowsByKid = new Map<string, KeyRow>();
    if (live.length > 0) {
      const rows = await this.ctx.db
        .selectFrom('signing_keys')
        .selectAll()
        .where(
          'kid',
          'in',
          live.map((h) => h.key.kid),
        )
        .execute();
      const byKid = new Map(rows.map((r) => [r.kid, r]));
      rowsByKid = byKid;
      for (const h of live) {
        const row = byKid.get(h.key.kid);
        if (!row || row.revoked_at !== null) {
          this.drop(h);
        } else if (row.retired_at !== null && Date.parse(row.retired_at) !== h.retiredAt) {
          h.retiredAt = Date.parse(row.retired_at);
        }
      }
    }
    let changed = false;
    // Every algorithm left with nothing that signs or will sign gets a key. One that was signing a
    // moment ago signs at once (its replica was taken for dead, or its key revoked: an emergency); one
    // that was only waiting (a start's key, a rotation's successor) waits as a key made at start would.
    for (const alg of this.algorithms) {
      if (this.signingCandidates(alg, now).length > 0) continue;
      const successor = this.pending(alg, now);
      if (successor && !wasSigning.has(alg)) continue;
      // Retired by someone else (a leader that took this replica for dead), not revoked, and still
      // published: it goes on signing until a successor, published now, has waited out the caches. A
      // fresh key signing at once would name a kid no cached JWKS (or static copy) has yet.
      const previous = signedWith.get(alg);
      const row = previous && this.held.has(previous.key.kid) ? rowsByKid.get(previous.key.kid) : undefined;
      if (previous && row && row.revoked_at === null && (row.expires_at === null || Date.parse(row.expires_at) > now)) {
        const next = successor ?? (await this.create(alg, now, now + this.settings.prePublishMs));
        await this.ctx.db
          .updateTable('signing_keys')
          .set({ retired_at: iso(next.activatesAt), expires_at: null })
          .where('kid', '=', previous.key.kid)
          .execute();
        previous.retiredAt = next.activatesAt;
        changed = true;
        continue;
      }
      const bridge = await this.create(alg, now, wasSigning.has(alg) ? now : await this.firstActivation(now));
      // Until a pending successor activates; then it hands over as a rotation would.
      if (successor) await this.setRetired(bridge, successor.activatesAt);
      changed = true;
    }
    if (changed) await this.saveKeyFile();
  }

  private async rotateOne(
    alg: SigningAlgorithm,
    revokeCurrent: boolean,
    now: number,
  ): Promise<{ created: string; revoked: string[]; superseded: string[] }> {
    const superseded: string[] = [];
    const revoked: string[] = [];
    // A pending key signed no identity token: a new rotation replaces it, and it leaves the JWKS at
    // once — unless it signed access tokens while pending (a start's key); then it stays published
    // until they may have expired, like any retired key.
    for (const h of [...this.held.values()]) {
      if (h.key.alg === alg && h.activatesAt > now) {
        await this.ctx.db
          .updateTable('signing_keys')
          .set(h.signedEarly ? { retired_at: iso(now) } : { retired_at: iso(now), expires_at: iso(now) })
          .where('kid', '=', h.key.kid)
          .execute();
        this.drop(h);
        superseded.push(h.key.kid);
      }
    }
    const [current] = this.signingCandidates(alg, now);
    // With nothing signing (a start's key still pending), the new key waits as that one did, even for
    // an emergency: with no current key, there is nothing compromised to replace at once.
    const activatesAt = current ? (revokeCurrent ? now : now + this.settings.prePublishMs) : await this.firstActivation(now);
    const created = await this.create(alg, now, activatesAt);
    if (current) {
      if (revokeCurrent) {
        await this.ctx.db
          .updateTable('signing_keys')
          .set({ retired_at: iso(now), expires_at: iso(now), revoked_at: iso(now) })
          .where('kid', '=', current.key.kid)
          .execute();
        this.drop(current);
        revoked.push(current.key.kid);
      } else {
        // The hand-over instant: the current key stops signing exactly when the new one starts.
        await this.setRetired(current, activatesAt);
      }
    }
    await this.saveKeyFile();
    return { created: created.key.kid, revoked, superseded };
  }

  private async create(alg: SigningAlgorithm, now: number, activatesAt: number): Promise<HeldKey> {
    const key = await generateSigningKey(alg, new Date(now), { extractable: this.keyFile !== undefined });
    const privateJwk = this.keyFile ? await exportPrivateJwk(key) : undefined;
    await this.insert(key, now, activatesAt);
    const held: HeldKey = { key, privateJwk, activatesAt, retiredAt: null };
    this.held.set(key.kid, held);
    return held;
  }

  private async insert(key: SigningKey, now: number, activatesAt: number): Promise<void> {
    await this.ctx.db
      .insertInto('signing_keys')
      .values({
        kid: key.kid,
        alg: key.alg,
        public_jwk: JSON.stringify(key.publicJwk),
        created_at: iso(now),
        activates_at: iso(activatesAt),
        retired_at: null,
        expires_at: null,
        revoked_at: null,
        replica_id: this.replicaId,
      })
      .execute();
  }

  private async setRetired(held: HeldKey, at: number): Promise<void> {
    await this.ctx.db
      .updateTable('signing_keys')
      .set({ retired_at: iso(at) })
      .where('kid', '=', held.key.kid)
      .execute();
    held.retiredAt = at;
  }

  private row(kid: string): Promise<KeyRow | undefined> {
    return this.ctx.db.selectFrom('signing_keys').selectAll().where('kid', '=', kid).executeTakeFirst();
  }

  /**
   * Gives each retired key its expiry once it has stopped signing: the `exp` of the last token it
   * signed, plus the leeway. Keys still published are looked at again each time, so a token signed
   * late (by a replica that had not yet heard its key was retired) still keeps its key published.
   */
  private async settleExpiries(now: number): Promise<void> {
    const due = await this.ctx.db
      .selectFrom('signing_keys')
      .select(['kid', 'alg', 'retired_at', 'expires_at'])
      .where('revoked_at', 'is', null)
      .where('retired_at', 'is not', null)
      .where('retired_at', '<=', iso(now - IN_FLIGHT_GRACE_MS))
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', iso(now))]))
      .execute();
    for (const row of due) {
      const last = await this.ctx.db
        .selectFrom('issued_tokens')
        .select((eb) => eb.fn.max('expires_at').as('last'))
        .where('kid', '=', row.kid)
        .executeTakeFirst();
      const retiredAt = Date.parse(row.retired_at as string);
      // Access tokens are not recorded: a key that may have signed one stays until the longest could expire.
      const accessTokens = this.accessTokenSigning?.alg === row.alg ? retiredAt + this.accessTokenSigning.lifetimeMs() : null;
      const lastToken = Math.max(ms(last?.last ?? null) ?? retiredAt, accessTokens ?? retiredAt);
      const expiresAt = keyExpiry(retiredAt, lastToken, this.settings.expiryLeewayMs);
      if (row.expires_at !== null && Date.parse(row.expires_at) >= expiresAt) continue;
      await this.ctx.db
        .updateTable('signing_keys')
        .set({ expires_at: iso(expiresAt) })
        .where('kid', '=', row.kid)
        .execute();
    }
  }

  /** Drops keys that left the JWKS from memory and from the key file. */
  private async dropExpired(now: number): Promise<void> {
    let dropped = false;
    for (const held of [...this.held.values()]) {
      if (held.retiredAt === null || held.retiredAt > now) continue;
      const row = await this.row(held.key.kid);
      if (!row || !isPublished(keyState(rowTimes(row), now))) {
        this.drop(held);
        dropped = true;
      }
    }
    if (dropped) await this.saveKeyFile();
  }

  private async describe(): Promise<SigningKeyInfo[]> {
    const now = this.ctx.clock.now();
    const rows = await this.ctx.db.selectFrom('signing_keys').selectAll().orderBy('created_at', 'desc').limit(500).execute();
    const stats = await this.ctx.db
      .selectFrom('issued_tokens')
      .select(['kid', (eb) => eb.fn.countAll<number>().as('n'), (eb) => eb.fn.max('expires_at').as('last')])
      .groupBy('kid')
      .execute();
    const byKid = new Map(stats.map((s) => [s.kid, s]));
    return rows.map((r) => {
      const state = keyState(rowTimes(r), now);
      const s = byKid.get(r.kid);
      return {
        kid: r.kid,
        alg: r.alg as SigningAlgorithm,
        state,
        published: isPublished(state),
        held: this.held.has(r.kid),
        createdAt: r.created_at,
        activatesAt: r.activates_at,
        retiredAt: r.retired_at,
        expiresAt: r.expires_at,
        revokedAt: r.revoked_at,
        tokensIssued: Number(s?.n ?? 0),
        lastTokenExpiresAt: (s?.last as string | null | undefined) ?? null,
      };
    });
  }

  private async saveKeyFile(): Promise<void> {
    if (!this.keyFile) return;
    const keys = [...this.held.values()].map((h) => h.privateJwk).filter((k): k is JWK => k !== undefined);
    await writeKeyFile(this.keyFile, keys);
  }
}

function rowTimes(r: KeyRow) {
  return { activatesAt: Date.parse(r.activates_at), retiredAt: ms(r.retired_at), expiresAt: ms(r.expires_at), revokedAt: ms(r.revoked_at) };
}

/** Options → compiled settings (ms). */
export function compileKeySettings(options: KeySettingsOptions = {}): KeySettings {
  const prePublishMs =
    options.prePublish === undefined ? DEFAULT_KEY_SETTINGS.prePublishMs : parseDuration(options.prePublish, 'keys.prePublish');
  const startPublishMs =
    options.startPublish === undefined ? DEFAULT_KEY_SETTINGS.startPublishMs : parseDuration(options.startPublish, 'keys.startPublish');
  return {
    prePublishMs,
    startPublishMs: Math.min(startPublishMs, prePublishMs),
    rotationIntervalMs:
      options.rotationInterval === undefined
        ? DEFAULT_KEY_SETTINGS.rotationIntervalMs
        : parseDuration(options.rotationInterval, 'keys.rotationInterval'),
    expiryLeewayMs:
      options.expiryLeeway === undefined ? DEFAULT_KEY_SETTINGS.expiryLeewayMs : parseDuration(options.expiryLeeway, 'keys.expiryLeeway'),
  };
}
