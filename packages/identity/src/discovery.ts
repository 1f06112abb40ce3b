/** Builds the OpenID Provider metadata for the issuer. `issuer` must equal every token's `iss` exactly. */
export function buildDiscoveryDocument(issuer: string, algorithms: string[], claims: string[]): Record<string, unknown> {
  const base = issuer.replace(/\/+$/, '');
  return {
    issuer,
    jwks_uri: `${base}/.well-known/jwks.json`,
    token_endpoint: `${base}/api/identity/token`,
    response_types_supported: ['id_token'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: algorithms,
    scopes_supported: ['openid'],
    claims_supported: claims,
  };
}
