import { EventEmitter } from 'node:events';

/** A key a bus delivers when it may have missed some (it reconnected): every waiter looks again. */
export const WAKE_ALL = '*';

/** Carries wake-ups between replicas (PostgreSQL LISTEN/NOTIFY). */
export interface WakeupBus {
  /** Sends `key` to every replica. Best effort: a wake-up lost in transit costs a poll cycle, never a run. */
  publish(key: string): void;
  /**
   * Starts delivering keys published by the other replicas to `deliver` (never this one's own: it
   * woke its waiters itself), and {@link WAKE_ALL} after an interruption.
   */
  subscribe(deliver: (key: string) => void): Promise<void>;
  close(): Promise<void>;
}

/**
 * Wake-ups for long polls: a run became claimable in a pool, or a worker's run must be cancelled.
 * In-process listeners are woken at once; with a bus (PostgreSQL), every replica's are too, so a
 * worker polling replica B starts a run created on replica A without waiting for its poll to end.
 */
export class Wakeups {
  private readonly emitter = new EventEmitter();
  private bus: WakeupBus | undefined;

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  /** Connects the cross-replica bus. Local delivery stays immediate; the bus adds the others. */
  async attach(bus: WakeupBus): Promise<void> {
    await bus.subscribe((key) => this.emitter.emit(key));
    this.bus = bus;
  }

  /** Whether a cross-replica bus is attached. */
  get attached(): boolean {
    return this.bus !== undefined;
  }

  async close(): Promise<void> {
    await this.bus?.close();
    this.bus = undefined;
  }

  poolChanged(poolId: string): void {
    this.fire(`pool:${poolId}`);
  }

  /**
   * A slot under a concurrency limit may be free: a run of the pool left Pending, Running or
   * Cancelling, or a deployment's limit changed. Only polls that found every due run held back by the
   * limits wait for this.
   */
  slotFreed(poolId: string): void {
    this.fire(`slots:${poolId}`);
  }

  workerChanged(workerId: string): void {
    this.fire(`worker:${workerId}`);
  }

  private fire(key: string): void {
    this.emitter.emit(key);
    this.bus?.publish(key);
  }

  /**
   * Starts noting which of `keys` (and {@link WAKE_ALL}) fire, for a caller that decides what to wait
   * for only after reading the database: what fired in between is in `fired`, not lost. `stop()` ends it.
   */
  record(keys: string[]): { fired: Set<string>; stop(): void } {
    const fired = new Set<string>();
    const listeners = [...keys, WAKE_ALL].map((k) => [k, () => fired.add(k)] as const);
    for (const [k, fn] of listeners) this.emitter.on(k, fn);
    const stop = () => {
      for (const [k, fn] of listeners) this.emitter.off(k, fn);
    };
    return { fired, stop };
  }

  /**
   * Resolves when one of `keys` fires (with that key), or with `null` after `ms`, when `signal`
   * aborts, or when the bus may have missed wake-ups ({@link WAKE_ALL}): then anything may have changed.
   */
  wait(keys: string[], ms: number, signal?: AbortSignal): Promise<string | null> {
    return new Promise((resolve) => {
      const listeners = [...keys.map((k) => [k, () => done(k)] as const), [WAKE_ALL, () => done(null)] as const];
      const done = (key: string | null) => {
        clearTimeout(timer);
        for (const [k, fn] of listeners) this.emitter.off(k, fn);
        signal?.removeEventListener('abort', onAbort);
        resolve(key);
      };
      const onAbort = () => done(null);
      const timer = setTimeout(onAbort, Math.max(0, ms));
      for (const [k, fn] of listeners) this.emitter.once(k, fn);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
