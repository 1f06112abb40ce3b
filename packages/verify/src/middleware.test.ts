import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authenticate } from './middleware/common.js';
import { tesseraFastify, tesseraFastifyPlugin } from './middleware/fastify.js';
import { createNodeMiddleware } from './middleware/node.js';
import { dpopProof, makeDpopKey, type StubIssuer, startStubIssuer } from './test/helpers.js';
import { createVerifier } from './verifier.js';

let stub: StubIssuer;
beforeAll(async () => {
  stub = await startStubIssuer();
});
afterAll(async () => stub.close());

describe('middlewares', () => {
  it('the Fastify plugin guards every route of the scope it is registered in and decorates request.tessera', async () => {
    const app = Fastify();
    await app.register(tesseraFastifyPlugin, { verifier: createVerifier({ issuer: stub.issuer, audience: 'api' }) });
    app.get('/me', async (request) => ({ run: request.tessera?.run_id }));
    const ok = await app.inject({ url: '/me', headers: { authorization: `Bearer ${await stub.mint({ run_id: 'r-1' })}` } });
    expect(ok.json()).toEqual({ run: 'r-1' });
    const no = await app.inject({ url: '/me' });
    expect(no.statusCode).toBe(401);
    expect(no.headers['www-authenticate']).toBe('Bearer');
    expect(no.json()).toMatchObject({ code: 'ERR_TOKEN_MISSING' });
    await app.close();
  });

  it('checks DPoP htu against publicUrl when the service sits behind a proxy', async () => {
    const verifier = createVerifier({ issuer: stub.issuer, audience: 'api' });
    const key = await makeDpopKey();
    const token = await stub.mint({ cnf: { jkt: key.jkt } });
    const publicUrl = 'https://api.example.com';
    const req = async (url: string) => ({
      method: 'GET',
      url,
      authorization: `DPoP ${token}`,
      dpop: await dpopProof(key, { method: 'GET', url: `${publicUrl}/things`, token }),
    });
    expect((await authenticate(verifier, await req('https://api.example.com/things?x=1'), { publicUrl })).ok).toBe(true);
    const wrong = await authenticate(verifier, await req('http://10.0.0.7:8080/things'));
    expect(wrong).toMatchObject({ ok: false, status: 401, body: { code: 'ERR_DPOP_INVALID' } });
  });

  it('refuses a DPoP proof when the URL would come from the Host header (no publicUrl): a proof captured elsewhere could name that host', async () => {
    const verifier = createVerifier({ issuer: stub.issuer, audience: 'api' });
    const key = await makeDpopKey();
    const token = await stub.mint({ cnf: { jkt: key.jkt } });
    // A proof made for another service that accepts the same audience, sent here with that service's Host.
    const proofFor = () => dpopProof(key, { method: 'GET', url: 'http://a.example/things', token });
    const open = Fastify();
    open.addHook('onRequest', tesseraFastify(verifier));
    open.get('/things', async () => ({ ok: true }));
    const replayed = await open.inject({
      url: '/things',
      headers: { host: 'a.example', authorization: `DPoP ${token}`, dpop: await proofFor() },
    });
    expect(replayed.statusCode).toBe(401);
    expect(replayed.json()).toMatchObject({ code: 'ERR_DPOP_INVALID', message: expect.stringMatching(/publicUrl/) });
    // Bearer tokens need no publicUrl.
    const bearer = await open.inject({ url: '/things', headers: { authorization: `Bearer ${await stub.mint()}` } });
    expect(bearer.statusCode).toBe(200);
    await open.close();
    // With publicUrl set, the proof is judged against it, whatever Host says.
    const pinned = Fastify();
    pinned.addHook('onRequest', tesseraFastify(verifier, { publicUrl: 'https://b.example' }));
    pinned.get('/things', async () => ({ ok: true }));
    const again = await pinned.inject({
      url: '/things',
      headers: { host: 'a.example', authorization: `DPoP ${token}`, dpop: await proofFor() },
    });
    expect(again.json()).toMatchObject({ code: 'ERR_DPOP_INVALID', message: expect.stringMatching(/htu/) });
    const own = await dpopProof(key, { method: 'GET', url: 'https://b.example/things', token });
    expect(
      (await pinned.inject({ url: '/things', headers: { host: 'a.example', authorization: `DPoP ${token}`, dpop: own } })).statusCode,
    ).toBe(200);
    await pinned.close();
  });

  it('refuses two DPoP headers', async () => {
    const verifier = createVerifier({ issuer: stub.issuer, audience: 'api' });
    const r = await authenticate(verifier, { method: 'GET', url: 'https://a/x', authorization: 'DPoP abc', dpop: ['a', 'b'] });
    expect(r).toMatchObject({ ok: false, body: { code: 'ERR_DPOP_INVALID' } });
  });

  it('answers 503 with Retry-After when the issuer cannot be reached, and never leaks an internal error', async () => {
    const down = createVerifier({ issuer: 'http://127.0.0.1:9', audience: 'api' });
    const r = await authenticate(down, { method: 'GET', url: 'http://a/x', authorization: `Bearer ${await stub.mint()}`, dpop: undefined });
    expect(r).toMatchObject({ ok: false, status: 503, headers: { 'retry-after': '5' }, body: { code: 'ERR_DISCOVERY_FAILED' } });
    const broken = { verify: () => Promise.reject(new Error('secret detail')), dpopAlgorithms: [] } as unknown as Parameters<
      typeof authenticate
    >[0];
    const r2 = await authenticate(broken, { method: 'GET', url: 'http://a/x', authorization: 'Bearer x', dpop: undefined });
    expect(r2).toMatchObject({ ok: false, status: 500, body: { code: 'ERR_INTERNAL' } });
    expect(JSON.stringify(r2)).not.toContain('secret detail');
  });

  it('the node middleware calls next() when used Connect-style', async () => {
    const auth = createNodeMiddleware(createVerifier({ issuer: stub.issuer, audience: 'api' }));
    const token = await stub.mint();
    const req = { method: 'GET', url: '/x', headers: { host: 'a', authorization: `Bearer ${token}` }, socket: {} } as never;
    let called = false;
    expect(await auth(req, {} as never, () => (called = true))).toBe(true);
    expect(called).toBe(true);
  });
});
