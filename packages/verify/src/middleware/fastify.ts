import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { VerifiedClaims, Verifier } from '../verifier.js';
import { absoluteUrl, authenticate, type MiddlewareOptions } from './common.js';

export type { MiddlewareOptions } from './common.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The verified run token's claims, set by the Tessera hook. */
    tessera?: VerifiedClaims;
  }
}

/**
 * A Fastify `onRequest` (or `preHandler`) hook: verifies the request's token and sets
 * `request.tessera`; otherwise answers 401/403/503 with `WWW-Authenticate` and
 * `{ error, code, message }`. Use it per route (`{ onRequest: tesseraFastify(verifier) }`) or for a
 * whole scope (`app.addHook('onRequest', tesseraFastify(verifier))`).
 * @see RFC 6750 §3
 */
export function tesseraFastify(
  verifier: Verifier,
  options: MiddlewareOptions = {},
): (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
  return async (request, reply) => {
    const result = await authenticate(
      verifier,
      {
        method: request.method,
        url: absoluteUrl(options, request.protocol === 'https', request.headers.host, request.url),
        authorization: request.headers.authorization,
        dpop: request.headers.dpop,
        urlFromHost: !options.publicUrl,
      },
      options,
    );
    if (result.ok) {
      request.tessera = result.claims;
      return;
    }
    await reply
      .code(result.status)
      .headers({ 'cache-control': 'no-store', ...result.headers })
      .send(result.body);
  };
}

/**
 * A Fastify plugin that decorates `request.tessera` and adds {@link tesseraFastify} as an
 * `onRequest` hook to the scope it is registered in (it is not encapsulated, like fastify-plugin).
 *
 * @example await app.register(tesseraFastifyPlugin, { verifier });
 */
export async function tesseraFastifyPlugin(app: FastifyInstance, options: MiddlewareOptions & { verifier: Verifier }): Promise<void> {
  if (!app.hasRequestDecorator('tessera')) app.decorateRequest('tessera', undefined);
  app.addHook('onRequest', tesseraFastify(options.verifier, options));
}
// Apply to the registering scope rather than a child context (what fastify-plugin does).
(tesseraFastifyPlugin as unknown as Record<symbol, unknown>)[Symbol.for('skip-override')] = true;
