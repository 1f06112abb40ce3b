import { type ApiErrorBody, TesseraError, ValidationError } from '@tessera/core';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type ZodType, z } from 'zod';
import type { RunCredentialPrincipal } from '../services/credentials.js';

/**
 * Who may call a route.
 * - `public`: anyone (discovery, JWKS, health);
 * - `run`: a live run credential, acting only for its own run;
 * - `user`: a person or machine (in local mode: the local admin); issue #5 adds roles;
 * - `worker`: a worker (local mode: anyone on loopback).
 */
export type Access = 'public' | 'run' | 'run-or-user' | 'user' | 'worker';

export type Principal = { kind: 'run'; run: RunCredentialPrincipal } | { kind: 'local-admin'; id: 'local-admin'; label: 'local admin' };

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
  }
}

/** Registers a route: OpenAPI schema from zod, body validated with field-named errors, access checked. */
export function route<B = undefined>(app: FastifyInstance, def: RouteDef<B>): void {
  app.route({
    method: def.method,
    url: def.url,
    schema: {
      summary: def.summary,
      tags: def.tags,
      ...(def.body ? { body: z.toJSONSchema(def.body, { target: 'openapi-3.0', unrepresentable: 'any' }) } : {}),
      ...(def.access !== 'public' ? { security: [{ bearer: [] }] } : {}),
    },
    config: { access: def.access },
    handler: async (request, reply) => {
      authorize(def.access, request.principal);
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
      if (reply.sent) return reply;
      reply.code(def.status ?? (result === undefined ? 204 : 200));
      return result === undefined ? reply.send() : result;
    },
  });
}

function authorize(access: Access, principal: Principal | null): void {
  if (access === 'public') return;
  if (!principal) throw new TesseraError('ERR_UNAUTHENTICATED', 'authentication required: send a bearer token');
  if (access === 'run' && principal.kind !== 'run') {
    throw new TesseraError('ERR_FORBIDDEN', 'this endpoint is for flow runs: call it from inside a run with its run credential');
  }
  if ((access === 'user' || access === 'worker') && principal.kind === 'run') {
    throw new TesseraError(
      'ERR_FORBIDDEN',
      'a run credential can only act for its own run (its state, task runs, logs and identity tokens)',
    );
  }
}

/** A run credential may touch only its own run. */
export function requireOwnRun(principal: Principal | null, runId: string): void {
  if (principal?.kind === 'run' && principal.run.runId !== runId) {
    throw new TesseraError('ERR_FORBIDDEN', 'this run credential belongs to another run');
  }
}

/** Maps any error to the JSON error body; internal details stay in the server log. */
export function errorBody(error: unknown): { status: number; body: ApiErrorBody } {
  if (error instanceof TesseraError) return { status: error.status, body: error.toJSON() };
  const fe = error as { statusCode?: number; code?: string; message?: string };
  if (fe.statusCode && fe.statusCode < 500) {
    return {
      status: fe.statusCode,
      body: {
        error: 'RequestError',
        code: fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'ERR_VALIDATION' : 'ERR_VALIDATION',
        message: fe.message ?? 'bad request',
      },
    };
  }
  return {
    status: 500,
    body: { error: 'InternalError', code: 'ERR_INTERNAL', message: 'internal server error; the server log has the details' },
  };
}
