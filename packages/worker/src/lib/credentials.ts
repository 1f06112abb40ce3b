import { randomBytes, randomUUID } from 'node:crypto';
import { readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import {
  type ErrorCode,
  type JoinWorkerResponse,
  JWT_BEARER_GRANT,
  JWT_TOKEN_TYPE,
  type OAuthTokenResponse,
  TesseraError,
  TOKEN_EXCHANGE_GRANT,
} from '@tessera/core';
import { type CryptoKey, exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from 'jose';
import type { WorkerLogger } from '../options.js';

/** How a worker proves who it is. Neither: local mode (the server's loopback local admin). */
export interface WorkerAuth {
  /** A single-use join token (`tsj_…`) from `tessera workers join-token`. */
  joinToken?: string | undefined;
  /** A file holding a platform token (a Kubernetes projected service-account token…), re-read at every exchange. */
  federatedTokenFile?: string | undefined;
  /**
   * Where to keep the worker's identity (its id and private key, mode 0600) so that a restart needs
   * no new join token. Without it the key lives in memory only.
   */
  identityFile?: string | undefined;
}

/** What an identity file holds. The private key never leaves this machine. */
interface StoredIdentity {
  workerId: string;
  tokenEndpoint: string;
  privateJwk: JWK;
}

/** Refresh an access token when less than this much of its life is left, ms. */
const REFRESH_BEFORE_MS = 60_000;

/**
 * The worker's own credentials: joins once (join token + a key pair generated here), then signs an
 * RFC 7523 assertion for every short-lived access token; or exchanges a federated token file (RFC
 * 8693). Tokens are cached until a minute before they expire. Never logs a token or key.
 */
export class WorkerCredentials {
  #identity: { workerId: string; tokenEndpoint: string; key: CryptoKey } | undefined;
  #cached: { token: string; expiresAt: number } | undefined;
  #pending: Promise<string> | undefined;

  constructor(
    private readonly apiUrl: string,
    private readonly auth: WorkerAuth,
    private readonly worker: { name: string; pool: string },
    private readonly log: WorkerLogger,
  ) {}

  /** True when the worker authenticates (else local mode: no credential is sent). */
  get enabled(): boolean {
    return Boolean(this.auth.joinToken || this.auth.federatedTokenFile || this.auth.identityFile);
  }

  /** A valid access token, refreshed when close to expiry; undefined in local mode. */
  async token(): Promise<string | undefined> {
    if (!this.enabled) return undefined;
    if (this.#cached && this.#cached.expiresAt - Date.now() > REFRESH_BEFORE_MS) return this.#cached.token;
    this.#pending ??= this.refresh().finally(() => {
      this.#pending = undefined;
    });
    return this.#pending;
  }

  /** Forgets the cached access token (the server refused it): the next call gets a new one. */
  invalidate(): void {
    this.#cached = undefined;
  }

  private async refresh(): Promise<string> {
    const answer = this.auth.federatedTokenFile ? await this.exchange(this.auth.federatedTokenFile) : await this.assert();
    this.#cached = { token: answer.access_token, expiresAt: Date.now() + answer.expires_in * 1000 };
    return answer.access_token;
  }

  private async exchange(file: string): Promise<OAuthTokenResponse> {
    let subjectToken: string;
    try {
      subjectToken = (await readFile(file, 'utf8')).trim();
    } catch (e) {
      throw new TesseraError(
        'ERR_CONFIG',
        `cannot read the federated token file ${file} (${(e as NodeJS.ErrnoException).code ?? e}); check --federated-token-file`,
        {
          cause: e,
        },
      );
    }
    return this.tokenRequest({ grant_type: TOKEN_EXCHANGE_GRANT, subject_token: subjectToken, subject_token_type: JWT_TOKEN_TYPE });
  }

  private async assert(): Promise<OAuthTokenResponse> {
    const id = await this.identity();
    const now = Math.floor(Date.now() / 1000);
    const assertion = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256' })
      .setIssuer(id.workerId)
      .setSubject(id.workerId)
      .setAudience(id.tokenEndpoint)
      .setIssuedAt(now)
      .setExpirationTime(now + 60)
      .setJti(randomUUID())
      .sign(id.key);
    return this.tokenRequest({ grant_type: JWT_BEARER_GRANT, assertion });
  }

  /** The worker's identity: from the identity file, else by joining with the join token. */
  private async identity(): Promise<{ workerId: string; tokenEndpoint: string; key: CryptoKey }> {
    if (this.#identity) return this.#identity;
    const file = this.auth.identityFile;
    const stored = file ? await readIdentity(file) : undefined;
    if (stored) {
      this.#identity = {
        workerId: stored.workerId,
        tokenEndpoint: stored.tokenEndpoint,
        key: (await importJWK(stored.privateJwk, 'ES256')) as CryptoKey,
      };
      this.log.info(`worker "${this.worker.name}" authenticates as ${stored.workerId} (identity file ${file})`);
      return this.#identity;
    }
    if (!this.auth.joinToken) {
      throw new TesseraError(
        'ERR_CONFIG',
        `no worker identity in ${file} and no join token: start the worker once with --join-token (tessera workers join-token)`,
      );
    }
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: Boolean(file) });
    const res = await fetch(`${this.apiUrl}/api/workers/join`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ joinToken: this.auth.joinToken, name: this.worker.name, publicKey: await exportJWK(publicKey) }),
    });
    const body = (await res.json().catch(() => ({}))) as Partial<JoinWorkerResponse> & { code?: string; message?: string };
    if (!res.ok || !body.workerId || !body.tokenEndpoint) {
      throw new TesseraError((body.code as ErrorCode) ?? 'ERR_HTTP', body.message ?? `joining failed: HTTP ${res.status}`, {
        status: res.status,
      });
    }
    this.#identity = { workerId: body.workerId, tokenEndpoint: body.tokenEndpoint, key: privateKey };
    if (file) {
      const stored: StoredIdentity = {
        workerId: body.workerId,
        tokenEndpoint: body.tokenEndpoint,
        privateJwk: await exportJWK(privateKey),
      };
      // A temp file of an unpredictable name, created exclusively, then renamed: a symlink planted at
      // a guessable name cannot receive the private key.
      const tmp = `${file}.${randomBytes(8).toString('hex')}.tmp`;
      try {
        await writeFile(tmp, `${JSON.stringify(stored)}\n`, { mode: 0o600, flag: 'wx' });
        await rename(tmp, file);
      } catch (e) {
        await rm(tmp, { force: true });
        throw e;
      }
    }
    this.log.info(`worker "${this.worker.name}" joined as ${body.workerId}${body.pool ? ` (pool "${body.pool}")` : ''}`);
    return this.#identity;
  }

  private async tokenRequest(form: Record<string, string>): Promise<OAuthTokenResponse> {
    const res = await fetch(`${this.apiUrl}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams(form).toString(),
      signal: AbortSignal.timeout(30_000),
    });
    const body = (await res.json().catch(() => ({}))) as Partial<OAuthTokenResponse> & { code?: string; error_description?: string };
    if (!res.ok || typeof body.access_token !== 'string') {
      throw new TesseraError(
        (body.code as ErrorCode) ?? 'ERR_HTTP',
        body.error_description ?? `token endpoint answered HTTP ${res.status}`,
        {
          status: res.status,
        },
      );
    }
    return body as OAuthTokenResponse;
  }
}

/** Codes after which retrying cannot help: the worker must be given a new join token or be reconfigured. */
export const FATAL_AUTH_CODES: ReadonlySet<string> = new Set([
  'ERR_JOIN_TOKEN_INVALID',
  'ERR_JOIN_TOKEN_EXPIRED',
  'ERR_JOIN_TOKEN_USED',
  'ERR_CREDENTIAL_REVOKED',
  'ERR_CONFIG',
]);

async function readIdentity(file: string): Promise<StoredIdentity | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new TesseraError('ERR_CONFIG', `cannot read the worker identity file ${file} (${(e as NodeJS.ErrnoException).code ?? e})`, {
      cause: e,
    });
  }
  if (process.platform !== 'win32' && ((await stat(file)).mode & 0o077) !== 0) {
    throw new TesseraError(
      'ERR_KEY_FILE_INSECURE',
      `the worker identity file ${file} holds a private key and is readable by others: chmod 600 ${file}`,
    );
  }
  try {
    const parsed = JSON.parse(text) as StoredIdentity;
    if (typeof parsed.workerId !== 'string' || typeof parsed.tokenEndpoint !== 'string' || typeof parsed.privateJwk !== 'object')
      throw new Error('fields');
    return parsed;
  } catch (e) {
    throw new TesseraError(
      'ERR_KEY_FILE_INVALID',
      `the worker identity file ${file} is not one this worker wrote; delete it and join again`,
      { cause: e },
    );
  }
}
