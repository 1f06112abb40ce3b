/**
 * The attack corpus: malformed and hostile tokens against a real Tessera issuer (an in-process test
 * server: its discovery document, its JWKS, its tokens, and its own signing key for tokens it would
 * never mint itself), an attacker with keys of their own, and a second issuer on 127.0.0.1. Every
 * token is refused with its expected code by the library and by every middleware (node:http,
 * Fastify, Express, Hono), each answering 401/403 with the right `WWW-Authenticate`.
 */
import { createHmac, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ApiClient } from '@tessera/core';
import { startTestServer, type TestServer } from '@tessera/testing';
import express from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import { Hono } from 'hono';
import { base64url, type CryptoKey, decodeJwt, exportSPKI, importJWK, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VerificationError } from './errors.js';
import type { MiddlewareOptions } from './middleware/common.js';
import { tesseraExpress } from './middleware/express.js';
import { tesseraFastify } from './middleware/fastify.js';
import { tesseraHono } from './middleware/hono.js';
import { createNodeMiddleware, type TesseraIncomingMessage } from './middleware/node.js';
import {
  type DpopKey,
  dpopProof,
  makeDpopKey,
  makeKey,
  type StubIssuer,
  seg,
  signJwt,
  signRaw,
  startStubIssuer,
  type TestKey,
} from './test/helpers.js';
import { createVerifier, type Verifier } from './verifier.js';

const AUDIENCE = 'corpus-api';

/** What a case sends. */
interface Presented {
  token?: string;
  /** Authorization scheme. @default 'Bearer' */
  scheme?: 'Bearer' | 'DPoP' | 'Basic';
  /** The DPoP header. */
  proof?: string;
  method?: 'GET' | 'POST';
  /** Send the same request once first, expecting success (replay cases). */
  warmup?: boolean;
  /** Send no Authorization header. */
  noAuth?: boolean;
}

interface AttackCase {
  name: string;
  code: string;
  /** @default 401 */
  status?: 401 | 403;
  /** The `error` of the challenge; `null` for none. @default 'invalid_token' */
  error?: 'invalid_token' | 'invalid_dpop_proof' | 'insufficient_scope' | null;
  /** The challenge's scheme. @default 'Bearer' */
  scheme?: 'Bearer' | 'DPoP';
  /** Only meaningful over HTTP (header parsing). */
  httpOnly?: boolean;
  /** Builds the request for a resource at `url` (fresh per target: proofs are single-use). */
  build(url: string): Promise<Presented>;
}

let server: TestServer;
let as: ApiClient;
let other: StubIssuer;
let attacker: TestKey;
let attackerEc: TestKey;
let issuerKey: { kid: string; alg: 'RS256' | 'ES256'; privateKey: CryptoKey };
let issuerJwk: JWK;
let real: string;
let realOtherAudience: string;
let base: Record<string, unknown>;
let client: DpopKey;
let bound: string;

