import { createHmac, timingSafeEqual } from 'node:crypto';
import { TesseraError } from '@tessera/core';
import type { FastifyRequest } from 'fastify';

/**
 * Cross-site request forgery protection for requests authenticated by the session cookie.
 *
 * A browser attaches the cookie to requests that other sites make it send (a form posted from
 * evil.example, an `<img>`…). `SameSite=Lax` already keeps the cookie off cross-site POSTs in current
 * browsers; on top of it, and for browsers or sibling sub-domains it does not cover, every
 * state-changing request made with the cookie must:
 * - not be cross-site by the browser's own account (`Sec-Fetch-Site`), and come from the server's
 *   own origin when it says where it comes from (`Origin`);
 * - carry the session's CSRF token in the `X-CSRF-Token` header: a value another site cannot read
 *   (it is derived from the HttpOnly cookie and handed out by `GET /auth/me`), and a plain HTML form
 *   cannot set a header.
 * Requests with a bearer token are not affected: a browser never adds those by itself.
 *
 * @see https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html
 */

/** The request header that carries the CSRF token. */
export const CSRF_HEADER = 'x-csrf-token';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** True for methods that may change state (everything but GET, HEAD, OPTIONS). */
export function isStateChanging(method: string): boolean {
  return !SAFE_METHODS.has(method.toUpperCase());
}

/**
 * The CSRF token of a session: an HMAC of the session cookie's value, so nothing more is stored and
 * it changes with every session (a token seen in one session is worthless in the next).
 */
export function csrfTokenFor(sessionCookie: string): string {
  return createHmac('sha256', sessionCookie).update('tessera csrf token v1').digest('base64url');
}

function refuse(reason: string, message: string): never {
  throw new TesseraError('ERR_CSRF', message, { details: { reason } });
}

/**
 * Refuses a state-changing request made with the session cookie unless it is same-origin and
 * carries the session's CSRF token.
 * @param allowedOrigins the origins the server is reached at (its public URL, and the origin the
 *   request itself names)
 * @throws TesseraError `ERR_CSRF` (403), `details.reason` one of `cross-site`, `origin`, `missing-token`, `wrong-token`.
 */
export function checkCsrf(request: FastifyRequest, sessionCookie: string, allowedOrigins: readonly string[]): void {
  if (!isStateChanging(request.method)) return;
  const site = header(request, 'sec-fetch-site');
  if (site === 'cross-site' || site === 'same-site') {
    refuse(
      'cross-site',
      `refused a ${site} ${request.method} request made with the session cookie: state-changing requests must come from the Tessera UI itself (${allowedOrigins[0] ?? 'this server'})`,
    );
  }
  const origin = header(request, 'origin');
  if (origin !== undefined && !allowedOrigins.includes(origin)) {
    refuse(
      'origin',
      `refused a ${request.method} request from origin ${origin} made with the session cookie: only ${allowedOrigins.join(' or ')} may send one`,
    );
  }
  const token = header(request, CSRF_HEADER);
  if (token === undefined || token === '') {
    refuse(
      'missing-token',
      `a ${request.method} request made with the session cookie needs the X-CSRF-Token header; get the token from GET /auth/me (field csrfToken)`,
    );
  }
  const expected = Buffer.from(csrfTokenFor(sessionCookie));
  const given = Buffer.from(token);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    refuse(
      'wrong-token',
      'the X-CSRF-Token header does not match this session; get the current token from GET /auth/me (it changes when you log in again)',
    );
  }
}

function header(request: FastifyRequest, name: string): string | undefined {
  const v = request.headers[name];
  return Array.isArray(v) ? v[0] : v;
}
