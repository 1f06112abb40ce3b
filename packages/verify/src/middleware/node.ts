import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { VerifiedClaims, Verifier } from '../verifier.js';
import { absoluteUrl, authenticate, type MiddlewareOptions } from './common.js';

export type { MiddlewareOptions } from './common.js';

/** A `node:http` request after {@link createNodeMiddleware} accepted it. */
export interface TesseraIncomingMessage extends IncomingMessage {
  /** The verified run token's claims. */
  tessera?: VerifiedClaims;
}

/**
 * Authenticates a `node:http` request (also usable as Connect-style middleware): on success sets
 * `req.tessera` to the claims and resolves `true` (calling `next()` if given); otherwise answers
 * 401/403/503 with `WWW-Authenticate` and a JSON `{ error, code, message }` body and resolves `false`.
 *
 * @example
 * const auth = createNodeMiddleware(verifier);
 * createServer(async (req, res) => {
 *   if (!(await auth(req, res))) return;
 *   res.end(`hello ${(req as TesseraIncomingMessage).tessera?.sub}`);
 * });
 * @see RFC 6750 §3
 */
export function createNodeMiddleware(
  verifier: Verifier,
  options: MiddlewareOptions = {},
): (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void) => Promise<boolean> {
  return async (req, res, next) => {
    const secure = (req.socket as TLSSocket).encrypted === true;
    const result = await authenticate(
      verifier,
      {
        method: req.method ?? 'GET',
        url: absoluteUrl(options, secure, req.headers.host, req.url ?? '/'),
        authorization: req.headers.authorization,
        dpop: req.headers.dpop,
        urlFromHost: !options.publicUrl,
      },
      options,
    );
    if (result.ok) {
      (req as TesseraIncomingMessage).tessera = result.claims;
      next?.();
      return true;
    }
    res.writeHead(result.status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...result.headers });
    res.end(JSON.stringify(result.body));
    return false;
  };
}
