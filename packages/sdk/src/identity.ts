import { createHash, randomUUID } from 'node:crypto';
import {
  type ApiClient,
  type Duration,
  type IdentityTokenRequest,
  type IdentityTokenResponse,
  type IssuedIdentityToken,
  parseDuration,
  TesseraError,
} from '@tessera/core';
import { type CryptoKey, calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import { storage } from './lib/scope.js';

/** Options of {@link identity}'s methods. */
export interface IdentityTokenOptions {
  /** The one audience the token is for (`sts.amazonaws.com`, `vault`, …); must be on the deployment's allowlist. */
  audience: string;
  /** How long the token lives, ms or `'10m'`; at most the deployment's maximum. @default 5 minutes (server side) */
  lifetime?: Duration;
}

/** Options of {@link DpopBoundToken.proof}. */
export interface DpopProofOptions {
  /** The bound token the request carries (`Authorization: DPoP <token>`): adds its hash as `ath`. */
  accessToken?: string;
  /** A nonce the server asked for (`DPoP-Nonce`), if it did. */
  nonce?: string;
}

/**
 * A DPoP-bound identity token (RFC 9449): its `cnf.jkt` names a key pair generated inside this
 * process, non-extractable, so the private key can never be read, logged or sent. A relying party
 * that checks the binding accepts the token only with a fresh proof made by {@link proof}.
 */
export interface DpopBoundToken extends IdentityTokenResponse {
  /** Base64url SHA-256 thumbprint of the public key (RFC 7638): the token's `cnf.jkt`. */
  jkt: string;
  /**
   * Makes a DPoP proof JWT for one request: send it in the `DPoP` header with
   * `Authorization: DPoP <token>`. Make a new one for every request (each has a unique `jti`).
   * @example await fetch(url, { headers: { authorization: `DPoP ${t.token}`, dpop: await t.proof('GET', url, { accessToken: t.token }) } })
   */
  proof(method: string, url: string, options?: DpopProofOptions): Promise<string>;
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
   *   (`ERR_AUDIENCE_NOT_ALLOWED`, `ERR_CREDENTIAL_REVOKED`, `ERR_IDENTITY_REVOKED`, …) when it refuses.
   * @example const jwt = await identity.token({ audience: 'sts.amazonaws.com' });
   */
  async token(options: IdentityTokenOptions): Promise<string> {
    return (await requestToken(options)).token;
  },
  /** Like {@link identity.token}, with the token's metadata (`expiresAt`, `jti`, `sub`, `aud`, `kid`, `alg`). */
  tokenWithClaims(options: IdentityTokenOptions): Promise<IdentityTokenResponse> {
    return requestToken(options);
  },
  /**
   * Returns a token bound to a key that never leaves this process (DPoP, RFC 9449): the SDK generates
   * a non-extractable ES256 key pair once per process, proves possession of it to the token endpoint,
   * and gets a token whose `cnf.jkt` names it. Use the returned `proof()` for each request that carries it.
   * @throws TesseraError like {@link identity.token}, and `ERR_DPOP_PROOF_INVALID` if the server refuses the proof.
   * @example
   * const t = await identity.dpopToken({ audience: 'https://api.internal' });
   * await fetch(url, { headers: { authorization: `DPoP ${t.token}`, dpop: await t.proof('GET', url, { accessToken: t.token }) } });
   */
  dpopToken(options: IdentityTokenOptions): Promise<DpopBoundToken> {
    return requestDpopToken(options);
  },
});

function runClient(): { client: ApiClient; body: (options: IdentityTokenOptions) => IdentityTokenRequest } {
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
  return {
    client,
    body(options) {
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
      return body;
    },
  };
}

async function requestToken(options: IdentityTokenOptions): Promise<IdentityTokenResponse> {
  const { client, body } = runClient();
  return client.issueIdentityToken(body(options));
}

/** The process's DPoP key pair: made on first use, never exportable (WebCrypto `extractable: false`). */
interface DpopKey {
  privateKey: CryptoKey;
  publicJwk: JWK;
  jkt: string;
}
let dpopKey: Promise<DpopKey> | undefined;

function processDpopKey(): Promise<DpopKey> {
  dpopKey ??= (async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: false });
    const { kty, crv, x, y } = await exportJWK(publicKey);
    const publicJwk: JWK = { kty, crv, x, y };
    return { privateKey: privateKey as CryptoKey, publicJwk, jkt: await calculateJwkThumbprint(publicJwk, 'sha256') };
  })();
  dpopKey.catch(() => {
    dpopKey = undefined;
  });
  return dpopKey;
}

/** Makes one DPoP proof JWT. @see RFC 9449 §4.2 */
async function makeProof(key: DpopKey, method: string, url: string, options: DpopProofOptions = {}): Promise<string> {
  const htu = new URL(url);
  htu.search = '';
  htu.hash = '';
  return new SignJWT({
    htm: method.toUpperCase(),
    htu: htu.href,
    jti: randomUUID(),
    ...(options.accessToken ? { ath: createHash('sha256').update(options.accessToken).digest('base64url') } : {}),
    ...(options.nonce ? { nonce: options.nonce } : {}),
  })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.publicJwk })
    .setIssuedAt()
    .sign(key.privateKey);
}

/** How long to keep asking while the server is unreachable: the same as the run's own client. */
const DPOP_RETRY_MS = 10 * 60_000;

async function requestDpopToken(options: IdentityTokenOptions): Promise<DpopBoundToken> {
  const { client, body } = runClient();
  const request = body(options);
  const key = await processDpopKey();
  const endpoint = `${client.baseUrl}/api/identity/token`;
  const deadline = Date.now() + DPOP_RETRY_MS;
  for (let attempt = 1; ; attempt++) {
    try {
      // A fresh proof per attempt: the server refuses a proof it has seen (replay) or one grown stale.
      const issued: IssuedIdentityToken = await client.issueDpopIdentityToken(request, await makeProof(key, 'POST', endpoint));
      if (issued.cnf?.jkt !== key.jkt) {
        throw new TesseraError(
          'ERR_DPOP_PROOF_INVALID',
          'the server returned a token that is not bound to this process key (no matching cnf.jkt); is the server older than DPoP support?',
        );
      }
      const { cnf: _cnf, ...rest } = issued;
      return Object.freeze({
        ...rest,
        jkt: key.jkt,
        proof: (method: string, url: string, o?: DpopProofOptions) => makeProof(key, method, url, o),
      });
    } catch (e) {
      const transient = e instanceof TesseraError && (e.code === 'ERR_SERVER_UNREACHABLE' || [502, 503, 504].includes(e.status));
      const delay = Math.min(5_000, 100 * 2 ** (attempt - 1));
      if (!transient || Date.now() + delay > deadline) throw e;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
