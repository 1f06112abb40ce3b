import { pipeline, Transform } from 'node:stream';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { RUN_TOKEN_CLAIM_NAMES, redactSecrets, TesseraError } from '@tessera/core';
import { buildDiscoveryDocument } from '@tessera/identity';
import Fastify, { type FastifyInstance, type FastifyRequest, LogController } from 'fastify';
import { sql } from 'kysely';
import type { LoginService } from './auth/oidc-login.js';
import { registerApiRoutes } from './routes/api.js';
import { registerAuthRoutes } from './routes/auth.js';
import { registerFederationRoutes } from './routes/federation.js';
import { registerIdentityRoutes } from './routes/identity.js';
import { registerKeyRoutes } from './routes/keys.js';
import { collectRouteTable, errorBody, loggableError } from './routes/route.js';
import type { Services } from './services/index.js';

/** The largest body a request without a valid credential may send. */
const ANONYMOUS_BODY_LIMIT = 64 * 1024;

/**
 * The answer to a body over {@link ANONYMOUS_BODY_LIMIT} from a request without a valid credential: the
 * credential's own refusal if it sent one (401, which tells a client to log in or refresh), else 413.
 */
function tooLargeWithoutCredential(request: FastifyRequest, length?: number): Error {
  if (request.authError) return request.authError;
  return new TesseraError(
    'ERR_VALIDATION',
    `a request without a credential may send at most ${ANONYMOUS_BODY_LIMIT / 1024} KiB${length === undefined ? '' : `; this one sends ${length} bytes`}: send a run credential or an access token (tessera login) to send more`,
    { status: 413 },
  );
}

/** Paths whose answers no cache may store unless the route says otherwise. */
const NO_STORE_PREFIXES = ['/api/', '/oauth/', '/auth/'];

export interface BuildAppOptions {
  services: Services;
  logLevel: string;
  /** Optional sink for server log lines (tests scan them for secrets). */
  logStream?: NodeJS.WritableStream;
  version: string;
  /** Serve HTTPS with this certificate and key (PEM). */
  https?: { cert: Buffer; key: Buffer };
  /** People's login (`/auth/*` routes), when identity providers are configured. */
  login?: LoginService;
  /** Trust `X-Forwarded-*` headers from these proxies (Fastify's `trustProxy`): protocol for Secure cookies, client address. @default false */
  trustProxy?: boolean | string | string[];
}