const nowS = () => Math.floor(Date.now() / 1000);
const forge = (
  over: Record<string, unknown> = {},
  header: Record<string, unknown> = {},
  key: Pick<TestKey, 'kid' | 'alg' | 'privateKey'> = issuerKey,
) => signJwt(Object.fromEntries(Object.entries({ ...base, jti: randomUUID(), ...over }).filter(([, v]) => v !== undefined)), key, header);
const issuerHeader = () => ({ alg: 'RS256', typ: 'JWT', kid: issuerKey.kid });
const hmac = (header: object, payload: object, secret: Buffer | string) => {
  const input = `${seg(header)}.${seg(payload)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
};

const cases: AttackCase[] = [
  // ── algorithm ────────────────────────────────────────────────────────────────────────────────
  {
    name: 'alg none, empty signature',
    code: 'ERR_ALG_NOT_ALLOWED',
    build: async () => ({ token: `${seg({ alg: 'none', typ: 'JWT', kid: issuerKey.kid })}.${seg(base)}.` }),
  },
  {
    name: 'alg none carrying a real signature',
    code: 'ERR_ALG_NOT_ALLOWED',
    build: async () => ({ token: `${seg({ alg: 'none', typ: 'JWT', kid: issuerKey.kid })}.${real.split('.')[1]}.${real.split('.')[2]}` }),
  },
  {
    name: 'alg "None" (case games)',
    code: 'ERR_ALG_NOT_ALLOWED',
    build: async () => ({ token: `${seg({ alg: 'None', typ: 'JWT', kid: issuerKey.kid })}.${seg(base)}.` }),
  },
  {
    name: 'HS256 signed with the issuer public key PEM (key confusion)',
    code: 'ERR_ALG_NOT_ALLOWED',
    build: async () => ({
      token: hmac(
        { alg: 'HS256', typ: 'JWT', kid: issuerKey.kid },
        base,
        await exportSPKI((await importJWK(issuerJwk, 'RS256', { extractable: true })) as CryptoKey),
      ),
    }),
  },
  {
    name: 'HS256 signed with the issuer JWK bytes (key confusion)',
    code: 'ERR_ALG_NOT_ALLOWED',
    build: async () => ({ token: hmac({ alg: 'HS256', typ: 'JWT', kid: issuerKey.kid }, base, JSON.stringify(issuerJwk)) }),
  },
  {
    name: 'ES256 header on the issuer RSA key kid',
    code: 'ERR_KEY_NOT_FOUND',
    build: async () => ({ token: await forge({}, {}, { ...attackerEc, kid: issuerKey.kid }) }),
  },
  // ── kid and key-carrying headers ────────────────────────────────────────────────────────────
  {
    name: "kid of another issuer's key, signed by that issuer",
    code: 'ERR_KEY_NOT_FOUND',
    build: async () => ({ token: await forge({}, {}, other.key) }),
  },
  {
    name: 'kid that is a path (../../etc/passwd)',
    code: 'ERR_KEY_NOT_FOUND',
    build: async () => ({ token: await forge({}, {}, { ...attacker, kid: '../../etc/passwd' }) }),
  },
  { name: 'kid of 1,000 characters', code: 'ERR_KID_INVALID', build: async () => ({ token: await forge({}, { kid: 'k'.repeat(1000) }) }) },
  {
    name: 'no kid',
    code: 'ERR_KID_INVALID',
    build: async () => ({ token: await signRaw({ alg: 'RS256', typ: 'JWT' }, base, issuerKey.privateKey) }),
  },
  {
    name: 'kid a number',
    code: 'ERR_KID_INVALID',
    build: async () => ({ token: await signRaw({ alg: 'RS256', typ: 'JWT', kid: 7 }, base, issuerKey.privateKey) }),
  },
  {
    name: 'jku pointing at an attacker JWKS',
    code: 'ERR_KEY_NOT_FOUND',
    build: async () => ({ token: await forge({}, { jku: `${other.url}/.well-known/jwks.json` }, other.key) }),
  },
  {
    name: "jku pointing at an attacker JWKS, with the issuer's kid",
    code: 'ERR_SIGNATURE_INVALID',
    build: async () => ({ token: await forge({}, { jku: `${other.url}/.well-known/jwks.json` }, { ...other.key, kid: issuerKey.kid }) }),
  },
  {
    name: 'x5u pointing at an attacker certificate',
    code: 'ERR_KEY_NOT_FOUND',
    build: async () => ({ token: await forge({}, { x5u: `${other.url}/cert.pem` }, attacker) }),
  },
  {
    name: 'embedded jwk of the attacker',
    code: 'ERR_KEY_NOT_FOUND',
    build: async () => ({ token: await forge({}, { jwk: attacker.publicJwk }, attacker) }),
  },
  {
    name: "embedded jwk of the attacker, with the issuer's kid",
    code: 'ERR_SIGNATURE_INVALID',
    build: async () => ({ token: await forge({}, { jwk: attacker.publicJwk }, { ...attacker, kid: issuerKey.kid }) }),
  },
  {
    name: "x5c chain of the attacker, with the issuer's kid",
    code: 'ERR_SIGNATURE_INVALID',
    build: async () => ({
      token: await forge({}, { x5c: [base64url.encode('not the issuer certificate')] }, { ...attacker, kid: issuerKey.kid }),
    }),
  },
  // ── header rules ────────────────────────────────────────────────────────────────────────────
  {
    name: 'crit header naming exp',
    code: 'ERR_CRIT_UNSUPPORTED',
    build: async () => ({ token: await signRaw({ ...issuerHeader(), crit: ['exp'] }, base, issuerKey.privateKey) }),
  },
  {
    name: 'crit b64=false (unencoded payload)',
    code: 'ERR_CRIT_UNSUPPORTED',
    build: async () => ({ token: await signRaw({ ...issuerHeader(), b64: false, crit: ['b64'] }, base, issuerKey.privateKey) }),
  },
  { name: 'typ at+jwt', code: 'ERR_TYP_MISMATCH', build: async () => ({ token: await forge({}, { typ: 'at+jwt' }) }) },
  {
    name: 'no typ',
    code: 'ERR_TYP_MISMATCH',
    build: async () => ({ token: await signRaw({ alg: 'RS256', kid: issuerKey.kid }, base, issuerKey.privateKey) }),
  },
  {
    name: 'a DPoP proof presented as an access token',
    code: 'ERR_TYP_MISMATCH',
    build: async (url) => ({ token: await dpopProof(client, { method: 'GET', url }) }),
  },
  // ── time ────────────────────────────────────────────────────────────────────────────────────
  {
    name: 'expired an hour ago',
    code: 'ERR_TOKEN_EXPIRED',
    build: async () => ({ token: await forge({ iat: nowS() - 7200, nbf: nowS() - 7230, exp: nowS() - 3600 }) }),
  },
  {
    name: 'expired just beyond the clock tolerance',
    code: 'ERR_TOKEN_EXPIRED',
    build: async () => ({ token: await forge({ iat: nowS() - 300, exp: nowS() - 35 }) }),
  },
  {
    name: 'not valid yet (nbf in an hour)',
    code: 'ERR_TOKEN_NOT_YET_VALID',
    build: async () => ({ token: await forge({ nbf: nowS() + 3600 }) }),
  },
  {
    name: 'issued in the future (iat in 10 minutes)',
    code: 'ERR_IAT_IN_FUTURE',
    build: async () => ({ token: await forge({ iat: nowS() + 600, nbf: undefined }) }),
  },
  { name: 'no exp', code: 'ERR_CLAIM_MISSING', build: async () => ({ token: await forge({ exp: undefined }) }) },
  {
    name: 'exp a string',
    code: 'ERR_CLAIM_INVALID',
    build: async () => ({ token: await signRaw(issuerHeader(), { ...base, exp: String(nowS() + 600) }, issuerKey.privateKey) }),
  },
  // ── issuer and audience ─────────────────────────────────────────────────────────────────────
  {
    name: 'another issuer in iss',
    code: 'ERR_ISSUER_MISMATCH',
    build: async () => ({ token: await forge({ iss: 'https://evil.example' }) }),
  },
  {
    name: 'iss with a trailing slash',
    code: 'ERR_ISSUER_MISMATCH',
    build: async () => ({ token: await forge({ iss: `${server.issuer}/` }) }),
  },
  {
    name: 'iss with a unicode look-alike (Cyrillic һ)',
    code: 'ERR_ISSUER_MISMATCH',
    build: async () => ({ token: await forge({ iss: server.issuer.replace('h', '\u04bb') }) }),
  },
  {
    name: 'iss https instead of http',
    code: 'ERR_ISSUER_MISMATCH',
    build: async () => ({ token: await forge({ iss: server.issuer.replace('http:', 'https:') }) }),
  },
  { name: 'a real token for another audience', code: 'ERR_AUDIENCE_MISMATCH', build: async () => ({ token: realOtherAudience }) },
  { name: 'aud an empty array', code: 'ERR_AUDIENCE_MISMATCH', build: async () => ({ token: await forge({ aud: [] }) }) },
  { name: 'no aud', code: 'ERR_AUDIENCE_MISMATCH', build: async () => ({ token: await forge({ aud: undefined }) }) },
  {
    name: 'aud differing in case',
    code: 'ERR_AUDIENCE_MISMATCH',
    build: async () => ({ token: await forge({ aud: AUDIENCE.toUpperCase() }) }),
  },
  {
    name: 'aud array without this audience',
    code: 'ERR_AUDIENCE_MISMATCH',
    build: async () => ({ token: await forge({ aud: ['other-api', 'sts.amazonaws.com'] }) }),
  },
  // ── signature ───────────────────────────────────────────────────────────────────────────────
  {
    name: 'a real token with its signature stripped',
    code: 'ERR_SIGNATURE_INVALID',
    build: async () => ({ token: `${real.split('.').slice(0, 2).join('.')}.` }),
  },
  {
    name: 'a real token with its payload changed',
    code: 'ERR_SIGNATURE_INVALID',
    build: async () => ({ token: `${real.split('.')[0]}.${seg({ ...base, run_id: randomUUID() })}.${real.split('.')[2]}` }),
  },
  {
    name: "signed by another key under the issuer's kid",
    code: 'ERR_SIGNATURE_INVALID',
    build: async () => ({ token: await forge({}, {}, { ...attacker, kid: issuerKey.kid }) }),
  },
  // ── shape ───────────────────────────────────────────────────────────────────────────────────
  {
    name: 'a huge token (17 KB)',
    code: 'ERR_TOKEN_TOO_LARGE',
    build: async () => ({ token: await forge({ pad: 'x'.repeat(17 * 1024) }) }),
  },
  {
    name: 'duplicate sub in the payload',
    code: 'ERR_DUPLICATE_MEMBER',
    build: async () => {
      const json = JSON.stringify(base);
      return {
        token: await signRaw(issuerHeader(), `${json.slice(0, -1)},"sub":"ws:default:deployment:admin:env:prod"}`, issuerKey.privateKey),
      };
    },
  },
  {
    name: 'duplicate alg in the header',
    code: 'ERR_DUPLICATE_MEMBER',
    build: async () => ({
      token: await signRaw(`{"alg":"RS256","typ":"JWT","kid":${JSON.stringify(issuerKey.kid)},"alg":"RS256"}`, base, issuerKey.privateKey),
    }),
  },
  { name: 'run_id a number', code: 'ERR_CLAIM_INVALID', build: async () => ({ token: await forge({ run_id: 42 }) }) },
  { name: 'run_attempt a string', code: 'ERR_CLAIM_INVALID', build: async () => ({ token: await forge({ run_attempt: '1' }) }) },
  { name: 'sub an array', code: 'ERR_CLAIM_INVALID', build: async () => ({ token: await forge({ sub: ['a', 'b'] }) }) },
  { name: 'no run_id', code: 'ERR_CLAIM_MISSING', build: async () => ({ token: await forge({ run_id: undefined }) }) },
  {
    name: 'cnf without jkt (another confirmation method)',
    code: 'ERR_CLAIM_INVALID',
    build: async () => ({ token: await forge({ cnf: { 'x5t#S256': 'abc' } }) }),
  },
  {
    name: 'a JWE-shaped token (5 parts)',
    code: 'ERR_TOKEN_MALFORMED',
    build: async () => ({ token: `${seg({ alg: 'RSA-OAEP', enc: 'A256GCM' })}.a.b.c.d` }),
  },
  { name: 'an extra dot (4 parts)', code: 'ERR_TOKEN_MALFORMED', build: async () => ({ token: `${real}.` }) },
  {
    name: 'characters outside base64url',
    code: 'ERR_TOKEN_MALFORMED',
    build: async () => ({
      token: real
        .replace(/-/g, '+')
        .replace(/_/g, '/')
        .replace(/\.(?=[^.]*$)/, '=.'),
    }),
  },
  {
    name: 'a header that is not JSON',
    code: 'ERR_TOKEN_MALFORMED',
    build: async () => ({ token: `${seg('{alg:RS256')}.${real.split('.')[1]}.${real.split('.')[2]}` }),
  },
  {
    name: 'a payload that is a JSON array',
    code: 'ERR_TOKEN_MALFORMED',
    build: async () => ({ token: await signRaw(issuerHeader(), '[1,2]', issuerKey.privateKey) }),
  },
  // ── DPoP ────────────────────────────────────────────────────────────────────────────────────
  {
    name: 'a cnf.jkt token sent as Bearer without a proof',
    code: 'ERR_DPOP_REQUIRED',
    scheme: 'DPoP',
    build: async () => ({ token: bound }),
  },
  {
    name: 'the DPoP scheme without a DPoP header',
    code: 'ERR_DPOP_INVALID',
    scheme: 'DPoP',
    error: 'invalid_dpop_proof',
    httpOnly: true,
    build: async () => ({ token: bound, scheme: 'DPoP' }),
  },
  ...(
    [
      ['a proof with the wrong htm', { htm: 'POST' }],
      ['a proof for another URL (htu)', { htu: 'https://elsewhere.example/resource' }],
      ['a proof for another token (ath)', { ath: base64url.encode(new Uint8Array(32)) }],
      ['a proof without ath', { ath: undefined }],
      ['a proof ten minutes old', { iat: nowS() - 600 }],
      ['a proof from the future', { iat: nowS() + 600 }],
    ] as const
  ).map(
    ([name, over]): AttackCase => ({
      name,
      code: 'ERR_DPOP_INVALID',
      scheme: 'DPoP',
      error: 'invalid_dpop_proof',
      build: async (url) => ({ token: bound, scheme: 'DPoP', proof: await dpopProof(client, { method: 'GET', url, token: bound }, over) }),
    }),
  ),
  {
    name: 'a proof typed JWT instead of dpop+jwt',
    code: 'ERR_DPOP_INVALID',
    scheme: 'DPoP',
    error: 'invalid_dpop_proof',
    build: async (url) => ({
      token: bound,
      scheme: 'DPoP',
      proof: await dpopProof(client, { method: 'GET', url, token: bound }, {}, { typ: 'JWT' }),
    }),
  },
  {
    name: 'a proof signed by another key than the token is bound to',
    code: 'ERR_DPOP_INVALID',
    scheme: 'DPoP',
    error: 'invalid_dpop_proof',
    build: async (url) => ({
      token: bound,
      scheme: 'DPoP',
      proof: await dpopProof(await makeDpopKey(), { method: 'GET', url, token: bound }),
    }),
  },
  {
    name: 'a replayed proof',
    code: 'ERR_DPOP_REPLAY',
    scheme: 'DPoP',
    error: 'invalid_dpop_proof',
    build: async (url) => ({
      token: bound,
      scheme: 'DPoP',
      warmup: true,
      proof: await dpopProof(client, { method: 'GET', url, token: bound }),
    }),
  },
  {
    name: 'a proof with a token that is not bound',
    code: 'ERR_DPOP_INVALID',
    scheme: 'DPoP',
    error: 'invalid_dpop_proof',
    build: async (url) => ({ token: real, scheme: 'DPoP', proof: await dpopProof(client, { method: 'GET', url, token: real }) }),
  },
  // ── policy and transport ────────────────────────────────────────────────────────────────────
  {
    name: 'a token the policy denies',
    code: 'ERR_POLICY_DENIED',
    status: 403,
    error: 'insufficient_scope',
    build: async () => ({ token: await forge({ tags: ['blocked'] }) }),
  },
  { name: 'no Authorization header', code: 'ERR_TOKEN_MISSING', error: null, httpOnly: true, build: async () => ({ noAuth: true }) },
  {
    name: 'Basic credentials',
    code: 'ERR_TOKEN_MISSING',
    error: null,
    httpOnly: true,
    build: async () => ({ token: 'dXNlcjpwYXNz', scheme: 'Basic' }),
  },
];

function newVerifier(): Verifier {
  return createVerifier({
    issuer: server.issuer,
    audience: AUDIENCE,
    policy: { deny: [{ name: 'blocked-runs', condition: '"blocked" in tags' }] },
  });
}

beforeAll(async () => {
  server = await startTestServer({ backgroundServices: false, settings: { tokenRateLimitPerMinute: 100_000 } });
  await server.client.createWorkPool({ name: 'default' });
  await server.client.putDeployment({
    name: 'corpus',
    flowName: 'etl',
    entrypoint: 'flows.ts:etl',
    path: '/tmp',
    workPool: 'default',
    environment: 'prod',
    identity: { audiences: [AUDIENCE, 'other-api'] },
  });
  const run = await server.client.runDeployment('corpus');
  const poll = await server.client.poll('default', { workerId: randomUUID(), workerName: 'w-1', capacity: 1, running: [], waitMs: 0 });
  as = server.client.withToken(poll.runs[0]?.credential);
  await as.proposeState(run.id, { state: { type: 'RUNNING' } });
  real = (await as.issueIdentityToken({ audience: AUDIENCE })).token;
  realOtherAudience = (await as.issueIdentityToken({ audience: 'other-api' })).token;
  base = decodeJwt(real);
  // The issuer's own signing key, in process: for tokens it would never mint (expired, odd claims).
  issuerKey = server.services.keys.signingKey('RS256');
  const jwks = (await (await fetch(`${server.issuer}/.well-known/jwks.json`)).json()) as { keys: JWK[] };
  issuerJwk = jwks.keys.find((k) => k.kid === issuerKey.kid) as JWK;
  other = await startStubIssuer();
  attacker = await makeKey('RS256');
  attackerEc = await makeKey('ES256');
  client = await makeDpopKey();
  // A DPoP-bound token, issued by the server for the client's key when it supports it.
  const tokenEndpoint = `${server.url}/api/identity/token`;
  const issueBound = (as as unknown as { issueDpopIdentityToken?: (r: { audience: string }, proof: string) => Promise<{ token: string }> })
    .issueDpopIdentityToken;
  bound = issueBound
    ? (await issueBound.call(as, { audience: AUDIENCE }, await dpopProof(client, { method: 'POST', url: tokenEndpoint }))).token
    : await forge({ cnf: { jkt: client.jkt } });
  expect(decodeJwt(bound).cnf).toEqual({ jkt: client.jkt });
});
afterAll(async () => {
  await other?.close();
  await server?.close();
});

it('has at least 30 hostile tokens', () => {
  expect(cases.length).toBeGreaterThanOrEqual(30);
  expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
});

describe('the library', () => {
  let verifier: Verifier;
  const url = 'https://api.example/resource';
  beforeAll(() => {
    verifier = newVerifier();
  });

  it('accepts a real run token, and a real DPoP-bound token with its proof', async () => {
    expect(await verifier.verify(real)).toMatchObject({ aud: AUDIENCE, iss: server.issuer, run_attempt: 1 });
    const proof = await dpopProof(client, { method: 'GET', url, token: bound });
    expect(await verifier.verify(bound, { dpop: { proof, method: 'GET', url } })).toMatchObject({ cnf: { jkt: client.jkt } });
  });

  it.each(cases.filter((c) => !c.httpOnly).map((c) => [c.name, c] as const))('refuses %s', async (_name, c) => {
    const p = await c.build(url);
    const call = () =>
      verifier.verify(p.token as string, p.scheme === 'DPoP' ? { dpop: { proof: p.proof as string, method: p.method ?? 'GET', url } } : {});
    if (p.warmup) await call();
    const e = await call().then(
      () => undefined,
      (err: VerificationError) => err,
    );
    expect(e?.code, e?.message).toBe(c.code);
    expect(e?.reason).toBe(c.code);
    expect(e?.message.startsWith(`${c.code}: `)).toBe(true);
    expect(e?.status).toBe(c.status ?? 401);
  });

  it('never fetched anything from the attacker or the other issuer', () => {
    expect(other.jwksFetches + other.discoveryFetches).toBe(0);
  });

  it('names expected and found in its messages', async () => {
    const e = await verifier.verify(realOtherAudience).catch((err: VerificationError) => err);
    expect(e.message).toBe(`ERR_AUDIENCE_MISMATCH: token aud "other-api", this service expects "${AUDIENCE}"`);
    const lookAlike = await verifier
      .verify(await forge({ iss: server.issuer.replace('h', '\u04bb') }))
      .catch((err: VerificationError) => err);
    expect(lookAlike.message).toContain('they differ at character 1: U+04BB in the token, U+0068 expected');
  });
});

// ── every middleware ──────────────────────────────────────────────────────────────────────────

interface Target {
  url: string;
  close(): Promise<void>;
}

const BIG_HEADERS = { maxHeaderSize: 64 * 1024 };

async function listen(s: Server): Promise<string> {
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}
const closeServer = (s: Server) =>
  new Promise<void>((r) => {
    s.closeAllConnections();
    s.close(() => r());
  });

/**
 * Each middleware is given `publicUrl` (without it a DPoP proof is refused: its `htu` would be
 * checked against the client's own Host header). The options object is read per request, so the
 * origin is filled in once the server listens.
 */
const targets: Record<string, (v: Verifier) => Promise<Target>> = {
  'node:http': async (v) => {
    const options: MiddlewareOptions = {};
    const auth = createNodeMiddleware(v, options);
    const s = createServer(BIG_HEADERS, async (req, res) => {
      if (!(await auth(req, res))) return;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ sub: (req as TesseraIncomingMessage).tessera?.sub }));
    });
    options.publicUrl = await listen(s);
    return { url: `${options.publicUrl}/resource`, close: () => closeServer(s) };
  },
  fastify: async (v) => {
    const app: FastifyInstance = Fastify({ serverFactory: (handler) => createServer(BIG_HEADERS, handler) });
    const options: MiddlewareOptions = {};
    app.get('/resource', { onRequest: tesseraFastify(v, options) }, async (request) => ({ sub: request.tessera?.sub }));
    app.post('/resource', { onRequest: tesseraFastify(v, options) }, async (request) => ({ sub: request.tessera?.sub }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    options.publicUrl = `http://127.0.0.1:${port}`;
    return { url: `${options.publicUrl}/resource`, close: () => app.close() };
  },
  express: async (v) => {
    const app = express();
    const options: MiddlewareOptions = {};
    app.all('/resource', tesseraExpress(v, options), (req, res) => {
      res.json({ sub: req.tessera?.sub });
    });
    const s = createServer(BIG_HEADERS, app);
    options.publicUrl = await listen(s);
    return { url: `${options.publicUrl}/resource`, close: () => closeServer(s) };
  },
  hono: async (v) => {
    const app = new Hono();
    const options: MiddlewareOptions = {};
    app.use('/resource', tesseraHono(v, options));
    app.all('/resource', (c) => c.json({ sub: c.get('tessera').sub }));
    // A minimal node:http → fetch bridge, so Hono is reached over real HTTP like the others.
    const s = createServer(BIG_HEADERS, async (req: IncomingMessage, res) => {
      const headers = new Headers();
      for (const [k, val] of Object.entries(req.headers)) {
        for (const one of Array.isArray(val) ? val : val === undefined ? [] : [val]) headers.append(k, one);
      }
      const response = await app.fetch(new Request(`http://${req.headers.host}${req.url}`, { method: req.method, headers }));
      res.writeHead(response.status, Object.fromEntries(response.headers));
      res.end(Buffer.from(await response.arrayBuffer()));
    });
    options.publicUrl = await listen(s);
    return { url: `${options.publicUrl}/resource`, close: () => closeServer(s) };
  },
};

