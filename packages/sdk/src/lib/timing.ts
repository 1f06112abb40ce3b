/** Resolves after `ms`, or rejects with the signal's reason as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  if (ms <= 0 && !signal) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Makes `child` abort when `parent` does; returns the function that undoes the link. Links are
 * removed after each attempt so long runs with many tasks do not pile listeners on the flow's signal.
 */
export function linkAbort(parent: AbortSignal, child: AbortController): () => void {
  if (parent.aborted) {
    child.abort(parent.reason);
    return noop;
  }
  const onAbort = (): void => child.abort(parent.reason);
  parent.addEventListener('abort', onAbort, { once: true });
  return () => parent.removeEventListener('abort', onAbort);
}

/** A promise that rejects with the signal's reason when it aborts, and a function to stop listening. */
export function rejectOnAbort(signal: AbortSignal): { promise: Promise<never>; dispose: () => void } {
  if (signal.aborted) return { promise: Promise.reject(signal.reason), dispose: noop };
  let onAbort = noop;
  const promise = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  // Nobody may await it when the body wins the race; keep it from surfacing as unhandled.
  promise.catch(noop);
  return { promise, dispose: () => signal.removeEventListener('abort', onAbort) };
}

/** Does nothing; the default disposer. */
export function noop(): void {}
