import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { type CliTokenResponse, type DeviceLoginResponse, LOGIN_COOKIE_PREFIX, type LoginProviderInfo, TesseraError } from '@tessera/core';
import type { FastifyRequest } from 'fastify';
import { importJWK, type JWK } from 'jose';
import * as oidc from 'openid-client';
import { z } from 'zod';
import type { Services } from '../services/index.js';
import type { AccessTokenClaims } from './access-tokens.js';
import { checkCsrf } from './csrf.js';
import { type Authenticator, type Principal, type RoleRule, roleRules } from './principal.js';
import {
  compileSessionSettings,
  LOGIN_COOKIE,
  type LoginIdentity,
  newDeviceHandle,
  newSecret,
  openWithHandle,
  readCookie,
  SECURE_LOGIN_COOKIE,
  SECURE_SESSION_COOKIE,
  SESSION_COOKIE,
  type SessionRecord,
  type SessionSettingsOptions,
  SessionStore,
  sealWithHandle,
} from './sessions.js';

/**
 * People's login at external OpenID Connect providers, with openid-client.
 *
 * - Browser: authorization code + PKCE (S256) + `state` + `nonce` (OIDC Core §3.1). The browser gets
 *   a login cookie; the login in progress is stored under its hash, and the PKCE verifier is derived
 *   from it, so a callback is only accepted from the browser that started the login (no login CSRF).
 * - CLI, loopback (RFC 8252 §7.3): the CLI listens on 127.0.0.1, opens `/auth/cli/authorize` with its
 *   own PKCE challenge; the server runs the browser login above and hands the loopback listener a
 *   one-time code, which the CLI redeems with its verifier for a Tessera access token and refresh token.
 * - CLI, device (RFC 8628): where the provider supports it, the server starts the device grant at the
 *   provider and the CLI polls the server, which polls the provider.
 *
 * The server never passes IdP tokens on and never stores them: it verifies the ID token, reads the
 * claims (and userinfo), and from then on the person holds Tessera credentials only.
 */

const NAME_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/** `details.reason` of the refusal of a session cookie that names no live session (the response clears the cookie). */
export const SESSION_ENDED = 'session-ended';

/** One identity provider people log in at. */
export interface OidcProviderOptions {
  /** Short name, used in URLs (`/auth/login?provider=corp`) and person ids (`corp:<sub>`). Lowercase letters, digits, `-`, `_`. */
  name: string;
  /** The provider's issuer URL (its discovery document is at `<issuer>/.well-known/openid-configuration`). Must be https (http only on loopback, for tests). */
  issuer: string;
  /** The client id Tessera is registered under at the provider, with redirect URI `<public URL>/auth/callback`. */
  clientId: string;
  /** Client secret (`client_secret_basic`, or `client_secret_post` when the provider offers only that). */
  clientSecret?: string;
  /** Private JWK for `private_key_jwt` client authentication (RFC 7523 §2.2), instead of a secret. */
  privateKeyJwk?: JWK;
  /** Scopes to ask for; `openid` is always included. @default ['openid', 'email', 'profile'] */
  scopes?: string[];
  /** Role bindings: CEL over `claims`, e.g. `{ role: 'developer', when: '"data-eng" in claims.groups' }`. @default none: people log in with no role */
  roleRules?: RoleRule[];
  /** Also read the userinfo endpoint and merge its claims (where providers put `groups`). @default true when the provider has one */
  userinfo?: boolean;
}

/** The login part of the server's `auth` options: who may log in, and for how long. */
export interface LoginOptions {
  /** Identity providers. None: local mode (a single local admin, loopback only). */
  providers?: OidcProviderOptions[];
  /** Session lifetimes. */
  sessions?: SessionSettingsOptions;
  /** `fetch` for calls to the providers (a corporate proxy; tests). @default globalThis.fetch */
  fetch?: typeof fetch;
}

const jwkSchema = z.record(z.string(), z.unknown()).refine((j) => typeof j.kty === 'string' && typeof j.d === 'string', {
  message: 'expected a private JWK (with "kty" and "d")',
});

const ruleSchema = z.strictObject({
  role: z.enum(['viewer', 'operator', 'developer', 'admin']),
  workspace: z.string().min(1).optional(),
  when: z.string().min(1, 'a CEL condition over claims, e.g. "data-eng" in claims.groups'),
});

