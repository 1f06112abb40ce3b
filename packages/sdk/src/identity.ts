import { type Duration, type IdentityTokenRequest, type IdentityTokenResponse, parseDuration, TesseraError } from '@tessera/core';
import { storage } from './lib/scope.js';

/** Options of {@link identity}'s methods. */
export interface IdentityTokenOptions {
  /** The one audience the token is for (`sts.amazonaws.com`, `vault`, …); must be on the deployment's allowlist. */
  audience: string;
  /** How long the token lives, ms or `'10m'`; at most the deployment's maximum. @default 5 minutes (server side) */
  lifetime?: Duration;
}

/**
 * Short-lived OIDC identity tokens for the current run, signed by Tessera's issuer. Inside a task the
 * token also names the task and task run (`task`, `task_run_id` claims).
 *
 * Only available in runs started by Tessera (a worker or `tessera run`): the run credential that pays
 * for them exists nowhere else.
 */
export const identity = Object.freeze({
  /**
   * Returns a signed JWT for `audience`.
   * @throws TesseraError `ERR_NO_IDENTITY` outside a run started by Tessera; the server's code
   *   (`ERR_AUDIENCE_NOT_ALLOWED`, `ERR_CREDENTIAL_REVOKED`, …) when it refuses.
   * @example const jwt = await identity.token({ audience: 'sts.amazonaws.com' });
   */
  async token(options: IdentityTokenOptions): Promise<string> {
    return (await requestToken(options)).token;
  },
  /** Like {@link identity.token}, with the token's metadata (`expiresAt`, `jti`, `sub`, `aud`, `kid`, `alg`). */
  tokenWithClaims(options: IdentityTokenOptions): Promise<IdentityTokenResponse> {
    return requestToken(options);
  },
});

async function requestToken(options: IdentityTokenOptions): Promise<IdentityTokenResponse> {
  const frame = storage.getStore();
  const client = frame?.scope.client;
  if (!frame || !client) {
    const where = frame
      ? `flow "${frame.scope.flowName}" was called directly, so it runs locally without a run credential`
      : 'this code is not running inside a flow run';
    throw new TesseraError(
      'ERR_NO_IDENTITY',
      `identity tokens exist only inside runs started by Tessera (by a worker, or with \`tessera run\`); ${where}. Deploy the flow and run it, or start it with \`tessera run\``,
    );
  }
  if (typeof options?.audience !== 'string' || options.audience === '') {
    throw new TesseraError(
      'ERR_AUDIENCE_REQUIRED',
      'identity.token() needs an audience, e.g. identity.token({ audience: "sts.amazonaws.com" })',
    );
  }
  const body: IdentityTokenRequest = { audience: options.audience };
  if (options.lifetime !== undefined) body.lifetime = parseDuration(options.lifetime, 'identity token lifetime');
  if (frame.task) {
    body.taskRunId = frame.task.id;
    body.taskName = frame.task.key;
  }
  return client.issueIdentityToken(body);
}
