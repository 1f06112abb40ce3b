import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  type CliTokenResponse,
  DEVICE_CODE_GRANT,
  type DeviceLoginResponse,
  type LoginProvidersResponse,
  type RoleGrantInfo,
  TesseraError,
  type WhoAmIResponse,
} from '@tessera/core';
import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { postCliToken, storedLoginFrom } from '../credentials.js';
import { examples } from '../lib/options.js';
import { formatTime, zoneName } from '../lib/time.js';

/** Options of `tessera login`. */
interface LoginFlags {
  provider?: string;
  device?: boolean;
  /** `false` with `--no-browser`. */
  browser?: boolean;
  timeout?: string;
  json?: boolean;
}

/** How long `tessera login` waits for the browser (or the device code) by default, seconds. */
const DEFAULT_LOGIN_TIMEOUT_S = 300;

/**
 * `tessera login`, `tessera logout`, `tessera whoami`: people's login from the command line.
 *
 * The CLI never sees an IdP token. `tessera login` opens the server's `/auth/cli/authorize` in the
 * browser with a PKCE challenge and a loopback redirect (RFC 8252 §7.3, `http://127.0.0.1:<port>`);
 * the server runs the login at the identity provider and sends the browser back to the CLI with a
 * one-time code, which the CLI redeems with its verifier for a Tessera access token (10 min) and a
 * single-use refresh token. With `--device` the provider's device grant is used instead (headless
 * machines). Both are kept in `<home>/credentials.json` (mode 0600) and refreshed as needed.
 */
export function registerLoginCommands(program: Command, ctx: () => CliContext): void {
  program
    .command('login')
    .description('log in to the Tessera server through your identity provider (opens a browser)')
    .option('--provider <name>', 'identity provider to use when the server has several (see the list it prints)')
    .option('--device', 'use the device code flow instead of a browser on this machine (SSH sessions, containers)')
    .option('--no-browser', 'print the login URL instead of opening a browser')
    .option('--timeout <seconds>', `give up after this long (default ${DEFAULT_LOGIN_TIMEOUT_S})`)
    .option('--json', 'print who you are as JSON once logged in')
    .addHelpText(
      'after',
      `
Credentials: short-lived tokens in $TESSERA_HOME/credentials.json (mode 0600), refreshed automatically
until the login session ends (12 h by default); then run tessera login again.
${examples(['tessera login'], ['tessera login --provider corp --api-url https://tessera.example.com'], ['tessera login --device', 'no browser here: enter a code on another device'])}`,
    )
    .action(async (opts: LoginFlags) => {
      const c = ctx();
      const apiUrl = c.config().apiUrl;
      const providers = await getJson<LoginProvidersResponse>(apiUrl, '/auth/providers');
      if (providers.localMode || providers.providers.length === 0) {
        c.out(
          `${c.style.green('✓')} ${apiUrl} runs in local mode: there is no identity provider to log in at, and you act as the local admin from this machine`,
        );
        return;
      }
      const provider = pickProvider(providers, opts.provider);
      const timeoutMs = parseTimeout(opts.timeout);
      const tokens = opts.device
        ? await deviceLogin(c, apiUrl, provider, timeoutMs)
        : await loopbackLogin(c, apiUrl, provider, opts.browser !== false, timeoutMs);
      c.credentials().save(apiUrl, storedLoginFrom(tokens));
      if (opts.json) return c.json(tokens.person);
      c.out(
        `${c.style.green('✓')} logged in to ${apiUrl} as ${c.style.bold(tokens.person.label)} (${tokens.person.provider}) · ${rolesText(tokens.person.roles)}`,
      );
      const ends = new Date(Date.now() + tokens.refresh_expires_in * 1000);
      c.out(
        c.style.dim(
          `  session ends ${formatTime(ends, c.timeZone, { date: true })} ${zoneName(c.timeZone, ends)}; credentials in ${c.credentials().path}`,
        ),
      );
    });

  program
    .command('logout')
    .description('end your login session on the server and forget the stored credentials')
    .addHelpText('after', examples(['tessera logout']))
    .action(async () => {
      const c = ctx();
      const apiUrl = c.config().apiUrl;
      const stored = c.credentials().remove(apiUrl);
      if (!stored) {
        c.out(`not logged in to ${apiUrl}; nothing to do`);
        return;
      }
      try {
        await postJson(apiUrl, '/auth/cli/revoke', { token: stored.refreshToken });
      } catch (e) {
        c.err(
          c.errStyle.yellow(
            `warning: the server did not confirm the logout (${(e as Error).message}); the local credentials are deleted and the session ends by itself at ${stored.sessionExpiresAt}`,
          ),
        );
      }
      c.out(`${c.style.green('✓')} logged out ${stored.person.label} from ${apiUrl}`);
    });

  program
    .command('whoami')
    .description('show who the server says you are, and your roles')
    .option('--json', 'print JSON')
    .addHelpText('after', examples(['tessera whoami'], ['tessera whoami --json | jq -r .roles[].role']))
    .action(async (opts: { json?: boolean }) => {
      const c = ctx();
      const apiUrl = c.config().apiUrl;
      let me: WhoAmIResponse;
      try {
        me = await c.client().request<WhoAmIResponse>('GET', '/auth/me');
      } catch (e) {
        if (e instanceof TesseraError && e.status === 401) {
          throw new TesseraError('ERR_UNAUTHENTICATED', `not logged in to ${apiUrl}: run tessera login (${e.message})`, { cause: e });
        }
        throw e;
      }
      if (opts.json) return c.json(me);
      const s = c.style;
      if (me.kind === 'local-admin') {
        c.out(`${s.bold('local admin')} (local mode: ${apiUrl} has no identity provider) · roles admin`);
        return;
      }
      c.out(`${s.bold(me.label)}  ${s.dim(me.kind)} ${me.id}${me.provider ? ` via ${me.provider}` : ''}`);
      c.out(`  roles     ${me.roles.length === 0 ? 'none (ask an admin for a role binding)' : rolesList(me.roles)}`);
      if (me.session) {
        const ends = new Date(me.session.expiresAt);
        c.out(
          `  session   ${me.session.id.slice(0, 8)} (${me.session.kind}), ends ${formatTime(ends, c.timeZone, { date: true })} ${zoneName(c.timeZone, ends)}`,
        );
      }
      c.out(`  server    ${apiUrl}`);
    });
}

