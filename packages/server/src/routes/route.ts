import { type ApiErrorBody, redactSecrets, TesseraError, ValidationError } from '@tessera/core';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type ZodType, z } from 'zod';
import { isRole, type Principal, type Role, requireRole } from '../auth/principal.js';
import { DEFAULT_WORKSPACE } from '../services/workspace-identity.js';

export type { Principal } from '../auth/principal.js';

/**
 * Who may call a route (the route × role table is in docs/security.md).
 * - `public`: anyone (discovery, JWKS, health, the token endpoint, introspection);
 * - `run`: a live run credential, acting only for its own run;
 * - `worker`: a worker (joined, or federated with role `worker`); in local mode also the local admin;
 * - a {@link Role}: a person or machine holding that role or a stronger one (the local admin holds `admin`);
 * - `run-or-<role>`: either; the handler checks a run credential acts for its own run ({@link requireOwnRun}).
 */
export type Access = 'public' | 'run' | 'worker' | Role | `run-or-${Role}`;

export interface RouteContext<B> {
  body: B;
  params: Record<string, string>;
  query: Record<string, string | undefined>;
  principal: Principal | null;
  request: FastifyRequest;
  reply: FastifyReply;
}

export interface RouteDef<B> {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  url: string;
  access: Access;
  /**
   * The workspace the route acts in, for grants confined to one workspace. `null`: the whole
   * server (keys, trust policies, workers, audit): only grants for every workspace count.
   * @default the server's one workspace, "default"
   */
  workspace?: ((params: Record<string, string>) => string) | null;
  summary: string;
  tags: string[];
  body?: ZodType<B>;
  /** Status for a successful answer. @default 200 */
  status?: number;
  handler(ctx: RouteContext<B>): Promise<unknown>;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
    /** Why the request's credential was refused, if it was; raised by every non-public route. */
    authError: Error | null;
  }
}

/** One row of the route × role table. */
export interface RouteAccess {
  method: RouteDef<unknown>['method'];
  url: string;
  access: Access;
  /** `null`: server-wide (only grants for every workspace count); otherwise checked in a workspace. */
  scope: 'server' | 'workspace';
  summary: string;
}

const TABLES = new WeakMap<FastifyInstance, RouteAccess[]>();

/**
 * Starts collecting the route × role table of `app` (and of plugins registered on it later): call
 * once, before routes are added.
 */
export function collectRouteTable(app: FastifyInstance): void {
  const table: RouteAccess[] = [];
  TABLES.set(app, table);
  app.addHook('onRoute', (opts) => {
    const row = (opts.config as { routeAccess?: RouteAccess } | undefined)?.routeAccess;
    // Fastify adds a HEAD route for every GET, with the same config: one row is enough.
    if (row && opts.method !== 'HEAD' && !table.includes(row)) table.push(row);
  });
}

/** Every route registered with {@link route}, with its access: the route × role table (docs/security.md). */
export function routeTable(app: FastifyInstance): readonly RouteAccess[] {
  return TABLES.get(app) ?? [];
}

