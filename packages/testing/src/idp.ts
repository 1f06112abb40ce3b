import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import type Provider from 'oidc-provider';
import type { Configuration, KoaContextWithOIDC } from 'oidc-provider';

/** A person known to the test IdP. */
export interface TestIdpUser {
  /** Login name typed in the IdP's form; also the account id and the `sub` claim. */
  login: string;
  password: string;
  email: string;
  name?: string;
  groups: string[];
}

/** A client registered at the test IdP. */
export interface TestIdpClient {
  client_id: string;
  client_secret?: string;
  redirect_uris: string[];
  /** @default 'client_secret_basic' (or 'private_key_jwt' with `jwks`) */
  token_endpoint_auth_method?: 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none';
  /** Public keys for `private_key_jwt`. */
  jwks?: { keys: JWK[] };
  /** @default authorization_code, refresh_token and the device grant */
  grant_types?: string[];
  post_logout_redirect_uris?: string[];
}

/** Options for {@link startTestIdp}. */
export interface TestIdpOptions {
  /** @default alice (data-eng), bob (viewers), carol (no group) */
  users?: TestIdpUser[];
  /**
   * Registered clients. A function is called on the first request, so a client's redirect URI can
   * name a server started after the IdP (its port is only known then).
   */
  clients: TestIdpClient[] | (() => TestIdpClient[]);
  /** Enable the device authorization grant (RFC 8628). @default true */
  deviceFlow?: boolean;
}

/** A running test IdP. */
export interface TestIdp {
  /** The issuer URL, `http://127.0.0.1:<port>`. */
  issuer: string;
  provider: Provider;
  users: TestIdpUser[];
  /** Every password and client secret the IdP knows (tests scan logs for them). */
  secrets(): string[];
  close(): Promise<void>;
}

/** The default people: alice (group data-eng), bob (group viewers), carol (no group). */
export const TEST_IDP_USERS: readonly TestIdpUser[] = Object.freeze([
  { login: 'alice', password: 'alice-password-9f2c', email: 'alice@example.com', name: 'Alice Analyst', groups: ['data-eng'] },
  { login: 'bob', password: 'bob-password-41d7', email: 'bob@example.com', name: 'Bob Builder', groups: ['viewers'] },
  { login: 'carol', password: 'carol-password-7e0a', email: 'carol@example.com', name: 'Carol Contractor', groups: [] },
]);

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/**
 * Starts `oidc-provider` on 127.0.0.1 (ephemeral port) as a company identity provider: users with
 * groups (a `groups` scope and claim), PKCE required for every client, the device grant, and a tiny
 * login page at `/interaction/:uid` that checks the posted `login` and `password` (consent is
 * granted without asking, as for first-party apps). Tests drive it over HTTP like a browser.
 */