function rolesList(roles: RoleGrantInfo[]): string {
  return roles.map((r) => (r.workspace ? `${r.role} (workspace ${r.workspace})` : r.role)).join(', ');
}

function rolesText(roles: RoleGrantInfo[]): string {
  return roles.length === 0 ? 'no roles (ask an admin for a role binding)' : `roles ${rolesList(roles)}`;
}

function pickProvider(list: LoginProvidersResponse, wanted: string | undefined): string {
  const names = list.providers.map((p) => p.name);
  if (wanted) {
    if (!names.includes(wanted)) {
      throw new TesseraError('ERR_VALIDATION', `no identity provider named "${wanted}" on this server; choose one of: ${names.join(', ')}`);
    }
    return wanted;
  }
  if (names.length === 1) return names[0] as string;
  throw new TesseraError('ERR_VALIDATION', `this server has several identity providers; choose one with --provider: ${names.join(', ')}`);
}

function parseTimeout(raw: string | undefined): number {
  if (raw === undefined) return DEFAULT_LOGIN_TIMEOUT_S * 1000;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0)
    throw new TesseraError('ERR_VALIDATION', `--timeout ${JSON.stringify(raw)}: expected a number of seconds, e.g. 120`);
  return n * 1000;
}

/** Loopback redirect + PKCE (RFC 8252 §7.3, RFC 7636). */
async function loopbackLogin(
  c: CliContext,
  apiUrl: string,
  provider: string,
  openBrowser: boolean,
  timeoutMs: number,
): Promise<CliTokenResponse> {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const state = randomBytes(16).toString('base64url');
  const listener = await listenOnLoopback();
  const redirectUri = `http://127.0.0.1:${listener.port}/callback`;
  try {
    const url = new URL(`${apiUrl}/auth/cli/authorize`);
    url.searchParams.set('provider', provider);
    url.searchParams.set('redirect_uri', redirectUri);
    url.searchParams.set('code_challenge', challenge);
    url.searchParams.set('code_challenge_method', 'S256');
    url.searchParams.set('state', state);
    const opened = openBrowser && tryOpenBrowser(url.href);
    c.err(
      opened ? `Opening your browser to log in at ${provider}…` : `To log in at ${provider}, open this URL in a browser on this machine:`,
    );
    c.err(`  ${url.href}`);
    c.err(c.errStyle.dim(`Waiting for the login to finish (listening on 127.0.0.1:${listener.port}; Ctrl+C to cancel)…`));
    const callback = await listener.next(timeoutMs);
    const error = callback.searchParams.get('error');
    if (error) {
      throw new TesseraError(
        'ERR_LOGIN_FAILED',
        `the login was refused: ${error}${callback.searchParams.get('error_description') ? ` (${callback.searchParams.get('error_description')})` : ''}`,
      );
    }
    if (callback.searchParams.get('state') !== state) {
      throw new TesseraError(
        'ERR_LOGIN_FAILED',
        'the login response does not belong to this login (state mismatch): run tessera login again',
      );
    }
    const code = callback.searchParams.get('code');
    if (!code) throw new TesseraError('ERR_LOGIN_FAILED', 'the login response carries no code: run tessera login again');
    return await postCliToken(apiUrl, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: redirectUri });
  } finally {
    listener.close();
  }
}