/** Query parameters that carry a secret (login codes, PKCE verifiers, tokens): never logged. */
const SECRET_QUERY = /([?&](?:code|code_verifier|state|token|refresh_token|device_code|access_token|id_token)=)[^&#]*/gi;

/** Builds the Fastify app: REST API, OIDC discovery and JWKS, health, metrics, API docs. */
export async function buildApp(options: BuildAppOptions): Promise<FastifyInstance> {
  const s = options.services;
  const app = Fastify({
    logger: {
      level: options.logLevel,
      // Credentials travel in this header; it must never reach a log line.
      redact: { paths: ['req.headers.authorization', 'req.headers.cookie'], censor: '[redacted]' },
      // The login callback's URL carries the authorization code: request lines keep the path only.
      serializers: {
        req: (req: { method: string; url: string; ip?: string }) => ({
          method: req.method,
          url: redactSecrets(req.url.replace(SECRET_QUERY, '$1[redacted]')),
          remoteAddress: req.ip,
        }),
      },
      ...(options.logStream ? { stream: options.logStream } : {}),
    },
    logController: new LogController({ disableRequestLogging: options.logLevel !== 'debug' && options.logLevel !== 'trace' }),
    bodyLimit: 8 * 1024 * 1024,
    // Shutting down must not wait on idle keep-alive connections or held long polls.
    forceCloseConnections: true,
    // Names in URLs (deployments, pools) may be up to 200 characters.
    routerOptions: { maxParamLength: 500 },
    ...(options.https ? { https: options.https } : {}),
    ...(options.trustProxy !== undefined ? { trustProxy: options.trustProxy } : {}),
    // Bodies are validated with zod in each route (for field-named errors); the JSON Schemas are for the OpenAPI document.
    ajv: { customOptions: { strict: false } },
  });
  app.setValidatorCompiler(() => (data) => ({ value: data }));
  app.decorateRequest('principal', null);
  app.decorateRequest('authError', null);
  app.decorateRequest('preloaded', null);
  collectRouteTable(app);

  await app.register(swagger, {
    openapi: {
      info: {
        title: 'Tessera API',
        version: options.version,
        description: 'Workflow orchestration where every run carries its own OIDC identity.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  s.audit.setLogger(app.log);
  app.addHook('onRequest', async (request, reply) => {
    // API answers carry tokens, run credentials and private data: no cache may keep them (RFC 6749
    // §5.1 for the token endpoints, RFC 9111 for shared caches and proxies). Set before the handler
    // runs, so errors carry it too; a route whose answer may be cached sets its own.
    if (NO_STORE_PREFIXES.some((p) => request.url.startsWith(p))) reply.header('cache-control', 'no-store');
    // A refused credential is remembered, not thrown: public routes (discovery, the token endpoint)
    // still answer a caller with a stale token, and every other route raises it (route.ts).
    try {
      request.principal = await s.auth.authenticate(request);
    } catch (e) {
      request.principal = null;
      request.authError = e as Error;
      await s.audit.record({
        principal: null,
        action: 'auth.failed',
        target: `${request.method} ${request.url.split('?')[0]}`,
        result: 'failure',
        detail: { code: e instanceof TesseraError ? e.code : 'ERR_INTERNAL', reason: (e as Error).message, ip: request.ip },
      });
    }
    // Whoever has no credential (the token and introspection endpoints, a login, a join) sends a few
    // hundred bytes: not the 8 MiB a run's log upload may take, parsed before any route could refuse it.
    if (!request.principal) {
      const length = Number(request.headers['content-length'] ?? 0);
      if (length > ANONYMOUS_BODY_LIMIT) throw tooLargeWithoutCredential(request, length);
    }
  });

  // The same limit on the bytes actually read: a chunked body says no length up front.
  app.addHook('preParsing', async (request, _reply, payload) => {
    if (request.principal || request.method === 'GET' || request.method === 'HEAD') return payload;
    let read = 0;
    const counted = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        read += chunk.length;
        if (read > ANONYMOUS_BODY_LIMIT) done(tooLargeWithoutCredential(request));
        else done(null, chunk);
      },
    });
    // pipeline, not pipe: a client that aborts mid-upload must end the parse, not leave it waiting.
    pipeline(payload, counted, () => {});
    return counted;
  });

  app.setErrorHandler((error, request, reply) => {
    const { status, body } = errorBody(error);
    // 429 and 503 say when to come back (RFC 9110 §10.2.3), as details.retryAfterSeconds does.
    const retryAfter = body.details?.retryAfterSeconds;
    if (typeof retryAfter === 'number') reply.header('retry-after', String(retryAfter));
    if (status >= 500) request.log.error({ err: loggableError(error) }, 'request failed');
    else request.log.debug({ code: body.code }, body.message);
    if (status === 403 && request.principal && error instanceof TesseraError && error.code === 'ERR_FORBIDDEN') {
      void s.audit.record({
        principal: request.principal,
        action: 'authz.denied',
        target: `${request.method} ${request.routeOptions.url ?? request.url.split('?')[0]}`,
        result: 'denied',
        detail: { reason: error.message },
      });
    }
    if (status === 401)
      // RFC 6750 §3: a quoted-string of printable ASCII only (a header with other characters is refused by Node).
      reply.header(
        'www-authenticate',
        `Bearer error="invalid_token", error_description="${body.message.replace(/"/g, "'").replace(/[^\x20-\x7e]/g, '?')}"`,
      );
    reply.code(status).send(body);
  });
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send({
      error: 'NotFound',
      code: 'ERR_NOT_FOUND',
      message: redactSecrets(`no route ${request.method} ${request.url.split('?')[0]}; the API is described at /docs`),
    });
  });

  app.get(
    '/.well-known/openid-configuration',
    { schema: { tags: ['identity'], summary: 'OpenID Provider metadata' } },
    async (_req, reply) => {
      reply.header('cache-control', 'public, max-age=300');
      return buildDiscoveryDocument({ issuer: s.issuer(), claims: [...RUN_TOKEN_CLAIM_NAMES] });
    },
  );
  app.get('/.well-known/jwks.json', { schema: { tags: ['identity'], summary: 'Public signing keys (JWKS)' } }, async (_req, reply) => {
    // Short enough that a key published before it signs is seen by caches in time (see docs/identity.md).
    reply.header('cache-control', 'public, max-age=300');
    return s.keys.jwks();
  });
  app.get('/healthz', { schema: { tags: ['operations'], summary: 'Liveness' } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { tags: ['operations'], summary: 'Readiness: the database answers' } }, async (_req, reply) => {
    // Which replica answered and whether it runs the singleton services (scheduler…): for operators.
    const replica = s.ctx.replica ? { replica: s.ctx.replica.id, leader: s.ctx.replica.isLeader() } : {};
    let timer: NodeJS.Timeout | undefined;
    try {
      // A database that hangs (a partition) must not hang the probe: not ready after 2 s.
      await Promise.race([
        sql`select 1`.execute(s.ctx.db),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error('timeout')), 2_000);
        }),
      ]);
      // Ready (the API, the UI and workers are served), but say so while identity tokens wait for a key.
      const pending = s.keys.pendingAlgorithms();
      return { status: 'ready', ...replica, ...(Object.keys(pending).length > 0 ? { signingKeysPendingUntil: pending } : {}) };
    } catch {
      reply.code(503);
      return { status: 'not ready', reason: 'database unreachable', ...replica };
    } finally {
      clearTimeout(timer);
    }
  });
  app.get('/metrics', { schema: { tags: ['operations'], summary: 'Prometheus metrics' } }, async (_req, reply) => {
    reply.header('content-type', 'text/plain; version=0.0.4');
    return renderMetrics(s);
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  registerApiRoutes(app, s);
  registerIdentityRoutes(app, s);
  registerKeyRoutes(app, s);
  registerFederationRoutes(app, s);
  registerAuthRoutes(app, s, options.login);
  return app;
}

async function renderMetrics(s: Services): Promise<string> {
  const db = s.ctx.db;
  const byState = await db
    .selectFrom('flow_runs')
    .select(['state_type', (eb) => eb.fn.countAll<number>().as('n')])
    .groupBy('state_type')
    .execute();
  const tokens = await db
    .selectFrom('issued_tokens')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow();
  const taskRuns = await db
    .selectFrom('task_runs')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow();
  const lines = [
    '# HELP tessera_flow_runs Flow runs by current state type.',
    '# TYPE tessera_flow_runs gauge',
    ...byState.map((r) => `tessera_flow_runs{state="${r.state_type}"} ${Number(r.n)}`),
    '# HELP tessera_task_runs_total Task runs recorded.',
    '# TYPE tessera_task_runs_total counter',
    `tessera_task_runs_total ${Number(taskRuns.n)}`,
    '# HELP tessera_identity_tokens_issued_total Run identity tokens issued.',
    '# TYPE tessera_identity_tokens_issued_total counter',
    `tessera_identity_tokens_issued_total ${Number(tokens.n)}`,
    '# HELP tessera_audit_suppressed_total Failures of unidentified callers counted, not recorded, by this replica (over the per-address budget).',
    '# TYPE tessera_audit_suppressed_total counter',
    `tessera_audit_suppressed_total ${s.audit.suppressed}`,
  ];
  return `${lines.join('\n')}\n`;
}
