import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type CliTokenResponse, type RoleGrantInfo, TesseraError } from '@tessera/core';

/**
 * The CLI's credential store, `<home>/credentials.json` (mode 0600): after `tessera login`, per
 * server, a short-lived Tessera access token and the refresh token that renews it. No IdP token and
 * no long-lived secret is ever written: the refresh token is single use (each refresh replaces it)
 * and dies with the login session (12 h by default, `auth.sessions.cli_lifetime`).
 */

/** What is kept for one server. */
export interface StoredLogin {
  accessToken: string;
  /** ISO time. */
  accessTokenExpiresAt: string;
  refreshToken: string;
  /** ISO time: the session's end; `tessera login` again after it. */
  sessionExpiresAt: string;
  person: { id: string; label: string; provider: string; roles: RoleGrantInfo[] };
}

interface CredentialsFile {
  version: 1;
  servers: Record<string, StoredLogin>;
}

/** Refresh this long before the access token expires. */
const REFRESH_MARGIN_MS = 60_000;

/** Builds the stored form of a token answer. */
export function storedLoginFrom(tokens: CliTokenResponse, now = Date.now()): StoredLogin {
  return {
    accessToken: tokens.access_token,
    accessTokenExpiresAt: new Date(now + tokens.expires_in * 1000).toISOString(),
    refreshToken: tokens.refresh_token,
    sessionExpiresAt: new Date(now + tokens.refresh_expires_in * 1000).toISOString(),
    person: tokens.person,
  };
}

/** Reads and writes `<home>/credentials.json`. */
export class CredentialStore {
  readonly path: string;

  constructor(home: string) {
    this.path = join(home, 'credentials.json');
  }