/** Registers a route: OpenAPI schema from zod, body validated with field-named errors, access checked. */
export function route<B = undefined>(app: FastifyInstance, def: RouteDef<B>): void {
  const routeAccess: RouteAccess = {
    method: def.method,
    url: def.url,
    access: def.access,
    scope: def.workspace === null ? 'server' : 'workspace',
    summary: def.summary,
  };
  app.route({
    method: def.method,
    url: def.url,
    schema: {
      summary: def.summary,
      tags: def.tags,
      ...(def.body ? { body: z.toJSONSchema(def.body, { target: 'openapi-3.0', unrepresentable: 'any' }) } : {}),
      ...(def.access !== 'public' ? { security: [{ bearer: [] }] } : {}),
    },
    config: { access: def.access, routeAccess },
    handler: async (request, reply) => {
      if (def.access !== 'public' && request.authError) throw request.authError;
      const params = request.params as Record<string, string>;
      authorize(def.access, request.principal, workspaceOf(def, params));
      // A run credential on a route about one run (`:id`) must name its own run, checked before the body.
      if (def.access.startsWith('run-or-') && params.id !== undefined) requireOwnRun(request.principal, params.id);
      let body = undefined as B;
      if (def.body) {
        const parsed = def.body.safeParse(request.body ?? {});
        if (!parsed.success) {
          const issues = parsed.error.issues.map((i) => ({ path: i.path.map(String).join('.') || '(body)', message: i.message }));
          throw new ValidationError(`invalid request: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, issues);
        }
        body = parsed.data;
      }
      const result = await def.handler({
        body,
        params: request.params as Record<string, string>,
        query: request.query as Record<string, string | undefined>,
        principal: request.principal,
        request,
        reply,
      });
      // A handler that answered itself returns the reply (its send may still be in the onSend hooks).
      if (result === reply || reply.sent) return reply;
      reply.code(def.status ?? (result === undefined ? 204 : 200));
      return result === undefined ? reply.send() : result;
    },
  });
}

function workspaceOf<B>(def: RouteDef<B>, params: Record<string, string>): string | undefined {
  if (def.workspace === null) return undefined;
  return def.workspace ? def.workspace(params) : DEFAULT_WORKSPACE;
}

/**
 * Checks the principal may call a route with this access.
 * @throws TesseraError `ERR_UNAUTHENTICATED` (401) for an anonymous caller, `ERR_FORBIDDEN` (403)
 *   naming what is needed for one without the role.
 */
export function authorize(access: Access, principal: Principal | null, workspace?: string): void {
  if (access === 'public') return;
  if (!principal) {
    throw new TesseraError('ERR_UNAUTHENTICATED', 'authentication required: log in with `tessera login`, or send a bearer token');
  }
  if (access === 'run') {
    if (principal.kind !== 'run') {
      throw new TesseraError('ERR_FORBIDDEN', 'this endpoint is for flow runs: call it from inside a run with its run credential');
    }
    return;
  }
  if (access === 'worker') {
    // Local mode: the worker started next to the server polls with no credential.
    if (principal.kind === 'worker' || principal.kind === 'local-admin') return;
    throw new TesseraError(
      'ERR_FORBIDDEN',
      principal.kind === 'run'
        ? 'a run credential can only act for its own run (its state, task runs, logs and identity tokens)'
        : 'this endpoint is for workers: start a worker with --join-token or --federated-token-file',
    );
  }
  if (access.startsWith('run-or-')) {
    if (principal.kind === 'run') return;
    requireRole(principal, access.slice('run-or-'.length) as Role, workspace);
    return;
  }
  if (isRole(access)) requireRole(principal, access, workspace);
}

/**
 * A run credential may touch only its own run. `runId` may be an id prefix as the URL gave it: a run
 * credential naming another run is refused before the lookup, so it cannot probe which runs exist.
 */
export function requireOwnRun(principal: Principal | null, runId: string): void {
  if (principal?.kind !== 'run') return;
  const own = principal.run.runId;
  if (own === runId || (runId.length >= 4 && own.startsWith(runId))) return;
  throw new TesseraError('ERR_FORBIDDEN', 'this run credential belongs to another run');
}

/**
 * Maps any error to the JSON error body; internal details stay in the server log. Whatever the body
 * quotes of the request (a value that failed validation, say) has tokens and credentials masked: a
 * token pasted into the wrong field never comes back in an error.
 */
export function errorBody(error: unknown): { status: number; body: ApiErrorBody } {
  if (error instanceof TesseraError) return { status: error.status, body: redactDeep(error.toJSON()) as ApiErrorBody };
  const fe = error as { statusCode?: number; code?: string; message?: string };
  if (fe.statusCode && fe.statusCode < 500) {
    return {
      status: fe.statusCode,
      body: { error: 'RequestError', code: 'ERR_VALIDATION', message: redactSecrets(fe.message ?? 'bad request') },
    };
  }
  return {
    status: 500,
    body: { error: 'InternalError', code: 'ERR_INTERNAL', message: 'internal server error; the server log has the details' },
  };
}

/** `value` with every string in it masked, keys included; arrays and plain objects are copied, anything else kept. */
export function redactDeep(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactSecrets(value);
  if (depth > 8 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => redactDeep(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[redactSecrets(k)] = redactDeep(v, depth + 1);
  return out;
}

/** An error as the server log records it: type, code, message and stack, tokens and credentials masked. */
export function loggableError(error: unknown, depth = 0): Record<string, unknown> {
  const e = error as { name?: string; code?: unknown; message?: unknown; stack?: unknown; cause?: unknown; details?: unknown };
  return {
    type: e?.name ?? typeof error,
    ...(e?.code !== undefined ? { code: String(e.code) } : {}),
    message: redactSecrets(String(e?.message ?? error)),
    ...(typeof e?.stack === 'string' ? { stack: redactSecrets(e.stack) } : {}),
    ...(e?.details !== undefined ? { details: redactDeep(e.details) } : {}),
    // The root cause, masked the same way (a driver's error under ours).
    ...(e?.cause !== undefined && depth < 3 ? { cause: loggableError(e.cause, depth + 1) } : {}),
  };
}

const FORM = 'application/x-www-form-urlencoded';

/**
 * Form bodies (RFC 6749 §B; what RFC 7662 introspection and the token endpoint take) parse to an
 * object of strings. A parameter sent twice becomes an array, which every schema refuses: RFC 6749
 * §3.2 forbids repeats. Registering twice is a no-op.
 */
export function registerFormParser(app: FastifyInstance): void {
  if (app.hasContentTypeParser(FORM)) return;
  app.addContentTypeParser(FORM, { parseAs: 'string' }, (_req, body, done) => {
    const out: Record<string, string | string[]> = {};
    for (const [k, v] of new URLSearchParams(body as string)) {
      const prev = out[k];
      out[k] = prev === undefined ? v : [...(Array.isArray(prev) ? prev : [prev]), v];
    }
    done(null, out);
  });
}

/**
 * The URLs a DPoP proof's `htu` may name for an endpoint at `path`: under the issuer (as discovery
 * publishes it), under the address this server listens on (on loopback, as `localhost` too), under
 * the address and port the request's connection actually reached (a server bound to 0.0.0.0, called
 * at one of its interfaces' addresses), and under the internal URLs the operator declared (a cluster
 * service name workers use: `--internal-url`). Never the request's own `Host` header: the caller
 * chooses that, and would make a proof made for any other server's endpoint of the same path
 * acceptable here (RFC 9449 §4.3, check 9).
 */
export function endpointUrls(
  issuer: string,
  listenUrl: string,
  path: string,
  request?: FastifyRequest,
  internalUrls: readonly string[] = [],
): string[] {
  const bases = new Set([issuer.replace(/\/+$/, '')]);
  for (const u of internalUrls) bases.add(u.replace(/\/+$/, ''));
  if (listenUrl) {
    const own = listenUrl.replace(/\/+$/, '');
    bases.add(own);
    bases.add(own.replace(/^(https?:\/\/)(?:127\.0\.0\.1|\[::1\])(?=:|$)/, '$1localhost'));
  }
  const socket = request?.raw.socket as (FastifyRequest['raw']['socket'] & { encrypted?: boolean }) | undefined;
  if (socket?.localAddress && socket.localPort) {
    const address = socket.localAddress.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '');
    const host = address.includes(':') ? `[${address}]` : address;
    bases.add(`${socket.encrypted ? 'https' : 'http'}://${host}:${socket.localPort}`);
  }
  return [...bases].map((b) => `${b}${path}`);
}
