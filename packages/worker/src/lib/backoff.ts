/**
 * Exponential backoff with jitter: 100 ms, 200 ms, 400 ms… capped at `capMs`, each ±25 % so that
 * many workers coming back after a server restart do not all retry in the same instant.
 */
export function backoffDelay(attempt: number, capMs: number): number {
  const base = Math.min(capMs, 100 * 2 ** Math.min(Math.max(attempt - 1, 0), 20));
  return base * (0.75 + Math.random() * 0.5);
}

/** Waits `ms`, or less if `signal` aborts first. Never rejects. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
