import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import type { TesseraError } from '@tessera/core';
import {
  createFakeClock,
  createTestBrowser,
  type FakeClock,
  startTestIdp,
  startTestServer,
  TEST_IDP_USERS,
  type TestBrowser,
  type TestIdp,
  type TestServer,
} from '@tessera/testing';
import { decodeJwt, exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const CLIENT_SECRET = `tessera-client-secret-${randomBytes(8).toString('hex')}`;
const alice = TEST_IDP_USERS.find((u) => u.login === 'alice')!;
const bob = TEST_IDP_USERS.find((u) => u.login === 'bob')!;
const carol = TEST_IDP_USERS.find((u) => u.login === 'carol')!;

/** Every secret the suite sees (tokens, cookies, codes, passwords): none may reach a server log line. */
const seenSecrets = new Set<string>();
function remember(...values: (string | null | undefined)[]): void {
  for (const v of values) if (v && v.length >= 8) seenSecrets.add(v);
}

interface Env {
  idp: TestIdp;
  tessera: TestServer;
}

async function startEnv(
  options: { trustProxy?: boolean; clock?: FakeClock; sessions?: Record<string, string>; logLevel?: string } = {},
): Promise<Env> {
  let tessera: TestServer | undefined;
  const idp = await startTestIdp({
    clients: () => [{ client_id: 'tessera', client_secret: CLIENT_SECRET, redirect_uris: [`${tessera?.url}/auth/callback`] }],
  });
  tessera = await startTestServer({
    backgroundServices: false,
    ...(options.logLevel ? { logLevel: options.logLevel } : {}),
    ...(options.trustProxy ? { trustProxy: true } : {}),
    ...(options.clock ? { clock: options.clock } : {}),
    auth: {
      ...(options.sessions ? { sessions: options.sessions } : {}),
      providers: [
        {
          name: 'corp',
          issuer: idp.issuer,
          clientId: 'tessera',
          clientSecret: CLIENT_SECRET,
          scopes: ['openid', 'email', 'profile', 'groups'],
          roleRules: [
            { role: 'developer', when: '"data-eng" in claims.groups' },
            { role: 'viewer', when: '"viewers" in claims.groups' },
          ],
        },
      ],
    },
  });
  return { idp, tessera };
}

/** Logs a person in through the browser flow; returns the browser (holding the session cookie). */
async function browserLogin(
  env: Env,
  user: { login: string; password: string },
  returnTo?: string,
): Promise<{ browser: TestBrowser; landing: URL }> {
  const browser = createTestBrowser();
  const start = `${env.tessera.url}/auth/login${returnTo ? `?return_to=${encodeURIComponent(returnTo)}` : ''}`;
  const end = await browser.loginAtIdp(start, user, { stopAt: (u) => u.origin === env.tessera.url && !u.pathname.startsWith('/auth/') });
  for (const c of browser.setCookies) remember(c.split(';')[0]?.split('=')[1]);
  return { browser, landing: end.url };
}

async function me(env: Env, browser: TestBrowser): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await browser.fetch(`${env.tessera.url}/auth/me`);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** Stops a browser login at the point the IdP sends the browser back to Tessera's callback. */
async function loginUntilCallback(env: Env, browser: TestBrowser, user: { login: string; password: string }): Promise<URL> {
  const r = await browser.loginAtIdp(`${env.tessera.url}/auth/login`, user, { stopAt: (u) => u.pathname === '/auth/callback' });
  return r.url;
}

describe('people log in at the company IdP (browser)', () => {
  let env: Env;
  beforeAll(async () => {
    // Debug level: every request line is logged too, and still holds no secret.
    env = await startEnv({ logLevel: 'debug' });
  });
  afterAll(async () => {
    await env?.tessera.close();
    await env?.idp.close();
  });

  it('lists the configured provider and is not in local mode', async () => {
    const res = await fetch(`${env.tessera.url}/auth/providers`);
    expect(await res.json()).toEqual({ localMode: false, providers: [{ name: 'corp', issuer: env.idp.issuer, deviceFlow: true }] });
  });

  it('refuses a request with no credential once a provider is configured (no local admin)', async () => {
    const res = await fetch(`${env.tessera.url}/api/work-pools`);
    expect(res.status).toBe(401);
    expect(((await res.json()) as { code: string }).code).toBe('ERR_UNAUTHENTICATED');
  });

  it('ends a browser login with a session whose roles match the groups', async () => {
    const { browser, landing } = await browserLogin(env, alice, '/runs?x=1');
    expect(landing.pathname + landing.search).toBe('/runs?x=1');
    const a = await me(env, browser);
    expect(a.status).toBe(200);
    expect(a.body).toMatchObject({
      kind: 'person',
      id: 'corp:alice',
      label: 'alice@example.com',
      provider: 'corp',
      roles: [{ role: 'developer' }],
      session: { kind: 'browser' },
    });
    expect(typeof a.body.csrfToken).toBe('string');

    const b = await me(env, (await browserLogin(env, bob)).browser);
    expect(b.body).toMatchObject({ id: 'corp:bob', label: 'bob@example.com', roles: [{ role: 'viewer' }] });
    const c = await me(env, (await browserLogin(env, carol)).browser);
    expect(c.body).toMatchObject({ id: 'corp:carol', roles: [] });
  });

  it('never redirects after login outside this server (open redirect)', async () => {
    const { landing } = await browserLogin(env, bob, 'https://evil.example/phish');
    expect(landing.origin).toBe(env.tessera.url);
    expect(landing.pathname).toBe('/');
    const { landing: l2 } = await browserLogin(env, bob, '//evil.example/phish');
    expect(l2.origin).toBe(env.tessera.url);
    // A browser drops tabs and newlines and reads `\` as `/`: each of these would be //evil.example.
    for (const tricky of ['/\t/evil.example/phish', '/\n/evil.example', '/\\evil.example', '/\x00/evil.example']) {
      const { landing: l } = await browserLogin(env, bob, tricky);
      expect(l.origin, JSON.stringify(tricky)).toBe(env.tessera.url);
      expect(l.pathname, JSON.stringify(tricky)).toBe('/');
    }
    // A path of this server is kept.
    const { landing: l3 } = await browserLogin(env, bob, '/runs?state=FAILED');
    expect(`${l3.pathname}${l3.search}`).toBe('/runs?state=FAILED');
  });

  it('sets the session cookie HttpOnly, SameSite=Lax, Path=/ (not Secure over plain http on loopback)', async () => {
    const { browser } = await browserLogin(env, bob);
    const line = browser.setCookies.find((c) => c.startsWith('tessera_session=tss_'));
    expect(line).toBeDefined();
    const attrs = (line as string).split(';').map((a) => a.trim().toLowerCase());
    expect(attrs).toContain('httponly');
    expect(attrs).toContain('samesite=lax');
    expect(attrs).toContain('path=/');
    expect(attrs).not.toContain('secure');
    expect(attrs.some((a) => a.startsWith('domain='))).toBe(false);
  });

  it('enforces roles from the session: a viewer reads, but cannot deploy', async () => {
    const { browser } = await browserLogin(env, bob);
    const csrf = (await me(env, browser)).body.csrfToken as string;
    expect((await browser.fetch(`${env.tessera.url}/api/work-pools`)).status).toBe(200);
    const res = await browser.fetch(`${env.tessera.url}/api/work-pools`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: JSON.stringify({ name: 'bobs-pool' }),
    });
    expect(res.status).toBe(403);
    expect(((await res.json()) as { code: string }).code).toBe('ERR_FORBIDDEN');
  });

  it('refuses a tampered state', async () => {
    const browser = createTestBrowser();
    const callback = await loginUntilCallback(env, browser, alice);
    callback.searchParams.set('state', `${callback.searchParams.get('state')}x`);
    const res = await browser.fetch(callback);
    expect(res.status).toBe(400);
    const body = (await res.json()) as { code: string; details: { reason: string }; message: string };
    expect(body.code).toBe('ERR_LOGIN_FAILED');
    expect(body.details.reason).toBe('state');
    expect(body.message).toMatch(/start again at \/auth\/login/);
    expect(browser.cookies(env.tessera.url).has('tessera_session')).toBe(false);
  });

  it('refuses a callback from a browser that did not start the login (login CSRF: no login cookie)', async () => {
    const victim = createTestBrowser();
    const attackerCallback = await loginUntilCallback(env, createTestBrowser(), carol);
    const res = await victim.fetch(attackerCallback);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { details: { reason: string } }).details.reason).toBe('no-login');
  });

  it('refuses a callback replayed after the login completed', async () => {
    const browser = createTestBrowser();
    const callback = await loginUntilCallback(env, browser, alice);
    const login = browser.cookies(env.tessera.url).get('tessera_login') as string;
    expect((await browser.fetch(callback)).status).toBe(303);
    const replay = await fetch(callback, { headers: { cookie: `tessera_login=${login}` }, redirect: 'manual' });
    expect(replay.status).toBe(400);
    expect(((await replay.json()) as { details: { reason: string } }).details.reason).toBe('no-login');
  });

  it('refuses an authorization code issued for another PKCE challenge (wrong verifier)', async () => {
    // The victim's login is in progress; an attacker injects a code from a login of their own,
    // carrying the victim's state so the state check passes: only PKCE stops it.
    const victim = createTestBrowser();
    const start = await victim.fetch(`${env.tessera.url}/auth/login`);
    const authUrl = new URL(start.headers.get('location') as string);
    const attackerUrl = new URL(authUrl);
    const attackerVerifier = randomBytes(32).toString('base64url');
    attackerUrl.searchParams.set('code_challenge', createHash('sha256').update(attackerVerifier).digest('base64url'));
    const attacker = createTestBrowser();
    const attackerCallback = (await attacker.loginAtIdp(attackerUrl, carol, { stopAt: (u) => u.pathname === '/auth/callback' })).url;
    const res = await victim.fetch(attackerCallback);
    expect(res.status).toBe(400);
    const body = (await res.json()) as { code: string; details: { reason: string }; message: string };
    expect(body.code).toBe('ERR_LOGIN_FAILED');
    expect(body.details.reason).toBe('token');
    expect(body.message).toMatch(/invalid_grant/);
    expect(victim.cookies(env.tessera.url).has('tessera_session')).toBe(false);
  });

  it('refuses an ID token whose nonce belongs to another login (replayed id_token)', async () => {
    // The attacker's own login reuses the victim's PKCE challenge (it is in the URL) but its own
    // nonce: the code redeems, and the ID token that comes back carries the wrong nonce.
    const victim = createTestBrowser();
    const start = await victim.fetch(`${env.tessera.url}/auth/login`);
    const authUrl = new URL(start.headers.get('location') as string);
    const attackerUrl = new URL(authUrl);
    attackerUrl.searchParams.set('nonce', randomBytes(16).toString('base64url'));
    const attacker = createTestBrowser();
    const attackerCallback = (await attacker.loginAtIdp(attackerUrl, carol, { stopAt: (u) => u.pathname === '/auth/callback' })).url;
    const res = await victim.fetch(attackerCallback);
    expect(res.status).toBe(400);
    const body = (await res.json()) as { code: string; details: { reason: string }; message: string };
    expect(body.code).toBe('ERR_LOGIN_FAILED');
    expect(body.details.reason).toBe('id-token');
    expect(body.message).toMatch(/nonce/);
  });

  it('requires PKCE at the IdP: an authorization request without a challenge is refused', async () => {
    const start = await createTestBrowser().fetch(`${env.tessera.url}/auth/login`);
    const authUrl = new URL(start.headers.get('location') as string);
    expect(authUrl.searchParams.get('code_challenge_method')).toBe('S256');
    expect(authUrl.searchParams.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(authUrl.searchParams.get('nonce')).toBeTruthy();
    expect(authUrl.searchParams.get('state')).toBeTruthy();
    authUrl.searchParams.delete('code_challenge');
    authUrl.searchParams.delete('code_challenge_method');
    const res = await fetch(authUrl, { redirect: 'manual' });
    const location = res.headers.get('location');
    const answer = location ? Object.fromEntries(new URL(location).searchParams) : ((await res.json()) as Record<string, string>);
    expect(answer.error).toBe('invalid_request');
    expect(String(answer.error_description)).toMatch(/PKCE/);
  });

  it('says what to do when the IdP refuses the login (access_denied)', async () => {
    const browser = createTestBrowser();
    const callback = await loginUntilCallback(env, browser, alice);
    const denied = new URL(callback);
    denied.searchParams.delete('code');
    denied.searchParams.set('error', 'access_denied');
    denied.searchParams.set('error_description', 'the user said no');
    const res = await browser.fetch(denied);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { message: string }).message).toMatch(/refused the login: access_denied \(the user said no\)/);
  });

  describe('CSRF', () => {
    let browser: TestBrowser;
    let csrf: string;
    beforeAll(async () => {
      ({ browser } = await browserLogin(env, alice));
      csrf = (await me(env, browser)).body.csrfToken as string;
    });
    const post = (headers: Record<string, string>) =>
      browser.fetch(`${env.tessera.url}/api/work-pools`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ name: `pool-${randomUUID().slice(0, 8)}` }),
      });
    const reasonOf = async (res: Response) => {
      const body = (await res.json()) as { code: string; details?: { reason: string } };
      return `${res.status} ${body.code} ${body.details?.reason ?? ''}`.trim();
    };

    it('accepts a state-changing request with the session cookie and its CSRF token', async () => {
      expect((await post({ 'x-csrf-token': csrf, origin: env.tessera.url })).status).toBe(201);
    });
    it('refuses one without the token', async () => {
      expect(await reasonOf(await post({}))).toBe('403 ERR_CSRF missing-token');
    });
    it('refuses one with a wrong token', async () => {
      expect(await reasonOf(await post({ 'x-csrf-token': `${csrf.slice(0, -2)}AA` }))).toBe('403 ERR_CSRF wrong-token');
    });
    it('refuses one from another origin, even with the token', async () => {
      expect(await reasonOf(await post({ 'x-csrf-token': csrf, origin: 'https://evil.example' }))).toBe('403 ERR_CSRF origin');
    });
    it('refuses one the browser marks cross-site', async () => {
      expect(await reasonOf(await post({ 'x-csrf-token': csrf, 'sec-fetch-site': 'cross-site' }))).toBe('403 ERR_CSRF cross-site');
    });
    it('lets reads through without a token', async () => {
      expect((await browser.fetch(`${env.tessera.url}/api/work-pools`)).status).toBe(200);
    });
    it('refuses logout without the token', async () => {
      expect(await reasonOf(await browser.fetch(`${env.tessera.url}/auth/logout`, { method: 'POST' }))).toBe('403 ERR_CSRF missing-token');
    });
  });

  it('runs a deployment as the logged-in person: triggeredBy and the run token name alice', async () => {
    const { browser } = await browserLogin(env, alice);
    const csrf = (await me(env, browser)).body.csrfToken as string;
    const send = (method: string, path: string, body: unknown) =>
      browser.fetch(`${env.tessera.url}${path}`, {
        method,
        headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
        body: JSON.stringify(body),
      });
    expect((await send('POST', '/api/work-pools', { name: 'etl' })).status).toBe(201);
    const deployed = await send('PUT', '/api/deployments/nightly-etl', {
      name: 'nightly-etl',
      flowName: 'etl',
      entrypoint: 'flows.ts:etl',
      path: '/tmp',
      workPool: 'etl',
      environment: 'prod',
      identity: { audiences: ['sts.amazonaws.com'] },
    });
    expect(deployed.status).toBe(200);
    const created = await send('POST', '/api/deployments/nightly-etl/runs', {});
    expect(created.status).toBe(201);
    const run = (await created.json()) as { id: string; triggeredBy: { kind: string; id: string; label: string } };
    expect(run.triggeredBy).toEqual({ kind: 'person', id: 'corp:alice', label: 'alice@example.com' });

    // A worker claims it (in-process: worker auth is not what this suite tests) and the run asks for a token.
    const poll = await env.tessera.services.claims.poll(
      'etl',
      { workerId: randomUUID(), workerName: 'w-1', capacity: 1, running: [], waitMs: 0 },
      new AbortController().signal,
    );
    const credential = poll.runs[0]?.credential as string;
    const asRun = env.tessera.client.withToken(credential);
    await asRun.proposeState(run.id, { state: { type: 'RUNNING' } });
    const { token } = await asRun.issueIdentityToken({ audience: 'sts.amazonaws.com' });
    remember(credential, token);
    expect(decodeJwt(token)).toMatchObject({ trigger_kind: 'manual', triggered_by: 'person:alice@example.com' });
  });

  it('logs out: the session ends and its cookie is cleared', async () => {
    const { browser } = await browserLogin(env, alice);
    const cookie = browser.cookies(env.tessera.url).get('tessera_session') as string;
    const csrf = (await me(env, browser)).body.csrfToken as string;
    const res = await browser.fetch(`${env.tessera.url}/auth/logout`, { method: 'POST', headers: { 'x-csrf-token': csrf } });
    expect(res.status).toBe(200);
    expect(res.headers.getSetCookie().some((c) => /^tessera_session=;.*Max-Age=0/.test(c))).toBe(true);
    const after = await fetch(`${env.tessera.url}/auth/me`, { headers: { cookie: `tessera_session=${cookie}` } });
    expect(after.status).toBe(401);
    const body = (await after.json()) as { code: string; message: string };
    expect(body.code).toBe('ERR_UNAUTHENTICATED');
    expect(body.message).toMatch(/session has ended.*log in again/);
    // …and the answer clears the stale cookie.
    expect(after.headers.getSetCookie().some((c) => /^tessera_session=;.*Max-Age=0/.test(c))).toBe(true);
    const api = await fetch(`${env.tessera.url}/api/work-pools`, { headers: { cookie: `tessera_session=${cookie}` } });
    expect(api.status).toBe(401);
    expect(api.headers.getSetCookie().some((c) => /^tessera_session=;.*Max-Age=0/.test(c))).toBe(true);
  });

  it('stores only hashes: no cookie value, and no IdP token, in the sessions table', async () => {
    const { browser } = await browserLogin(env, alice);
    const cookie = browser.cookies(env.tessera.url).get('tessera_session') as string;
    const rows = await env.tessera.services.ctx.db.selectFrom('sessions').selectAll().execute();
    const dump = JSON.stringify(rows);
    expect(dump).not.toContain(cookie);
    expect(dump).not.toMatch(/eyJ[A-Za-z0-9_-]{8,}\./);
    expect(rows.some((r) => r.secret_hash === createHash('sha256').update(cookie).digest('hex'))).toBe(true);
  });

  it('writes login and logout to the audit log', async () => {
    const events = await env.tessera.services.audit.list({ limit: 1000 });
    expect(events.some((e) => e.action === 'auth.login' && e.principal === 'person:corp:alice' && e.result === 'success')).toBe(true);
    expect(events.some((e) => e.action === 'auth.login_failed' && e.detail?.reason === 'state')).toBe(true);
    expect(events.some((e) => e.action === 'auth.logout')).toBe(true);
  });

  it('never writes a token, cookie, code or secret to the server log', async () => {
    const logs = env.tessera.logs.join('');
    expect(logs).toContain('person logged in');
    expect(logs).toMatch(/"url":"\/auth\/callback\?code=\[redacted\]&state=\[redacted\]/);
    for (const secret of [...seenSecrets, ...env.idp.secrets()]) expect(logs).not.toContain(secret);
    expect(logs).not.toMatch(/eyJ[A-Za-z0-9_-]{8,}\.eyJ/);
    expect(logs).not.toMatch(/ts(s|rt|lc|dv|l)_[A-Za-z0-9_-]{16,}/);
  });
});

