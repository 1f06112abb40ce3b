/**
 * Test helpers for @tessera/verify: a small issuer on 127.0.0.1 whose JWKS the test controls
 * (rotation, outages, fetch counts), raw JWS signing for tokens no library would build, and DPoP
 * proofs. Only the network edge is ours; crypto is real.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { base64url, type CryptoKey, calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';

/** A key pair with its public JWK. */
export interface TestKey {
  kid: string;
  alg: 'RS256' | 'ES256';
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  publicJwk: JWK;
}

/** Generates a signing key for tests. */
export async function makeKey(alg: 'RS256' | 'ES256' = 'RS256', kid = `k-${randomUUID().slice(0, 8)}`): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey: privateKey as CryptoKey, publicKey: publicKey as CryptoKey, publicJwk };
}

type SubtleSignAlgorithm = Parameters<typeof crypto.subtle.sign>[0];
const SUBTLE_ALG: Record<string, SubtleSignAlgorithm> = {
  RS256: { name: 'RSASSA-PKCS1-v1_5' },
  ES256: { name: 'ECDSA', hash: 'SHA-256' } as SubtleSignAlgorithm,
};

/** b64url of a string exactly as given (so tests can put duplicate members or odd JSON in a segment). */
export function seg(text: string | object): string {
  return base64url.encode(typeof text === 'string' ? text : JSON.stringify(text));
}

/**
 * Signs `header.payload` given as raw JSON text (or objects) with a CryptoKey, without any of
 * jose's checks: for tokens with duplicate members, `crit`, odd types.
 */
export async function signRaw(
  header: string | object,
  payload: string | object,
  key: CryptoKey,
  alg: 'RS256' | 'ES256' = 'RS256',
): Promise<string> {
  const input = `${seg(header)}.${seg(payload)}`;
  const sig = await crypto.subtle.sign(SUBTLE_ALG[alg] as SubtleSignAlgorithm, key, new TextEncoder().encode(input));
  return `${input}.${base64url.encode(new Uint8Array(sig))}`;
}

/** Signs claims with jose's SignJWT (header members merged over `{ alg, typ: 'JWT', kid }`). */
export async function signJwt(
  claims: Record<string, unknown>,
  key: Pick<TestKey, 'privateKey' | 'kid' | 'alg'>,
  header: Record<string, unknown> = {},
): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: key.alg, typ: 'JWT', kid: key.kid, ...header }).sign(key.privateKey);
}

/** A full set of Tessera run claims, valid for an hour from `nowS`. */
export function runClaims(
  issuer: string,
  audience: string | string[],
  nowS: number,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    iss: issuer,
    sub: 'ws:default:deployment:nightly-etl:env:prod',
    aud: audience,
    exp: nowS + 3600,
    iat: nowS,
    nbf: nowS - 30,
    jti: randomUUID(),
    workspace: 'default',
    flow: 'etl',
    deployment: 'nightly-etl',
    deployment_id: randomUUID(),
    environment: 'prod',
    run_id: randomUUID(),
    run_attempt: 1,
    work_pool: 'default',
    worker: 'w-1',
    trigger_kind: 'manual',
    triggered_by: 'person:local admin',
    tags: [],
    sub_template_version: 1,
    ...extra,
  };
}

/** A DPoP key pair for a client. */
export interface DpopKey {
  privateKey: CryptoKey;
  jwk: JWK;
  jkt: string;
}

export async function makeDpopKey(): Promise<DpopKey> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = await exportJWK(publicKey);
  return { privateKey: privateKey as CryptoKey, jwk, jkt: await calculateJwkThumbprint(jwk, 'sha256') };
}

/** A DPoP proof for one request (RFC 9449 §4.2); `overrides` replace any payload member, `header` any header member. */
export async function dpopProof(
  key: DpopKey,
  req: { method: string; url: string; token?: string },
  overrides: Record<string, unknown> = {},
  header: Record<string, unknown> = {},
): Promise<string> {
  const payload: Record<string, unknown> = {
    jti: randomUUID(),
    htm: req.method,
    htu: req.url,
    iat: Math.floor(Date.now() / 1000),
    ...(req.token ? { ath: createHash('sha256').update(req.token).digest('base64url') } : {}),
    ...overrides,
  };
  return new SignJWT(payload).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.jwk, ...header }).sign(key.privateKey);
}

/** A stub issuer on 127.0.0.1: discovery, a JWKS the test controls, introspection. */
export interface StubIssuer {
  url: string;
  issuer: string;
  /** Keys published in the JWKS. */
  keys: TestKey[];
  /** Signing key (the first published one by default). */
  key: TestKey;
  /** Requests to the JWKS. */
  jwksFetches: number;
  discoveryFetches: number;
  introspections: number;
  /** When true, the JWKS (and introspection) answer 503. */
  down: boolean;
  /** Cache-Control of the JWKS. */
  cacheControl: string | undefined;
  /** Delay before answering the JWKS, ms. */
  delayMs: number;
  /** jtis introspection reports inactive. */
  inactive: Set<string>;
  /** Extra routes: path → handler. */
  routes: Map<string, (req: IncomingMessage, res: ServerResponse) => void>;
  /** Discovery document overrides. */
  discovery: Record<string, unknown>;
  mint(claims?: Record<string, unknown>, header?: Record<string, unknown>, key?: TestKey): Promise<string>;
  close(): Promise<void>;
}

export async function startStubIssuer(options: { alg?: 'RS256' | 'ES256'; now?: () => number } = {}): Promise<StubIssuer> {
  const key = await makeKey(options.alg ?? 'RS256');
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] as string;
    const extra = stub.routes.get(path);
    if (extra) return extra(req, res);
    if (path === '/.well-known/openid-configuration') {
      stub.discoveryFetches++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          issuer: stub.issuer,
          jwks_uri: `${stub.url}/.well-known/jwks.json`,
          introspection_endpoint: `${stub.url}/introspect`,
          ...stub.discovery,
        }),
      );
      return;
    }
    if (path === '/.well-known/jwks.json') {
      stub.jwksFetches++;
      const answer = () => {
        if (stub.down) {
          res.writeHead(503).end();
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json', ...(stub.cacheControl ? { 'cache-control': stub.cacheControl } : {}) });
        res.end(JSON.stringify({ keys: stub.keys.map((k) => k.publicJwk) }));
      };
      if (stub.delayMs > 0) setTimeout(answer, stub.delayMs);
      else answer();
      return;
    }
    if (path === '/introspect' && req.method === 'POST') {
      stub.introspections++;
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        if (stub.down) {
          res.writeHead(503).end();
          return;
        }
        const token = new URLSearchParams(body).get('token') ?? '';
        let jti = '';
        try {
          jti = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()).jti;
        } catch {}
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ active: token !== '' && !stub.inactive.has(jti) }));
      });
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const now = options.now ?? Date.now;
  const stub: StubIssuer = {
    url,
    issuer: url,
    keys: [key],
    key,
    jwksFetches: 0,
    discoveryFetches: 0,
    introspections: 0,
    down: false,
    cacheControl: 'public, max-age=300',
    delayMs: 0,
    inactive: new Set(),
    routes: new Map(),
    discovery: {},
    async mint(claims = {}, header = {}, k = stub.key) {
      const nowS = Math.floor(now() / 1000);
      return signJwt(runClaims(stub.issuer, 'api', nowS, claims), k, header);
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
  return stub;
}
