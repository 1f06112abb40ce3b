/**
 * The verifier's only network edge: discovery, JWKS and introspection requests. Every request has a
 * timeout and a body size cap, and redirects are followed only within the same origin (a redirect
 * to another origin could hand key selection to whoever controls that origin).
 */

/** A `fetch`-compatible function (the global one by default; tests and proxies may pass their own). */
export type FetchLike = (input: string | URL, init?: RequestInit) => Promise<Response>;

/** Limits of one request. */
export interface HttpOptions {
  fetch: FetchLike;
  timeoutMs: number;
  maxBytes: number;
}

/** A response read in full (within the size cap). */
export interface HttpResult {
  status: number;
  headers: Headers;
  text: string;
  /** The URL finally answered (after same-origin redirects). */
  url: string;
}

const MAX_REDIRECTS = 3;

/** GETs (or POSTs) `url`, following at most 3 same-origin redirects; never another origin. */
export async function request(url: string, init: RequestInit, options: HttpOptions): Promise<HttpResult> {
  let current = new URL(url);
  const origin = current.origin;
  for (let hop = 0; ; hop++) {
    const res = await options.fetch(current, { ...init, redirect: 'manual', signal: AbortSignal.timeout(options.timeoutMs) });
    if (res.status >= 300 && res.status < 400 && res.status !== 304) {
      await res.body?.cancel().catch(() => {});
      const location = res.headers.get('location');
      if (!location) throw new Error(`HTTP ${res.status} without a Location header`);
      const next = new URL(location, current);
      if (next.origin !== origin) throw new Error(`redirect to another origin (${next.origin}) refused`);
      if (hop >= MAX_REDIRECTS) throw new Error(`more than ${MAX_REDIRECTS} redirects`);
      if (init.method && init.method !== 'GET' && res.status !== 307 && res.status !== 308) {
        throw new Error(`HTTP ${res.status} redirect of a ${init.method} refused`);
      }
      current = next;
      continue;
    }
    return { status: res.status, headers: res.headers, text: await readLimited(res, options.maxBytes), url: current.href };
  }
}

async function readLimited(res: Response, maxBytes: number): Promise<string> {
  const declared = Number(res.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > maxBytes) {
    await res.body?.cancel().catch(() => {});
    throw new Error(`response larger than ${maxBytes} bytes`);
  }
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => {});
      throw new Error(`response larger than ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  return new TextDecoder().decode(Buffer.concat(chunks));
}

/** A short, log-safe description of a failure (no bodies, no tokens). */
export function describe(e: unknown): string {
  if (e instanceof Error) {
    if (e.name === 'TimeoutError' || e.name === 'AbortError') return 'timed out';
    const cause = (e as { cause?: { code?: unknown; message?: unknown } }).cause;
    if (cause && typeof cause.code === 'string') return `${e.message} (${cause.code})`;
    return e.message;
  }
  return String(e);
}
