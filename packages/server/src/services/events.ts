import { EventEmitter } from 'node:events';

/** Carries wake-ups between replicas (PostgreSQL LISTEN/NOTIFY). */
export interface WakeupBus {
  publish(key: string): void;
  /** Starts delivering keys published by any replica (including this one) to `deliver`. */
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
