import { type StateCause, SUB_TEMPLATE_KEYS, TesseraError } from '@tessera/core';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { causeOfPrincipal } from '../auth/principal.js';
import type { Services } from '../services/index.js';
import { TOKEN_ENDPOINT_PATH, type TokenRun } from '../services/tokens.js';
import { endpointUrls, type Principal, registerFormParser, route } from './route.js';
import * as S from './schemas.js';

const TOKEN_PATH = TOKEN_ENDPOINT_PATH;

const workspaceIdentity = z
  .object({ subTemplate: z.array(z.enum(SUB_TEMPLATE_KEYS)).min(1).max(SUB_TEMPLATE_KEYS.length).nullable() })
  .strict();
const revokeIdentity = z.object({ reason: z.string().max(1000).optional() }).strict();

function causeOf(principal: Principal | null): StateCause {
  return causeOfPrincipal(principal);
}

/**
 * Run identity: tokens, introspection (RFC 7662), revocation, workspace `sub` templates.
 * See docs/identity.md.
 */
export function registerIdentityRoutes(app: FastifyInstance, s: Services): void {
  registerFormParser(app);

  route(app, {
    method: 'POST',
    url: TOKEN_PATH,
    access: 'run',
    summary: 'Issue a run identity token (JWT) for one audience; send a DPoP header to bind it to a key',
    tags: ['identity'],
    body: S.identityToken,
    handler: async ({ body, principal, request }) => {
      const header = request.headers.dpop;
      if (Array.isArray(header)) {
        throw new TesseraError('ERR_DPOP_PROOF_INVALID', 'DPoP proof refused: send exactly one DPoP header', {
          details: { field: 'DPoP', reason: 'malformed' },
        });
      }
      return s.tokens.issue(
        (principal as Extract<Principal, { kind: 'run' }>).run,
        {
          audience: body.audience ?? '',
          ...(body.lifetime !== undefined ? { lifetime: body.lifetime } : {}),
          ...(body.taskRunId ? { taskRunId: body.taskRunId } : {}),
          ...(body.taskName ? { taskName: body.taskName } : {}),
        },
        header === undefined
          ? undefined
          : { proof: header, method: request.method, urls: endpointUrls(s.issuer(), s.listenUrl, TOKEN_PATH, request, s.internalUrls) },
        // Read with the credential (RunCredentialAuthenticator's preload), when it was.
        request.preloaded as TokenRun | undefined,
      );
    },
  });

  route(app, {
    method: 'POST',
    url: '/api/identity/introspect',
    // Anyone holding a token may ask whether it is still active: the token's claims are readable by
    // its holder anyway, and guessing a signed token is not possible (RFC 7662 §4 token scanning).
    access: 'public',
    summary: 'RFC 7662 introspection: form (or JSON) body token=…; { active: false } unless valid and its run alive',
    tags: ['identity'],
    handler: async ({ request, reply }) => {
      const body = (request.body ?? {}) as Record<string, unknown>;
      reply.header('cache-control', 'no-store');
      if (typeof body.token !== 'string' || body.token === '') {
        const repeated = Array.isArray(body.token);
        const message = repeated
          ? 'token: sent more than once; send exactly one token parameter (RFC 6749 §3.2)'
          : `token: required. POST application/x-www-form-urlencoded (or JSON) with token=<the JWT> (RFC 7662 §2.1)`;
        // RFC 6749 §5.2 error form, plus Tessera's code and message.
        reply.code(400).send({ error: 'invalid_request', error_description: message, code: 'ERR_VALIDATION', message });
        return reply;
      }
      const { response, reason } = await s.identityLifecycle.introspect(body.token);
      if (reason) request.log.debug({ reason }, 'introspection: token inactive');
      return response;
    },
  });

  route(app, {
    method: 'POST',
    url: '/api/flow-runs/:id/revoke-identity',
    access: 'operator',
    summary: "Revoke a run's identity: its tokens turn inactive and it gets no new ones (ERR_IDENTITY_REVOKED)",
    tags: ['identity', 'flow runs'],
    body: revokeIdentity,
    handler: ({ params, body, principal }) => s.identityLifecycle.revoke(params.id as string, causeOf(principal), body.reason),
  });

  route(app, {
    method: 'POST',
    url: '/api/flow-runs/:id/identity-preview',
    access: 'viewer',
    summary:
      'The token a run would get now for an audience, unsigned and unrecorded, built by the issuer itself (for `tessera token explain --run`)',
    tags: ['identity', 'flow runs'],
    body: S.identityTokenPreview,
    handler: ({ params, body }) =>
      s.tokens.preview(params.id as string, {
        audience: body.audience,
        ...(body.lifetime !== undefined ? { lifetime: body.lifetime } : {}),
        ...(body.taskRunId ? { taskRunId: body.taskRunId } : {}),
        ...(body.taskName ? { taskName: body.taskName } : {}),
      }),
  });

  route(app, {
    method: 'GET',
    url: '/api/workspaces/:workspace/identity',
    access: 'viewer',
    workspace: (params) => params.workspace as string,
    summary: "The workspace's sub template (used by deployments that set none)",
    tags: ['identity'],
    handler: ({ params }) => s.workspaceIdentity.get(params.workspace as string),
  });

  route(app, {
    method: 'PUT',
    url: '/api/workspaces/:workspace/identity',
    access: 'admin',
    workspace: (params) => params.workspace as string,
    summary: "Set the workspace's sub template (null: back to the default); refused if a deployment's sub would exceed 127 characters",
    tags: ['identity'],
    body: workspaceIdentity,
    handler: ({ params, body, principal }) => s.workspaceIdentity.put(params.workspace as string, body, causeOf(principal)),
  });
}
