import { type CreateJoinTokenResponse, type Duration, type PutTrustPolicyRequest, parseDuration, redactSecrets } from '@tessera/core';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { causeOfPrincipal } from '../auth/principal.js';
import { OAuthError } from '../services/federation.js';
import type { Services } from '../services/index.js';
import { endpointUrls, loggableError, redactDeep, registerFormParser, route } from './route.js';

/** The OAuth token endpoint (RFC 6749 §3.2): token exchange (RFC 8693) and JWT bearer (RFC 7523). */
export const OAUTH_TOKEN_PATH = '/oauth/token';

const roleOrWorker = z.enum(['viewer', 'operator', 'developer', 'admin', 'worker']);
const putTrustPolicy = z
  .object({
    issuer: z.string().min(1).max(2000),
    audience: z.string().min(1).max(2000),
    subject: z.string().min(1).max(2000).nullable().optional(),
    condition: z.string().min(1).max(4096).nullable().optional(),
    role: roleOrWorker,
    workspace: z.string().min(1).max(200).nullable().optional(),
    pool: z.string().min(1).max(200).nullable().optional(),
    description: z.string().max(2000).nullable().optional(),
  })
  .strict();
const createJoinToken = z
  .object({
    pool: z.string().min(1).max(200).optional(),
    name: z.string().min(1).max(200).optional(),
    ttl: z.union([z.number().int().positive(), z.string().min(1).max(20)]).optional(),
  })
  .strict();
const joinWorker = z
  .object({
    joinToken: z.string().min(1).max(200),
    name: z
      .string()
      .min(1)
      .max(200)
      .regex(/^[A-Za-z0-9][A-Za-z0-9._:@-]*$/, 'use letters, digits, ".", "_", ":", "@" and "-"'),
    publicKey: z.record(z.string(), z.unknown()),
  })
  .strict();

/**
 * Machines and workers: the OAuth token endpoint, trust policies, workers' join tokens and
 * identities, and the audit log. See docs/security.md.
 */
export function registerFederationRoutes(app: FastifyInstance, s: Services): void {
  registerFormParser(app);

  route(app, {
    method: 'POST',
    url: OAUTH_TOKEN_PATH,
    access: 'public',
    summary:
      'OAuth token endpoint (form body): RFC 8693 token exchange of a platform token under a trust policy, or RFC 7523 JWT bearer for joined workers. Errors in RFC 6749 §5.2 form.',
    tags: ['auth'],
    handler: async ({ request, reply }) => {
      reply.header('cache-control', 'no-store');
      reply.header('pragma', 'no-cache');
      try {
        return await s.federation.token((request.body ?? {}) as Record<string, unknown>, {
          urls: endpointUrls(s.issuer(), s.listenUrl, OAUTH_TOKEN_PATH, request, s.internalUrls),
          ip: request.ip,
        });
      } catch (e) {
        const err =
          e instanceof OAuthError
            ? e
            : new OAuthError('server_error', 'ERR_INTERNAL', 'the token endpoint failed; the server log has the details', {
                status: 500,
                cause: e,
              });
        if (err.status >= 500) request.log.error({ err: loggableError(e) }, 'token endpoint failed');
        else request.log.debug({ code: err.code }, redactSecrets(err.message));
        // A message may quote what was sent (a subject token in the wrong field): masked, as every error body is.
        reply.code(err.status).send(redactDeep(err.toOAuthBody()));
        return reply;
      }
    },
  });

  // ── trust policies ──
  route(app, {
    method: 'GET',
    url: '/api/trust-policies',
    access: 'admin',
    workspace: null,
    summary: 'List trust policies (federation)',
    tags: ['auth'],
    handler: async () => ({ items: await s.trustPolicies.list() }),
  });
  route(app, {
    method: 'GET',
    url: '/api/trust-policies/:name',
    access: 'admin',
    workspace: null,
    summary: 'Get a trust policy',
    tags: ['auth'],
    handler: ({ params }) => s.trustPolicies.get(params.name as string),
  });
  route(app, {
    method: 'PUT',
    url: '/api/trust-policies/:name',
    access: 'admin',
    workspace: null,
    summary: 'Create or replace a trust policy: issuer, audience, subject glob and/or CEL condition, role granted',
    tags: ['auth'],
    body: putTrustPolicy,
    handler: ({ params, body, principal }) =>
      s.trustPolicies.put(params.name as string, body as PutTrustPolicyRequest, causeOfPrincipal(principal), principal),
  });
  route(app, {
    method: 'DELETE',
    url: '/api/trust-policies/:name',
    access: 'admin',
    workspace: null,
    summary: 'Delete a trust policy; access tokens it granted are refused at once',
    tags: ['auth'],
    handler: async ({ params, principal }) => void (await s.trustPolicies.delete(params.name as string, principal)),
  });

  // ── workers ──
  route(app, {
    method: 'POST',
    url: '/api/workers/join-tokens',
    access: 'admin',
    workspace: null,
    summary: 'Create a single-use worker join token (expires in minutes; shown once)',
    tags: ['workers'],
    body: createJoinToken,
    status: 201,
    handler: ({ body, principal }): Promise<CreateJoinTokenResponse> =>
      s.workerIdentities.createJoinToken(
        { pool: body.pool, name: body.name, ttlMs: body.ttl === undefined ? undefined : parseDuration(body.ttl as Duration, 'ttl') },
        causeOfPrincipal(principal),
        principal,
      ),
  });
  route(app, {
    method: 'POST',
    url: '/api/workers/join',
    // Authenticated by the join token in the body.
    access: 'public',
    summary: "A worker joins: spends a join token and registers its key pair's public half",
    tags: ['workers'],
    body: joinWorker,
    status: 201,
    handler: ({ body, request }) =>
      s.workerIdentities.join(body, `${s.issuer().replace(/\/+$/, '')}${OAUTH_TOKEN_PATH}`, { ip: request.ip }),
  });
  route(app, {
    method: 'GET',
    url: '/api/workers/identities',
    access: 'admin',
    workspace: null,
    summary: "Workers' identities: joined (join token + key) and federated; revoked ones included",
    tags: ['workers'],
    handler: async () => ({ items: await s.workerIdentities.list() }),
  });
  route(app, {
    method: 'POST',
    url: '/api/workers/identities/:id/revoke',
    access: 'admin',
    workspace: null,
    summary: 'Revoke a worker: its access tokens are refused at once and it gets no new ones',
    tags: ['workers'],
    handler: ({ params, principal }) => s.workerIdentities.revoke(params.id as string, causeOfPrincipal(principal), principal),
  });

  // ── audit ──
  route(app, {
    method: 'GET',
    url: '/api/audit',
    access: 'admin',
    workspace: null,
    summary: 'Security events (login, token exchange, denials, workers, trust policies); never a token or secret',
    tags: ['auth'],
    handler: async ({ query }) => ({
      items: await s.audit.list({
        ...(query.action ? { action: query.action } : {}),
        ...(query.principal ? { principal: query.principal } : {}),
        ...(query.afterId ? { afterId: Number(query.afterId) || 0 } : {}),
        ...(query.limit ? { limit: Number(query.limit) || 100 } : {}),
      }),
    }),
  });
}
