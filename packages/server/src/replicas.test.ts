/**
 * Several server replicas on one PostgreSQL database, in this process: one leader for the
 * singleton services, claims that never hand a run out twice across replicas, wake-ups across
 * replicas, and signing keys that each replica owns, publishes before signing and rotates itself.
 * On SQLite (one server per file) only the single-replica behaviour applies.
 */
import { randomUUID } from 'node:crypto';
import type { ApiClient, DeploymentSpec, SigningKeyInfo, TesseraError } from '@tessera/core';
import { createFakeClock, type FakeClock, startTestServer, type TestServer, testStore } from '@tessera/testing';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';

const POSTGRES = testStore() === 'postgres';
const ISSUER = 'https://tessera.example.com';
const AUDIENCE = 'sts.amazonaws.com';

const servers: TestServer[] = [];

/**
 * Starts `n` replicas on one database (the first creates it, and drops it when closed last). The
 * replicas after the first sign with their keys at once unless `options.keys.startPublish` says
 * otherwise: only the test of that wait waits.
 */
async function startReplicas(n: number, options: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer[]> {
  const first = await startTestServer({ backgroundServices: false, publicUrl: ISSUER, ...options });
  servers.push(first);
  const out = [first];
  for (let i = 1; i < n; i++) {
    const s = await startTestServer({
      backgroundServices: false,
      publicUrl: ISSUER,
      ...options,
      keys: { startPublish: 0, ...options.keys },
      ...(first.databaseUrl ? { databaseUrl: first.databaseUrl } : {}),
    });
    servers.push(s);
    out.push(s);
  }
  return out;
}

afterEach(async () => {
  // Replicas sharing the first one's database close before it (it drops the database).
  for (const s of servers.splice(0).reverse()) await s.close();
});

function spec(overrides: Partial<DeploymentSpec> = {}): DeploymentSpec {
  return {
    name: 'etl',
    flowName: 'etl',
    entrypoint: 'flows.ts:etl',
    path: '/tmp',
    workPool: 'default',
    identity: { audiences: [AUDIENCE] },
    ...overrides,
  };
}

async function readyz(s: TestServer): Promise<{ status: string; replica?: string; leader?: boolean }> {
  return (await (await fetch(`${s.url}/readyz`)).json()) as { status: string; replica?: string; leader?: boolean };
}

async function claimAs(client: ApiClient): Promise<{ runId: string; as: ApiClient }> {
  const res = await client.poll('default', { workerId: randomUUID(), workerName: 'w', capacity: 1, running: [], waitMs: 0 });
  const c = res.runs[0];
  if (!c) throw new Error('nothing to claim');
  const as = client.withToken(c.credential);
  await as.proposeState(c.run.id, { state: { type: 'RUNNING' } });
  return { runId: c.run.id, as };
}

async function jwksKidsOf(s: TestServer): Promise<string[]> {
  return ((await (await fetch(`${s.url}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] }).keys.map((k) => k.kid);
}

async function keysOf(s: TestServer): Promise<SigningKeyInfo[]> {
  return (await s.client.listSigningKeys()).items;
}

describe.skipIf(POSTGRES)('one server on SQLite', () => {
  it('always runs the singleton services itself', async () => {
    const [a] = (await startReplicas(1)) as [TestServer];
    await a.tick();
    expect(await readyz(a)).toEqual({ status: 'ready', replica: a.replicaId, leader: true });
  });
});

describe.skipIf(!POSTGRES)('replicas on one PostgreSQL database', () => {
  it('runs the singleton services on exactly one replica, and moves them when it stops', async () => {
    const [a, b] = (await startReplicas(2)) as [TestServer, TestServer];
    await a.client.createWorkPool({ name: 'default' });
    await a.client.putDeployment(spec({ schedules: [{ interval: 60_000 }] }));
    await b.tick();
    await a.tick();
    expect([(await readyz(a)).leader, (await readyz(b)).leader]).toEqual([false, true]);
    const runs = (await a.client.listFlowRuns({ limit: 100 })).items;
    expect(runs.length).toBeGreaterThan(0);
    // A replica that is not the leader creates no schedule slots: only b's tick did.
    await a.tick();
    expect((await a.client.listFlowRuns({ limit: 100 })).items).toHaveLength(runs.length);

    await b.close();
    servers.splice(servers.indexOf(b), 1);
    await a.tick();
    expect(await readyz(a)).toMatchObject({ status: 'ready', replica: a.replicaId, leader: true });
  });

  it('claims each run once when workers poll both replicas at once', async () => {
    const [a, b] = (await startReplicas(2)) as [TestServer, TestServer];
    await a.client.createWorkPool({ name: 'default' });
    await a.client.putDeployment(spec());
    const created = await Promise.all(Array.from({ length: 150 }, (_, i) => (i % 2 ? a : b).client.runDeployment('etl')));
    const claimed: string[] = [];
    await Promise.all(
      Array.from({ length: 12 }, async (_, i) => {
        const client = (i % 2 ? a : b).client;
        const workerId = randomUUID();
        for (;;) {
          const res = await client.poll('default', { workerId, workerName: `w${i}`, capacity: 4, running: [], waitMs: 0 });
          if (res.runs.length === 0) return;
          claimed.push(...res.runs.map((r) => r.run.id));
        }
      }),
    );
    expect(claimed).toHaveLength(150);
    expect(new Set(claimed)).toEqual(new Set(created.map((r) => r.id)));
  });

  it('wakes a long poll on one replica when a run becomes due through another (LISTEN/NOTIFY)', async () => {
    const [a, b] = (await startReplicas(2)) as [TestServer, TestServer];
    await a.client.createWorkPool({ name: 'default' });
    await a.client.putDeployment(spec());
    const started = Date.now();
    const poll = b.client.poll('default', { workerId: randomUUID(), workerName: 'w', capacity: 1, running: [], waitMs: 20_000 });
    await new Promise((r) => setTimeout(r, 300));
    const run = await a.client.runDeployment('etl');
    const res = await poll;
    expect(res.runs.map((r) => r.run.id)).toEqual([run.id]);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('publishes each replica’s keys before they sign: a token from either verifies through the other’s discovery and JWKS', async () => {
    const clock = createFakeClock();
    const [a, b] = (await startReplicas(2, { clock, keys: { startPublish: '5m' } })) as [TestServer, TestServer];
    await a.client.createWorkPool({ name: 'default' });
    await a.client.putDeployment(spec());
    await a.client.runDeployment('etl');
    await a.client.runDeployment('etl');
    const fromA = await (await claimAs(a.client)).as.issueIdentityToken({ audience: AUDIENCE, lifetime: '10m' });
    // B joined a database whose JWKS relying parties may have cached: its key is published (through A
    // too) but signs only once those caches have expired.
    const bKey = (await keysOf(b)).find((k) => k.held && k.alg === 'RS256');
    expect(bKey).toMatchObject({ state: 'pending', published: true });
    const aJwks = (await (await fetch(`${a.url}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] };
    expect(aJwks.keys.map((k) => k.kid)).toContain(bKey?.kid);
    const asB = (await claimAs(b.client)).as;
    expect((await asB.issueIdentityToken({ audience: AUDIENCE }).catch((e: TesseraError) => e)) as TesseraError).toMatchObject({
      code: 'ERR_KEY_PENDING',
      status: 503,
    });
    clock.advance(5 * 60_000);
    const tokens = [fromA, await asB.issueIdentityToken({ audience: AUDIENCE })];
    expect(tokens[1]?.kid).toBe(bKey?.kid);
    expect(tokens[0]?.kid).not.toBe(tokens[1]?.kid);
    for (const s of [a, b]) {
      const doc = (await (await fetch(`${s.url}/.well-known/openid-configuration`)).json()) as { issuer: string; jwks_uri: string };
      expect(doc.issuer).toBe(ISSUER);
      // jwks_uri names the shared address; fetch it from this replica.
      const jwks = await (await fetch(`${s.url}${new URL(doc.jwks_uri).pathname}`)).json();
      for (const t of tokens) {
        const { payload } = await jwtVerify(t?.token as string, createLocalJWKSet(jwks), {
          issuer: doc.issuer,
          audience: AUDIENCE,
          currentDate: new Date(clock.now()),
        });
        expect(payload.iss).toBe(ISSUER);
      }
    }
    // Each replica holds only its own private keys.
    const held = (await keysOf(a)).filter((k) => k.held).map((k) => k.kid);
    expect(held).toContain(decodeProtectedHeader(tokens[0]?.token as string).kid);
    expect(held).not.toContain(decodeProtectedHeader(tokens[1]?.token as string).kid);
  });

  describe('key ownership (fake clock)', () => {
    let clock: FakeClock;

    it('a starting replica leaves live replicas’ keys signing; a dead one’s keys are retired by the leader and stay published', async () => {
      clock = createFakeClock();
      const [a, b] = (await startReplicas(2, { clock, keys: { rotationInterval: 0 } })) as [TestServer, TestServer];
      const aKeys = (await keysOf(a)).filter((k) => k.held);
      expect(aKeys).toHaveLength(2);
      // b started after a: a's keys are still active, not retired as a single node would do.
      const seen = await keysOf(b);
      for (const k of aKeys) expect(seen.find((x) => x.kid === k.kid)?.state).toBe('active');
      expect(seen.filter((k) => k.state === 'active')).toHaveLength(4);

      // a goes silent (its process hangs or died without a clean stop); b leads and waits it out.
      await b.tick();
      clock.advance(30_000);
      await b.tick();
      for (const k of aKeys) expect((await keysOf(b)).find((x) => x.kid === k.kid)?.state).toBe('active');
      clock.advance(31_000);
      await b.tick();
      const after = await keysOf(b);
      for (const k of aKeys) expect(after.find((x) => x.kid === k.kid)).toMatchObject({ state: 'retired', published: true });
      expect(after.filter((k) => k.held && k.state === 'active')).toHaveLength(2);

      // a comes back: its keys were retired but are still published, so it goes on signing with them
      // while fresh ones, published now, wait out the caches (a key signing at once would name a kid
      // that no cached JWKS has).
      const before = a.services.keys.signingKey('RS256').kid;
      await a.tick();
      expect(a.services.keys.signingKey('RS256').kid).toBe(before);
      const fresh = (await keysOf(a)).find((k) => k.alg === 'RS256' && k.held && k.state === 'pending') as SigningKeyInfo;
      expect(fresh).toBeDefined();
      expect(await jwksKidsOf(b)).toEqual(expect.arrayContaining([before, fresh.kid]));
      clock.set(Date.parse(fresh.activatesAt));
      await a.tick();
      const now = a.services.keys.signingKey('RS256').kid;
      expect(now).toBe(fresh.kid);
      expect((await keysOf(b)).find((k) => k.kid === now)).toMatchObject({ state: 'active', published: true });
      expect((await keysOf(b)).find((k) => k.kid === before)).toMatchObject({ state: 'retired', published: true });
    });

    it('a rotation asked through any replica rotates every replica’s own keys', async () => {
      clock = createFakeClock();
      const [a, b] = (await startReplicas(2, { clock, keys: { prePublish: '10m', rotationInterval: 0 } })) as [TestServer, TestServer];
      const res = await a.client.rotateSigningKeys({ algorithms: ['RS256'] });
      expect(res.created).toHaveLength(1);
      expect(res.created[0]).toMatchObject({ state: 'pending', held: true });
      expect((await keysOf(b)).filter((k) => k.held && k.state === 'pending')).toHaveLength(0);
      await b.tick();
      const pendingB = (await keysOf(b)).filter((k) => k.held && k.state === 'pending');
      expect(pendingB.map((k) => k.alg)).toEqual(['RS256']);
      // Applied once: more ticks make no more keys.
      await b.tick();
      await a.tick();
      expect((await keysOf(b)).filter((k) => k.state === 'pending')).toHaveLength(2);
      clock.advance(10 * 60_000);
      expect(b.services.keys.signingKey('RS256').kid).toBe(pendingB[0]?.kid);
      expect(a.services.keys.signingKey('RS256').kid).toBe(res.created[0]?.kid);
    });

    it('scheduled rotation: the leader asks, each replica rotates its own keys once', async () => {
      clock = createFakeClock();
      const [a, b] = (await startReplicas(2, { clock, keys: { prePublish: '10m', rotationInterval: '30d' } })) as [TestServer, TestServer];
      clock.advance(30 * 86_400_000);
      await a.tick(); // the leader: requests a rotation for both, applies its own
      await b.tick();
      await a.tick();
      await b.tick();
      const keys = await keysOf(a);
      const pending = keys.filter((k) => k.state === 'pending');
      expect(pending).toHaveLength(4);
      expect((await keysOf(a)).filter((k) => k.held && k.state === 'pending')).toHaveLength(2);
      expect((await keysOf(b)).filter((k) => k.held && k.state === 'pending')).toHaveLength(2);
    });

    it('an emergency rotation takes every replica’s signing key out of the JWKS at once; each signs with a fresh key', async () => {
      clock = createFakeClock();
      const [a, b] = (await startReplicas(2, { clock })) as [TestServer, TestServer];
      const bOld = b.services.keys.signingKey('ES256').kid;
      const res = await a.client.rotateSigningKeys({ revokeCurrent: true, algorithms: ['ES256'] });
      expect(res.revoked.map((k) => k.kid)).toContain(bOld);
      const jwks = (await (await fetch(`${b.url}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] };
      expect(jwks.keys.map((k) => k.kid)).not.toContain(bOld);
      await b.tick();
      const bNew = b.services.keys.signingKey('ES256').kid;
      expect(bNew).not.toBe(bOld);
      const after = (await (await fetch(`${a.url}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] };
      expect(after.keys.map((k) => k.kid)).toContain(bNew);
    });
  });
});
