import { randomUUID } from 'node:crypto';
import {
  type ApiClient,
  type CreateJoinTokenResponse,
  createApiClient,
  type JoinWorkerResponse,
  JWT_BEARER_GRANT,
  JWT_TOKEN_TYPE,
  type TesseraError,
  TOKEN_EXCHANGE_GRANT,
  type WorkerIdentity,
} from '@tessera/core';
import {
  githubActionsClaims,
  kubernetesClaims,
  startTestIssuer,
  startTestServer,
  type TestIssuer,
  type TestServer,
} from '@tessera/testing';
import { type CryptoKey, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const JWT_RE = /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/;
const poll = (c: ApiClient, pool = 'default') =>
  c.poll(pool, { workerId: randomUUID(), workerName: 'w-1', capacity: 1, running: [], waitMs: 0 });

async function failure(p: Promise<unknown>): Promise<TesseraError> {
  try {
    await p;
  } catch (e) {
    return e as TesseraError;
  }
  throw new Error('expected a failure');
}

async function form(url: string, body: Record<string, string>): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${url}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(body).toString(),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('workers join without a long-lived secret', () => {
  let server: TestServer;
  let ci: TestIssuer;
  let admin: ApiClient;
  const secrets: string[] = [];

  const joinToken = async (body: Record<string, unknown> = {}) => {
    const t = await admin.request<CreateJoinTokenResponse>('POST', '/api/workers/join-tokens', { body });
    secrets.push(t.token);
    return t;
  };
  const keyPair = async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    return { privateKey, publicJwk: await exportJWK(publicKey) };
  };
  const join = (token: string, publicKey: Record<string, unknown>, name = 'w-1') =>
    createApiClient({ baseUrl: server.url }).request<JoinWorkerResponse>('POST', '/api/workers/join', {
      body: { joinToken: token, name, publicKey },
    });
  const assertion = (workerId: string, key: CryptoKey, overrides: { jti?: string; aud?: string; exp?: number } = {}) =>
    new SignJWT({})
      .setProtectedHeader({ alg: 'ES256' })
      .setIssuer(workerId)
      .setSubject(workerId)
      .setAudience(overrides.aud ?? `${server.issuer}/oauth/token`)
      .setIssuedAt()
      .setJti(overrides.jti ?? randomUUID())
      .setExpirationTime(overrides.exp ?? Math.floor(Date.now() / 1000) + 60)
      .sign(key);
  const accessToken = async (workerId: string, key: CryptoKey, overrides = {}) => {
    const a = await assertion(workerId, key, overrides);
    secrets.push(a);
    const r = await form(server.url, { grant_type: JWT_BEARER_GRANT, assertion: a });
    if (typeof r.body.access_token === 'string') secrets.push(r.body.access_token);
    return r;
  };
  const joined = async (options: Record<string, unknown> = {}) => {
    const t = await joinToken(options);
    const { privateKey, publicJwk } = await keyPair();
    const j = await join(t.token, publicJwk);
    const r = await accessToken(j.workerId, privateKey);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return { ...j, privateKey, client: createApiClient({ baseUrl: server.url, token: r.body.access_token as string }) };
  };

  beforeAll(async () => {
    ci = await startTestIssuer();
    server = await startTestServer({
      backgroundServices: false,
      auth: {
        localAdmin: false,
        trustPolicies: {
          admin: { issuer: ci.issuer, audience: 'tessera', subject: 'repo:acme/platform:ref:refs/heads/main', role: 'admin' },
          k8s: {
            issuer: ci.issuer,
            audience: 'tessera-workers',
            subject: 'system:serviceaccount:tessera:*',
            condition: 'claims["kubernetes.io"].namespace == "tessera"',
            role: 'worker',
            pool: 'k8s',
          },
        },
      },
    });
    const t = await ci.mint(githubActionsClaims({ repository: 'acme/platform', aud: 'tessera' }));
    const r = await form(server.url, { grant_type: TOKEN_EXCHANGE_GRANT, subject_token: t, subject_token_type: JWT_TOKEN_TYPE });
    secrets.push(t, r.body.access_token as string);
    admin = createApiClient({ baseUrl: server.url, token: r.body.access_token as string });
    await admin.createWorkPool({ name: 'default' });
    await admin.createWorkPool({ name: 'k8s' });
  });
  afterAll(async () => {
    await server?.close();
    await ci?.close();
  });

  it('joins with a single-use join token and a key pair, then polls with short-lived access tokens', async () => {
    const t = await joinToken({ pool: 'default' });
    expect(t.token).toMatch(/^tsj_/);
    expect(Date.parse(t.expiresAt) - Date.now()).toBeLessThanOrEqual(10 * 60_000);
    const w = await joined({ pool: 'default' });
    expect(w.pool).toBe('default');
    expect(w.tokenEndpoint).toBe(`${server.issuer}/oauth/token`);
    expect((await poll(w.client)).runs).toEqual([]);
    // Confined to its pool…
    const other = await failure(poll(w.client, 'k8s'));
    expect(other.code).toBe('ERR_FORBIDDEN');
    expect(other.message).toContain('may poll only work pool "default"');
    // …and a worker is no viewer.
    expect((await failure(w.client.listFlowRuns())).code).toBe('ERR_FORBIDDEN');
  });

  it('refuses a join token used twice (a replay), naming when it was used', async () => {
    const t = await joinToken();
    const { publicJwk } = await keyPair();
    await join(t.token, publicJwk);
    const again = await failure(join(t.token, (await keyPair()).publicJwk, 'w-2'));
    expect(again.code).toBe('ERR_JOIN_TOKEN_USED');
    expect(again.status).toBe(401);
    expect(again.message).toContain(`join token ${t.id} was already used at`);
  });

  it('refuses an expired join token', async () => {
    const t = await joinToken({ ttl: 1 });
    await new Promise((r) => setTimeout(r, 20));
    const err = await failure(join(t.token, (await keyPair()).publicJwk));
    expect(err.code).toBe('ERR_JOIN_TOKEN_EXPIRED');
    expect(err.message).toContain('ask an admin for a new one');
    expect((await failure(admin.request('POST', '/api/workers/join-tokens', { body: { ttl: '2h' } }))).code).toBe('ERR_VALIDATION');
  });

  it('refuses an unknown join token and a private key', async () => {
    expect((await failure(join('tsj_never-issued-never-issued-never', (await keyPair()).publicJwk))).code).toBe('ERR_JOIN_TOKEN_INVALID');
    const t = await joinToken();
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const err = await failure(join(t.token, await exportJWK(privateKey)));
    expect(err.code).toBe('ERR_VALIDATION');
    expect(err.message).toContain('send only the public half');
  });

  it('refuses a replayed assertion, one for another audience, and one signed by another key', async () => {
    const w = await joined();
    const jti = randomUUID();
    expect((await accessToken(w.workerId, w.privateKey, { jti })).status).toBe(200);
    const replay = await accessToken(w.workerId, w.privateKey, { jti });
    expect(replay.body).toMatchObject({ error: 'invalid_grant', code: 'ERR_ASSERTION_REPLAYED' });
    const aud = await accessToken(w.workerId, w.privateKey, { aud: 'https://elsewhere.example.com/token' });
    expect(aud.body).toMatchObject({ error: 'invalid_grant', code: 'ERR_AUDIENCE_MISMATCH' });
    const long = await accessToken(w.workerId, w.privateKey, { exp: Math.floor(Date.now() / 1000) + 3600 });
    expect(long.body).toMatchObject({ error: 'invalid_grant', code: 'ERR_CLAIM_INVALID' });
    const stranger = await accessToken(w.workerId, (await keyPair()).privateKey);
    expect(stranger.body).toMatchObject({ error: 'invalid_grant', code: 'ERR_SIGNATURE_INVALID' });
  });

  it('refuses a poll with another worker’s id: no heartbeat, claim or lost-run repair as someone else', async () => {
    const victim = await joined({ pool: 'default' });
    const intruder = await joined({ pool: 'default' });
    const workerId = randomUUID();
    const as = (c: ApiClient, workerName: string) => c.poll('default', { workerId, workerName, capacity: 1, running: [], waitMs: 0 });
    await as(victim.client, 'victim');
    const err = await failure(as(intruder.client, 'intruder'));
    expect(err.code).toBe('ERR_FORBIDDEN');
    expect(err.status).toBe(403);
    expect(err.details).toMatchObject({ field: 'workerId' });
    // Not renamed, and its owner goes on polling.
    const listed = await admin.listWorkers();
    expect(listed.items.find((w) => w.id === workerId)?.name).toBe('victim');
    await as(victim.client, 'victim');
    // An id nobody used yet is the intruder's own.
    await intruder.client.poll('default', { workerId: randomUUID(), workerName: 'intruder', capacity: 1, running: [], waitMs: 0 });
  });

  it('refuses a revoked worker at once: its access token and any new assertion', async () => {
    const w = await joined();
    await poll(w.client);
    const listed = (await admin.request<{ items: WorkerIdentity[] }>('GET', '/api/workers/identities')).items;
    expect(listed.find((x) => x.id === w.workerId)).toMatchObject({ method: 'join-token', revokedAt: null, name: 'w-1' });
    const revoked = await admin.request<WorkerIdentity>('POST', `/api/workers/identities/${w.workerId}/revoke`);
    expect(revoked.revokedAt).not.toBeNull();
    expect(revoked.revokedBy).toMatchObject({ kind: 'machine' });
    const err = await failure(poll(w.client));
    expect(err.code).toBe('ERR_CREDENTIAL_REVOKED');
    expect(err.status).toBe(401);
    expect(err.message).toContain('was revoked at');
    const again = await accessToken(w.workerId, w.privateKey);
    expect(again.body).toMatchObject({ error: 'invalid_grant', code: 'ERR_CREDENTIAL_REVOKED' });
  });

  it('federates a Kubernetes service account as a worker of its pool, and refuses it once revoked', async () => {
    const sa = await ci.mint(kubernetesClaims({ namespace: 'tessera', serviceAccount: 'worker', aud: 'tessera-workers' }));
    secrets.push(sa);
    const r = await form(server.url, { grant_type: TOKEN_EXCHANGE_GRANT, subject_token: sa, subject_token_type: JWT_TOKEN_TYPE });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    secrets.push(r.body.access_token as string);
    expect(r.body.principal).toMatchObject({ kind: 'worker', pool: 'k8s', label: 'system:serviceaccount:tessera:worker' });
    const worker = createApiClient({ baseUrl: server.url, token: r.body.access_token as string });
    await poll(worker, 'k8s');
    const other = await ci.mint(kubernetesClaims({ namespace: 'default', serviceAccount: 'worker', aud: 'tessera-workers' }));
    secrets.push(other);
    expect(
      (await form(server.url, { grant_type: TOKEN_EXCHANGE_GRANT, subject_token: other, subject_token_type: JWT_TOKEN_TYPE })).body.code,
    ).toBe('ERR_POLICY_DENIED');
    const id = (r.body.principal as { id: string }).id;
    await admin.request('POST', `/api/workers/identities/${id}/revoke`);
    expect((await failure(poll(worker, 'k8s'))).code).toBe('ERR_CREDENTIAL_REVOKED');
    const sa2 = await ci.mint(kubernetesClaims({ namespace: 'tessera', serviceAccount: 'worker', aud: 'tessera-workers' }));
    secrets.push(sa2);
    const refused = await form(server.url, { grant_type: TOKEN_EXCHANGE_GRANT, subject_token: sa2, subject_token_type: JWT_TOKEN_TYPE });
    expect(refused.body).toMatchObject({ error: 'invalid_grant', code: 'ERR_CREDENTIAL_REVOKED' });
  });

  it('audits joins, failed joins and revocations without secrets', async () => {
    const events = (await admin.request<{ items: { action: string; result: string }[] }>('GET', '/api/audit', { query: { limit: 1000 } }))
      .items;
    const seen = new Set(events.map((e) => `${e.action}:${e.result}`));
    for (const a of [
      'worker.join_token_created:success',
      'worker.joined:success',
      'worker.join_failed:failure',
      'worker.revoked:success',
      'token.assertion:success',
      'token.assertion:denied',
      'auth.failed:failure',
    ]) {
      expect(seen.has(a), a).toBe(true);
    }
    const text = JSON.stringify(events);
    expect(text).not.toMatch(JWT_RE);
    for (const s of secrets) expect(text).not.toContain(s);
  });

  it('records at most 30 failures a minute from one unidentified address, then one note, then only a count', async () => {
    const audited = async () =>
      (
        await admin.request<{ items: { action: string; detail: Record<string, unknown> | null }[] }>('GET', '/api/audit', {
          query: { limit: 1000 },
        })
      ).items;
    const before = (await audited()).length;
    const bogus = createApiClient({ baseUrl: server.url, token: 'not-a-credential' });
    for (let i = 0; i < 45; i++) await failure(bogus.listFlowRuns());
    const added = (await audited()).slice(before);
    const failed = added.filter((e) => e.action === 'auth.failed');
    // This address may have failed before in this minute (other tests): never more than 31 in all.
    expect(failed.length).toBeLessThanOrEqual(31);
    expect(failed.filter((e) => e.detail?.suppressed === true)).toHaveLength(1);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(Number(/tessera_audit_suppressed_total (\d+)/.exec(metrics)?.[1])).toBeGreaterThanOrEqual(14);
    // An identified caller looping on a 403 has the same budget, counted per caller, and is named.
    const w = await joined({ pool: 'default' });
    const mark = (await audited()).length;
    for (let i = 0; i < 40; i++) await failure(w.client.listFlowRuns());
    const denied = (await audited()).slice(mark).filter((e) => e.action === 'authz.denied');
    expect(denied).toHaveLength(31);
    expect(denied.at(-1)?.detail).toMatchObject({ suppressed: true, note: expect.stringContaining(`principal worker:${w.workerId}`) });
  });

  it('never logs a token or secret', () => {
    const logs = server.logs.join('');
    expect(logs).not.toMatch(JWT_RE);
    expect(logs).not.toMatch(/tsj_[A-Za-z0-9_-]{16,}/);
    for (const s of secrets) expect(logs).not.toContain(s);
  });
});
