import { EventEmitter } from 'node:events';

/**
 * In-process wake-ups for long polls: a run became claimable in a pool, or a worker's run must be
 * cancelled. With several replicas (issue #6) the same signals arrive through LISTEN/NOTIFY.
 */
export class Wakeups {
  private readonly emitter = new EventEmitter();
  constructor() {
    this.emitter.setMaxListeners(0);
  }

  poolChanged(poolId: string): void {
    this.emitter.emit(`pool:${poolId}`);
  }

  workerChanged(workerId: string): void {
    this.emitter.emit(`worker:${workerId}`);
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