  private read(): CredentialsFile {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, servers: {} };
      throw e;
    }
    try {
      const parsed = JSON.parse(text) as CredentialsFile;
      return parsed && typeof parsed.servers === 'object' ? parsed : { version: 1, servers: {} };
    } catch {
      // A damaged file holds nothing usable; the next login rewrites it.
      return { version: 1, servers: {} };
    }
  }

  /**
   * Writes atomically (temp file + rename), created 0600 so the tokens are never readable by others.
   * The temp file has an unpredictable name and is created exclusively (`wx`): a file or symlink
   * planted under a guessable name in a shared directory cannot receive the tokens.
   */
  private write(file: CredentialsFile): void {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.${randomBytes(8).toString('hex')}.tmp`;
    try {
      writeFileSync(tmp, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
      chmodSync(tmp, 0o600);
      renameSync(tmp, this.path);
    } catch (e) {
      rmSync(tmp, { force: true });
      throw e;
    }
  }

  /** The stored login for a server, if any. */
  get(apiUrl: string): StoredLogin | undefined {
    return this.read().servers[normalize(apiUrl)];
  }

  /** Stores (replaces) the login for a server. */
  save(apiUrl: string, login: StoredLogin): void {
    this.withLock(() => {
      const file = this.read();
      file.servers[normalize(apiUrl)] = login;
      this.write(file);
    });
  }

  /** Forgets the login for a server; returns what was stored. */
  remove(apiUrl: string): StoredLogin | undefined {
    return this.withLock(() => {
      const file = this.read();
      const key = normalize(apiUrl);
      const old = file.servers[key];
      if (old) {
        delete file.servers[key];
        this.write(file);
      }
      return old;
    });
  }

  /**
   * The access token for a server, refreshed first when it expires within a minute. Refresh tokens
   * are single use, so the refresh runs under a lock file and re-reads the store inside it: two
   * commands started at once do not both spend the same refresh token (which would end the session).
   * @param refresh trades a refresh token for new tokens (`POST /auth/cli/token`).
   * @returns the token, or `undefined` when not logged in (or the session ended: the entry is removed).
   */
  async accessToken(apiUrl: string, refresh: (refreshToken: string) => Promise<CliTokenResponse>): Promise<string | undefined> {
    const fresh = (l: StoredLogin | undefined) => l && Date.parse(l.accessTokenExpiresAt) - Date.now() > REFRESH_MARGIN_MS;
    const current = this.get(apiUrl);
    if (!current) return undefined;
    if (fresh(current)) return current.accessToken;
    return this.withLockAsync(async () => {
      const again = this.get(apiUrl);
      if (!again) return undefined;
      if (fresh(again)) return again.accessToken;
      if (Date.parse(again.sessionExpiresAt) <= Date.now()) {
        this.removeUnlocked(apiUrl);
        return undefined;
      }
      let tokens: CliTokenResponse;
      try {
        tokens = await refresh(again.refreshToken);
      } catch (e) {
        // The session was ended (logout elsewhere, expiry, revocation): forget it; log in again.
        if (e instanceof TesseraError && e.status >= 400 && e.status < 500) {
          this.removeUnlocked(apiUrl);
          return undefined;
        }
        throw e;
      }
      const file = this.read();
      file.servers[normalize(apiUrl)] = storedLoginFrom(tokens);
      this.write(file);
      return tokens.access_token;
    });
  }

  private removeUnlocked(apiUrl: string): void {
    const file = this.read();
    delete file.servers[normalize(apiUrl)];
    this.write(file);
  }

  private lockPath(): string {
    return `${this.path}.lock`;
  }

  private acquire(): boolean {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    try {
      closeSync(openSync(this.lockPath(), 'wx', 0o600));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      // A lock left by a process that died: older than 30 s.
      try {
        if (Date.now() - statSync(this.lockPath()).mtimeMs > 30_000) rmSync(this.lockPath(), { force: true });
      } catch {
        /* gone meanwhile */
      }
      return false;
    }
  }

  private withLock<T>(fn: () => T): T {
    const deadline = Date.now() + 10_000;
    while (!this.acquire()) {
      if (Date.now() > deadline) throw lockTimeout(this.lockPath());
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
    }
    try {
      return fn();
    } finally {
      rmSync(this.lockPath(), { force: true });
    }
  }

  private async withLockAsync<T>(fn: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + 10_000;
    while (!this.acquire()) {
      if (Date.now() > deadline) throw lockTimeout(this.lockPath());
      await new Promise((r) => setTimeout(r, 50));
    }
    try {
      return await fn();
    } finally {
      rmSync(this.lockPath(), { force: true });
    }
  }
}

function lockTimeout(path: string): TesseraError {
  return new TesseraError(
    'ERR_CONFIG',
    `the credential store is locked by another tessera command (${path}); if none is running, delete that file`,
  );
}

function normalize(apiUrl: string): string {
  return apiUrl.replace(/\/+$/, '');
}

/** An RFC 6749 §5.2 error answer of `/auth/cli/token`, as a TesseraError (`details.error` is the OAuth code). */
function tokenEndpointError(status: number, body: unknown): TesseraError {
  const b = (body ?? {}) as { error?: string; error_description?: string; message?: string };
  return new TesseraError('ERR_LOGIN_FAILED', b.error_description ?? b.message ?? `the server answered ${status}`, {
    status,
    details: { error: b.error ?? 'server_error' },
  });
}

/**
 * Calls the server's CLI token endpoint (`POST /auth/cli/token`): redeem a login code, refresh, or
 * poll a device login.
 * @throws TesseraError `ERR_LOGIN_FAILED` with `details.error` the OAuth error (`invalid_grant`,
 *   `authorization_pending`…), or `ERR_SERVER_UNREACHABLE`.
 */
export async function postCliToken(apiUrl: string, body: Record<string, string>): Promise<CliTokenResponse> {
  let res: Response;
  try {
    res = await fetch(`${normalize(apiUrl)}/auth/cli/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (e) {
    throw new TesseraError(
      'ERR_SERVER_UNREACHABLE',
      `cannot reach the Tessera server at ${apiUrl}; is it running? (or set --api-url / TESSERA_API_URL)`,
      {
        cause: e,
      },
    );
  }
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!res.ok) throw tokenEndpointError(res.status, parsed);
  return parsed as CliTokenResponse;
}

/** A refresher for {@link CredentialStore.accessToken} against a server. */
export function refresherFor(apiUrl: string): (refreshToken: string) => Promise<CliTokenResponse> {
  return (refreshToken) => postCliToken(apiUrl, { grant_type: 'refresh_token', refresh_token: refreshToken });
}
