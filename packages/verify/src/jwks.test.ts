import { randomUUID } from 'node:crypto';
import { createFakeClock, type FakeClock } from '@tessera/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { VerificationError } from './errors.js';
import { makeKey, type StubIssuer, startStubIssuer } from './test/helpers.js';
import { createVerifier } from './verifier.js';

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as VerificationError).code;
  }
  return 'OK';
}

describe('JWKS cache', () => {
  let clock: FakeClock;
  let stub: StubIssuer;
  beforeEach(async () => {
    clock = createFakeClock(Date.now());
    stub = await startStubIssuer({ now: clock.now });
  });
  afterEach(async () => stub.close());

  const verifierFor = (extra: Partial<Parameters<typeof createVerifier>[0]> = {}) =>
    createVerifier({ issuer: stub.issuer, audience: 'api', now: clock.now, ...extra });

  it('picks up a rotated key on its unknown kid with one refetch', async () => {
    const v = verifierFor();
    expect(await codeOf(v.verify(await stub.mint()))).toBe('OK');
    expect(stub.jwksFetches).toBe(1);
    const next = await makeKey('ES256');
    stub.keys.push(next);
    expect(await codeOf(v.verify(await stub.mint({}, {}, next)))).toBe('OK');
    expect(stub.jwksFetches).toBe(2);
    expect(v.jwksStats()).toMatchObject({ fetches: 2, failures: 0, keys: 2 });
    // Both keys are now cached: no more fetches.
    await v.verify(await stub.mint());
    await v.verify(await stub.mint({}, {}, next));
    expect(stub.jwksFetches).toBe(2);
  });

  it('fetches at most once per cooldown however many random kids arrive', async () => {
    const v = verifierFor();
    await v.verify(await stub.mint());
    const forged = await stub.mint();
    const [h, p, s] = forged.split('.') as [string, string, string];
    const header = JSON.parse(Buffer.from(h, 'base64url').toString());
    const codes = new Map<string, number>();
    const tokens = Array.from({ length: 1000 }, () => {
      const hh = Buffer.from(JSON.stringify({ ...header, kid: randomUUID() })).toString('base64url');
      return `${hh}.${p}.${s}`;
    });
    // Half concurrently, half one after the other.
    const results = await Promise.all(tokens.slice(0, 500).map((t) => codeOf(v.verify(t))));
    for (const t of tokens.slice(500)) results.push(await codeOf(v.verify(t)));
    for (const c of results) codes.set(c, (codes.get(c) ?? 0) + 1);
    expect(codes).toEqual(new Map([['ERR_KEY_NOT_FOUND', 1000]]));
    expect(stub.jwksFetches).toBeLessThanOrEqual(2);
    // After the cooldown, one more refetch is allowed, and only one.
    clock.advance(31_000);
    await Promise.all(tokens.slice(0, 100).map((t) => codeOf(v.verify(t))));
    expect(stub.jwksFetches).toBeLessThanOrEqual(3);
  });

  it('shares one fetch among concurrent verifications on a cold cache', async () => {
    stub.delayMs = 100;
    const v = verifierFor();
    const tokens = await Promise.all(Array.from({ length: 50 }, () => stub.mint()));
    const results = await Promise.all(tokens.map((t) => codeOf(v.verify(t))));
    expect(results.every((c) => c === 'OK')).toBe(true);
    expect(stub.jwksFetches).toBe(1);
    expect(stub.discoveryFetches).toBe(1);
  });

  it('keeps verifying from cache while the issuer is down, then fails closed once the keys are too stale', async () => {
    const v = verifierFor({ jwks: { maxStaleMs: '10m' } });
    expect(await codeOf(v.verify(await stub.mint()))).toBe('OK');
    stub.down = true;
    clock.advance(200_000); // still fresh (max-age=300)
    expect(await codeOf(v.verify(await stub.mint()))).toBe('OK');
    expect(stub.jwksFetches).toBe(1);
    clock.advance(200_000); // past freshness: one refetch, which fails; stale keys still used
    expect(await codeOf(v.verify(await stub.mint()))).toBe('OK');
    expect(stub.jwksFetches).toBe(2);
    clock.advance(2_000); // a failed fetch is not retried at once
    expect(await codeOf(v.verify(await stub.mint()))).toBe('OK');
    expect(stub.jwksFetches).toBe(2);
    clock.advance(10 * 60_000); // 10 min past freshness: too stale
    const e = await v.verify(await stub.mint()).catch((err: VerificationError) => err);
    expect(e.code).toBe('ERR_JWKS_UNAVAILABLE');
    expect(e.status).toBe(503);
    expect(e.message).toMatch(/too stale.*cannot be fetched \(HTTP 503\)/);
    // The issuer comes back: verification resumes.
    stub.down = false;
    clock.advance(6_000);
    expect(await codeOf(v.verify(await stub.mint()))).toBe('OK');
  });

  it('fails closed with ERR_JWKS_UNAVAILABLE when no key was ever fetched', async () => {
    stub.down = true;
    const v = verifierFor();
    expect(await codeOf(v.verify(await stub.mint()))).toBe('ERR_JWKS_UNAVAILABLE');
  });

  it('honours Cache-Control max-age within bounds', async () => {
    stub.cacheControl = 'max-age=0';
    const v = verifierFor();
    await v.verify(await stub.mint());
    clock.advance(20_000);
    await v.verify(await stub.mint());
    expect(stub.jwksFetches).toBe(1); // max-age=0 is raised to the 30 s floor
    clock.advance(11_000);
    await v.verify(await stub.mint());
    expect(stub.jwksFetches).toBe(2);

    stub.cacheControl = 'max-age=31536000';
    clock.advance(31_000);
    await v.verify(await stub.mint());
    expect(stub.jwksFetches).toBe(3);
    clock.advance(59 * 60_000);
    await v.verify(await stub.mint());
    expect(stub.jwksFetches).toBe(3);
    clock.advance(2 * 60_000); // a year is capped at an hour
    await v.verify(await stub.mint());
    expect(stub.jwksFetches).toBe(4);
    expect(v.jwksStats().freshUntil).toBe(clock.now() + 3_600_000);
  });

  it('follows a redirect within the issuer origin, never to another origin', async () => {
    const other = await startStubIssuer();
    try {
      stub.routes.set('/keys-moved', (_req, res) => res.writeHead(302, { location: '/.well-known/jwks.json' }).end());
      stub.routes.set('/keys-elsewhere', (_req, res) => res.writeHead(302, { location: `${other.url}/.well-known/jwks.json` }).end());
      stub.discovery = { jwks_uri: `${stub.url}/keys-moved` };
      expect(await codeOf(verifierFor().verify(await stub.mint()))).toBe('OK');
      stub.discovery = { jwks_uri: `${stub.url}/keys-elsewhere` };
      const e = await verifierFor()
        .verify(await stub.mint())
        .catch((err: VerificationError) => err);
      expect(e.code).toBe('ERR_JWKS_UNAVAILABLE');
      expect(e.message).toContain('redirect to another origin');
      expect(other.jwksFetches).toBe(0);
    } finally {
      await other.close();
    }
  });

  it('refuses a discovery document naming another issuer (ERR_DISCOVERY_FAILED)', async () => {
    stub.discovery = { issuer: `${stub.issuer}/` };
    const e = await verifierFor()
      .verify(await stub.mint())
      .catch((err: VerificationError) => err);
    expect(e.code).toBe('ERR_DISCOVERY_FAILED');
    expect(e.message).toContain(`names issuer "${stub.issuer}/", this service expects exactly "${stub.issuer}"`);
    expect(stub.jwksFetches).toBe(0);
  });

  it('uses a static key set without any request', async () => {
    const v = verifierFor({ jwks: { keys: [stub.key.publicJwk] } });
    expect(await codeOf(v.verify(await stub.mint()))).toBe('OK');
    expect(await codeOf(v.verify(await stub.mint({}, { kid: 'unknown' })))).toBe('ERR_KEY_NOT_FOUND');
    expect(stub.jwksFetches + stub.discoveryFetches).toBe(0);
  });

  it('never keeps private members of a JWKS key, and skips encryption keys', async () => {
    const enc = await makeKey('RS256');
    stub.keys.push({ ...enc, publicJwk: { ...enc.publicJwk, use: 'enc' } });
    const v = verifierFor();
    expect(await codeOf(v.verify(await stub.mint({}, {}, enc)))).toBe('ERR_KEY_NOT_FOUND');
  });
});