export async function startTestIdp(options: TestIdpOptions): Promise<TestIdp> {
  // Loaded here, not at the top: every test importing @tessera/testing would otherwise pay for it.
  const { default: ProviderClass } = await import('oidc-provider');
  const users = [...(options.users ?? TEST_IDP_USERS)];
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const signingJwk = { ...(await exportJWK(privateKey)), kid: 'test-idp-1', alg: 'RS256', use: 'sig' };
  const scopes = ['openid', 'email', 'profile', 'groups', 'offline_access'];

  let provider: Provider | undefined;
  let clients: TestIdpClient[] | undefined;
  const clientsNow = () => {
    clients ??= typeof options.clients === 'function' ? options.clients() : options.clients;
    return clients;
  };
  const server = createServer((req, res) => {
    provider ??= createProvider();
    const p = provider;
    if (req.url?.startsWith('/interaction/')) {
      handleInteraction(p, req, res).catch((e) => {
        res.statusCode = 500;
        res.end(String((e as Error).message));
      });
      return;
    }
    p.callback()(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const createProvider = (): Provider => {
    const configuration: Configuration = {
      clients: clientsNow().map((c) => ({
        token_endpoint_auth_method: c.jwks ? 'private_key_jwt' : 'client_secret_basic',
        grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
        response_types: ['code'],
        ...c,
      })),
      jwks: { keys: [signingJwk as never] },
      cookies: { keys: [randomBytes(32).toString('base64url')] },
      pkce: { required: () => true },
      features: {
        devInteractions: { enabled: false },
        deviceFlow: { enabled: options.deviceFlow ?? true },
        revocation: { enabled: true },
        rpInitiatedLogout: { enabled: true },
      },
      scopes,
      claims: {
        openid: ['sub'],
        email: ['email', 'email_verified'],
        profile: ['name', 'preferred_username'],
        groups: ['groups'],
      },
      findAccount(_ctx, id) {
        const user = users.find((u) => u.login === id);
        if (!user) return undefined;
        return {
          accountId: user.login,
          async claims() {
            return {
              sub: user.login,
              email: user.email,
              email_verified: true,
              name: user.name ?? user.login,
              preferred_username: user.login,
              groups: user.groups,
            };
          },
        };
      },
      // Consent is implied for the registered (first-party) clients: only the login page is shown.
      async loadExistingGrant(ctx: KoaContextWithOIDC) {
        const oidc = ctx.oidc;
        const grantId = oidc.result?.consent?.grantId ?? oidc.session?.grantIdFor(oidc.client?.clientId ?? '');
        if (grantId) return oidc.provider.Grant.find(grantId);
        if (!oidc.session?.accountId || !oidc.client) return undefined;
        const grant = new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
        grant.addOIDCScope(scopes.join(' '));
        await grant.save();
        return grant;
      },
      ttl: {
        AccessToken: 600,
        AuthorizationCode: 60,
        IdToken: 600,
        DeviceCode: 600,
        Grant: 3600,
        Interaction: 600,
        Session: 3600,
        RefreshToken: 3600,
      },
      renderError(ctx, out) {
        ctx.type = 'json';
        ctx.body = out;
      },
    };
    return new ProviderClass(issuer, configuration);
  };

  async function handleInteraction(p: Provider, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const details = await p.interactionDetails(req, res);
    if (details.prompt.name !== 'login') {
      // Consent is granted by loadExistingGrant; anything else is unexpected in these tests.
      res.statusCode = 400;
      res.end(`unexpected prompt ${details.prompt.name}`);
      return;
    }
    if (req.method === 'GET') {
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.end(
        `<!doctype html><title>Sign in</title><form method="post" action="/interaction/${escapeHtml(details.uid)}">` +
          '<input name="login"><input name="password" type="password"><button>Sign in</button></form>',
      );
      return;
    }
    const form = await readForm(req);
    const user = users.find((u) => u.login === form.get('login') && u.password === form.get('password'));
    if (!user) {
      res.statusCode = 401;
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.end('<!doctype html><p>wrong login or password</p>');
      return;
    }
    await p.interactionFinished(req, res, { login: { accountId: user.login } }, { mergeWithLastSubmission: false });
  }

  return {
    issuer,
    get provider() {
      provider ??= createProvider();
      return provider;
    },
    users,
    secrets: () => [
      ...users.map((u) => u.password),
      ...clientsNow()
        .map((c) => c.client_secret)
        .filter((s): s is string => typeof s === 'string'),
    ],
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A cookie jar and redirect-following `fetch`, to play a browser in tests. */
export interface TestBrowser {
  /** Sends a request with this browser's cookies for the URL's origin; stores cookies it gets back. Does not follow redirects. */
  fetch(url: string | URL, init?: RequestInit): Promise<Response>;
  /**
   * Follows redirects (GET after 302/303) until a non-redirect answer or until `stopAt` says the
   * URL should not be requested (returns that URL then). Returns the last response or URL.
   */
  follow(url: string | URL, options?: { stopAt?: (url: URL) => boolean; init?: RequestInit }): Promise<{ response?: Response; url: URL }>;
  /** The cookies stored for an origin, name → value. */
  cookies(origin: string): Map<string, string>;
  /** The raw `Set-Cookie` lines received, newest last (to check flags). */
  setCookies: string[];
  /**
   * Plays the person confirming a device login at the test IdP: opens `verification_uri_complete`,
   * submits the IdP's forms (code confirmation), logs in, and stops at the IdP's success page.
   */
  confirmDeviceLogin(verificationUriComplete: string, user: { login: string; password: string }): Promise<void>;
  /** Logs in at the test IdP's login page reached by following `startUrl`; returns the URL the IdP sends the browser back to. */
  loginAtIdp(
    startUrl: string | URL,
    user: { login: string; password: string },
    options?: { stopAt?: (url: URL) => boolean },
  ): Promise<{ response?: Response; url: URL }>;
}

/** Creates a {@link TestBrowser}. Cookies are kept per origin (scheme, host and port). */
export function createTestBrowser(): TestBrowser {
  const jar = new Map<string, Map<string, string>>();
  const setCookies: string[] = [];
  const jarFor = (origin: string) => {
    let m = jar.get(origin);
    if (!m) {
      m = new Map();
      jar.set(origin, m);
    }
    return m;
  };
  const browser: TestBrowser = {
    setCookies,
    cookies: (origin) => jarFor(new URL(origin).origin),
    async fetch(url, init = {}) {
      const u = new URL(url);
      const cookies = jarFor(u.origin);
      const headers = new Headers(init.headers);
      if (cookies.size > 0 && !headers.has('cookie')) {
        headers.set('cookie', [...cookies].map(([k, v]) => `${k}=${v}`).join('; '));
      }
      const res = await fetch(u, { ...init, headers, redirect: 'manual' });
      for (const line of res.headers.getSetCookie()) {
        setCookies.push(line);
        const [pair, ...attrs] = line.split(';');
        const eq = (pair ?? '').indexOf('=');
        if (eq < 0) continue;
        const name = (pair as string).slice(0, eq).trim();
        const value = (pair as string).slice(eq + 1).trim();
        const expired = attrs.some((a) => /^\s*max-age=0\s*$/i.test(a) || /^\s*expires=thu, 01 jan 1970/i.test(a));
        if (expired || value === '') cookies.delete(name);
        else cookies.set(name, value);
      }
      return res;
    },
    async follow(url, options = {}) {
      let current = new URL(url);
      let init: RequestInit | undefined = options.init;
      for (let hops = 0; hops < 20; hops++) {
        if (options.stopAt?.(current)) return { url: current };
        const res = await browser.fetch(current, init);
        init = undefined;
        const location = res.headers.get('location');
        if (res.status >= 300 && res.status < 400 && location) {
          await res.arrayBuffer();
          current = new URL(location, current);
          continue;
        }
        return { response: res, url: current };
      }
      throw new Error(`too many redirects from ${String(url)}`);
    },
    async confirmDeviceLogin(start, user) {
      let page = await browser.follow(start);
      for (let step = 0; step < 10; step++) {
        const html = (await page.response?.text()) ?? '';
        if (/Sign-in Success/.test(html)) return;
        const form = firstForm(html);
        if (!form) throw new Error(`expected a form at ${page.url.href} (${page.response?.status}): ${html.slice(0, 500)}`);
        const fields = page.url.pathname.startsWith('/interaction/')
          ? new URLSearchParams({ login: user.login, password: user.password })
          : form.fields;
        page = await browser.follow(new URL(form.action || page.url.href, page.url), {
          init: { method: 'POST', body: fields, headers: { 'content-type': 'application/x-www-form-urlencoded' } },
        });
      }
      throw new Error('the device login did not reach the success page');
    },
    async loginAtIdp(startUrl, user, options = {}) {
      const page = await browser.follow(startUrl, options);
      if (!page.response) return page;
      if (!page.url.pathname.startsWith('/interaction/')) {
        throw new Error(`expected the IdP's login page, got ${page.url.href} (${page.response.status}): ${await page.response.text()}`);
      }
      await page.response.text();
      const form = new URLSearchParams({ login: user.login, password: user.password });
      return browser.follow(page.url, {
        ...options,
        init: { method: 'POST', body: form, headers: { 'content-type': 'application/x-www-form-urlencoded' } },
      });
    },
  };
  return browser;
}

/** The first `<form>` of a page: its action and its inputs' names and values (buttons named `abort` left out). */
function firstForm(html: string): { action: string; fields: URLSearchParams } | undefined {
  const form = /<form\b([^>]*)>([\s\S]*?)<\/form>/i.exec(html);
  if (!form) return undefined;
  const attr = (tag: string, name: string) => new RegExp(`\\b${name}="([^"]*)"`, 'i').exec(tag)?.[1];
  const fields = new URLSearchParams();
  for (const m of (form[2] as string).matchAll(/<input\b[^>]*>/gi)) {
    const name = attr(m[0], 'name');
    if (name) fields.set(name, attr(m[0], 'value') ?? '');
  }
  return { action: attr(form[1] as string, 'action') ?? '', fields };
}
