import type { Clock } from '../lib/clock.js';
import type { Lease } from '../store/dialect.js';

/** Lock number of the lease behind the singleton services (scheduler, zombie detection, key maintenance). */
export const SINGLETON_LOCK_ID = 1;

/** Options for {@link Singleton}. */
export interface SingletonOptions {
  /** From the store: an advisory lock on PostgreSQL, always held on SQLite. */
  lease: Lease;
  clock: Clock;
  /** Called when this replica becomes the leader or stops being it. */
  onChange?: (leader: boolean) => void;
}

/**
 * Leader election for the singleton services. Every replica calls {@link Singleton.check} once per
 * background-loop tick; the one that holds the lease runs the scheduler, the zombie detector and
 * key maintenance, the others only their own per-replica work. When the leader dies its lease
 * goes with its database session, and another replica takes it at its next tick.
 *
 * The lease is an efficiency, not what keeps runs correct: every singleton service is also safe when
 * two replicas run it at once for a moment (schedule slots are unique, transitions compare-and-set),
 * which is what a failover can briefly cause.
 */
export class Singleton {
  private since: number | null = null;

  constructor(private readonly options: SingletonOptions) {}

  /** Takes the lease if it is free, or confirms this replica still holds it. Never throws. */
  async check(): Promise<boolean> {
    const held = await this.options.lease.check();
    if (held && this.since === null) {
      this.since = this.options.clock.now();
      this.options.onChange?.(true);
    } else if (!held && this.since !== null) {
      this.since = null;
      this.options.onChange?.(false);
    }
    return held;
  }

  /** Whether this replica held the lease at its last check. */
  get isLeader(): boolean {
    return this.since !== null;
  }

  /** Since when this replica has held the lease without interruption (ms), or null. */
  get leaderSince(): number | null {
    return this.since;
  }

  /** Gives the lease up, so another replica takes over at its next tick rather than after a timeout. */
  async close(): Promise<void> {
    const was = this.since !== null;
    this.since = null;
    await this.options.lease.close();
    if (was) this.options.onChange?.(false);
  }
}
