import { flow, getLogger, identity } from '@tessera/sdk';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { z } from 'zod';

/**
 * Asks Tessera for an identity token for this run, with the protected API as audience, and calls
 * the API with it. No secret is configured anywhere: the API trusts the run because the token
 * verifies against Tessera's published keys.
 */
export const callProtectedApi = flow(
  {
    name: 'call-protected-api',
    parameters: z.object({ url: z.url().default('http://127.0.0.1:4300/whoami') }),
  },
  async ({ url }) => {
    const log = getLogger();
    const audience = new URL(url).origin;
    const token = await identity.token({ audience });
    const claims = decodeJwt(token);
    const header = decodeProtectedHeader(token);
    // The logger masks tokens, so even this line cannot leak it.
    log.info(`got a token for ${audience}: ${token}`);
    const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
    const body = (await res.json()) as Record<string, unknown>;
    if (!res.ok) throw new Error(`protected API refused the token: HTTP ${res.status} ${JSON.stringify(body)}`);
    log.info(`protected API accepted the token: ${JSON.stringify(body)}`);
    return {
      acceptedBy: url,
      status: res.status,
      api: body,
      token: { sub: claims.sub, aud: claims.aud, exp: claims.exp, kid: header.kid, alg: header.alg },
    };
  },
);
