import {
  type CliTokenResponse,
  DEVICE_CODE_GRANT,
  type DeviceLoginResponse,
  type LoginProvidersResponse,
  TesseraError,
  type WhoAmIResponse,
} from '@tessera/core';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { csrfTokenFor } from '../auth/csrf.js';
import { type LoginService, OAuthLoginError, SESSION_ENDED } from '../auth/oidc-login.js';
import { grantsOf } from '../auth/principal.js';
import { LOGIN_COOKIE, readCookie, SECURE_LOGIN_COOKIE, SECURE_SESSION_COOKIE, SESSION_COOKIE, serializeCookie } from '../auth/sessions.js';
import type { Services } from '../services/index.js';
import { route } from './route.js';

/**
 * People's login under `/auth` (see docs/login.md):
 * - browser: `GET /auth/login` → provider → `GET /auth/callback` → session cookie; `GET /auth/me`;
 *   `POST /auth/logout`;
 * - CLI: `GET /auth/cli/authorize` (loopback redirect + PKCE), `POST /auth/cli/device` (device
 *   grant), `POST /auth/cli/token` (redeem, refresh, poll), `POST /auth/cli/revoke`.
 * `GET /auth/providers` and `GET /auth/me` also answer in local mode; the rest need a provider.
 */
export function registerAuthRoutes(app: FastifyInstance, s: Services, login: LoginService | undefined): void {
  const requireLogin = (): LoginService => {
    if (login) return login;
    throw new TesseraError(
      'ERR_NOT_FOUND',
      'no identity provider is configured: this server runs in local mode (a single local admin, on loopback only), so there is nothing to log in to; configure auth.providers to enable login',
    );
  };

  const loginCookieOf = (request: FastifyRequest) => readCookie(request.headers.cookie, requireLogin().cookieNames(request, 'login'));
  const setLoginCookie = (request: FastifyRequest, reply: FastifyReply, value: string | null) => {
    const l = requireLogin();
    const secure = l.isSecure(request);
    const cookie = serializeCookie(secure ? SECURE_LOGIN_COOKIE : LOGIN_COOKIE, value ?? '', {
      secure,
      maxAge: value === null ? 0 : Math.floor(l.sessions.settings.loginTimeoutMs / 1000),
    });
    appendCookie(reply, cookie);
  };

  if (login) {
    // A cookie that names no live session is cleared with the first answer that refuses it, so a
    // browser does not present it (and the audit log record it) on every request.
    app.addHook('onSend', async (request, reply, payload) => {
      const err = request.authError;
      if (err instanceof TesseraError && err.details?.reason === SESSION_ENDED) {
        const secure = login.isSecure(request);
        appendCookie(reply, serializeCookie(secure ? SECURE_SESSION_COOKIE : SESSION_COOKIE, '', { secure, maxAge: 0 }));
      }
      return payload;
    });
  }

  route(app, {
    method: 'GET',
    url: '/auth/providers',
    access: 'public',
    summary: 'The identity providers people can log in at (empty in local mode)',
    tags: ['login'],
    handler: async (): Promise<LoginProvidersResponse> => ({
      localMode: s.auth.localAdmin,
      providers: login ? await login.describeProviders() : [],
    }),
  });

  route(app, {
    method: 'GET',
    url: '/auth/me',
    access: 'public',
    summary: 'Who the request’s credential says you are, your roles, and (browser) the CSRF token',
    tags: ['login'],
    handler: async ({ request }): Promise<WhoAmIResponse> => {
      if (request.authError) throw request.authError;
      const p = request.principal;
      if (!p) throw new TesseraError('ERR_UNAUTHENTICATED', 'you are not logged in: run tessera login, or open /auth/login in a browser');
      if (p.kind === 'run') {
        return { kind: 'run', id: `${p.run.runId}#${p.run.attempt}`, label: `run ${p.run.runId}`, roles: [] };
      }
      const base: WhoAmIResponse = { kind: p.kind, id: p.id, label: p.label, roles: [...grantsOf(p)] };
      if (p.kind !== 'person') return base;
      base.provider = p.provider;
      if (p.sessionId && login) {
        const session = await login.sessions.findLive(p.sessionId);
        if (session) base.session = { id: session.id, kind: session.kind, createdAt: session.createdAt, expiresAt: session.expiresAt };
        const cookie = readCookie(request.headers.cookie, login.cookieNames(request, 'session'));
        if (cookie && session?.kind === 'browser') base.csrfToken = csrfTokenFor(cookie);
      }
      return base;
    },
  });

  // ── browser ──

  route(app, {
    method: 'GET',
    url: '/auth/login',
    access: 'public',
    summary: 'Start a browser login at an identity provider (?provider=<name>&return_to=/path)',
    tags: ['login'],
    handler: async ({ query, request, reply }) => {
      const l = requireLogin();
      const { loginCookie, authorizationUrl } = await l.beginLogin({
        ...(query.provider !== undefined ? { provider: query.provider } : {}),
        ...(query.return_to !== undefined ? { returnTo: query.return_to } : {}),
      });
      setLoginCookie(request, reply, loginCookie);
      reply.header('cache-control', 'no-store');
      return reply.redirect(authorizationUrl.href, 302);
    },
  });

  route(app, {
    method: 'GET',
    url: '/auth/callback',
    access: 'public',
    summary: 'Where the identity provider sends the browser back (code, state)',
    tags: ['login'],
    handler: async ({ request, reply }) => {
      const l = requireLogin();
      reply.header('cache-control', 'no-store');
      // The login cookie is single use whatever happens.
      setLoginCookie(request, reply, null);
      const callbackUrl = new URL(request.url, `${l.redirectUri()}`);
      let result: Awaited<ReturnType<LoginService['completeLogin']>>;
      try {
        result = await l.completeLogin(loginCookieOf(request), callbackUrl);
      } catch (e) {
        const err = e as TesseraError;
        await s.audit.record({
          principal: null,
          action: 'auth.login_failed',
          target: 'browser',
          result: 'failure',
          detail: { code: err.code ?? 'ERR_INTERNAL', reason: String(err.details?.reason ?? ''), message: err.message, ip: request.ip },
        });
        throw e;
      }
      const principal = l.principalOf(result.session);
      await s.audit.record({
        principal: principal ?? null,
        action: 'auth.login',
        target: result.session.provider,
        result: 'success',
        detail: {
          session: result.session.id,
          kind: result.kind,
          roles: (principal?.grants ?? []).map((g) => g.role).join(','),
          ip: request.ip,
        },
      });
      request.log.info({ session: result.session.id, person: result.session.personId, kind: result.kind }, 'person logged in');
      if (result.kind === 'cli') return reply.redirect(result.redirect.href, 303);
      const secure = l.isSecure(request);
      appendCookie(
        reply,
        serializeCookie(secure ? SECURE_SESSION_COOKIE : SESSION_COOKIE, result.cookie, {
          secure,
          maxAge: (Date.parse(result.session.expiresAt) - s.ctx.clock.now()) / 1000,
        }),
      );
      return reply.redirect(result.returnTo, 303);
    },
  });

  route(app, {
    method: 'POST',
    url: '/auth/logout',
    access: 'public',
    summary: 'End the session (browser: cookie + X-CSRF-Token; CLI: its access token)',
    tags: ['login'],
    handler: async ({ request, reply }) => {
      const l = requireLogin();
      if (request.authError) throw request.authError;
      const p = request.principal;
      if (p?.kind !== 'person' || !p.sessionId) {
        throw new TesseraError(
          'ERR_UNAUTHENTICATED',
          'there is no login session to end: send the session cookie (browser) or your access token (CLI)',
        );
      }
      await l.sessions.revoke(p.sessionId, 'logged out');
      await s.audit.record({
        principal: p,
        action: 'auth.logout',
        target: p.provider,
        result: 'success',
        detail: { session: p.sessionId },
      });
      const secure = l.isSecure(request);
      appendCookie(reply, serializeCookie(secure ? SECURE_SESSION_COOKIE : SESSION_COOKIE, '', { secure, maxAge: 0 }));
      return { loggedOut: true, session: p.sessionId };
    },
  });

  // ── CLI ──

  route(app, {
    method: 'GET',
    url: '/auth/cli/authorize',
    access: 'public',
    summary: 'tessera login: start a browser login that ends at the CLI’s loopback listener (RFC 8252, PKCE S256)',
    tags: ['login'],
    handler: async ({ query, request, reply }) => {
      const l = requireLogin();
      if (!query.redirect_uri || !query.code_challenge) {
        throw new TesseraError('ERR_VALIDATION', 'redirect_uri and code_challenge are required (this URL is opened by tessera login)');
      }
      const { loginCookie, authorizationUrl } = await l.beginLogin({
        ...(query.provider ? { provider: query.provider } : {}),
        cli: {
          redirectUri: query.redirect_uri,
          codeChallenge: query.code_challenge,
          ...(query.code_challenge_method ? { codeChallengeMethod: query.code_challenge_method } : {}),
          ...(query.state ? { state: query.state } : {}),
        },
      });
      setLoginCookie(request, reply, loginCookie);
      reply.header('cache-control', 'no-store');
      return reply.redirect(authorizationUrl.href, 302);
    },
  });

  route(app, {
    method: 'POST',
    url: '/auth/cli/device',
    access: 'public',
    summary: 'tessera login --device: start a device login at the provider (RFC 8628)',
    tags: ['login'],
    body: z.object({ provider: z.string().optional() }).loose(),
    handler: async ({ body }): Promise<DeviceLoginResponse> => requireLogin().startDeviceLogin(body.provider),
  });

  route(app, {
    method: 'POST',
    url: '/auth/cli/token',
    access: 'public',
    summary: 'The CLI’s token endpoint: redeem the login code, refresh, or poll a device login (RFC 6749 answers)',
    tags: ['login'],
    body: z
      .object({
        grant_type: z.string(),
        code: z.string().optional(),
        code_verifier: z.string().optional(),
        redirect_uri: z.string().optional(),
        refresh_token: z.string().optional(),
        device_code: z.string().optional(),
      })
      .loose(),
    handler: async ({ body, reply }): Promise<CliTokenResponse | FastifyReply> => {
      const l = requireLogin();
      reply.header('cache-control', 'no-store');
      try {
        switch (body.grant_type) {
          case 'authorization_code':
            return await l.redeemCliCode({
              ...(body.code ? { code: body.code } : {}),
              ...(body.code_verifier ? { codeVerifier: body.code_verifier } : {}),
              ...(body.redirect_uri ? { redirectUri: body.redirect_uri } : {}),
            });
          case 'refresh_token':
            return await l.refreshCli(body.refresh_token);
          case DEVICE_CODE_GRANT:
            return await l.pollDeviceLogin(body.device_code);
          default:
            throw new OAuthLoginError(
              'unsupported_grant_type',
              `grant_type ${JSON.stringify(body.grant_type)} is not supported here: use authorization_code, refresh_token or ${DEVICE_CODE_GRANT}`,
            );
        }
      } catch (e) {
        if (!(e instanceof OAuthLoginError)) throw e;
        return reply.code(400).send({ error: e.error, error_description: e.message, code: e.code, message: e.message });
      }
    },
  });

  route(app, {
    method: 'POST',
    url: '/auth/cli/revoke',
    access: 'public',
    summary: 'tessera logout: end the CLI session a refresh token belongs to (RFC 7009: always 200)',
    tags: ['login'],
    body: z.object({ token: z.string() }).loose(),
    handler: async ({ body }) => {
      const l = requireLogin();
      const session = await l.sessions.findByRefreshToken(body.token);
      if (session) {
        await l.sessions.revoke(session.id, 'logged out');
        const principal = l.principalOf(session);
        await s.audit.record({
          principal: principal ?? null,
          action: 'auth.logout',
          target: session.provider,
          result: 'success',
          detail: { session: session.id },
        });
      }
      return { revoked: true };
    },
  });
}

function appendCookie(reply: FastifyReply, cookie: string): void {
  const existing = reply.getHeader('set-cookie');
  const list = existing === undefined ? [] : Array.isArray(existing) ? existing.map(String) : [String(existing)];
  reply.header('set-cookie', [...list, cookie]);
}