async function send(url: string, p: Presented): Promise<{ status: number; challenge: string | null; body: Record<string, unknown> }> {
  const headers: Record<string, string> = {};
  if (!p.noAuth) headers.authorization = `${p.scheme ?? 'Bearer'} ${p.token}`;
  if (p.proof) headers.dpop = p.proof;
  const res = await fetch(url, { method: p.method ?? 'GET', headers });
  return { status: res.status, challenge: res.headers.get('www-authenticate'), body: (await res.json()) as Record<string, unknown> };
}

describe.each(Object.keys(targets))('the %s middleware', (name) => {
  let target: Target;
  beforeAll(async () => {
    target = await (targets[name] as (v: Verifier) => Promise<Target>)(newVerifier());
  });
  afterAll(async () => target?.close());

  it('lets a real run token through with its claims, and a DPoP-bound one with its proof', async () => {
    expect(await send(target.url, { token: real })).toMatchObject({ status: 200, body: { sub: base.sub } });
    const proof = await dpopProof(client, { method: 'GET', url: target.url, token: bound });
    expect(await send(target.url, { token: bound, scheme: 'DPoP', proof })).toMatchObject({ status: 200, body: { sub: base.sub } });
  });

  it.each(cases.map((c) => [c.name, c] as const))('refuses %s', async (_name, c) => {
    const p = await c.build(target.url);
    if (p.warmup) expect((await send(target.url, p)).status).toBe(200);
    const res = await send(target.url, p);
    expect(res.body.code, String(res.body.message)).toBe(c.code);
    expect(res.status).toBe(c.status ?? 401);
    expect(res.body).toMatchObject({ error: 'VerificationError', message: expect.stringMatching(new RegExp(`^${c.code}: `)) });
    const scheme = c.scheme ?? 'Bearer';
    const error = c.error === undefined ? 'invalid_token' : c.error;
    if (error === null) {
      expect(res.challenge).toBe(scheme);
    } else {
      expect(res.challenge).toMatch(new RegExp(`^${scheme} error="${error}", error_description="${c.code}: [^"\\\\]*"`));
      if (scheme === 'DPoP') expect(res.challenge).toMatch(/, algs="[A-Z0-9 a-z]+"$/);
    }
  });
});
