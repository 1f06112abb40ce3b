/**
 * Polls `fn` until it returns a truthy value or `timeoutMs` passes; the error names what was awaited,
 * and adds what `explain` says about the state of things (a run's history, a process's output), so a
 * timeout in CI can be understood without reproducing it.
 */
export async function waitFor<T>(
  fn: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  options: { timeoutMs?: number; intervalMs?: number; what?: string; explain?: () => Promise<string> | string } = {},
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 20_000);
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as T;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      let explained = '';
      if (options.explain) {
        try {
          // Bounded: a hung server must not hang the report of the timeout itself.
          const late = new Promise<string>((_, reject) => setTimeout(() => reject(new Error('no answer in 5 s')), 5_000).unref());
          explained = `\n${await Promise.race([options.explain(), late])}`;
        } catch (e) {
          explained = `\n(could not explain: ${(e as Error).message})`;
        }
      }
      throw new Error(
        `timed out after ${options.timeoutMs ?? 20_000} ms waiting for ${options.what ?? 'condition'}${last ? ` (last error: ${(last as Error).message})` : ''}${explained}`,
      );
    }
    await new Promise((r) => setTimeout(r, options.intervalMs ?? 50));
  }
}
