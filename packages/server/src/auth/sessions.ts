import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes, randomUUID } from 'node:crypto';
import {
  DEVICE_HANDLE_PREFIX,
  LOGIN_CODE_PREFIX,
  parseDuration,
  REFRESH_TOKEN_PREFIX,
  SESSION_COOKIE_PREFIX,
  TesseraError,
} from '@tessera/core';
import { iso } from '../lib/clock.js';
import type { ServiceContext } from '../services/context.js';
import type { LoginTransactionTable, SessionTable } from '../store/schema-sessions.js';

/**
 * The server-side session store (table `sessions`) and logins in progress (`login_transactions`).
 *
 * Only hashes are stored: a session is found by the SHA-256 of its cookie (browser) or of its
 * current refresh token (CLI), a login by the SHA-256 of the browser's login cookie. Someone who can
 * read the database can therefore not take over a session. No IdP token is kept: the verified
 * claims are, so that role rules are re-evaluated on every request (a changed rule applies at once).
 */

/** How long sessions and logins last, ms (see {@link SessionSettingsOptions}). */
export interface SessionSettings {
  browserLifetimeMs: number;
  browserIdleMs: number;
  cliLifetimeMs: number;
  accessTokenLifetimeMs: number;
  loginTimeoutMs: number;
}

/** Session lifetimes; durations are `number` ms or strings such as `'12h'`. */
export interface SessionSettingsOptions {
  /** A browser session ends this long after login, however active. @default '12h' */
  browserLifetime?: number | string;
  /** A browser session unused for this long ends. @default '1h' */
  browserIdle?: number | string;
  /** A CLI session (its refresh token) ends this long after `tessera login`. @default '12h' */
  cliLifetime?: number | string;
  /** Lifetime of the access tokens the CLI holds; it refreshes them. @default '10m' */
  accessTokenLifetime?: number | string;
  /** A login must be completed at the identity provider within this time. @default '10m' */
  loginTimeout?: number | string;
}

/** The defaults of {@link SessionSettingsOptions}, ms. */
export const DEFAULT_SESSION_SETTINGS: SessionSettings = Object.freeze({
  browserLifetimeMs: 12 * 3600_000,
  browserIdleMs: 3600_000,
  cliLifetimeMs: 12 * 3600_000,
  accessTokenLifetimeMs: 10 * 60_000,
  loginTimeoutMs: 10 * 60_000,
});

/** Compiles {@link SessionSettingsOptions} (durations parsed once, here). */
export function compileSessionSettings(options: SessionSettingsOptions = {}): SessionSettings {
  const d = (v: number | string | undefined, name: string, fallback: number) => (v === undefined ? fallback : parseDuration(v, name));
  const s: SessionSettings = {
    browserLifetimeMs: d(options.browserLifetime, 'auth.sessions.browserLifetime', DEFAULT_SESSION_SETTINGS.browserLifetimeMs),
    browserIdleMs: d(options.browserIdle, 'auth.sessions.browserIdle', DEFAULT_SESSION_SETTINGS.browserIdleMs),
    cliLifetimeMs: d(options.cliLifetime, 'auth.sessions.cliLifetime', DEFAULT_SESSION_SETTINGS.cliLifetimeMs),
    accessTokenLifetimeMs: d(
      options.accessTokenLifetime,
      'auth.sessions.accessTokenLifetime',
      DEFAULT_SESSION_SETTINGS.accessTokenLifetimeMs,
    ),
    loginTimeoutMs: d(options.loginTimeout, 'auth.sessions.loginTimeout', DEFAULT_SESSION_SETTINGS.loginTimeoutMs),
  };
  if (s.accessTokenLifetimeMs > 3600_000) {
    throw new TesseraError(
      'ERR_CONFIG',
      `auth.sessions.accessTokenLifetime is ${s.accessTokenLifetimeMs} ms; at most 1h: the CLI refreshes its token, keep it short`,
    );
  }
  return Object.freeze(s);
}

