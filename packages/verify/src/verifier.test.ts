import { generateKeyPairSync, sign as nodeSign, randomUUID } from 'node:crypto';
import type { TesseraError } from '@tessera/core';
import { createFakeClock, startTestServer } from '@tessera/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDpopChecker } from './dpop.js';
import type { VerificationError } from './errors.js';
import { dpopProof, makeDpopKey, makeKey, runClaims, type StubIssuer, seg, signJwt, startStubIssuer } from './test/helpers.js';
import { createVerifier } from './verifier.js';

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as VerificationError).code;
  }
  return 'OK';
}

let stub: StubIssuer;
beforeAll(async () => {
  stub = await startStubIssuer();
});
afterAll(async () => stub.close());

describe('createVerifier options', () => {
  const make = (o: Record<string, unknown>) => () => createVerifier({ issuer: 'https://issuer.example', audience: 'api', ...o });

  it.each([
    ['none', ['none']],
    ['HS256', ['HS256']],
    ['an empty list', []],
  ])('refuses %s as algorithms at creation', (_n, algorithms) => {
    expect(make({ algorithms })).toThrow(/createVerifier: algorithms/);
  });

  it('caps the clock tolerance at 300 s and accepts duration strings', () => {
    expect(make({ clockTolerance: 301 })).toThrow(/clockTolerance must be between 0 and 300 seconds/);
    expect(make({ clockTolerance: '10m' })).toThrow(/clockTolerance/);
    expect(make({ clockTolerance: '2m' })).not.toThrow();
  });

  it('requires an issuer URL and an audience', () => {
    expect(make({ issuer: '' })).toThrow(/issuer is required/);
    expect(make({ issuer: 'not a url' })).toThrow(/issuer must be a URL/);
    expect(make({ audience: [] })).toThrow(/audience must be/);
  });

  it('compiles the policy at creation: a bad expression fails at startup, not per request', () => {
    let e: TesseraError | undefined;
    try {
      make({ policy: { allow: [{ name: 'prod', condition: 'environment = "prod"' }] } })();
    } catch (err) {
      e = err as TesseraError;
    }
    expect(e?.code).toBe('ERR_CEL_INVALID');
    expect(e?.message).toContain('rule "prod"');
  });
});

