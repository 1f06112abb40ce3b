import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { VerifiedClaims, Verifier } from '../verifier.js';
import { absoluteUrl, authenticate, type MiddlewareOptions } from './common.js';

export type { MiddlewareOptions } from './common.js';

declare global {
  namespace Express {
    interface Request {
      /** The verified run token's claims, set by `tesseraExpress`. */
      tessera?: VerifiedClaims;
    }
  }
}

/**
 * Express middleware: verifies the request's token, sets `req.tessera` to its claims and calls
 * `next()`; otherwise answers 401/403/503 with `WWW-Authenticate` and `{ error, code, message }`.
 *
 * @example app.use('/api', tesseraExpress(verifier));
 * @see RFC 6750 §3
 */
export function tesseraExpress(verifier: Verifier, options: MiddlewareOptions = {}): RequestHandler {
  return async (req: Request, res: Response, next: NextFunction) => {
    const result = await authenticate(
      verifier,
      {
        method: req.method,
        url: absoluteUrl(
          options,
          req.socket && 'encrypted' in req.socket && req.socket.encrypted === true,
          req.headers.host,
          req.originalUrl,
        ),
        authorization: req.headers.authorization,
        dpop: req.headers.dpop,
        urlFromHost: !options.publicUrl,
      },
      options,
    );
    if (result.ok) {
      req.tessera = result.claims;
      next();
      return;
    }
    res
      .status(result.status)
      .set({ 'cache-control': 'no-store', ...result.headers })
      .json(result.body);
  };
}