/** Who logged in, as the identity provider vouched for it. */
export interface LoginIdentity {
  provider: string;
  /** The IdP's `sub`. */
  subject: string;
  /** `<provider>:<sub>`: stable, and unique across providers. */
  personId: string;
  /** Email (or username) for people to read. */
  label: string;
  /** The verified claims (ID token, then userinfo), protocol claims removed. */
  claims: Record<string, unknown>;
}

/** A live session. */
export interface SessionRecord extends LoginIdentity {
  id: string;
  kind: 'browser' | 'cli';
  createdAt: string;
  lastSeenAt: string;
  expiresAt: string;
}

/** SHA-256 hex: how every secret of this module is stored and looked up. */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** A new random secret with a recognisable prefix (so log redaction and scanners find it). */
export function newSecret(prefix: string): string {
  return prefix + randomBytes(32).toString('base64url');
}

function toRecord(row: SessionTable): SessionRecord {
  return {
    id: row.id,
    kind: row.kind,
    provider: row.provider,
    subject: row.subject,
    personId: row.person_id,
    label: row.label,
    claims: JSON.parse(row.claims) as Record<string, unknown>,
    createdAt: row.created_at,
    lastSeenAt: row.last_seen_at,
    expiresAt: row.expires_at,
  };
}

/** Answer of {@link SessionStore.refresh}. */
export type RefreshResult = { ok: true; session: SessionRecord; refreshToken: string } | { ok: false; reason: string };

/** A login in progress, as stored. */
export type LoginTransaction = LoginTransactionTable;

/** Sessions and logins in progress, over the store. */
export class SessionStore {
  constructor(
    private readonly ctx: ServiceContext,
    readonly settings: SessionSettings,
  ) {}

  private now(): number {
    return this.ctx.clock.now();
  }

  // ── sessions ──

  /** Starts a browser session; returns the cookie value (shown once, only its hash is stored). */
  async createBrowserSession(identity: LoginIdentity): Promise<{ session: SessionRecord; cookie: string }> {
    const cookie = newSecret(SESSION_COOKIE_PREFIX);
    const session = await this.insert(identity, 'browser', { secret_hash: hashSecret(cookie) }, this.settings.browserLifetimeMs);
    return { session, cookie };
  }

  /** Starts a CLI session; its refresh token is issued by {@link SessionStore.issueRefreshToken}. */
  async createCliSession(identity: LoginIdentity): Promise<SessionRecord> {
    return this.insert(identity, 'cli', {}, this.settings.cliLifetimeMs);
  }

  /**
   * Issues the first refresh token of a CLI session (shown once; only its hash is stored).
   * `undefined` when the session already has one or is not live: a login code redeems once.
   */
  async issueRefreshToken(sessionId: string): Promise<string | undefined> {
    const token = newSecret(REFRESH_TOKEN_PREFIX);
    const updated = await this.ctx.db
      .updateTable('sessions')
      .set({ refresh_hash: hashSecret(token), last_seen_at: iso(this.now()) })
      .where('id', '=', sessionId)
      .where('kind', '=', 'cli')
      .where('refresh_hash', 'is', null)
      .where('previous_refresh_hash', 'is', null)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    return Number(updated.numUpdatedRows) === 1 ? token : undefined;
  }

