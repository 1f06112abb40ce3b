import { TesseraError } from '@tessera/core';
import type { FastifyRequest } from 'fastify';
import { describe, expect, it } from 'vitest';
import { type Access, authorize } from '../routes/route.js';
import {
  AuthRegistry,
  causeOfPrincipal,
  hasRole,
  LOCAL_ADMIN,
  notFromThisMachine,
  type Principal,
  requireRole,
  roleRules,
} from './principal.js';

const person = (grants: { role: 'viewer' | 'operator' | 'developer' | 'admin'; workspace?: string }[]): Principal => ({
  kind: 'person',
  id: 'ana@example.com',
  label: 'ana@example.com',
  provider: 'okta',
  grants,
});
const run: Principal = { kind: 'run', run: { runId: 'r1', attempt: 1, workerId: null, hash: 'abc' } };
const worker: Principal = { kind: 'worker', id: 'wk_1', label: 'w-1', pool: 'default' };

function codeOf(fn: () => void): string | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    return (e as TesseraError).code;
  }
}

const request = (headers: Record<string, string> = {}) =>
  ({ headers: { host: '127.0.0.1:4200', ...headers } }) as unknown as FastifyRequest;

describe('roles', () => {
  it('orders roles: each includes the ones before', () => {
    const dev = person([{ role: 'developer' }]);
    expect(hasRole(dev, 'viewer')).toBe(true);
    expect(hasRole(dev, 'operator')).toBe(true);
    expect(hasRole(dev, 'developer')).toBe(true);
    expect(hasRole(dev, 'admin')).toBe(false);
  });

  it('confines a workspace grant to its workspace, and a server-wide action needs a grant for every workspace', () => {
    const p = person([{ role: 'admin', workspace: 'data' }]);
    expect(hasRole(p, 'admin', 'data')).toBe(true);
    expect(hasRole(p, 'viewer', 'default')).toBe(false);
    expect(hasRole(p, 'viewer')).toBe(false);
    expect(hasRole(person([{ role: 'viewer' }]), 'viewer', 'anything')).toBe(true);
  });

  it('refuses with 403 naming the role needed and the roles held, and 401 for nobody', () => {
    try {
      requireRole(person([{ role: 'viewer' }, { role: 'admin', workspace: 'ml' }]), 'developer', 'default');
      throw new Error('expected a refusal');
    } catch (e) {
      expect((e as TesseraError).code).toBe('ERR_FORBIDDEN');
      expect((e as TesseraError).status).toBe(403);
      expect((e as TesseraError).message).toBe(
        'person "ana@example.com" needs role "developer" in workspace "default"; it holds viewer, admin (workspace ml)',
      );
    }
    expect(codeOf(() => requireRole(null, 'viewer'))).toBe('ERR_UNAUTHENTICATED');
    expect(codeOf(() => requireRole(person([]), 'viewer'))).toBe('ERR_FORBIDDEN');
  });

  it('gives the local admin every role and runs and workers none', () => {
    expect(hasRole(LOCAL_ADMIN, 'admin')).toBe(true);
    expect(hasRole(run, 'viewer')).toBe(false);
    expect(hasRole(worker, 'viewer')).toBe(false);
  });
});

describe('role rules (CEL over claims)', () => {
  it('grants roles whose condition is true', () => {
    const grantsOf = roleRules([
      { role: 'developer', when: '"data-eng" in claims.groups' },
      { role: 'admin', workspace: 'ml', when: 'claims.email == "root@example.com"' },
      { role: 'viewer', when: 'glob("*@example.com", claims.email)' },
    ]);
    expect(grantsOf({ groups: ['data-eng'], email: 'ana@example.com' })).toEqual([{ role: 'developer' }, { role: 'viewer' }]);
    expect(grantsOf({ groups: [], email: 'root@example.com' })).toEqual([{ role: 'admin', workspace: 'ml' }, { role: 'viewer' }]);
  });

  it('grants nothing when a claim the rule reads is missing', () => {
    const grantsOf = roleRules([{ role: 'admin', when: '"admins" in claims.groups' }]);
    expect(grantsOf({ email: 'x@example.com' })).toEqual([]);
  });

  it('refuses at compile time a rule that does not compile, an unknown variable, or an unknown role', () => {
    expect(codeOf(() => roleRules([{ role: 'admin', when: 'claims.groups.exists(g, g.matches("adm.*"))' }]))).toBe('ERR_CEL_INVALID');
    expect(codeOf(() => roleRules([{ role: 'admin', when: 'groups == "x"' }]))).toBe('ERR_CEL_INVALID');
    expect(codeOf(() => roleRules([{ role: 'root' as 'admin', when: 'true' }]))).toBe('ERR_CONFIG');
  });
});

