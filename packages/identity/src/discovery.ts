import { DPOP_ALGORITHMS } from './dpop.js';
import { SIGNING_ALGORITHMS } from './keys.js';

/** Options for {@link buildDiscoveryDocument}. */
export interface DiscoveryOptions {
  /** The issuer exactly as every token's `iss` names it. Used verbatim: no slash is added or removed. */
  issuer: string;
  /** Claims the issuer's tokens may carry; duplicates are dropped, order kept. */
  claims: readonly string[];
  /** @default ['RS256', 'ES256'] */
  algorithms?: readonly string[];
  /**
   * Base URL of the server's API, for `token_endpoint` and `introspection_endpoint`. `null` leaves
   * them out: a static copy on a bucket serves neither. @default the issuer
   */
  apiUrl?: string | null;
}

/**
 * Builds the OpenID Provider metadata. `issuer` is copied verbatim, so it equals `iss` exactly (a
 * trailing slash or `http` vs `https` makes AWS, Azure and Vault refuse every token); the other URLs
 * are built from it without doubling slashes.
 * @see OpenID Connect Discovery 1.0 §3 (provider metadata) and §4.3 (issuer must match exactly).
 */
export function buildDiscoveryDocument(options: DiscoveryOptions): Record<string, unknown> {
  const base = options.issuer.replace(/\/+$/, '');
  const api = options.apiUrl === undefined ? base : options.apiUrl?.replace(/\/+$/, '');
  return {
    issuer: options.issuer,
    jwks_uri: `${base}/.well-known/jwks.json`,
    ...(api ? { token_endpoint: `${api}/api/identity/token`, introspection_endpoint: `${api}/api/identity/introspect` } : {}),
    response_types_supported: ['id_token'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: [...(options.algorithms ?? SIGNING_ALGORITHMS)],
    scopes_supported: ['openid'],
    // RFC 9449 §5.1: the proof algorithms the token endpoint accepts for sender-constrained tokens.
    ...(api ? { dpop_signing_alg_values_supported: [...DPOP_ALGORITHMS] } : {}),
    claims_supported: [...new Set(options.claims)],
  };
}