  private async insert(
    identity: LoginIdentity,
    kind: 'browser' | 'cli',
    secrets: { secret_hash?: string; refresh_hash?: string },
    lifetimeMs: number,
  ): Promise<SessionRecord> {
    const now = this.now();
    // Sessions past their end are of no use to anyone: drop them as new ones are made.
    await this.ctx.db
      .deleteFrom('sessions')
      .where('expires_at', '<', iso(now - 86_400_000))
      .execute();
    const row: SessionTable = {
      id: randomUUID(),
      kind,
      secret_hash: secrets.secret_hash ?? null,
      refresh_hash: secrets.refresh_hash ?? null,
      previous_refresh_hash: null,
      provider: identity.provider,
      subject: identity.subject,
      person_id: identity.personId,
      label: identity.label,
      claims: JSON.stringify(identity.claims),
      created_at: iso(now),
      last_seen_at: iso(now),
      expires_at: iso(now + lifetimeMs),
      revoked_at: null,
      revoked_reason: null,
    };
    await this.ctx.db.insertInto('sessions').values(row).execute();
    return toRecord(row);
  }

  /**
   * The live browser session a cookie value names, or `undefined` (unknown, revoked, past its
   * lifetime, or idle too long). Records the use (at most once a minute, to spare the database).
   */
  async findByCookie(cookie: string): Promise<SessionRecord | undefined> {
    if (!cookie.startsWith(SESSION_COOKIE_PREFIX)) return undefined;
    const row = await this.ctx.db.selectFrom('sessions').selectAll().where('secret_hash', '=', hashSecret(cookie)).executeTakeFirst();
    if (row?.kind !== 'browser' || !this.isLive(row)) return undefined;
    const now = this.now();
    if (now - Date.parse(row.last_seen_at) > this.settings.browserIdleMs) return undefined;
    if (now - Date.parse(row.last_seen_at) > 60_000) {
      await this.ctx.db
        .updateTable('sessions')
        .set({ last_seen_at: iso(now) })
        .where('id', '=', row.id)
        .execute();
      row.last_seen_at = iso(now);
    }
    return toRecord(row);
  }

  /** The session with this id if it is still live (not revoked, not past its lifetime). */
  async findLive(id: string): Promise<SessionRecord | undefined> {
    const row = await this.ctx.db.selectFrom('sessions').selectAll().where('id', '=', id).executeTakeFirst();
    return row && this.isLive(row) ? toRecord(row) : undefined;
  }

  private isLive(row: SessionTable): boolean {
    return row.revoked_at === null && Date.parse(row.expires_at) > this.now();
  }

