/**
 * End-to-end: `tessera login` (loopback redirect and device flow), `whoami`, `logout`, and the
 * credentials they keep — the built CLI in a subprocess against a real server and a real IdP
 * (oidc-provider). The test plays the browser. Needs the build: `npm run build`.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTestBrowser, startTestIdp, startTestServer, TEST_IDP_USERS, type TestIdp, type TestServer, waitFor } from '@tessera/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../dist/bin.js', import.meta.url));
const SECRET = 'cli-e2e-client-secret-3b9e1f';
const alice = TEST_IDP_USERS.find((u) => u.login === 'alice')!;
const bob = TEST_IDP_USERS.find((u) => u.login === 'bob')!;

let idp: TestIdp;
let server: TestServer;
let home: string;

interface Proc {
  output(): string;
  kill(signal?: NodeJS.Signals): void;
  exited: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

function start(args: string[], env: Record<string, string> = {}, cwd = home): Proc {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: home,
      TESSERA_HOME: home,
      TESSERA_API_URL: server.url,
      NO_COLOR: '1',
      TZ: 'Europe/Paris',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
  return { output: () => stdout + stderr, exited, kill: (signal: NodeJS.Signals = 'SIGTERM') => void child.kill(signal) };
}

const tessera = (args: string[], env: Record<string, string> = {}) => start(args, env).exited;

/** Runs `tessera login --no-browser` and plays the browser: follows the printed URL, logs in at the IdP, lands on the CLI's loopback. */
async function cliLogin(user: { login: string; password: string }) {
  const proc = start(['login', '--no-browser', '--timeout', '60']);
  await waitFor(() => /http:\/\/\S+\/auth\/cli\/authorize\S+/.test(proc.output()), { timeoutMs: 20_000, what: 'the login URL' });
  const url = (/http:\/\/\S+\/auth\/cli\/authorize\S+/.exec(proc.output()) as RegExpExecArray)[0];
  const browser = createTestBrowser();
  const landing = await browser.loginAtIdp(url, user);
  expect(landing.url.origin).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  expect(landing.url.pathname).toBe('/callback');
  expect(await landing.response?.text()).toMatch(/Logged in/);
  return { proc, result: await proc.exited, url };
}

