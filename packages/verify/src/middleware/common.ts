import type { ApiErrorBody } from '@tessera/core';
import { VerificationError } from '../errors.js';
import type { VerifiedClaims, Verifier } from '../verifier.js';

/**
 * What every framework middleware shares: reading `Authorization` (and `DPoP`), calling the
 * verifier, and turning a refusal into an RFC 6750 §3 / RFC 9449 §7.1 answer.
 */

/** Options of every middleware. */
export interface MiddlewareOptions {
  /**
   * This service's public origin as clients address it (`https://api.example.com`), used to check a
   * DPoP proof's `htu`. Required to accept DPoP-bound tokens: without it a proof would be checked
   * against the request's `Host` header, which the client chooses, so a proof captured on another
   * service could be replayed here under that service's name (RFC 9449 §4.3, §11.1). Bearer tokens
   * do not need it.
   */
  publicUrl?: string;
  /** `realm` of the `WWW-Authenticate` challenge. @default none */
  realm?: string;
}

/** The parts of a request the middleware reads. */
export interface AuthRequest {
  method: string;
  /** Absolute URL of the request. */
  url: string;
  authorization: string | undefined;
  /** The `DPoP` header(s). */
  dpop: string | string[] | undefined;
  /**
   * True when `url`'s origin was built from the request's `Host` header (the client's choice), not
   * from configuration: a DPoP proof is then refused, since its `htu` cannot be checked.
   */
  urlFromHost?: boolean;
}

/** The outcome: the claims, or the answer to send. */
export type AuthResult =
  | { ok: true; claims: VerifiedClaims }
  | { ok: false; status: number; headers: Record<string, string>; body: ApiErrorBody };

/** Characters RFC 6750 §3 allows in `error_description`: printable ASCII without `"` and `\`. */
function headerSafe(text: string, max = 300): string {
  let out = '';
  for (const ch of text) {
    const c = ch.codePointAt(0) as number;
    if (c === 0x22) out += "'";
    else if (c === 0x5c) out += '/';
    else if (c >= 0x20 && c <= 0x7e) out += ch;
    else out += '?';
    if (out.length >= max) return `${out}...`;
  }
  return out;
}

function challenge(scheme: 'Bearer' | 'DPoP', params: Record<string, string | undefined>): string {
  const parts = Object.entries(params)
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([k, v]) => `${k}="${headerSafe(v)}"`);
  return parts.length ? `${scheme} ${parts.join(', ')}` : scheme;
}

/** The answer to send for a refusal: status, `WWW-Authenticate` and a `{ error, code, message }` body. */
export function refusal(
  e: unknown,
  scheme: 'Bearer' | 'DPoP',
  verifier: Pick<Verifier, 'dpopAlgorithms'>,
  options: MiddlewareOptions = {},
): Extract<AuthResult, { ok: false }> {
  if (!(e instanceof VerificationError)) {
    return {
      ok: false,
      status: 500,
      headers: {},
      body: { error: 'InternalError', code: 'ERR_INTERNAL', message: 'the token could not be checked because of an internal error' },
    };
  }
  const dpopCode = e.code === 'ERR_DPOP_INVALID' || e.code === 'ERR_DPOP_REPLAY' || e.code === 'ERR_DPOP_REQUIRED';
  const useScheme = dpopCode ? 'DPoP' : scheme;
  const headers: Record<string, string> = {};
  if (e.status === 401 || e.status === 403) {
    const error =
      e.status === 403
        ? 'insufficient_scope'
        : e.code === 'ERR_DPOP_INVALID' || e.code === 'ERR_DPOP_REPLAY'
          ? 'invalid_dpop_proof'
          : e.code === 'ERR_TOKEN_MISSING'
            ? undefined
            : 'invalid_token';
    headers['www-authenticate'] = challenge(useScheme, {
      realm: options.realm,
      error,
      error_description: error ? e.message : undefined,
      algs: useScheme === 'DPoP' ? verifier.dpopAlgorithms.join(' ') : undefined,
    });
  } else if (e.status === 503) {
    headers['retry-after'] = '5';
  }
  return { ok: false, status: e.status, headers, body: e.toJSON() };
}

/** Reads the credentials of a request and verifies them. Never throws. */
export async function authenticate(verifier: Verifier, req: AuthRequest, options: MiddlewareOptions = {}): Promise<AuthResult> {
  let scheme: 'Bearer' | 'DPoP' = 'Bearer';
  try {
    const auth = req.authorization;
    if (!auth) {
      throw new VerificationError('ERR_TOKEN_MISSING', 'no Authorization header; send "Authorization: Bearer <token>"');
    }
    const space = auth.indexOf(' ');
    const name = (space === -1 ? auth : auth.slice(0, space)).toLowerCase();
    if (name === 'dpop') scheme = 'DPoP';
    else if (name !== 'bearer') {
      throw new VerificationError(
        'ERR_TOKEN_MISSING',
        `Authorization scheme ${JSON.stringify(name.slice(0, 20))} is not accepted; use Bearer (or DPoP for key-bound tokens)`,
      );
    }
    const token = space === -1 ? '' : auth.slice(space + 1).trim();
    if (!token) throw new VerificationError('ERR_TOKEN_MISSING', `the Authorization header has the ${scheme} scheme but no token`);
    let dpop: { proof: string; method: string; url: string } | undefined;
    if (scheme === 'DPoP') {
      const proof = req.dpop;
      if (proof === undefined || proof === '') {
        throw new VerificationError('ERR_DPOP_INVALID', 'the DPoP scheme needs a DPoP proof header', { claim: 'DPoP' });
      }
      if (Array.isArray(proof)) {
        throw new VerificationError('ERR_DPOP_INVALID', 'more than one DPoP header: send exactly one proof', { claim: 'DPoP' });
      }
      if (req.urlFromHost) {
        throw new VerificationError(
          'ERR_DPOP_INVALID',
          "this service cannot check a DPoP proof's htu: it has no publicUrl, and the Host header is the client's to choose. Set the middleware's publicUrl option to the URL clients use",
          { claim: 'htu' },
        );
      }
      dpop = { proof, method: req.method, url: req.url };
    }
    const claims = await verifier.verify(token, dpop ? { dpop } : {});
    return { ok: true, claims };
  } catch (e) {
    return refusal(e, scheme, verifier, options);
  }
}

/** The absolute URL of a request from its scheme, `Host` header and path (or `publicUrl`). */
export function absoluteUrl(options: MiddlewareOptions, secure: boolean, host: string | undefined, path: string): string {
  const origin = options.publicUrl ? options.publicUrl.replace(/\/+$/, '') : `${secure ? 'https' : 'http'}://${host ?? 'localhost'}`;
  return `${origin}${path.startsWith('/') ? path : `/${path}`}`;
}
