import { TesseraError } from '@tessera/core';
import { backoffDelay, sleep } from './backoff.js';

/** Options for {@link retrying}. */
export interface RetryingOptions {
  /** Keep retrying for this long, ms. */
  retryForMs: number;
  /** Longest wait between two attempts, ms. @default 2000 */
  capMs?: number;
  /** Stops retrying (the last error is thrown). */
  signal?: AbortSignal;
  /** Called before each wait. */
  onRetry?: (info: { attempt: number; delayMs: number; error: Error }) => void;
}

/**
 * True when trying again later may succeed: the server could not be reached, timed out, or
 * answered 5xx/408/429. A 4xx is the server's decision and is final.
 */
export function isRetryable(e: unknown): boolean {
  if (e instanceof TesseraError) return e.status >= 500 || e.status === 408 || e.status === 429;
  return false;
}

/** Calls `fn` until it succeeds, fails with a non-retryable error, the window closes or `signal` aborts. */
export async function retrying<T>(fn: () => Promise<T>, options: RetryingOptions): Promise<T> {
  const deadline = Date.now() + options.retryForMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (options.signal?.aborted || !isRetryable(e)) throw e;
      const delayMs = backoffDelay(attempt, options.capMs ?? 2000);
      if (Date.now() + delayMs > deadline) throw e;
      options.onRetry?.({ attempt, delayMs, error: e as Error });
      await sleep(delayMs, options.signal);
      if (options.signal?.aborted) throw e;
    }
  }
}