  /**
   * Trades a CLI refresh token for a new one (rotation, RFC 9700 §4.14.2). Presenting a token that
   * was already traded means two parties hold it: the session is revoked, so the thief's copy and
   * the person's both stop working and the person logs in again.
   */
  async refresh(refreshToken: string): Promise<RefreshResult> {
    if (!refreshToken.startsWith(REFRESH_TOKEN_PREFIX)) return { ok: false, reason: 'not a Tessera refresh token' };
    const hash = hashSecret(refreshToken);
    const row = await this.ctx.db.selectFrom('sessions').selectAll().where('refresh_hash', '=', hash).executeTakeFirst();
    if (!row) {
      const reused = await this.ctx.db.selectFrom('sessions').select('id').where('previous_refresh_hash', '=', hash).executeTakeFirst();
      if (reused) {
        await this.revoke(reused.id, 'refresh token reused');
        return { ok: false, reason: 'this refresh token was already used: the session has been ended as a precaution' };
      }
      return { ok: false, reason: 'unknown refresh token' };
    }
    if (row.revoked_at !== null) return { ok: false, reason: `the session was ended (${row.revoked_reason ?? 'logged out'})` };
    if (Date.parse(row.expires_at) <= this.now()) return { ok: false, reason: `the session expired at ${row.expires_at}` };
    const next = newSecret(REFRESH_TOKEN_PREFIX);
    const now = iso(this.now());
    // Compare-and-set on the old hash: two concurrent refreshes with one token cannot both win.
    const updated = await this.ctx.db
      .updateTable('sessions')
      .set({ refresh_hash: hashSecret(next), previous_refresh_hash: hash, last_seen_at: now })
      .where('id', '=', row.id)
      .where('refresh_hash', '=', hash)
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) !== 1) return { ok: false, reason: 'the refresh token was used concurrently; log in again' };
    return { ok: true, session: toRecord({ ...row, last_seen_at: now }), refreshToken: next };
  }

  /** The live CLI session a refresh token belongs to, without rotating it (logout). */
  async findByRefreshToken(refreshToken: string): Promise<SessionRecord | undefined> {
    const row = await this.ctx.db
      .selectFrom('sessions')
      .selectAll()
      .where('refresh_hash', '=', hashSecret(refreshToken))
      .executeTakeFirst();
    return row && this.isLive(row) ? toRecord(row) : undefined;
  }

  /** Ends a session (logout, reuse detected, an admin's decision). Idempotent. */
  async revoke(id: string, reason: string): Promise<void> {
    await this.ctx.db
      .updateTable('sessions')
      .set({ revoked_at: iso(this.now()), revoked_reason: reason.slice(0, 200), refresh_hash: null })
      .where('id', '=', id)
      .where('revoked_at', 'is', null)
      .execute();
  }

  // ── logins in progress ──

  /** Records a login in progress under the hash of `handle` (the browser's login cookie, or the device handle). */
  async beginLogin(
    handle: string,
    values: Omit<LoginTransactionTable, 'id' | 'created_at' | 'expires_at' | 'cli_code_hash' | 'session_id' | 'device_secret'> & {
      device_secret?: string | null;
    },
    ttlMs = this.settings.loginTimeoutMs,
  ): Promise<void> {
    const now = this.now();
    await this.ctx.db.deleteFrom('login_transactions').where('expires_at', '<', iso(now)).execute();
    await this.ctx.db
      .insertInto('login_transactions')
      .values({
        ...values,
        device_secret: values.device_secret ?? null,
        id: hashSecret(handle),
        cli_code_hash: null,
        session_id: null,
        created_at: iso(now),
        expires_at: iso(now + ttlMs),
      })
      .execute();
  }

  /**
   * Takes (reads and deletes) the login in progress that `handle` names, if it has not expired:
   * a login can be completed once.
   */
  async takeLogin(handle: string): Promise<LoginTransaction | undefined> {
    const id = hashSecret(handle);
    return this.ctx.db.transaction().execute(async (trx) => {
      const row = await trx.selectFrom('login_transactions').selectAll().where('id', '=', id).executeTakeFirst();
      if (!row) return undefined;
      const deleted = await trx.deleteFrom('login_transactions').where('id', '=', id).executeTakeFirst();
      if (Number(deleted.numDeletedRows) !== 1) return undefined;
      return Date.parse(row.expires_at) > this.now() ? row : undefined;
    });
  }

  /** Reads a login in progress without consuming it (device polling). */
  async peekLogin(handle: string): Promise<LoginTransaction | undefined> {
    const row = await this.ctx.db.selectFrom('login_transactions').selectAll().where('id', '=', hashSecret(handle)).executeTakeFirst();
    return row && Date.parse(row.expires_at) > this.now() ? row : undefined;
  }

  /** Deletes a login in progress (device login finished or refused). */
  async endLogin(handle: string): Promise<void> {
    await this.ctx.db.deleteFrom('login_transactions').where('id', '=', hashSecret(handle)).execute();
  }

  /**
   * A CLI loopback login reached the end at the IdP: park the CLI session under a one-time code
   * (valid for 2 minutes) that the CLI redeems with its PKCE verifier. Returns the code.
   */
  async parkCliLogin(tx: LoginTransaction, sessionId: string): Promise<string> {
    const code = newSecret(LOGIN_CODE_PREFIX);
    const now = this.now();
    await this.ctx.db
      .insertInto('login_transactions')
      .values({
        ...tx,
        id: hashSecret(newSecret('')),
        cli_code_hash: hashSecret(code),
        session_id: sessionId,
        created_at: iso(now),
        expires_at: iso(now + 120_000),
      })
      .execute();
    return code;
  }

  /** Takes the parked CLI login a one-time code names (single use). */
  async takeCliCode(code: string): Promise<LoginTransaction | undefined> {
    if (!code.startsWith(LOGIN_CODE_PREFIX)) return undefined;
    const hash = hashSecret(code);
    return this.ctx.db.transaction().execute(async (trx) => {
      const row = await trx.selectFrom('login_transactions').selectAll().where('cli_code_hash', '=', hash).executeTakeFirst();
      if (!row) return undefined;
      const deleted = await trx.deleteFrom('login_transactions').where('id', '=', row.id).executeTakeFirst();
      if (Number(deleted.numDeletedRows) !== 1) return undefined;
      return Date.parse(row.expires_at) > this.now() ? row : undefined;
    });
  }
}

