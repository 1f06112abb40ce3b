import type { MiddlewareHandler } from 'hono';
import type { VerifiedClaims, Verifier } from '../verifier.js';
import { authenticate, type MiddlewareOptions } from './common.js';

export type { MiddlewareOptions } from './common.js';

declare module 'hono' {
  interface ContextVariableMap {
    /** The verified run token's claims, set by `tesseraHono`. */
    tessera: VerifiedClaims;
  }
}

/**
 * Hono middleware: verifies the request's token and sets `c.get('tessera')` to its claims;
 * otherwise answers 401/403/503 with `WWW-Authenticate` and `{ error, code, message }`.
 *
 * @example app.use('/api/*', tesseraHono(verifier));
 * @see RFC 6750 §3
 */
export function tesseraHono(verifier: Verifier, options: MiddlewareOptions = {}): MiddlewareHandler {
  return async (c, next) => {
    let url = c.req.url;
    if (options.publicUrl) {
      const u = new URL(c.req.url);
      url = `${options.publicUrl.replace(/\/+$/, '')}${u.pathname}${u.search}`;
    }
    const result = await authenticate(
      verifier,
      {
        method: c.req.method,
        url,
        authorization: c.req.header('authorization'),
        dpop: c.req.header('dpop'),
        urlFromHost: !options.publicUrl,
      },
      options,
    );
    if (result.ok) {
      c.set('tessera', result.claims);
      await next();
      return;
    }
    return c.json(result.body, result.status as 401, { 'cache-control': 'no-store', ...result.headers });
  };
}
