import type { KeyPublication, RotateSigningKeysRequest } from '@tessera/core';
import { formatDuration, parseDuration, TesseraError } from '@tessera/core';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { iso } from '../lib/clock.js';
import type { Services } from '../services/index.js';
import { JWKS_MAX_AGE_MS } from '../services/keys.js';
import { route } from './route.js';

const rotateBody = z
  .object({
    revokeCurrent: z.boolean().optional(),
    algorithms: z
      .array(z.enum(['RS256', 'ES256']))
      .min(1)
      .optional(),
  })
  .strict();

/** The signing-key API under /api/keys (docs/keys.md). Reads: viewer; rotation: admin (docs/security.md). */
export function registerKeyRoutes(app: FastifyInstance, s: Services): void {
  route(app, {
    method: 'GET',
    url: '/api/keys',
    access: 'viewer',
    workspace: null,
    summary: 'List signing keys with their states (pending, active, retired, expired, revoked)',
    tags: ['keys'],
    handler: () => s.keys.list(),
  });
  route(app, {
    method: 'POST',
    url: '/api/keys/rotate',
    access: 'admin',
    workspace: null,
    summary: 'Rotate signing keys now; revokeCurrent removes the current keys from the JWKS at once',
    tags: ['keys'],
    body: rotateBody,
    handler: ({ body }) => s.keys.rotate(body as RotateSigningKeysRequest),
  });
  route(app, {
    method: 'GET',
    url: '/api/keys/publication',
    access: 'viewer',
    workspace: null,
    summary:
      'Discovery document and JWKS to serve from a static site standing in for the issuer; cacheMaxAge: how long the site may be cached (default 5m)',
    tags: ['keys'],
    handler: async ({ query }): Promise<KeyPublication> => {
      const serverIssuer = s.issuer();
      const issuer = query.issuer ? checkIssuer(query.issuer) : serverIssuer;
      // The server's own document, re-pointed: one source of truth for claims and algorithms.
      const own = await app.inject({ method: 'GET', url: '/.well-known/openid-configuration' });
      const doc = own.json() as Record<string, unknown>;
      const { token_endpoint: _t, introspection_endpoint: _i, ...rest } = doc;
      const openidConfiguration = {
        ...rest,
        issuer,
        jwks_uri: `${issuer.replace(/\/+$/, '')}/.well-known/jwks.json`,
        // A bucket serves neither endpoint; keep them only when the issuer is this server.
        ...(issuer === serverIssuer ? { token_endpoint: _t, introspection_endpoint: _i } : {}),
      };
      const now = s.ctx.clock.now();
      const cacheMaxAgeMs = query.cacheMaxAge === undefined ? JWKS_MAX_AGE_MS : cacheMaxAgeOf(query.cacheMaxAge);
      const settings = s.keys.rotationSettings;
      const next = (['RS256', 'ES256'] as const)
        .map((alg) => s.keys.nextRotation(alg))
        .filter((t): t is string => t !== null)
        .map(Date.parse)
        .sort((a, b) => a - b)[0];
      const warnings: string[] = [];
      // Not keys.list(): its token counts scan every issued token, and only pending keys matter here.
      for (const k of await s.keys.pendingKeys()) {
        const signsIn = Date.parse(k.activatesAt) - now;
        if (signsIn < cacheMaxAgeMs) {
          warnings.push(
            `${k.alg} key ${k.kid} signs from ${k.activatesAt}, ${formatDuration(signsIn)} from now: a cache of the previous files (max age ${formatDuration(cacheMaxAgeMs)}) may not show it by then. Upload these files at once; publish sooner after each rotation, or lengthen --key-pre-publish`,
          );
        }
      }
      if (!settings.keyFile) {
        warnings.push(
          `the server keeps its private keys in memory only: each restart makes new keys, which sign ${settings.startPublishMs > 0 ? `${formatDuration(settings.startPublishMs)} after the start` : 'at once'}${settings.startPublishMs < cacheMaxAgeMs ? `, sooner than the site's caches (max age ${formatDuration(cacheMaxAgeMs)}) refresh` : ''}. Publish again right after every restart, or start the server with --key-file`,
        );
      }
      return {
        issuer,
        serverIssuer,
        openidConfiguration,
        jwks: (await s.keys.jwks()) as KeyPublication['jwks'],
        nextRotationAt: next === undefined ? null : iso(next),
        republishBy: next === undefined ? null : iso(Math.max(next, next + settings.prePublishMs - cacheMaxAgeMs, now)),
        cacheMaxAgeMs,
        warnings,
      };
    },
  });
}

/** The `cacheMaxAge` query: a duration (`10m`, `3600s`). @throws TesseraError `ERR_VALIDATION` naming it. */
function cacheMaxAgeOf(value: string): number {
  try {
    return parseDuration(value, 'cacheMaxAge');
  } catch {
    throw new TesseraError('ERR_VALIDATION', 'cacheMaxAge: not a duration; use e.g. "5m" or "3600s"', {
      details: { field: 'cacheMaxAge' },
    });
  }
}

function checkIssuer(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new TesseraError('ERR_VALIDATION', `issuer: "${value}" is not a URL; expected e.g. https://tessera-issuer.example.com`, {
      details: { field: 'issuer' },
    });
  }
  if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.search || url.hash) {
    throw new TesseraError(
      'ERR_VALIDATION',
      `issuer: "${value}" must be an https URL without query or fragment (AWS, GCP and Azure require https)`,
      { details: { field: 'issuer' } },
    );
  }
  return value;
}
