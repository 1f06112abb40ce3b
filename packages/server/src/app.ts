import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { RUN_TOKEN_CLAIM_NAMES, TesseraError } from '@tessera/core';
import { buildDiscoveryDocument } from '@tessera/identity';
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import { sql } from 'kysely';
import { registerApiRoutes } from './routes/api.js';
import { registerIdentityRoutes } from './routes/identity.js';
import { registerKeyRoutes } from './routes/keys.js';
import { errorBody, type Principal } from './routes/route.js';
import type { Services } from './services/index.js';

export interface BuildAppOptions {
  services: Services;
  logLevel: string;
  /** Optional sink for server log lines (tests scan them for secrets). */
  logStream?: NodeJS.WritableStream;
  version: string;
  /** Serve HTTPS with this certificate and key (PEM). */
  https?: { cert: Buffer; key: Buffer };
}

/** Builds the Fastify app: REST API, OIDC discovery and JWKS, health, metrics, API docs. */
export async function buildApp(options: BuildAppOptions): Promise<FastifyInstance> {
  const s = options.services;
  const app = Fastify({
    logger: {
      level: options.logLevel,
      // Credentials travel in this header; it must never reach a log line.
      redact: { paths: ['req.headers.authorization', 'req.headers.cookie'], censor: '[redacted]' },
      ...(options.logStream ? { stream: options.logStream } : {}),
    },
    logController: new LogController({ disableRequestLogging: options.logLevel !== 'debug' && options.logLevel !== 'trace' }),
    bodyLimit: 8 * 1024 * 1024,
    // Names in URLs (deployments, pools) may be up to 200 characters.
    routerOptions: { maxParamLength: 500 },
    ...(options.https ? { https: options.https } : {}),
    // Bodies are validated with zod in each route (for field-named errors); the JSON Schemas are for the OpenAPI document.
    ajv: { customOptions: { strict: false } },
  });
  app.setValidatorCompiler(() => (data) => ({ value: data }));
  app.decorateRequest('principal', null);

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

  app.addHook('onRequest', async (request) => {
    request.principal = await authenticate(s, request.headers.authorization);
  });

  app.setErrorHandler((error, request, reply) => {
    const { status, body } = errorBody(error);
    if (status >= 500) request.log.error({ err: error }, 'request failed');
    else request.log.debug({ code: body.code }, body.message);
    if (status === 401)
      reply.header('www-authenticate', `Bearer error="invalid_token", error_description="${body.message.replace(/"/g, "'")}"`);
    reply.code(status).send(body);
  });
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send({
      error: 'NotFound',
      code: 'ERR_NOT_FOUND',
      message: `no route ${request.method} ${request.url.split('?')[0]}; the API is described at /docs`,
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
    try {
      await sql`select 1`.execute(s.ctx.db);
      return { status: 'ready' };
    } catch {
      reply.code(503);
      return { status: 'not ready', reason: 'database unreachable' };
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
  return app;
}

async function authenticate(s: Services, header: string | undefined): Promise<Principal | null> {
  if (!header) {
    // Local mode (issue #2): no identity provider is configured and the server listens on loopback
    // only (startServer refuses anything else), so the caller is the local admin.
    return { kind: 'local-admin', id: 'local-admin', label: 'local admin' };
  }
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  if (!match) throw new TesseraError('ERR_UNAUTHENTICATED', 'malformed Authorization header: expected "Bearer <token>"');
  const token = match[1] as string;
  if (token.startsWith('tsr_')) return { kind: 'run', run: await s.credentials.authenticate(token) };
  throw new TesseraError('ERR_CREDENTIAL_INVALID', 'unrecognised bearer token: expected a run credential');
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
  ];
  return `${lines.join('\n')}\n`;
}