describe('the CLI protocol (loopback redirect + PKCE, Tessera tokens)', () => {
  let env: Env;
  beforeAll(async () => {
    env = await startEnv();
  });
  afterAll(async () => {
    await env?.tessera.close();
    await env?.idp.close();
  });

  /** Plays `tessera login`: returns the one-time code the browser would bring to the loopback listener. */
  async function loginCode(user: { login: string; password: string }) {
    const verifier = randomBytes(32).toString('base64url');
    const redirectUri = 'http://127.0.0.1:49999/callback';
    const url = new URL(`${env.tessera.url}/auth/cli/authorize`);
    url.searchParams.set('redirect_uri', redirectUri);
    url.searchParams.set('code_challenge', createHash('sha256').update(verifier).digest('base64url'));
    url.searchParams.set('code_challenge_method', 'S256');
    url.searchParams.set('state', 'cli-state-1');
    const landing = await createTestBrowser().loginAtIdp(url, user, { stopAt: (u) => u.port === '49999' });
    expect(landing.url.searchParams.get('state')).toBe('cli-state-1');
    const code = landing.url.searchParams.get('code') as string;
    expect(code).toMatch(/^tslc_/);
    remember(code);
    return { code, verifier, redirectUri };
  }
  const token = async (body: Record<string, string>) => {
    const res = await fetch(`${env.tessera.url}/auth/cli/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(body),
    });
    const json = (await res.json()) as Record<string, unknown>;
    remember(json.access_token as string, json.refresh_token as string);
    return { status: res.status, json };
  };

  it('redeems the code with the verifier for a Tessera access token that acts as the person', async () => {
    const { code, verifier, redirectUri } = await loginCode(alice);
    const { status, json } = await token({ grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: redirectUri });
    expect(status).toBe(200);
    expect(json).toMatchObject({
      token_type: 'Bearer',
      person: { id: 'corp:alice', label: 'alice@example.com', roles: [{ role: 'developer' }] },
    });
    expect(decodeJwt(json.access_token as string)).toMatchObject({ sub: 'corp:alice', aud: `${env.tessera.issuer}/api`, provider: 'corp' });
    const who = await fetch(`${env.tessera.url}/auth/me`, { headers: { authorization: `Bearer ${json.access_token}` } });
    expect(await who.json()).toMatchObject({ kind: 'person', id: 'corp:alice', session: { kind: 'cli' } });
    // The code is single use.
    expect((await token({ grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: redirectUri })).json.error).toBe(
      'invalid_grant',
    );
  });

  it('refuses the code with another verifier, and ends that login', async () => {
    const { code, redirectUri } = await loginCode(alice);
    const r = await token({
      grant_type: 'authorization_code',
      code,
      code_verifier: randomBytes(32).toString('base64url'),
      redirect_uri: redirectUri,
    });
    expect(r.status).toBe(400);
    expect(r.json).toMatchObject({ error: 'invalid_grant', code: 'ERR_LOGIN_FAILED' });
    expect(String(r.json.error_description)).toMatch(/PKCE/);
  });

  it('refreshes with rotation, and logout with the access token ends the session at once', async () => {
    const { code, verifier, redirectUri } = await loginCode(bob);
    const first = (await token({ grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: redirectUri })).json;
    const second = (await token({ grant_type: 'refresh_token', refresh_token: first.refresh_token as string })).json;
    expect(second.refresh_token).not.toBe(first.refresh_token);
    const bearer = { authorization: `Bearer ${second.access_token}` };
    expect((await fetch(`${env.tessera.url}/api/work-pools`, { headers: bearer })).status).toBe(200);
    expect((await fetch(`${env.tessera.url}/auth/logout`, { method: 'POST', headers: bearer })).status).toBe(200);
    const after = await fetch(`${env.tessera.url}/api/work-pools`, { headers: bearer });
    expect(after.status).toBe(401);
    expect(((await after.json()) as { code: string }).code).toBe('ERR_CREDENTIAL_REVOKED');
    expect((await token({ grant_type: 'refresh_token', refresh_token: second.refresh_token as string })).json.error).toBe('invalid_grant');
  });

  it('refuses a redirect that is not a loopback IP literal (RFC 8252 §8.3: not even localhost), and a plain challenge', async () => {
    for (const uri of ['http://evil.example:80/cb', 'http://localhost:5/cb', 'https://127.0.0.1:5/cb', 'http://127.0.0.1:5/cb#x']) {
      const bad = await fetch(
        `${env.tessera.url}/auth/cli/authorize?redirect_uri=${encodeURIComponent(uri)}&code_challenge=${'a'.repeat(43)}`,
        { redirect: 'manual' },
      );
      expect(bad.status, uri).toBe(400);
    }
    const plain = await fetch(
      `${env.tessera.url}/auth/cli/authorize?redirect_uri=${encodeURIComponent('http://127.0.0.1:5/cb')}&code_challenge=${'a'.repeat(43)}&code_challenge_method=plain`,
      { redirect: 'manual' },
    );
    expect(plain.status).toBe(400);
    expect(((await plain.json()) as { message: string }).message).toMatch(/S256/);
  });

  it("never writes the CLI's tokens or codes to the server log", () => {
    const logs = env.tessera.logs.join('');
    for (const secret of seenSecrets) expect(logs).not.toContain(secret);
  });
});

describe('behind a TLS-terminating proxy', () => {
  let env: Env;
  beforeAll(async () => {
    env = await startEnv({ trustProxy: true });
  });
  afterAll(async () => {
    await env?.tessera.close();
    await env?.idp.close();
  });

  it('marks cookies Secure and uses the __Host- prefix when the proxy says https', async () => {
    const res = await fetch(`${env.tessera.url}/auth/login`, { headers: { 'x-forwarded-proto': 'https' }, redirect: 'manual' });
    expect(res.status).toBe(302);
    const line = res.headers.getSetCookie()[0] as string;
    expect(line).toMatch(/^__Host-tessera_login=tsl_/);
    const attrs = line.split(';').map((a) => a.trim().toLowerCase());
    expect(attrs).toEqual(expect.arrayContaining(['secure', 'httponly', 'samesite=lax', 'path=/']));
  });

  it('over https reads only the __Host- cookies: a plain-named one a sibling sub-domain planted is ignored (cookie tossing)', async () => {
    // Carol's own session and login cookies, as an attacker on a sibling sub-domain would hold them.
    const attacker = createTestBrowser();
    await attacker.loginAtIdp(`${env.tessera.url}/auth/login`, carol, {
      stopAt: (u) => u.origin === env.tessera.url && !u.pathname.startsWith('/auth/'),
    });
    const session = attacker.cookies(env.tessera.url).get('tessera_session') as string;
    expect(session).toMatch(/^tss_/);
    remember(session);
    const https = { 'x-forwarded-proto': 'https' };
    const tossed = await fetch(`${env.tessera.url}/auth/me`, { headers: { ...https, cookie: `tessera_session=${session}` } });
    expect(tossed.status).toBe(401);
    // Over plain http (loopback development) the plain name is the only one a browser can hold.
    expect((await fetch(`${env.tessera.url}/auth/me`, { headers: { cookie: `tessera_session=${session}` } })).status).toBe(200);
    // Login CSRF: the victim's browser is sent to the attacker's callback URL with a planted login cookie.
    const second = createTestBrowser();
    const callback = await second.loginAtIdp(`${env.tessera.url}/auth/login`, carol, { stopAt: (u) => u.pathname === '/auth/callback' });
    const loginCookie = second.cookies(env.tessera.url).get('tessera_login') as string;
    remember(loginCookie);
    const res = await fetch(callback.url, { redirect: 'manual', headers: { ...https, cookie: `tessera_login=${loginCookie}` } });
    expect(res.headers.getSetCookie().some((c) => c.startsWith('__Host-tessera_session=tss_'))).toBe(false);
    expect(res.status).toBeGreaterThanOrEqual(400);
  });

  it('does not trust X-Forwarded-Proto without trustProxy', async () => {
    const plain = await startTestServer({
      backgroundServices: false,
      auth: { providers: [{ name: 'corp', issuer: env.idp.issuer, clientId: 'tessera', clientSecret: CLIENT_SECRET }] },
    });
    try {
      const res = await fetch(`${plain.url}/auth/login`, { headers: { 'x-forwarded-proto': 'https' }, redirect: 'manual' });
      const line = res.headers.getSetCookie()[0] as string;
      expect(line).toMatch(/^tessera_login=/);
      expect(line.toLowerCase()).not.toContain('secure');
    } finally {
      await plain.close();
    }
  });
});

describe('session lifetimes', () => {
  let env: Env;
  const clock = createFakeClock(Date.now());
  beforeAll(async () => {
    env = await startEnv({ clock, sessions: { browserIdle: '30m', browserLifetime: '2h', accessTokenLifetime: '1h' } });
  });
  afterAll(async () => {
    await env?.tessera.close();
    await env?.idp.close();
  });

  it('keeps a retired key published for the CLI access tokens’ lifetime, not only the default 15 minutes', () => {
    expect(env.tessera.services.accessTokens.ttlMs).toBe(15 * 60_000);
    expect(env.tessera.services.accessTokens.longestLifetimeMs()).toBe(60 * 60_000);
  });

  it('ends a browser session unused for longer than the idle timeout', async () => {
    const { browser } = await browserLogin(env, alice);
    clock.advance(29 * 60_000);
    expect((await me(env, browser)).status).toBe(200);
    clock.advance(29 * 60_000);
    expect((await me(env, browser)).status).toBe(200);
    clock.advance(31 * 60_000);
    const after = await me(env, browser);
    expect(after.status).toBe(401);
    expect(after.body.message).toMatch(/session has ended/);
  });

  it('ends a browser session at its lifetime, however active', async () => {
    const { browser } = await browserLogin(env, alice);
    for (let i = 0; i < 4; i++) {
      clock.advance(29 * 60_000);
      expect((await me(env, browser)).status).toBe(200);
    }
    clock.advance(5 * 60_000);
    expect((await me(env, browser)).status).toBe(401);
  });
});

describe('client authentication with private_key_jwt', () => {
  let env: Env;
  beforeAll(async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const publicJwk = { ...(await exportJWK(publicKey)), kid: 'tessera-client-1', alg: 'ES256', use: 'sig' };
    const privateJwk = { ...(await exportJWK(privateKey)), kid: 'tessera-client-1', alg: 'ES256' };
    let tessera: TestServer | undefined;
    const idp = await startTestIdp({
      clients: () => [
        {
          client_id: 'tessera-keys',
          token_endpoint_auth_method: 'private_key_jwt',
          jwks: { keys: [publicJwk] },
          redirect_uris: [`${tessera?.url}/auth/callback`],
        },
      ],
    });
    tessera = await startTestServer({
      backgroundServices: false,
      auth: {
        providers: [
          {
            name: 'corp-keys',
            issuer: idp.issuer,
            clientId: 'tessera-keys',
            privateKeyJwk: privateJwk,
            scopes: ['openid', 'email', 'groups'],
            roleRules: [{ role: 'admin', workspace: 'default', when: 'claims.email == "bob@example.com"' }],
          },
        ],
      },
    });
    env = { idp, tessera };
  });
  afterAll(async () => {
    await env?.tessera.close();
    await env?.idp.close();
  });

  it('logs in with no client secret at all', async () => {
    const { browser } = await browserLogin(env, bob);
    expect((await me(env, browser)).body).toMatchObject({
      id: 'corp-keys:bob',
      provider: 'corp-keys',
      roles: [{ role: 'admin', workspace: 'default' }],
    });
  });
});

describe('start-up rules', () => {
  it('refuses a public address with no identity provider', async () => {
    const e = await startTestServer({ host: '0.0.0.0' }).catch((err: TesseraError) => err);
    expect((e as TesseraError).code).toBe('ERR_CONFIG');
    expect((e as TesseraError).message).toMatch(/refusing to listen on 0\.0\.0\.0: no identity provider is configured/);
  });

  it('says loudly at start-up that it runs in local mode', async () => {
    const s = await startTestServer({ backgroundServices: false });
    try {
      expect(s.logs.join('')).toMatch(/LOCAL MODE: no identity provider is configured/);
      expect(await (await fetch(`${s.url}/auth/providers`)).json()).toEqual({ localMode: true, providers: [] });
      const who = (await (await fetch(`${s.url}/auth/me`)).json()) as { kind: string; roles: unknown };
      expect(who).toMatchObject({ kind: 'local-admin', roles: [{ role: 'admin' }] });
      const login = await fetch(`${s.url}/auth/login`, { redirect: 'manual' });
      expect(login.status).toBe(404);
      expect(((await login.json()) as { message: string }).message).toMatch(/local mode/);
    } finally {
      await s.close();
    }
  });

  it('in local mode, is the local admin only for this machine: not for a cross-site page or a DNS-rebinding host', async () => {
    const s = await startTestServer({ backgroundServices: false });
    // node:http sends the Host, Origin and Sec-Fetch-Site headers it is given (a browser would set them).
    const send = (method: string, path: string, headers: Record<string, string>, body?: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = httpRequest(new URL(path, s.url), { method, headers }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c) => {
            text += c;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        });
        req.on('error', reject);
        req.end(body);
      });
    const own = new URL(s.url).host;
    const form = { 'content-type': 'application/x-www-form-urlencoded' };
    try {
      // A form on another site posting to the server (CSRF).
      const csrf = await send(
        'POST',
        '/api/work-pools',
        { ...form, origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' },
        'name=pwned',
      );
      expect(csrf.status).toBe(403);
      expect(JSON.parse(csrf.body)).toMatchObject({
        code: 'ERR_FORBIDDEN',
        message: expect.stringMatching(/cross-site request from a web page/),
      });
      const sameSite = await send('POST', '/api/work-pools', { ...form, 'sec-fetch-site': 'same-site' }, 'name=pwned');
      expect(sameSite.status).toBe(403);
      const otherOrigin = await send('POST', '/api/work-pools', { ...form, origin: 'http://localhost:1' }, 'name=pwned');
      expect(otherOrigin.status).toBe(403);
      // A page of the attacker's name, resolved to 127.0.0.1, reading answers (DNS rebinding).
      const rebound = await send('GET', '/api/trust-policies', { host: `rebind.evil.example:${new URL(s.url).port}` });
      expect(rebound.status).toBe(403);
      expect(JSON.parse(rebound.body).message).toMatch(/not a loopback address/);
      expect((await s.client.listWorkPools()).items.map((p) => p.name)).not.toContain('pwned');
      // The server's own origin, a typed URL and command-line tools (no such headers) are the local admin.
      const json = { 'content-type': 'application/json' };
      expect(
        (await send('POST', '/api/work-pools', { ...json, origin: `http://${own}`, 'sec-fetch-site': 'same-origin' }, '{"name":"ui"}'))
          .status,
      ).toBe(201);
      expect((await send('GET', '/api/work-pools', { 'sec-fetch-site': 'none' })).status).toBe(200);
      expect((await send('GET', '/api/work-pools', { host: `localhost:${new URL(s.url).port}` })).status).toBe(200);
      expect((await send('GET', '/api/work-pools', {})).status).toBe(200);
      // Public routes answer any page.
      expect((await send('GET', '/.well-known/jwks.json', { host: 'rebind.evil.example' })).status).toBe(200);
    } finally {
      await s.close();
    }
  });

  it('refuses an invalid provider configuration, naming the field', async () => {
    const bad = async (provider: Record<string, unknown>) =>
      startTestServer({ backgroundServices: false, auth: { providers: [provider as never] } }).catch((err: TesseraError) => err);
    const base = { name: 'corp', issuer: 'https://login.example.com', clientId: 'tessera', clientSecret: 'x' };
    const e1 = (await bad({ ...base, issuer: 'http://login.example.com' })) as TesseraError;
    expect(e1.code).toBe('ERR_CONFIG');
    expect(e1.message).toMatch(/auth\.providers\[0\]\.issuer: .*https/);
    const e2 = (await bad({ ...base, clientSecret: undefined })) as TesseraError;
    expect(e2.message).toMatch(/auth\.providers\[0\]\.clientSecret: a client secret or a private key is needed/);
    const e3 = (await bad({ ...base, roleRules: [{ role: 'developer', when: 'claims.groups.contains(' }] })) as TesseraError;
    expect(e3.code).toBe('ERR_CONFIG');
    expect(e3.message).toMatch(/auth\.providers\[0\]\.roleRules/);
  });
});