const providerSchema = z
  .strictObject({
    name: z.string().regex(NAME_RE, 'lowercase letters, digits, "-" and "_", e.g. "corp"'),
    issuer: z.url({ protocol: /^https?$/, error: 'expected the issuer URL, e.g. https://login.example.com' }),
    clientId: z.string().min(1),
    clientSecret: z.string().min(1).optional(),
    privateKeyJwk: jwkSchema.optional(),
    scopes: z.array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'a scope token without spaces')).optional(),
    roleRules: z.array(ruleSchema).optional(),
    userinfo: z.boolean().optional(),
  })
  .refine((p) => !(p.clientSecret && p.privateKeyJwk), {
    message: 'give either clientSecret or privateKeyJwk, not both',
    path: ['clientSecret'],
  })
  .refine((p) => p.clientSecret || p.privateKeyJwk, {
    message: 'a client secret or a private key is needed: set clientSecret (env TESSERA_AUTH_<NAME>_CLIENT_SECRET) or privateKeyJwk',
    path: ['clientSecret'],
  });

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);

/** A configured provider: validated, its role rules compiled, its metadata discovered on first use. */
export class LoginProvider {
  readonly name: string;
  readonly issuer: string;
  readonly clientId: string;
  readonly scopes: readonly string[];
  readonly grantsOf: ReturnType<typeof roleRules>;
  readonly #options: OidcProviderOptions;
  readonly #fetch: typeof fetch | undefined;
  #config: Promise<oidc.Configuration> | undefined;