beforeAll(async () => {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build first (npm run build)`);
  home = mkdtempSync(join(tmpdir(), 'tessera-login-e2e-'));
  let url = '';
  idp = await startTestIdp({ clients: () => [{ client_id: 'tessera', client_secret: SECRET, redirect_uris: [`${url}/auth/callback`] }] });
  server = await startTestServer({
    backgroundServices: false,
    auth: {
      providers: [
        {
          name: 'corp',
          issuer: idp.issuer,
          clientId: 'tessera',
          clientSecret: SECRET,
          scopes: ['openid', 'email', 'profile', 'groups'],
          roleRules: [
            { role: 'developer', when: '"data-eng" in claims.groups' },
            { role: 'viewer', when: '"viewers" in claims.groups' },
          ],
        },
      ],
      // Shorter than the CLI's refresh margin: every command refreshes, which the tests watch.
      sessions: { accessTokenLifetime: '30s' },
    },
  });
  url = server.url;
});

afterAll(async () => {
  await server?.close();
  await idp?.close();
  if (home) rmSync(home, { recursive: true, force: true });
});

describe('tessera login (loopback redirect + PKCE)', () => {
  it('logs in through the browser and says who you are', async () => {
    const { result, url } = await cliLogin(alice);
    expect(result.stderr).toMatch(/To log in at corp, open this URL/);
    const authorize = new URL(url);
    expect(authorize.searchParams.get('code_challenge_method')).toBe('S256');
    expect(authorize.searchParams.get('redirect_uri')).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/callback$/);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/✓ logged in to http:\/\/127\.0\.0\.1:\d+ as alice@example\.com \(corp\) · roles developer/);
  });

  it('keeps only short-lived Tessera credentials, in a file only you can read', () => {
    const path = join(home, 'credentials.json');
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const file = JSON.parse(readFileSync(path, 'utf8')) as { servers: Record<string, Record<string, string>> };
    const entry = file.servers[server.url] as Record<string, string>;
    expect(entry.refreshToken).toMatch(/^tsrt_/);
    expect(Date.parse(entry.accessTokenExpiresAt) - Date.now()).toBeLessThanOrEqual(31_000);
    // A Tessera access token (at+jwt for the API), never the IdP's tokens.
    const header = JSON.parse(Buffer.from((entry.accessToken as string).split('.')[0] as string, 'base64url').toString()) as {
      typ: string;
    };
    expect(header.typ).toBe('at+jwt');
    const payload = JSON.parse(Buffer.from((entry.accessToken as string).split('.')[1] as string, 'base64url').toString()) as Record<
      string,
      unknown
    >;
    expect(payload.iss).toBe(server.issuer);
    expect(payload.aud).toBe(`${server.issuer}/api`);
  });

  it('whoami shows the person and the roles, refreshing the access token as needed', async () => {
    const before = JSON.parse(readFileSync(join(home, 'credentials.json'), 'utf8')).servers[server.url].refreshToken as string;
    const r = await tessera(['whoami']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/alice@example\.com\s+person corp:alice via corp/);
    expect(r.stdout).toMatch(/roles\s+developer\n/);
    const after = JSON.parse(readFileSync(join(home, 'credentials.json'), 'utf8')).servers[server.url].refreshToken as string;
    expect(after).not.toBe(before);
    const json = JSON.parse((await tessera(['whoami', '--json'])).stdout) as Record<string, unknown>;
    expect(json).toMatchObject({ kind: 'person', id: 'corp:alice', label: 'alice@example.com', roles: [{ role: 'developer' }] });
  });

  it('acts as the person: a developer creates a pool', async () => {
    const r = await tessera(['pools', 'create', 'alices-pool']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/created work pool alices-pool/);
  });

  it('logout ends the session on the server and forgets the credentials', async () => {
    const stored = JSON.parse(readFileSync(join(home, 'credentials.json'), 'utf8')).servers[server.url] as { refreshToken: string };
    const r = await tessera(['logout']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/logged out alice@example\.com/);
    const file = JSON.parse(readFileSync(join(home, 'credentials.json'), 'utf8')) as { servers: Record<string, unknown> };
    expect(file.servers[server.url]).toBeUndefined();
    const refresh = await fetch(`${server.url}/auth/cli/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ grant_type: 'refresh_token', refresh_token: stored.refreshToken }),
    });
    expect(refresh.status).toBe(400);
    expect(((await refresh.json()) as { error: string }).error).toBe('invalid_grant');
    const who = await tessera(['whoami']);
    expect(who.code).toBe(1);
    expect(who.stderr).toMatch(/ERR_UNAUTHENTICATED: /);
    expect(who.stderr).toMatch(/log in with `tessera login`|tessera login/);
  });

  it('ends the whole session when a used refresh token is presented again (stolen copy)', async () => {
    await cliLogin(bob);
    const path = join(home, 'credentials.json');
    const first = JSON.parse(readFileSync(path, 'utf8')).servers[server.url].refreshToken as string;
    expect((await tessera(['whoami'])).code).toBe(0); // rotates
    const replay = await fetch(`${server.url}/auth/cli/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ grant_type: 'refresh_token', refresh_token: first }),
    });
    expect(replay.status).toBe(400);
    expect(((await replay.json()) as { error_description: string }).error_description).toMatch(/already used.*ended/);
    // The legitimate copy is dead too: the CLI forgets it and asks for a new login.
    writeFileSync(
      path,
      JSON.stringify({
        version: 1,
        servers: {
          [server.url]: { ...JSON.parse(readFileSync(path, 'utf8')).servers[server.url], accessTokenExpiresAt: new Date(0).toISOString() },
        },
      }),
      { mode: 0o600 },
    );
    const who = await tessera(['whoami']);
    expect(who.code).toBe(1);
    expect(who.stderr).toMatch(/not logged in/);
  });

  it('refuses a login code redeemed with the wrong PKCE verifier or redirect URI', async () => {
    const res = await fetch(`${server.url}/auth/cli/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        grant_type: 'authorization_code',
        code: 'tslc_notarealcodeatall0000000000',
        code_verifier: 'x'.repeat(43),
        redirect_uri: 'http://127.0.0.1:1/callback',
      }),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: 'invalid_grant', code: 'ERR_LOGIN_FAILED' });
    const notLoopback = await fetch(
      `${server.url}/auth/cli/authorize?redirect_uri=${encodeURIComponent('https://evil.example/cb')}&code_challenge=${'a'.repeat(43)}`,
      { redirect: 'manual' },
    );
    expect(notLoopback.status).toBe(400);
    expect(((await notLoopback.json()) as { message: string }).message).toMatch(/not a loopback address/);
  });
});