/** Device authorization grant, brokered by the server (RFC 8628). */
async function deviceLogin(c: CliContext, apiUrl: string, provider: string, timeoutMs: number): Promise<CliTokenResponse> {
  const start = await postJson<DeviceLoginResponse>(apiUrl, '/auth/cli/device', { provider });
  c.err(
    `To log in at ${provider}, open ${c.errStyle.bold(start.verification_uri)} on any device and enter the code ${c.errStyle.bold(start.user_code)}`,
  );
  if (start.verification_uri_complete) c.err(c.errStyle.dim(`  (or open ${start.verification_uri_complete})`));
  c.err(c.errStyle.dim('Waiting for you to confirm… (Ctrl+C to cancel)'));
  const deadline = Date.now() + Math.min(timeoutMs, start.expires_in * 1000);
  let interval = Math.max(1, start.interval) * 1000;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, interval));
    try {
      return await postCliToken(apiUrl, { grant_type: DEVICE_CODE_GRANT, device_code: start.device_code });
    } catch (e) {
      const error = e instanceof TesseraError ? e.details?.error : undefined;
      if (error === 'authorization_pending') continue;
      if (error === 'slow_down') {
        interval += 5000;
        continue;
      }
      throw e;
    }
  }
  throw new TesseraError('ERR_TIMEOUT', 'the device code was not confirmed in time: run tessera login --device again');
}

interface LoopbackListener {
  port: number;
  /** The first request to /callback (its URL), or a timeout. */
  next(timeoutMs: number): Promise<URL>;
  close(): void;
}

/** Listens on 127.0.0.1 (an ephemeral port) for the browser's redirect back to the CLI. */
async function listenOnLoopback(): Promise<LoopbackListener> {
  let resolveCallback: (u: URL) => void = () => {};
  const received = new Promise<URL>((r) => {
    resolveCallback = r;
  });
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (url.pathname !== '/callback') {
      res.statusCode = 404;
      res.end();
      return;
    }
    const failed = url.searchParams.has('error');
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.setHeader('cache-control', 'no-store');
    res.end(
      `<!doctype html><meta charset="utf-8"><title>Tessera</title><body style="font-family:system-ui;margin:3em">` +
        `<h1>${failed ? 'Login failed' : 'Logged in'}</h1><p>${failed ? 'See the terminal for the reason.' : 'You can close this tab and return to the terminal.'}</p></body>`,
    );
    resolveCallback(url);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: (server.address() as AddressInfo).port,
    next: (timeoutMs) =>
      new Promise<URL>((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(
              new TesseraError('ERR_TIMEOUT', `the login did not finish within ${Math.round(timeoutMs / 1000)} s: run tessera login again`),
            ),
          timeoutMs,
        );
        received.then((u) => {
          clearTimeout(timer);
          resolve(u);
        });
      }),
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/** Opens a URL in the default browser; false when there is none to open (no display, CI). */
function tryOpenBrowser(url: string): boolean {
  if (process.env.CI || process.env.TESSERA_NO_BROWSER) return false;
  const [cmd, args] =
    process.platform === 'darwin'
      ? ['open', [url]]
      : process.platform === 'win32'
        ? ['cmd', ['/c', 'start', '', url]]
        : process.env.DISPLAY || process.env.WAYLAND_DISPLAY
          ? ['xdg-open', [url]]
          : [undefined, []];
  if (!cmd) return false;
  try {
    const child = spawn(cmd, args as string[], { stdio: 'ignore', detached: true });
    child.on('error', () => {});
    child.unref();
    return true;
  } catch {
    return false;
  }
}

async function getJson<T>(apiUrl: string, path: string): Promise<T> {
  return requestJson<T>(apiUrl, path, { method: 'GET' });
}

async function postJson<T>(apiUrl: string, path: string, body: unknown): Promise<T> {
  return requestJson<T>(apiUrl, path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

async function requestJson<T>(apiUrl: string, path: string, init: RequestInit): Promise<T> {
  let res: Response;
  try {
    res = await fetch(`${apiUrl}${path}`, {
      ...init,
      headers: { accept: 'application/json', ...init.headers },
      signal: AbortSignal.timeout(30_000),
    });
  } catch (e) {
    throw new TesseraError(
      'ERR_SERVER_UNREACHABLE',
      `cannot reach the Tessera server at ${apiUrl}; is it running? Set the server with --api-url or TESSERA_API_URL`,
      { cause: e },
    );
  }
  const text = await res.text();
  const body = text ? (JSON.parse(text) as T & { code?: string; message?: string }) : (undefined as T);
  if (!res.ok) {
    const b = (body ?? {}) as { code?: string; message?: string; error_description?: string };
    throw new TesseraError(
      (b.code as 'ERR_LOGIN_FAILED') ?? 'ERR_HTTP',
      b.message ?? b.error_description ?? `${path} answered ${res.status}`,
      { status: res.status },
    );
  }
  return body;
}
