import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { iso } from '../lib/clock.js';
import type { ServiceContext } from './context.js';

/** How long the row of a replica that stopped (or went silent) is kept, for operators. */
const KEEP_GONE_REPLICAS_MS = 7 * 86_400_000;

/** A replica id: the host name and a random suffix, so two processes on one host differ. */
export function generateReplicaId(): string {
  return `${hostname().slice(0, 60)}-${randomBytes(4).toString('hex')}`;
}

/**
 * This server process as one replica among those sharing the database. Its row in `replicas` is
 * written at start, touched every background-loop tick, and marked stopped at a clean shutdown; a
 * replica whose row was not touched for `replicaTimeoutMs` is considered dead (its signing keys are
 * then retired by the leader, since nobody holds their private halves any more).
 */
export class ReplicaRegistry {
  constructor(
    private readonly ctx: ServiceContext,
    /** Unique among the replicas; stable across restarts only when the operator sets it (`TESSERA_REPLICA_ID`). */
    readonly id: string,
  ) {}

  private url: string | null = null;
  private startedAt = '';

  /** Records this replica as alive. A restart with the same id takes over its row. */
  async register(): Promise<void> {
    this.startedAt = iso(this.ctx.clock.now());
    await this.heartbeat();
  }

  /** Where this replica answers, once it listens. */
  async setUrl(url: string): Promise<void> {
    this.url = url;
    await this.heartbeat();
  }

  /** Tells the others this replica is alive (writing its row again if it was pruned meanwhile). */
  async heartbeat(): Promise<void> {
    const now = iso(this.ctx.clock.now());
    const values = {
      url: this.url,
      host: hostname(),
      pid: process.pid,
      started_at: this.startedAt || now,
      last_seen_at: now,
      stopped_at: null,
    };
    await this.ctx.db
      .insertInto('replicas')
      .values({ id: this.id, ...values })
      .onConflict((oc) => oc.column('id').doUpdateSet(values))
      .execute();
  }

  /** At a clean shutdown. */
  async stop(): Promise<void> {
    const now = iso(this.ctx.clock.now());
    await this.ctx.db.updateTable('replicas').set({ last_seen_at: now, stopped_at: now }).where('id', '=', this.id).execute();
  }

  /** Leader's housekeeping: forgets replicas gone for a week. */
  async prune(): Promise<void> {
    const before = iso(this.ctx.clock.now() - KEEP_GONE_REPLICAS_MS);
    await this.ctx.db.deleteFrom('replicas').where('last_seen_at', '<', before).where('id', '!=', this.id).execute();
  }
}