describe('tessera login --device', () => {
  it('logs in with a code confirmed in a browser elsewhere', async () => {
    const proc = start(['login', '--device', '--timeout', '60']);
    await waitFor(() => /enter the code (\S+)/.test(proc.output()), { timeoutMs: 20_000, what: 'the user code' });
    const complete = /\(or open (\S+)\)/.exec(proc.output())?.[1] as string;
    expect(complete).toContain(idp.issuer);
    await createTestBrowser().confirmDeviceLogin(complete, alice);
    const result = await proc.exited;
    expect(result.stderr).toMatch(/open http:\/\/127\.0\.0\.1:\d+\/device on any device and enter the code/);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/logged in to .* as alice@example\.com \(corp\) · roles developer/);
    expect((await tessera(['whoami', '--json'])).stdout).toMatch(/"id": "corp:alice"/);
  });
});

describe('local mode', () => {
  it('says there is nothing to log in to', async () => {
    const local = await startTestServer({ backgroundServices: false });
    try {
      const r = await tessera(['login', '--no-browser'], { TESSERA_API_URL: local.url });
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/runs in local mode/);
      const who = await tessera(['whoami'], { TESSERA_API_URL: local.url });
      expect(who.stdout).toMatch(/local admin \(local mode/);
    } finally {
      await local.close();
    }
  });
});

describe('tessera server start', () => {
  it('refuses a public address when no identity provider is configured', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-login-e2e-srv-'));
    const r = await start(['server', 'start', '--host', '0.0.0.0', '--port', '0'], { TESSERA_HOME: dir }, dir).exited;
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/ERR_CONFIG: refusing to listen on 0\.0\.0\.0: no identity provider is configured/);
  });

  it('says LOCAL MODE loudly with no provider', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-login-e2e-srv-'));
    const proc = start(['server', 'start', '--port', '0'], { TESSERA_HOME: dir }, dir);
    await waitFor(() => /Ctrl\+C to stop/.test(proc.output()), { timeoutMs: 20_000, what: 'the server banner' });
    expect(proc.output()).toMatch(/mode\s+LOCAL MODE: single local admin, loopback only/);
    expect(proc.output()).toMatch(/LOCAL MODE: no identity provider is configured/);
    proc.kill();
    expect((await proc.exited).code).toBe(0);
  });

  it('reads the identity providers from tessera.config.yaml and the client secret from the environment', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-login-e2e-srv-'));
    writeFileSync(
      join(dir, 'tessera.config.yaml'),
      `auth:\n  providers:\n    - name: corp\n      issuer: ${idp.issuer}\n      client_id: tessera\n      role_rules:\n        - { role: developer, when: '"data-eng" in claims.groups' }\n`,
    );
    const proc = start(['server', 'start', '--port', '0'], { TESSERA_HOME: dir, TESSERA_AUTH_CORP_CLIENT_SECRET: SECRET }, dir);
    await waitFor(() => /Ctrl\+C to stop/.test(proc.output()), { timeoutMs: 20_000, what: 'the server banner' });
    const url = (/tessera server\s+(http:\/\/\S+)/.exec(proc.output()) as RegExpExecArray)[1] as string;
    expect(proc.output()).toMatch(/login\s+http:\/\/127\.0\.0\.1:\d+\/auth\/login/);
    expect(proc.output()).not.toMatch(/LOCAL MODE/);
    expect(await (await fetch(`${url}/auth/providers`)).json()).toMatchObject({ localMode: false, providers: [{ name: 'corp' }] });
    expect((await fetch(`${url}/api/work-pools`)).status).toBe(401);
    proc.kill();
    const r = await proc.exited;
    expect(r.code).toBe(0);
    expect(r.stdout + r.stderr).not.toContain(SECRET);
  });
});

describe('server logs', () => {
  it('hold no token, code, cookie or secret', () => {
    const logs = server.logs.join('');
    expect(logs).not.toContain(SECRET);
    for (const s of idp.secrets()) expect(logs).not.toContain(s);
    expect(logs).not.toMatch(/eyJ[A-Za-z0-9_-]{8,}\.eyJ/);
    expect(logs).not.toMatch(/ts(s|rt|lc|dv|l)_[A-Za-z0-9_-]{16,}/);
    const creds = readFileSync(join(home, 'credentials.json'), 'utf8');
    for (const m of creds.matchAll(/"(?:accessToken|refreshToken)": "([^"]+)"/g)) expect(logs).not.toContain(m[1]);
  });
});