describe('signature checks', () => {
  /** Signs header.payload with a node:crypto key, in the given ECDSA signature encoding. */
  function nodeSigned(header: object, payload: object, key: Parameters<typeof nodeSign>[2], dsaEncoding?: 'der' | 'ieee-p1363'): string {
    const input = `${seg(header)}.${seg(payload)}`;
    const signature = nodeSign('sha256', Buffer.from(input), dsaEncoding ? { key: key as never, dsaEncoding } : key);
    return `${input}.${signature.toString('base64url')}`;
  }

  /** A verifier, and a token signed by a node:crypto RSA key of `bits` published in the stub's JWKS. */
  async function rsaToken(bits: number) {
    const pair = generateKeyPairSync('rsa', { modulusLength: bits });
    const kid = `rsa${bits}-${randomUUID().slice(0, 8)}`;
    stub.keys.push({
      ...(await makeKey('RS256')),
      kid,
      publicJwk: { ...pair.publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' },
    });
    const v = createVerifier({ issuer: stub.issuer, audience: 'api' });
    const token = nodeSigned(
      { alg: 'RS256', typ: 'JWT', kid },
      runClaims(stub.issuer, 'api', Math.floor(Date.now() / 1000)),
      pair.privateKey,
    );
    return { v, token };
  }

  it('ES256: accepts only the 64-byte R‖S form; a DER signature of the right key, a truncated or padded one fail', async () => {
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const kid = `ec-${randomUUID().slice(0, 8)}`;
    stub.keys.push({
      ...(await makeKey('ES256')),
      kid,
      publicJwk: { ...pair.publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' },
    });
    const v = createVerifier({ issuer: stub.issuer, audience: 'api' });
    const header = { alg: 'ES256', typ: 'JWT', kid };
    const claims = runClaims(stub.issuer, 'api', Math.floor(Date.now() / 1000));
    const good = nodeSigned(header, claims, pair.privateKey, 'ieee-p1363');
    expect(await codeOf(v.verify(good))).toBe('OK');
    expect(await codeOf(v.verify(nodeSigned(header, claims, pair.privateKey, 'der')))).toBe('ERR_SIGNATURE_INVALID');
    const [h, p, sig] = good.split('.') as [string, string, string];
    const raw = Buffer.from(sig, 'base64url');
    expect(await codeOf(v.verify(`${h}.${p}.${raw.subarray(0, 63).toString('base64url')}`))).toBe('ERR_SIGNATURE_INVALID');
    expect(await codeOf(v.verify(`${h}.${p}.${Buffer.concat([raw, Buffer.alloc(1)]).toString('base64url')}`))).toBe(
      'ERR_SIGNATURE_INVALID',
    );
    // The signing input is the segments as received: the same claims re-encoded differently fail.
    expect(await codeOf(v.verify(`${h}.${seg(JSON.stringify(claims, null, 1))}.${sig}`))).toBe('ERR_SIGNATURE_INVALID');
  });

  it('RS256: refuses a key under 2048 bits even when the signature is right (RFC 7518 §3.3)', async () => {
    const { v, token } = await rsaToken(1024);
    let e: VerificationError | undefined;
    try {
      await v.verify(token);
    } catch (err) {
      e = err as VerificationError;
    }
    expect(e?.code).toBe('ERR_SIGNATURE_INVALID');
    expect(String((e as { cause?: Error }).cause?.message)).toContain('not a public RS256 verification key');
  });

  it('RS256: a 2048-bit key from node:crypto verifies, and a flipped bit anywhere in the signature fails', async () => {
    const { v, token } = await rsaToken(2048);
    expect(await codeOf(v.verify(token))).toBe('OK');
    const [h, p, sig] = token.split('.') as [string, string, string];
    for (const at of [0, 100, 255]) {
      const raw = Buffer.from(sig, 'base64url');
      raw[at] = (raw[at] as number) ^ 1;
      expect(await codeOf(v.verify(`${h}.${p}.${raw.toString('base64url')}`))).toBe('ERR_SIGNATURE_INVALID');
    }
  });
});

describe('verification details', () => {
  it('accepts ES256 tokens, any of several audiences, and aud arrays containing one', async () => {
    const es = await makeKey('ES256');
    stub.keys.push(es);
    const v = createVerifier({ issuer: stub.issuer, audience: ['billing', 'api'] });
    expect(await codeOf(v.verify(await stub.mint({}, {}, es)))).toBe('OK');
    expect(await codeOf(v.verify(await stub.mint({ aud: ['x', 'billing'] })))).toBe('OK');
    expect(await codeOf(v.verify(await stub.mint({ aud: ['x', 'y'] })))).toBe('ERR_AUDIENCE_MISMATCH');
  });

  it('accepts typ "JWT" in any case and "application/jwt", nothing else', async () => {
    const v = createVerifier({ issuer: stub.issuer, audience: 'api' });
    expect(await codeOf(v.verify(await stub.mint({}, { typ: 'jwt' })))).toBe('OK');
    expect(await codeOf(v.verify(await stub.mint({}, { typ: 'application/jwt' })))).toBe('OK');
    expect(await codeOf(v.verify(await stub.mint({}, { typ: 'secevent+jwt' })))).toBe('ERR_TYP_MISMATCH');
  });

  it('applies the clock tolerance to exp, nbf and iat on a fake clock', async () => {
    const clock = createFakeClock(Date.now());
    const v = createVerifier({ issuer: stub.issuer, audience: 'api', now: clock.now, clockTolerance: 60 });
    const t = Math.floor(clock.now() / 1000);
    const token = await stub.mint({ iat: t, nbf: t, exp: t + 300 });
    clock.advance(-50_000);
    expect(await codeOf(v.verify(token))).toBe('OK');
    clock.advance(-20_000); // 70 s before iat and nbf
    expect(await codeOf(v.verify(token))).toBe('ERR_TOKEN_NOT_YET_VALID');
    clock.advance(70_000 + 300_000 + 59_000);
    expect(await codeOf(v.verify(token))).toBe('OK');
    clock.advance(2_000);
    expect(await codeOf(v.verify(token))).toBe('ERR_TOKEN_EXPIRED');
  });

  it('accepts a custom size cap and refuses before parsing', async () => {
    const v = createVerifier({ issuer: stub.issuer, audience: 'api', maxTokenBytes: 512 });
    expect(await codeOf(v.verify(await stub.mint()))).toBe('ERR_TOKEN_TOO_LARGE');
  });

  it('keeps the reason property and returns typed claims', async () => {
    const v = createVerifier({ issuer: stub.issuer, audience: 'api' });
    const claims = await v.verify(await stub.mint());
    expect(typeof claims.run_attempt).toBe('number');
    const e = (await v.verify(await stub.mint({ aud: 'sts.amazon.com' })).catch((err: VerificationError) => err)) as VerificationError;
    expect(e.reason).toBe('ERR_AUDIENCE_MISMATCH');
    expect(e.code).toBe('ERR_AUDIENCE_MISMATCH');
    expect(e.claim).toBe('aud');
    expect(e.toJSON()).toMatchObject({ error: 'VerificationError', code: 'ERR_AUDIENCE_MISMATCH', details: { claim: 'aud' } });
  });
});

describe('DPoP', () => {
  it('checks a proof for the request URL without query or fragment, once', async () => {
    const key = await makeDpopKey();
    const v = createVerifier({ issuer: stub.issuer, audience: 'api' });
    const token = await stub.mint({ cnf: { jkt: key.jkt } });
    const proof = await dpopProof(key, { method: 'POST', url: 'https://api.example/things', token });
    const dpop = { proof, method: 'POST', url: 'https://api.example/things?page=2#x' };
    expect(await codeOf(v.verify(token, { dpop }))).toBe('OK');
    expect(await codeOf(v.verify(token, { dpop }))).toBe('ERR_DPOP_REPLAY');
  });

  it('checks the policy before the proof: a token the service refuses takes no room in the replay cache', async () => {
    const key = await makeDpopKey();
    const v = createVerifier({
      issuer: stub.issuer,
      audience: 'api',
      policy: { allow: [{ name: 'prod', condition: 'environment == "prod"' }] },
    });
    const token = await stub.mint({ cnf: { jkt: key.jkt }, environment: 'dev' });
    const url = 'https://api.example/x';
    const dpop = { proof: await dpopProof(key, { method: 'GET', url, token }), method: 'GET', url };
    // Refused by the policy both times: the proof was never remembered.
    expect(await codeOf(v.verify(token, { dpop }))).toBe('ERR_POLICY_DENIED');
    expect(await codeOf(v.verify(token, { dpop }))).toBe('ERR_POLICY_DENIED');
  });

  it('refuses a proof carrying a private key', async () => {
    const key = await makeDpopKey();
    const v = createVerifier({ issuer: stub.issuer, audience: 'api' });
    const token = await stub.mint({ cnf: { jkt: key.jkt } });
    const url = 'https://api.example/x';
    const proof = await dpopProof(key, { method: 'GET', url, token }, {}, { jwk: { ...key.jwk, d: 'AAAA' } });
    const e = await v.verify(token, { dpop: { proof, method: 'GET', url } }).catch((err: VerificationError) => err);
    expect(e.code).toBe('ERR_DPOP_INVALID');
    expect(e.message).toContain('private member "d"');
  });

  it('keeps the replay cache within its bound by refusing new proofs, never by forgetting one that could then be replayed', async () => {
    const checker = createDpopChecker({ replayCacheSize: 5 });
    const victim = await makeDpopKey();
    const flooder = await makeDpopKey();
    const url = 'https://api.example/x';
    const now = Date.now();
    const request = async (key: typeof victim) => ({
      proof: await dpopProof(key, { method: 'GET', url, token: 'tok' }),
      method: 'GET',
      url,
    });
    const captured = await request(victim);
    await checker.check('tok', victim.jkt, captured, now);
    // A flood of valid proofs of the flooder's own fills the cache…
    for (let i = 0; i < 4; i++) await checker.check('tok', flooder.jkt, await request(flooder), now);
    for (let i = 0; i < 3; i++) {
      const e = await checker.check('tok', flooder.jkt, await request(flooder), now).catch((err: VerificationError) => err);
      expect(e).toMatchObject({ code: 'ERR_DPOP_REPLAY_CACHE_FULL', status: 503 });
      expect(checker.replayCacheSize()).toBe(5);
    }
    // …and the victim's captured proof is still known: its replay is refused.
    expect(await codeOf(checker.check('tok', victim.jkt, captured, now))).toBe('ERR_DPOP_REPLAY');
    // Once the proofs' window has passed, their entries expire and make room.
    const later = now + 70_000;
    const fresh = await dpopProof(victim, { method: 'GET', url, token: 'tok' }, { iat: Math.floor(later / 1000) });
    await checker.check('tok', victim.jkt, { proof: fresh, method: 'GET', url }, later);
    expect(checker.replayCacheSize()).toBe(1);
  });

  it('refuses symmetric proof algorithms at creation', () => {
    expect(() => createDpopChecker({ algorithms: ['HS256'] })).toThrow(/not an asymmetric/);
  });
});

describe('introspection', () => {
  it('refuses a token the issuer reports inactive, caching answers briefly', async () => {
    const clock = createFakeClock(Date.now());
    const v = createVerifier({ issuer: stub.issuer, audience: 'api', now: clock.now, introspect: { cacheTtlMs: '10s' } });
    const jti = randomUUID();
    const token = await stub.mint({ jti });
    const before = stub.introspections;
    expect(await codeOf(v.verify(token))).toBe('OK');
    expect(await codeOf(v.verify(token))).toBe('OK');
    expect(stub.introspections - before).toBe(1);
    stub.inactive.add(jti);
    clock.advance(11_000);
    const e = await v.verify(token).catch((err: VerificationError) => err);
    expect(e.code).toBe('ERR_TOKEN_INACTIVE');
    expect(e.message).toContain(`jti ${jti}`);
    expect(v.introspections()).toBe(2);
  });

  it('never sends a token to a plain-http introspection endpoint of an https issuer', async () => {
    // An issuer elsewhere on the internet (faked: outside this machine), whose discovery names http.
    const issuer = 'https://issuer.example';
    const key = await makeKey();
    const asked: string[] = [];
    const fetch = async (input: string | URL | Request) => {
      const url = String(input);
      asked.push(url);
      const json = (body: unknown) => new Response(JSON.stringify(body), { headers: { 'content-type': 'application/json' } });
      if (url === `${issuer}/.well-known/openid-configuration`) {
        return json({ issuer, jwks_uri: `${issuer}/jwks`, introspection_endpoint: 'http://issuer.example/introspect' });
      }
      if (url === `${issuer}/jwks`) return json({ keys: [key.publicJwk] });
      return json({ active: true });
    };
    const v = createVerifier({ issuer, audience: 'api', introspect: true, fetch: fetch as never });
    const e = await v
      .verify(await signJwt(runClaims(issuer, 'api', Math.floor(Date.now() / 1000)), key))
      .catch((err: VerificationError) => err);
    expect(e).toMatchObject({
      code: 'ERR_INTROSPECTION_FAILED',
      status: 503,
      message: expect.stringMatching(/is not https while the issuer is/),
    });
    expect(asked).not.toContain('http://issuer.example/introspect');
  });

  it('fails closed with ERR_INTROSPECTION_FAILED when the endpoint cannot be asked', async () => {
    const v = createVerifier({ issuer: stub.issuer, audience: 'api', introspect: { url: `${stub.url}/nowhere` } });
    const e = await v.verify(await stub.mint()).catch((err: VerificationError) => err);
    expect(e.code).toBe('ERR_INTROSPECTION_FAILED');
    expect(e.status).toBe(503);
  });

  it('against a real Tessera server, refuses the token of a finished run with ERR_TOKEN_INACTIVE', async (ctx) => {
    const server = await startTestServer({ backgroundServices: false });
    try {
      const probe = await fetch(`${server.url}/api/identity/introspect`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'token=x',
      });
      if (probe.status === 404) ctx.skip();
      await server.client.createWorkPool({ name: 'default' });
      await server.client.putDeployment({
        name: 'intro',
        flowName: 'etl',
        entrypoint: 'flows.ts:etl',
        path: '/tmp',
        workPool: 'default',
        identity: { audiences: ['api'] },
      });
      const run = await server.client.runDeployment('intro');
      const poll = await server.client.poll('default', { workerId: randomUUID(), workerName: 'w', capacity: 1, running: [], waitMs: 0 });
      const as = server.client.withToken(poll.runs[0]?.credential);
      await as.proposeState(run.id, { state: { type: 'RUNNING' } });
      const { token } = await as.issueIdentityToken({ audience: 'api' });
      const v = createVerifier({ issuer: server.issuer, audience: 'api', introspect: { cacheTtlMs: 0 } });
      expect(await codeOf(v.verify(token))).toBe('OK');
      await as.proposeState(run.id, { state: { type: 'COMPLETED' } });
      expect(await codeOf(v.verify(token))).toBe('ERR_TOKEN_INACTIVE');
      // Without introspection the signature alone still passes: that is what introspection is for.
      expect(await codeOf(createVerifier({ issuer: server.issuer, audience: 'api' }).verify(token))).toBe('OK');
    } finally {
      await server.close();
    }
  });
});