describe('AuthRegistry', () => {
  const fixed = (name: string, result: Principal | undefined | Error) => ({
    name,
    authenticate: async () => {
      if (result instanceof Error) throw result;
      return result;
    },
  });

  it('asks authenticators in order; the first that recognises the credential decides', async () => {
    const reg = new AuthRegistry([fixed('a', undefined), fixed('b', worker), fixed('c', run)]);
    expect(await reg.authenticate(request({ authorization: 'Bearer x' }))).toBe(worker);
    expect(reg.names()).toEqual(['a', 'b', 'c']);
    expect(() => reg.add(fixed('a', undefined))).toThrow(/already registered/);
  });

  it('never passes a refused credential on to the next authenticator', async () => {
    const reg = new AuthRegistry([fixed('a', new TesseraError('ERR_CREDENTIAL_REVOKED', 'revoked')), fixed('b', worker)]);
    await expect(reg.authenticate(request({ authorization: 'Bearer x' }))).rejects.toMatchObject({ code: 'ERR_CREDENTIAL_REVOKED' });
  });

  it('makes a caller with no credential the local admin in local mode only, and refuses an unrecognised bearer', async () => {
    const reg = new AuthRegistry([fixed('a', undefined)]);
    expect(await reg.authenticate(request())).toEqual(LOCAL_ADMIN);
    reg.localAdmin = false;
    expect(await reg.authenticate(request())).toBeNull();
    await expect(reg.authenticate(request({ authorization: 'Bearer nope' }))).rejects.toMatchObject({ code: 'ERR_CREDENTIAL_INVALID' });
    await expect(reg.authenticate(request({ authorization: 'Basic Zm9vOmJhcg==' }))).rejects.toMatchObject({ code: 'ERR_UNAUTHENTICATED' });
  });

  it('is the local admin only for requests from this machine’s own tools and pages', () => {
    const from = (headers: Record<string, string>) => notFromThisMachine({ headers } as unknown as FastifyRequest);
    for (const host of ['127.0.0.1:4200', 'localhost:4200', '[::1]:4200', '127.0.0.2', 'localhost'])
      expect(from({ host }), host).toBeUndefined();
    for (const host of ['evil.example', 'evil.example:4200', '127.0.0.1.evil.example', 'localhost.evil.example', '0.0.0.0:4200', '']) {
      expect(from({ host }), host).toMatch(/not a loopback address/);
    }
    expect(from({})).toMatch(/not a loopback address/);
    const host = '127.0.0.1:4200';
    expect(from({ host, 'sec-fetch-site': 'same-origin', origin: 'http://127.0.0.1:4200' })).toBeUndefined();
    expect(from({ host, 'sec-fetch-site': 'none' })).toBeUndefined();
    expect(from({ host, 'sec-fetch-site': 'cross-site' })).toMatch(/cross-site request/);
    expect(from({ host, 'sec-fetch-site': 'same-site' })).toMatch(/same-site request/);
    expect(from({ host, origin: 'http://localhost:4200' })).toMatch(/another origin/);
    expect(from({ host, origin: 'null' })).toMatch(/another origin/);
  });

  it('refuses the local admin to a cross-site request with ERR_FORBIDDEN, and leaves credentials alone', async () => {
    const reg = new AuthRegistry([fixed('a', undefined)]);
    await expect(reg.authenticate(request({ 'sec-fetch-site': 'cross-site' }))).rejects.toMatchObject({ code: 'ERR_FORBIDDEN' });
    reg.localAdmin = false;
    expect(await reg.authenticate(request({ 'sec-fetch-site': 'cross-site' }))).toBeNull();
  });
});

describe('authorize (route access)', () => {
  const allowed = (access: Access, p: Principal | null, ws?: string) => codeOf(() => authorize(access, p, ws)) === undefined;

  it('lets runs call run routes only, workers worker routes only, and people what their role allows', () => {
    expect(allowed('run', run)).toBe(true);
    expect(allowed('run', person([{ role: 'admin' }]))).toBe(false);
    expect(allowed('worker', worker)).toBe(true);
    expect(allowed('worker', person([{ role: 'admin' }]))).toBe(false);
    expect(allowed('worker', LOCAL_ADMIN)).toBe(true);
    expect(allowed('viewer', worker)).toBe(false);
    expect(allowed('viewer', run)).toBe(false);
    expect(allowed('run-or-viewer', run)).toBe(true);
    expect(allowed('run-or-operator', person([{ role: 'viewer' }]), 'default')).toBe(false);
    expect(allowed('run-or-operator', person([{ role: 'operator', workspace: 'default' }]), 'default')).toBe(true);
    expect(codeOf(() => authorize('viewer', null))).toBe('ERR_UNAUTHENTICATED');
    expect(allowed('public', null)).toBe(true);
  });

  it('records who did it as a person, machine, worker or flow', () => {
    expect(causeOfPrincipal(person([]))).toEqual({ kind: 'person', id: 'ana@example.com', label: 'ana@example.com' });
    expect(
      causeOfPrincipal({
        kind: 'machine',
        id: 'repo:a/b:ref:refs/heads/main',
        label: 'repo:a/b:ref:refs/heads/main',
        policy: 'gh',
        grants: [],
      }),
    ).toMatchObject({
      kind: 'machine',
    });
    expect(causeOfPrincipal(LOCAL_ADMIN)).toEqual({ kind: 'person', id: 'local-admin', label: 'local admin' });
    expect(causeOfPrincipal(run)).toEqual({ kind: 'flow', id: 'r1#1' });
  });
});
