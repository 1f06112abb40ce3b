import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { JWT_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT } from '@tessera/core';
import { type RouteAccess, routeTable } from '@tessera/server';
import { githubActionsClaims, REPO_ROOT, startTestIssuer, startTestServer, type TestIssuer, type TestServer } from '@tessera/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROLES = ['viewer', 'operator', 'developer', 'admin'] as const;
type Role = (typeof ROLES)[number];
const JWT_RE = /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/;

/** What a role-based access needs: the role, or undefined for `public`, `run`, `worker`. */
function requiredRole(access: string): Role | undefined {
  const role = access.replace(/^run-or-/, '');
  return (ROLES as readonly string[]).includes(role) ? (role as Role) : undefined;
}

describe('route × role matrix', () => {
  let server: TestServer;
  let ci: TestIssuer;
  let routes: readonly RouteAccess[];
  const tokens = new Map<string, string>();
  let runId = '';
  let runCredential = '';

  const call = async (r: RouteAccess, token?: string, id = 'x') => {
    const url = r.url.replace(/:id\b/g, id).replace(/:[a-zA-Z]+/g, 'x');
    const res = await fetch(`${server.url}${url}`, {
      method: r.method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(r.method !== 'GET' && r.method !== 'DELETE' ? { 'content-type': 'application/json' } : {}),
      },
      ...(r.method !== 'GET' && r.method !== 'DELETE' ? { body: '{}' } : {}),
    });
    const text = await res.text();
    let code: string | undefined;
    try {
      code = (JSON.parse(text) as { code?: string }).code;
    } catch {
      code = undefined;
    }
    return { status: res.status, code };
  };

  beforeAll(async () => {
    ci = await startTestIssuer();
    const policies = Object.fromEntries(
      [...ROLES, 'worker' as const].map((role) => [
        `ci-${role}`,
        { issuer: ci.issuer, audience: 'tessera', subject: `repo:acme/${role}:ref:refs/heads/main`, role },
      ]),
    );
    policies['ci-admin-of-ml'] = {
      issuer: ci.issuer,
      audience: 'tessera',
      subject: 'repo:acme/ml:ref:refs/heads/main',
      role: 'admin',
      workspace: 'ml',
    } as never;
    server = await startTestServer({ backgroundServices: false, auth: { localAdmin: false, trustPolicies: policies } });
    for (const who of [...ROLES, 'worker', 'ml']) {
      const subject = await ci.mint(githubActionsClaims({ repository: `acme/${who}`, aud: 'tessera' }));
      const res = await fetch(`${server.url}/oauth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: TOKEN_EXCHANGE_GRANT, subject_token: subject, subject_token_type: JWT_TOKEN_TYPE }),
      });
      const body = (await res.json()) as { access_token: string };
      expect(res.status, JSON.stringify(body)).toBe(200);
      tokens.set(who, body.access_token);
    }
    // A run and its credential, for run routes.
    const s = server.services;
    const adhoc = await s.startAdhocRun({ flowName: 'matrix' }, { kind: 'person', id: 'test' });
    runId = adhoc.run.id;
    runCredential = adhoc.credential;
    routes = routeTable(server.app).filter((r) => !r.url.startsWith('/docs'));
  });
  afterAll(async () => {
    await server?.close();
    await ci?.close();
  });

  it('covers every API route', () => {
    expect(routes.length).toBeGreaterThan(30);
    const urls = routes.map((r) => `${r.method} ${r.url}`);
    for (const u of ['PUT /api/deployments/:name', 'POST /api/keys/rotate', 'POST /oauth/token', 'PUT /api/trust-policies/:name'])
      expect(urls).toContain(u);
  });

  it('refuses anonymous callers on every non-public route with 401', async () => {
    for (const r of routes.filter((x) => x.access !== 'public')) {
      const res = await call(r);
      expect(res.status, `${r.method} ${r.url}`).toBe(401);
      expect(res.code, `${r.method} ${r.url}`).toBe('ERR_UNAUTHENTICATED');
    }
  });

  it('refuses insufficient roles with 403 and lets sufficient ones through', async () => {
    for (const r of routes.filter((x) => x.access !== 'public')) {
      const needed = requiredRole(r.access);
      for (const role of ROLES) {
        const ok = needed !== undefined && ROLES.indexOf(role) >= ROLES.indexOf(needed);
        const res = await call(r, tokens.get(role));
        const where = `${role} → ${r.method} ${r.url} (${r.access})`;
        if (ok) expect(['ERR_UNAUTHENTICATED', 'ERR_FORBIDDEN', 'ERR_CREDENTIAL_INVALID'], where).not.toContain(res.code);
        else {
          expect(res.status, where).toBe(403);
          expect(res.code, where).toBe('ERR_FORBIDDEN');
        }
      }
    }
  });

  it('lets workers poll and nothing else, and runs only act for their own run', async () => {
    for (const r of routes.filter((x) => x.access !== 'public')) {
      const asWorker = await call(r, tokens.get('worker'));
      if (r.access === 'worker') expect(asWorker.code, r.url).not.toBe('ERR_FORBIDDEN');
      else expect(asWorker.status, `worker → ${r.method} ${r.url}`).toBe(403);
      const asRun = await call(r, runCredential, runId);
      if (r.access === 'run' || r.access.startsWith('run-or-')) expect(asRun.code, r.url).not.toBe('ERR_FORBIDDEN');
      else expect(asRun.status, `run → ${r.method} ${r.url}`).toBe(403);
      if (r.access.startsWith('run-or-') && r.url.includes(':id')) {
        expect((await call(r, runCredential, randomUUID())).code, `run → another run ${r.url}`).toBe('ERR_FORBIDDEN');
      }
    }
  });

  it('confines a workspace-scoped grant to its workspace', async () => {
    const ml = tokens.get('ml') as string;
    const get = (path: string) => fetch(`${server.url}${path}`, { headers: { authorization: `Bearer ${ml}` } });
    expect([200, 404]).toContain((await get('/api/workspaces/ml/identity')).status);
    expect((await get('/api/workspaces/default/identity')).status).toBe(403);
    expect((await get('/api/flow-runs')).status).toBe(403);
    // Server-wide settings need a grant for every workspace.
    expect((await get('/api/trust-policies')).status).toBe(403);
  });

  it('matches the route × role table in docs/security.md', () => {
    const doc = readFileSync(`${REPO_ROOT}/docs/security.md`, 'utf8');
    const rows = new Set(
      doc
        .split('\n')
        .filter((l) => /^\| `(GET|POST|PUT|PATCH|DELETE) /.test(l))
        .map((l) =>
          l
            .split('|')
            .slice(1, 3)
            .map((c) => c.trim().replace(/`/g, ''))
            .join(' '),
        ),
    );
    const missing = routes.map((r) => `${r.method} ${r.url} ${r.access}`).filter((r) => !rows.has(r));
    expect(missing, 'add these rows to docs/security.md').toEqual([]);
  });

  it('never logs a token or secret', () => {
    const logs = server.logs.join('');
    expect(logs).not.toMatch(JWT_RE);
    for (const t of [...tokens.values(), runCredential]) expect(logs).not.toContain(t);
  });
});