  constructor(options: OidcProviderOptions, index: number, fetchImpl?: typeof fetch) {
    const where = `auth.providers[${index}]`;
    const parsed = providerSchema.safeParse(options);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const path = issue?.path.length ? `.${issue.path.map(String).join('.')}` : '';
      throw new TesseraError('ERR_CONFIG', `${where}${path}: ${issue?.message ?? 'invalid'}`, { details: { field: `${where}${path}` } });
    }
    const issuerUrl = new URL(options.issuer);
    if (issuerUrl.protocol !== 'https:' && !LOOPBACK_HOSTS.has(issuerUrl.hostname)) {
      throw new TesseraError(
        'ERR_CONFIG',
        `${where}.issuer: ${options.issuer} is plain http; an identity provider must be reached over https (http is accepted on loopback only, for tests)`,
      );
    }
    this.#options = options;
    this.#fetch = fetchImpl;
    this.name = options.name;
    this.issuer = options.issuer.replace(/\/+$/, '');
    this.clientId = options.clientId;
    const scopes = options.scopes ?? ['openid', 'email', 'profile'];
    this.scopes = Object.freeze(scopes.includes('openid') ? scopes : ['openid', ...scopes]);
    try {
      this.grantsOf = roleRules(options.roleRules ?? []);
    } catch (e) {
      throw new TesseraError('ERR_CONFIG', `${where}.roleRules: ${(e as Error).message}`, { cause: e });
    }
  }

  /**
   * The provider's metadata and this client, discovered once. A failure is remembered for 10 s
   * (anonymous callers of `/auth/login` cannot make the server hammer an unreachable provider), then retried.
   */
  configuration(): Promise<oidc.Configuration> {
    if (!this.#config) {
      const attempt = this.discover();
      this.#config = attempt;
      attempt.catch(() => {
        setTimeout(() => {
          if (this.#config === attempt) this.#config = undefined;
        }, 10_000).unref();
      });
    }
    return this.#config;
  }

  private async discover(): Promise<oidc.Configuration> {
    const insecure = new URL(this.issuer).protocol === 'http:';
    const options: oidc.DiscoveryRequestOptions = {
      ...(insecure ? { execute: [oidc.allowInsecureRequests] } : {}),
      ...(this.#fetch ? { [oidc.customFetch]: this.#fetch as oidc.CustomFetch } : {}),
      timeout: 10,
    };
    let config: oidc.Configuration;
    try {
      if (this.#options.privateKeyJwk) {
        const jwk = this.#options.privateKeyJwk;
        const alg = typeof jwk.alg === 'string' ? jwk.alg : jwk.kty === 'EC' ? 'ES256' : jwk.kty === 'OKP' ? 'EdDSA' : 'RS256';
        const key = await importJWK({ ...jwk, alg }, alg);
        const auth = oidc.PrivateKeyJwt({ key: key as oidc.CryptoKey, ...(jwk.kid ? { kid: jwk.kid } : {}) });
        config = await oidc.discovery(new URL(this.issuer), this.clientId, undefined, auth, options);
      } else {
        // Look first, then pick: client_secret_basic where offered (RFC 6749 §2.3.1 "MUST support"), else post.
        const probe = await oidc.discovery(new URL(this.issuer), this.clientId, undefined, oidc.None(), options);
        const methods = probe.serverMetadata().token_endpoint_auth_methods_supported ?? ['client_secret_basic'];
        const secret = this.#options.clientSecret as string;
        const auth = methods.includes('client_secret_basic') ? oidc.ClientSecretBasic(secret) : oidc.ClientSecretPost(secret);
        config = new oidc.Configuration(probe.serverMetadata(), this.clientId, undefined, auth);
        if (insecure) oidc.allowInsecureRequests(config);
        if (this.#fetch) config[oidc.customFetch] = this.#fetch as oidc.CustomFetch;
      }
    } catch (e) {
      throw new TesseraError(
        'ERR_LOGIN_FAILED',
        `cannot read the discovery document of identity provider "${this.name}" at ${this.issuer}/.well-known/openid-configuration (${describe(e)}); check auth.providers issuer and that the provider is reachable from the server`,
        { status: 502, cause: e },
      );
    }
    return config;
  }

  /** Whether the provider offers the device grant; `null` until its metadata has been read. */
  async deviceFlow(): Promise<boolean | null> {
    try {
      return typeof (await this.configuration()).serverMetadata().device_authorization_endpoint === 'string';
    } catch {
      return null;
    }
  }

  /** Whether to read userinfo for this provider. */
  wantsUserinfo(config: oidc.Configuration): boolean {
    return this.#options.userinfo ?? typeof config.serverMetadata().userinfo_endpoint === 'string';
  }
}

/** Claims about the protocol exchange, not the person: not kept, not offered to role rules. */
const PROTOCOL_CLAIMS = new Set(['aud', 'exp', 'iat', 'nbf', 'nonce', 'at_hash', 'c_hash', 's_hash', 'auth_time', 'azp', 'sid', 'jti']);

/** Builds who logged in from the verified claims. */
export function identityFromClaims(provider: string, claims: Record<string, unknown>): LoginIdentity {
  const sub = claims.sub;
  if (typeof sub !== 'string' || sub === '') {
    throw new TesseraError(
      'ERR_LOGIN_FAILED',
      `identity provider "${provider}" sent no "sub" claim: it is not an OpenID Connect provider?`,
      {
        status: 502,
      },
    );
  }
  // An address the IdP does not vouch for (`email_verified` not true) may be whatever the person typed
  // in their profile: role rules must not see it as `claims.email` (the "nOAuth" takeover), so it is kept
  // only as `unverified_email`.
  const verified = claims.email_verified === true;
  const kept = Object.fromEntries(
    Object.entries(claims)
      .filter(([k]) => !PROTOCOL_CLAIMS.has(k) && (verified || k !== 'email'))
      .concat(!verified && claims.email !== undefined ? [['unverified_email', claims.email]] : []),
  );
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  const email = claims.email_verified === false ? undefined : str(claims.email);
  const label = email ?? str(claims.preferred_username) ?? str(claims.name) ?? sub;
  return { provider, subject: sub, personId: `${provider}:${sub}`, label, claims: kept };
}

function describe(e: unknown): string {
  const err = e as { error?: unknown; error_description?: unknown; message?: unknown; cause?: { code?: unknown } };
  if (typeof err.error === 'string')
    return typeof err.error_description === 'string' ? `${err.error}: ${err.error_description}` : err.error;
  if (typeof err.cause?.code === 'string') return String(err.cause.code);
  return typeof err.message === 'string' ? err.message : String(e);
}

/** The PKCE verifier of a browser login, derived from its login cookie (not stored anywhere). */
function verifierFor(loginCookie: string): string {
  return createHmac('sha256', loginCookie).update('tessera pkce verifier v1').digest('base64url');
}

function equal(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * RFC 8252 §7.3: a loopback redirect, `http://127.0.0.1:<port>/…` or `http://[::1]:<port>/…` (any
 * port). Not `localhost` (§8.3): a name can resolve elsewhere, or to an interface another program
 * listens on, and the one-time code would go there.
 */
function isLoopbackRedirect(uri: string): boolean {
  try {
    const u = new URL(uri);
    return u.protocol === 'http:' && (u.hostname === '127.0.0.1' || u.hostname === '[::1]') && !u.hash && !u.username;
  } catch {
    return false;
  }
}

/** Only a path on this server: never an absolute URL or `//host` (no open redirect). */
export function safeReturnTo(value: string | undefined): string {
  // Browsers drop tabs and newlines from a URL and read `\` as `/`: `/<TAB>/evil.example` is `//evil.example`.
  if (!value?.startsWith('/') || [...value].some((ch) => ch === '\\' || (ch.codePointAt(0) as number) < 0x20 || ch === '\x7f')) return '/';
  // What a browser makes of it must stay on this origin.
  const base = 'http://tessera.invalid';
  try {
    if (new URL(value, base).origin !== base || value.startsWith('//')) return '/';
  } catch {
    return '/';
  }
  return value;
}

const loginFailed = (message: string, reason: string, cause?: unknown) =>
  new TesseraError('ERR_LOGIN_FAILED', message, { details: { reason }, ...(cause === undefined ? {} : { cause }) });

/** What completing a login at the callback led to. */
export type CallbackResult =
  | { kind: 'browser'; session: SessionRecord; cookie: string; returnTo: string }
  | { kind: 'cli'; redirect: URL; session: SessionRecord };

/** Options for {@link LoginService}. */
export interface LoginServiceOptions extends LoginOptions {
  providers: OidcProviderOptions[];
}

/**
 * People's login: starts and completes logins, keeps sessions, turns a session into a
 * {@link Principal}, and mints the CLI's Tessera tokens. Created by {@link configureLogin}.
 */
export class LoginService {
  readonly providers: readonly LoginProvider[];
  readonly sessions: SessionStore;

  constructor(
    private readonly services: Services,
    options: LoginServiceOptions,
  ) {
    const names = new Set<string>();
    this.providers = Object.freeze(
      options.providers.map((p, i) => {
        const provider = new LoginProvider(p, i, options.fetch);
        if (names.has(provider.name)) {
          throw new TesseraError(
            'ERR_CONFIG',
            `auth.providers[${i}].name: "${provider.name}" is used by another provider; names must be unique`,
          );
        }
        names.add(provider.name);
        return provider;
      }),
    );
    if (this.providers.length === 0)
      throw new TesseraError('ERR_CONFIG', 'auth.providers is empty: configure at least one identity provider');
    this.sessions = new SessionStore(services.ctx, compileSessionSettings(options.sessions));
  }

  /** The public URL the IdP sends browsers back to: `<public URL>/auth/callback`. */
  redirectUri(): string {
    return `${this.services.issuer().replace(/\/+$/, '')}/auth/callback`;
  }

  /** The provider named `name`; with one provider configured the name may be left out. */
  provider(name: string | undefined): LoginProvider {
    if (name === undefined || name === '') {
      if (this.providers.length === 1) return this.providers[0] as LoginProvider;
      throw new TesseraError(
        'ERR_VALIDATION',
        `several identity providers are configured; choose one with ?provider=<name>: ${this.providers.map((p) => p.name).join(', ')}`,
      );
    }
    const p = this.providers.find((x) => x.name === name);
    if (!p) {
      throw new TesseraError(
        'ERR_NOT_FOUND',
        `no identity provider named "${name}"; configured: ${this.providers.map((x) => x.name).join(', ')}`,
      );
    }
    return p;
  }

  /** The providers, for `GET /auth/providers`. */
  async describeProviders(): Promise<LoginProviderInfo[]> {
    return Promise.all(this.providers.map(async (p) => ({ name: p.name, issuer: p.issuer, deviceFlow: await p.deviceFlow() })));
  }

  /**
   * Starts a login: records it under the hash of a new login cookie and returns the cookie and the
   * provider's authorization URL. With `cli`, the login ends by handing the CLI's loopback listener a
   * one-time code (RFC 8252) instead of a browser session.
   */
  async beginLogin(input: {
    provider?: string;
    returnTo?: string;
    cli?: { redirectUri: string; codeChallenge: string; codeChallengeMethod?: string; state?: string };
  }): Promise<{ loginCookie: string; authorizationUrl: URL }> {
    const provider = this.provider(input.provider);
    if (input.cli) {
      if (!isLoopbackRedirect(input.cli.redirectUri)) {
        throw new TesseraError(
          'ERR_VALIDATION',
          `redirect_uri ${JSON.stringify(input.cli.redirectUri)} is not a loopback address: the CLI listens on http://127.0.0.1:<port>/… (RFC 8252 §7.3)`,
        );
      }
      if ((input.cli.codeChallengeMethod ?? 'S256') !== 'S256' || !/^[A-Za-z0-9_-]{43}$/.test(input.cli.codeChallenge)) {
        throw new TesseraError(
          'ERR_VALIDATION',
          'code_challenge must be an S256 PKCE challenge (43 base64url characters), code_challenge_method S256',
        );
      }
    }
    const config = await provider.configuration();
    const loginCookie = newSecret(LOGIN_COOKIE_PREFIX);
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    await this.sessions.beginLogin(loginCookie, {
      kind: input.cli ? 'cli' : 'browser',
      provider: provider.name,
      state,
      nonce,
      return_to: input.cli ? null : safeReturnTo(input.returnTo),
      cli_redirect_uri: input.cli?.redirectUri ?? null,
      cli_code_challenge: input.cli?.codeChallenge ?? null,
      cli_state: input.cli?.state?.slice(0, 2000) ?? null,
    });
    const authorizationUrl = oidc.buildAuthorizationUrl(config, {
      redirect_uri: this.redirectUri(),
      scope: provider.scopes.join(' '),
      code_challenge: await oidc.calculatePKCECodeChallenge(verifierFor(loginCookie)),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    return { loginCookie, authorizationUrl };
  }

  /**
   * Completes a login at the callback: the login cookie must name a login in progress, `state`
   * must match it, the code is redeemed with the PKCE verifier, and the ID token must carry the
   * login's `nonce` (openid-client checks signature, issuer, audience, expiry and nonce).
   * @throws TesseraError `ERR_LOGIN_FAILED` (400) with `details.reason` `no-login`, `state`,
   *   `idp-error`, `token` (code refused: wrong PKCE verifier, replayed code) or `id-token` (nonce…);
   *   (502) when the provider cannot be reached.
   */
  async completeLogin(loginCookie: string | undefined, callbackUrl: URL): Promise<CallbackResult> {
    if (!loginCookie) {
      throw loginFailed(
        'no login is in progress in this browser (the login cookie is missing: cookies blocked, or another browser): start again at /auth/login',
        'no-login',
      );
    }
    const tx = await this.sessions.takeLogin(loginCookie);
    if (!tx) throw loginFailed('this login has expired or was already completed: start again at /auth/login', 'no-login');
    const provider = this.providers.find((p) => p.name === tx.provider);
    if (!provider) throw loginFailed(`identity provider "${tx.provider}" is no longer configured: start again at /auth/login`, 'no-login');
    const state = callbackUrl.searchParams.get('state');
    if (state === null || tx.state === null || !equal(state, tx.state)) {
      throw loginFailed(
        'the login response does not belong to the login this browser started (state mismatch): start again at /auth/login',
        'state',
      );
    }
    const idpError = callbackUrl.searchParams.get('error');
    if (idpError) {
      const description = callbackUrl.searchParams.get('error_description');
      throw loginFailed(
        `identity provider "${provider.name}" refused the login: ${idpError}${description ? ` (${description.slice(0, 300)})` : ''}`,
        'idp-error',
      );
    }
    const config = await provider.configuration();
    let tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>;
    try {
      tokens = await oidc.authorizationCodeGrant(config, callbackUrl, {
        pkceCodeVerifier: verifierFor(loginCookie),
        expectedState: tx.state,
        expectedNonce: tx.nonce ?? '',
        idTokenExpected: true,
      });
    } catch (e) {
      throw this.grantError(provider, e);
    }
    const identity = await this.identityFrom(provider, config, tokens);
    if (tx.kind === 'cli') {
      // The CLI's refresh token is made when it redeems the code, not before.
      const session = await this.sessions.createCliSession(identity);
      const code = await this.sessions.parkCliLogin(tx, session.id);
      const redirect = new URL(tx.cli_redirect_uri as string);
      redirect.searchParams.set('code', code);
      if (tx.cli_state) redirect.searchParams.set('state', tx.cli_state);
      return { kind: 'cli', redirect, session };
    }
    const { session, cookie } = await this.sessions.createBrowserSession(identity);
    return { kind: 'browser', session, cookie, returnTo: tx.return_to ?? '/' };
  }

  private grantError(provider: LoginProvider, e: unknown): TesseraError {
    if (e instanceof TesseraError) return e;
    const err = e as { error?: string; code?: string; message?: string };
    if (typeof err.error === 'string') {
      // The token endpoint refused the code: a wrong PKCE verifier, a code used twice or too late.
      return loginFailed(
        `identity provider "${provider.name}" refused the authorization code (${describe(e)}): start again at /auth/login`,
        'token',
        e,
      );
    }
    if (typeof err.code === 'string' && err.code.startsWith('OAUTH_')) {
      // openid-client's own checks: ID token nonce, issuer, audience, signature, expiry.
      // openid-client wraps oauth4webapi's error, whose message names the claim.
      const inner = (e as { cause?: { message?: unknown; cause?: { claim?: unknown } } }).cause;
      const claim = inner?.cause?.claim;
      const what = typeof inner?.message === 'string' ? inner.message : (err.message ?? err.code);
      return loginFailed(
        `the ID token from identity provider "${provider.name}" failed validation (${what}${claim === 'nonce' ? ', it was issued for another login' : ''}): start again at /auth/login`,
        'id-token',
        e,
      );
    }
    return new TesseraError(
      'ERR_LOGIN_FAILED',
      `cannot complete the login with identity provider "${provider.name}" (${describe(e)}); is it reachable from the server?`,
      { status: 502, cause: e, details: { reason: 'unreachable' } },
    );
  }

  private async identityFrom(
    provider: LoginProvider,
    config: oidc.Configuration,
    tokens: oidc.TokenEndpointResponse & oidc.TokenEndpointResponseHelpers,
  ): Promise<LoginIdentity> {
    const idClaims = tokens.claims();
    if (!idClaims)
      throw loginFailed(`identity provider "${provider.name}" returned no ID token: is "openid" among its scopes?`, 'id-token');
    let claims: Record<string, unknown> = { ...idClaims };
    if (provider.wantsUserinfo(config) && tokens.access_token) {
      try {
        // The userinfo `sub` must be the ID token's (OIDC Core §5.3.2), which openid-client checks.
        const info = await oidc.fetchUserInfo(config, tokens.access_token, idClaims.sub);
        claims = { ...info, ...idClaims };
      } catch (e) {
        throw new TesseraError(
          'ERR_LOGIN_FAILED',
          `cannot read the userinfo of identity provider "${provider.name}" (${describe(e)}); set userinfo: false for it if the ID token carries every claim the role rules need`,
          { status: 502, cause: e, details: { reason: 'userinfo' } },
        );
      }
    }
    return identityFromClaims(provider.name, claims);
  }

  /** The principal of a live session: roles from the provider's current rules over the stored claims. */
  principalOf(session: SessionRecord): Extract<Principal, { kind: 'person' }> | undefined {
    const provider = this.providers.find((p) => p.name === session.provider);
    if (!provider) return undefined;
    return {
      kind: 'person',
      id: session.personId,
      label: session.label,
      provider: session.provider,
      grants: provider.grantsOf(session.claims),
      sessionId: session.id,
    };
  }

  // ── the CLI ──

  /**
   * Redeems the one-time code the loopback listener received (RFC 6749 §4.1.3 with PKCE, RFC 7636
   * §4.6): single use, within 2 minutes, with the verifier of the challenge the CLI started with and
   * the same redirect URI.
   */
  async redeemCliCode(input: { code?: string; codeVerifier?: string; redirectUri?: string }): Promise<CliTokenResponse> {
    if (!input.code || !input.codeVerifier || !input.redirectUri) {
      throw oauthError('invalid_request', 'code, code_verifier and redirect_uri are required');
    }
    const tx = await this.sessions.takeCliCode(input.code);
    if (!tx?.session_id) throw oauthError('invalid_grant', 'the login code is unknown, expired or already used: run tessera login again');
    const challenge = createHash('sha256').update(input.codeVerifier).digest('base64url');
    if (!equal(challenge, tx.cli_code_challenge ?? '')) {
      await this.sessions.revoke(tx.session_id, 'PKCE verifier mismatch');
      throw oauthError('invalid_grant', 'code_verifier does not match the code_challenge of this login (PKCE): run tessera login again');
    }
    if (input.redirectUri !== tx.cli_redirect_uri) {
      await this.sessions.revoke(tx.session_id, 'redirect_uri mismatch');
      throw oauthError('invalid_grant', 'redirect_uri differs from the one the login started with');
    }
    const session = await this.sessions.findLive(tx.session_id);
    if (!session) throw oauthError('invalid_grant', 'the login session has ended: run tessera login again');
    const refreshToken = await this.sessions.issueRefreshToken(session.id);
    if (!refreshToken) throw oauthError('invalid_grant', 'the login code was already redeemed: run tessera login again');
    return this.cliTokens(session, refreshToken);
  }

  /** Trades a refresh token for a new access token and refresh token (rotation). */
  async refreshCli(refreshToken: string | undefined): Promise<CliTokenResponse> {
    if (!refreshToken) throw oauthError('invalid_request', 'refresh_token is required');
    const result = await this.sessions.refresh(refreshToken);
    if (!result.ok) throw oauthError('invalid_grant', `${result.reason}: run tessera login again`);
    return this.cliTokens(result.session, result.refreshToken);
  }

  private async cliTokens(session: SessionRecord, refreshToken: string): Promise<CliTokenResponse> {
    const principal = this.principalOf(session);
    if (!principal) throw oauthError('invalid_grant', `identity provider "${session.provider}" is no longer configured: log in again`);
    const ttlMs = Math.min(this.sessions.settings.accessTokenLifetimeMs, Date.parse(session.expiresAt) - this.services.ctx.clock.now());
    const issued = await this.services.accessTokens.issue(principal, { ttlMs, clientId: 'tessera-cli' });
    return {
      access_token: issued.accessToken,
      token_type: 'Bearer',
      expires_in: issued.expiresIn,
      refresh_token: refreshToken,
      refresh_expires_in: Math.max(0, Math.floor((Date.parse(session.expiresAt) - this.services.ctx.clock.now()) / 1000)),
      person: { id: principal.id, label: principal.label, provider: principal.provider, roles: principal.grants },
    };
  }

  /** Starts a device login at the provider (RFC 8628 §3.1); the CLI polls with the returned handle. */
  async startDeviceLogin(providerName: string | undefined): Promise<DeviceLoginResponse> {
    const provider = this.provider(providerName);
    const config = await provider.configuration();
    if (typeof config.serverMetadata().device_authorization_endpoint !== 'string') {
      throw new TesseraError(
        'ERR_VALIDATION',
        `identity provider "${provider.name}" does not offer the device authorization grant; log in with the browser instead (tessera login, without --device)`,
      );
    }
    let response: oidc.DeviceAuthorizationResponse;
    try {
      response = await oidc.initiateDeviceAuthorization(config, { scope: provider.scopes.join(' ') });
    } catch (e) {
      throw new TesseraError('ERR_LOGIN_FAILED', `identity provider "${provider.name}" refused to start a device login (${describe(e)})`, {
        status: 502,
        cause: e,
      });
    }
    const handle = newDeviceHandle();
    const ttlMs = Math.min(response.expires_in * 1000, this.sessions.settings.loginTimeoutMs);
    await this.sessions.beginLogin(
      handle,
      {
        kind: 'device',
        provider: provider.name,
        state: null,
        nonce: null,
        return_to: null,
        cli_redirect_uri: null,
        cli_code_challenge: null,
        cli_state: null,
        device_secret: sealWithHandle(handle, response.device_code),
      },
      ttlMs,
    );
    return {
      device_code: handle,
      user_code: response.user_code,
      verification_uri: response.verification_uri,
      ...(response.verification_uri_complete ? { verification_uri_complete: response.verification_uri_complete } : {}),
      expires_in: Math.floor(ttlMs / 1000),
      interval: response.interval ?? 5,
    };
  }

  /**
   * One poll of a device login: asks the provider once (RFC 8628 §3.4). Pending answers come back
   * as RFC 8628 §3.5 errors (`authorization_pending`, `slow_down`), which the CLI waits on.
   */
  async pollDeviceLogin(handle: string | undefined): Promise<CliTokenResponse> {
    if (!handle) throw oauthError('invalid_request', 'device_code is required');
    const tx = await this.sessions.peekLogin(handle);
    const deviceCode = tx?.kind === 'device' && tx.device_secret ? openWithHandle(handle, tx.device_secret) : undefined;
    if (!tx || !deviceCode)
      throw oauthError('expired_token', 'this device login is unknown or has expired: run tessera login --device again');
    const provider = this.providers.find((p) => p.name === tx.provider);
    if (!provider) throw oauthError('invalid_grant', `identity provider "${tx.provider}" is no longer configured`);
    const config = await provider.configuration();
    let tokens: oidc.TokenEndpointResponse & oidc.TokenEndpointResponseHelpers;
    try {
      tokens = await oidc.genericGrantRequest(config, 'urn:ietf:params:oauth:grant-type:device_code', { device_code: deviceCode });
    } catch (e) {
      const error = (e as { error?: unknown }).error;
      if (error === 'authorization_pending' || error === 'slow_down') {
        throw oauthError(error, error === 'slow_down' ? 'poll less often' : 'waiting for you to confirm the code in the browser');
      }
      await this.sessions.endLogin(handle);
      if (error === 'access_denied') throw oauthError('access_denied', `the login was declined at identity provider "${provider.name}"`);
      if (error === 'expired_token')
        throw oauthError('expired_token', 'the code expired before it was confirmed: run tessera login --device again');
      throw oauthError('invalid_grant', `identity provider "${provider.name}" refused the device login (${describe(e)})`);
    }
    await this.sessions.endLogin(handle);
    const identity = await this.identityFrom(provider, config, tokens);
    const session = await this.sessions.createCliSession(identity);
    const refreshToken = (await this.sessions.issueRefreshToken(session.id)) as string;
    return this.cliTokens(session, refreshToken);
  }

  /** The origins state-changing requests with the session cookie may come from: the public URL's, and the one the request names. */
  allowedOrigins(request: FastifyRequest): string[] {
    const origins = [new URL(this.services.issuer()).origin];
    const own = `${request.protocol}://${request.host}`;
    if (!origins.includes(own)) origins.push(own);
    return origins;
  }

  /** True when cookies must be `Secure`: the request came over https (or a trusted proxy says so), or the public URL is https. */
  isSecure(request: FastifyRequest): boolean {
    return request.protocol === 'https' || this.services.issuer().startsWith('https:');
  }

  /**
   * The names a session (or login) cookie may have on this request. Over https only the `__Host-`
   * name: a plain-named cookie there may have been planted by a sibling sub-domain (cookie tossing),
   * which the `__Host-` prefix exists to rule out.
   */
  cookieNames(request: FastifyRequest, kind: 'session' | 'login'): readonly string[] {
    const [secure, plain] = kind === 'session' ? [SECURE_SESSION_COOKIE, SESSION_COOKIE] : [SECURE_LOGIN_COOKIE, LOGIN_COOKIE];
    return this.isSecure(request) ? [secure] : [secure, plain];
  }

  /**
   * The {@link Authenticator} for the browser's session cookie. A cookie naming no live session is
   * refused (log in again); a state-changing request with a live one must pass the CSRF checks.
   */
  authenticator(): Authenticator {
    return {
      name: 'session',
      authenticate: async (request) => {
        const cookie = readCookie(request.headers.cookie, this.cookieNames(request, 'session'));
        if (!cookie) return undefined;
        const session = await this.sessions.findByCookie(cookie);
        const principal = session ? this.principalOf(session) : undefined;
        if (!principal) {
          throw new TesseraError(
            'ERR_UNAUTHENTICATED',
            'your session has ended (logged out, expired, or unused for too long): log in again at /auth/login',
            { details: { reason: SESSION_ENDED } },
          );
        }
        checkCsrf(request, cookie, this.allowedOrigins(request));
        return principal;
      },
    };
  }

  /** A per-request check for access tokens minted for people: their login session must still be live. */
  personTokenCheck(): (claims: AccessTokenClaims) => Promise<void> {
    return async (claims) => {
      if (typeof claims.sid !== 'string') return;
      if (!(await this.sessions.findLive(claims.sid))) {
        throw new TesseraError(
          'ERR_CREDENTIAL_REVOKED',
          'the login session of this access token has ended (logged out or expired): run tessera login again',
          {
            status: 401,
          },
        );
      }
    };
  }
}

/** An RFC 6749 §5.2 error of the CLI token endpoint. */
export class OAuthLoginError extends TesseraError {
  readonly error: string;
  constructor(error: string, description: string) {
    super('ERR_LOGIN_FAILED', description, { status: 400, details: { error } });
    this.error = error;
  }
}

function oauthError(error: string, description: string): OAuthLoginError {
  return new OAuthLoginError(error, description);
}

/**
 * Turns people's login on when `auth.providers` is not empty: the session authenticator joins the
 * registry (after bearer tokens), access tokens minted for people are checked against their
 * session, and local mode ends — a request with no credential is anonymous, no longer the local admin.
 * @returns the login service, or `undefined` in local mode (no provider).
 * @throws TesseraError `ERR_CONFIG` naming the provider field that is invalid.
 */
export function configureLogin(
  services: Services,
  options: (LoginOptions & { localAdmin?: boolean }) | undefined,
): LoginService | undefined {
  if (!options?.providers || options.providers.length === 0) return undefined;
  if (options.localAdmin === true) {
    throw new TesseraError(
      'ERR_CONFIG',
      'auth.localAdmin is true but identity providers are configured: local mode (anyone on loopback is admin) and login exclude each other; remove auth.localAdmin',
    );
  }
  const login = new LoginService(services, { ...options, providers: options.providers });
  services.auth.add(login.authenticator());
  services.auth.localAdmin = false;
  services.accessTokens.addPersonCheck(login.personTokenCheck());
  // The CLI's access tokens live as long as the sessions settings say: their key stays published so long.
  services.accessTokens.allowLifetime(login.sessions.settings.accessTokenLifetimeMs);
  return login;
}
