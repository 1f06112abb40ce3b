import { EventEmitter } from 'node:events';

/** A key a bus delivers when it may have missed some (it reconnected): every waiter looks again. */
export const WAKE_ALL = '*';

/** Carries wake-ups between replicas (PostgreSQL LISTEN/NOTIFY). */
export interface WakeupBus {
  /** Sends `key` to every replica. Best effort: a wake-up lost in transit costs a poll cycle, never a run. */
  publish(key: string): void;
  /**
   * Starts delivering keys published by any replica (including this one) to `deliver`, and
   * {@link WAKE_ALL} after an interruption.
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
    await bus.subscribe((key) => {
      if (key !== WAKE_ALL) this.emitter.emit(key);
      else for (const name of this.emitter.eventNames()) this.emitter.emit(name);
    });
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

  workerChanged(workerId: string): void {
    this.fire(`worker:${workerId}`);
  }

  private fire(key: string): void {
    this.emitter.emit(key);
    this.bus?.publish(key);
  }

  /** Resolves when either key fires, after `ms`, or when `signal` aborts. */
  wait(keys: string[], ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        for (const k of keys) this.emitter.off(k, done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      for (const k of keys) this.emitter.once(k, done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}