/** A new device-login handle for the CLI. */
export function newDeviceHandle(): string {
  return newSecret(DEVICE_HANDLE_PREFIX);
}

/**
 * Encrypts the IdP's device code under a key derived from the CLI's handle (HKDF-SHA256,
 * AES-256-GCM): the database alone cannot be used to finish someone's device login.
 */
export function sealWithHandle(handle: string, plaintext: string): string {
  const key = Buffer.from(hkdfSync('sha256', handle, 'tessera-device-login', 'device code', 32));
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return [iv, cipher.getAuthTag(), body].map((b) => b.toString('base64url')).join('.');
}

/** Reverses {@link sealWithHandle}; `undefined` if the handle does not fit. */
export function openWithHandle(handle: string, sealed: string): string | undefined {
  const [iv, tag, body] = sealed.split('.').map((p) => Buffer.from(p, 'base64url'));
  if (!iv || !tag || !body) return undefined;
  try {
    const key = Buffer.from(hkdfSync('sha256', handle, 'tessera-device-login', 'device code', 32));
    const decipher = createDecipheriv('aes-256-gcm', key, iv);
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(body), decipher.final()]).toString('utf8');
  } catch {
    return undefined;
  }
}

// ── cookies ──

/** Session cookie name over https: the `__Host-` prefix makes the browser refuse it unless Secure, host-only and `Path=/`. */
export const SECURE_SESSION_COOKIE = '__Host-tessera_session';
/** Session cookie name over plain http (loopback development). */
export const SESSION_COOKIE = 'tessera_session';
/** Login-in-progress cookie names (https, http). */
export const SECURE_LOGIN_COOKIE = '__Host-tessera_login';
export const LOGIN_COOKIE = 'tessera_login';

/** Reads a cookie from a `Cookie` header (RFC 6265 §5.4); the first of `names` present wins. */
export function readCookie(header: string | undefined, names: readonly string[]): string | undefined {
  if (!header) return undefined;
  const found = new Map<string, string>();
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    if (!found.has(name)) found.set(name, part.slice(eq + 1).trim());
  }
  for (const n of names) {
    const v = found.get(n);
    if (v) return v;
  }
  return undefined;
}

/** Options for {@link serializeCookie}. */
export interface CookieOptions {
  secure: boolean;
  /** Seconds; 0 deletes the cookie. Omitted: a browser-session cookie. */
  maxAge?: number;
}

/**
 * A `Set-Cookie` value with the flags every Tessera cookie has: `HttpOnly` (no script can read it),
 * `SameSite=Lax` (not sent on cross-site subrequests or POSTs, but sent on the top-level navigation
 * back from the identity provider), `Path=/`, and `Secure` over https. Values are base64url: no
 * escaping needed.
 */
export function serializeCookie(name: string, value: string, options: CookieOptions): string {
  const parts = [`${name}=${value}`, 'Path=/', 'HttpOnly', 'SameSite=Lax'];
  if (options.secure) parts.push('Secure');
  if (options.maxAge !== undefined) parts.push(`Max-Age=${Math.max(0, Math.floor(options.maxAge))}`);
  return parts.join('; ');
}
