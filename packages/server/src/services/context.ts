import type { Kysely } from 'kysely';
import type { Clock } from '../lib/clock.js';
import type { StoreDialect } from '../store/dialect.js';
import type { Database } from '../store/schema.js';
import type { Wakeups } from './events.js';

/** What every service needs: the database, its dialect, the clock and the wake-up bus. */
export interface ServiceContext {
  db: Kysely<Database>;
  dialect: StoreDialect;
  clock: Clock;
  wakeups: Wakeups;
  settings: OrchestrationSettings;
  /** This process among the replicas sharing the database (set by `startServer`). */
  replica?: ReplicaStatus;
}

/** What a replica knows of itself: its id and whether it runs the singleton services now. */
export interface ReplicaStatus {
  readonly id: string;
  /** Holds the singleton lease: runs the scheduler, zombie detection and key maintenance. */
  isLeader(): boolean;
}

/** Orchestration timings, all in ms. */
export interface OrchestrationSettings {
  /** A worker silent for this long is considered dead; its runs become Crashed. @default 60000 */
  heartbeatTimeoutMs: number;
  /** How often the scheduler and the zombie detector run. @default 5000 */
  loopIntervalMs: number;
  /** A Scheduled run not started this long after its time is marked Late. @default 15000 */
  lateAfterMs: number;
  /** How far ahead the scheduler creates runs. @default 3600000 */
  scheduleHorizonMs: number;
  /** At most this many upcoming runs per schedule. @default 10 */
  maxScheduledRuns: number;
  /** Longest a worker's poll is held open. @default 30000 */
  maxPollWaitMs: number;
  /** A claimed (Pending) run its worker never mentions again for this long is given back. @default 30000 */
  lostClaimAfterMs: number;
  /** Max identity tokens per run per minute. @default 120 */
  tokenRateLimitPerMinute: number;
  /**
   * Shortest identity-token lifetime a run may ask for, ms (also the floor for token-file lifetimes
   * at deploy time). Lower it only in tests, to watch token files refresh. @default 60000
   */
  minTokenLifetimeMs: number;
  /**
   * A server replica that has not written its heartbeat (every loop tick) for this long is dead:
   * the leader retires its signing keys, whose private halves died with it. @default 60000
   */
  replicaTimeoutMs: number;
}

export const DEFAULT_SETTINGS: OrchestrationSettings = {
  heartbeatTimeoutMs: 60_000,
  loopIntervalMs: 5_000,
  lateAfterMs: 15_000,
  scheduleHorizonMs: 3_600_000,
  maxScheduledRuns: 10,
  maxPollWaitMs: 30_000,
  lostClaimAfterMs: 30_000,
  tokenRateLimitPerMinute: 120,
  minTokenLifetimeMs: 60_000,
  replicaTimeoutMs: 60_000,
};
