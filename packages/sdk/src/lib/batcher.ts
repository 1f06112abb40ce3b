/** Options for {@link Batcher}. */
export interface BatcherOptions<T> {
  /** Sends one batch; items are passed in the order they were pushed. */
  send: (items: T[]) => Promise<unknown>;
  /** Longest an item waits in the queue before a send starts, ms. @default 50 */
  intervalMs?: number;
  /** Items per request; reaching it starts a send at once. @default 500 */
  maxItems?: number;
  /** Approximate bytes per request (see `weigh`), so a batch stays under the server's body limit. @default Infinity */
  maxBytes?: number;
  /** Approximate size of one item, for `maxBytes`. */
  weigh?: (item: T) => number;
  /** Called when a batch could not be sent (after the client's own retries); the batch is dropped. */
  onError?: (error: unknown, dropped: number) => void;
}

/**
 * Queues items and sends them in ordered batches: one request in flight at a time, a send every
 * `intervalMs` or as soon as `maxItems` are queued. `push` is synchronous and never waits for the
 * network, which keeps task reporting off the hot path.
 */
export class Batcher<T> {
  private queue: T[] = [];
  private timer: NodeJS.Timeout | undefined;
  private pumping: Promise<void> | undefined;
  private draining = 0;
  private closed = false;
  private readonly send: (items: T[]) => Promise<unknown>;
  private readonly intervalMs: number;
  private readonly maxItems: number;
  private readonly maxBytes: number;
  private readonly weigh: ((item: T) => number) | undefined;
  private readonly onError: (error: unknown, dropped: number) => void;
  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.kick();
  };

  constructor(options: BatcherOptions<T>) {
    this.send = options.send;
    this.intervalMs = options.intervalMs ?? 50;
    this.maxItems = Math.max(1, options.maxItems ?? 500);
    this.maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY;
    this.weigh = options.weigh;
    this.onError = options.onError ?? (() => {});
  }

  /** Items waiting to be sent. */
  get pending(): number {
    return this.queue.length;
  }

  /** Queues an item; ignored once the batcher is closed. */
  push(item: T): void {
    if (this.closed) return;
    this.queue.push(item);
    if (this.pumping) return;
    if (this.queue.length >= this.maxItems) this.kick();
    else if (this.timer === undefined) {
      this.timer = setTimeout(this.onTimer, this.intervalMs);
      this.timer.unref();
    }
  }

  /** Sends everything queued so far; resolves when the server has answered for all of it. */
  async flush(): Promise<void> {
    this.draining++;
    try {
      while (this.queue.length > 0 || this.pumping) {
        if (!this.pumping) this.kick();
        await this.pumping;
      }
    } finally {
      this.draining--;
    }
  }

  /** Drops whatever arrives from now on (after the run's final state, the server would refuse it). */
  close(): void {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private kick(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.pumping || this.queue.length === 0) return;
    this.pumping = this.pump().finally(() => {
      this.pumping = undefined;
      if (this.queue.length > 0 && this.draining === 0 && !this.closed) {
        if (this.queue.length >= this.maxItems) this.kick();
        else if (this.timer === undefined) {
          this.timer = setTimeout(this.onTimer, this.intervalMs);
          this.timer.unref();
        }
      }
    });
  }

  private async pump(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.take();
      try {
        await this.send(batch);
      } catch (error) {
        this.onError(error, batch.length);
      }
      // Between flushes, a partial batch waits for the next tick so a trickle does not become
      // one request per item.
      if (this.draining === 0 && this.queue.length < this.maxItems) return;
    }
  }

  private take(): T[] {
    if (!this.weigh || this.maxBytes === Number.POSITIVE_INFINITY) return this.queue.splice(0, this.maxItems);
    let bytes = 0;
    let n = 0;
    while (n < this.queue.length && n < this.maxItems) {
      bytes += this.weigh(this.queue[n] as T);
      if (bytes > this.maxBytes && n > 0) break;
      n++;
    }
    return this.queue.splice(0, n);
  }
}
