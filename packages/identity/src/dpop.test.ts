import { createHash, randomUUID } from 'node:crypto';
import { base64url, type CryptoKey, exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { type DpopProofError, type DpopRejection, verifyDpopProof } from './dpop.js';

const URL_ = 'https://tessera.example.com/api/identity/token';
const NOW = new Date('2026-11-28T12:00:00Z');
const iatNow = Math.floor(NOW.getTime() / 1000);

let privateKey: CryptoKey;
let publicJwk: JWK;
let otherKey: CryptoKey;

beforeAll(async () => {
  const pair = await generateKeyPair('ES256', { extractable: true });
  privateKey = pair.privateKey as CryptoKey;
  publicJwk = await exportJWK(pair.publicKey);
  otherKey = (await generateKeyPair('ES256')).privateKey as CryptoKey;
});

interface ProofOverrides {
  header?: Record<string, unknown>;
  payload?: Record<string, unknown>;
  key?: CryptoKey;
}

async function proof(o: ProofOverrides = {}): Promise<string> {
  return new SignJWT({ htm: 'POST', htu: URL_, iat: iatNow, jti: randomUUID(), ...o.payload })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: publicJwk, ...o.header } as never)
    .sign(o.key ?? privateKey);
}

function unsigned(header: Record<string, unknown>, payload: Record<string, unknown>): string {
  const enc = (v: unknown) => base64url.encode(JSON.stringify(v));
  return `${enc(header)}.${enc(payload)}.`;
}

function verify(p: unknown, seen = new Set<string>(), extra: { urls?: string[]; method?: string } = {}) {
  return verifyDpopProof(p, {
    method: extra.method ?? 'POST',
    urls: extra.urls ?? [URL_],
    now: NOW,
    remember: async (jkt, jti) => {
      const k = `${jkt} ${jti}`;
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    },
  });
}

async function rejection(p: Promise<unknown>): Promise<{ code: string; reason: DpopRejection; message: string; status: number }> {
  try {
    await p;
  } catch (e) {
    const err = e as DpopProofError;
    expect(err.details).toMatchObject({ field: 'DPoP', reason: err.reason });
    return { code: err.code, reason: err.reason, message: err.message, status: err.status };
  }
  throw new Error('expected a rejection');
}

describe('verifyDpopProof (RFC 9449 §4.3)', () => {
  it('accepts a fresh proof and returns the RFC 7638 thumbprint of its key as jkt', async () => {
    const result = await verify(await proof());
    // Independent RFC 7638 computation: required EC members in lexicographic order, no whitespace.
    const canonical = JSON.stringify({ crv: publicJwk.crv, kty: publicJwk.kty, x: publicJwk.x, y: publicJwk.y });
    expect(result.jkt).toBe(createHash('sha256').update(canonical).digest('base64url'));
    expect(result.jwk).toEqual(publicJwk);
  });

  it('compares htu without query or fragment, and with scheme and host case-insensitive', async () => {
    await expect(verify(await proof({ payload: { htu: `${URL_}?x=1#frag` } }))).resolves.toBeTruthy();
    await expect(verify(await proof({ payload: { htu: 'HTTPS://Tessera.Example.com:443/api/identity/token' } }))).resolves.toBeTruthy();
    await expect(
      verify(await proof({ payload: { htu: 'http://127.0.0.1:4200/api/identity/token' } }), new Set(), {
        urls: [URL_, 'http://127.0.0.1:4200/api/identity/token'],
      }),
    ).resolves.toBeTruthy();
  });

  it.each<[string, DpopRejection, () => Promise<string> | string]>([
    ['a value that is not a JWS', 'malformed', () => 'not-a-jwt'],
    ['a header that is not JSON', 'malformed', () => 'eyJub3Rqc29u.e30.c2ln'],
    ['typ JWT instead of dpop+jwt', 'typ', () => proof({ header: { typ: 'JWT' } })],
    [
      'alg none',
      'alg',
      () => unsigned({ alg: 'none', typ: 'dpop+jwt', jwk: publicJwk }, { htm: 'POST', htu: URL_, iat: iatNow, jti: 'x' }),
    ],
    ['a symmetric alg (HS256)', 'alg', () => unsigned({ alg: 'HS256', typ: 'dpop+jwt', jwk: publicJwk }, {})],
    ['no jwk in the header', 'jwk', () => proof({ header: { jwk: undefined } })],
    ['a symmetric jwk', 'jwk', () => proof({ header: { jwk: { kty: 'oct', k: 'c2VjcmV0' } } })],
    ['a signature by another key than the jwk', 'signature', () => proof({ key: otherKey })],
    ['htm GET for a POST', 'htm', () => proof({ payload: { htm: 'GET' } })],
    ['htu naming another endpoint', 'htu', () => proof({ payload: { htu: 'https://tessera.example.com/api/logs' } })],
    ['htu naming another host', 'htu', () => proof({ payload: { htu: 'https://evil.example.com/api/identity/token' } })],
    ['no htu', 'htu', () => proof({ payload: { htu: undefined } })],
    ['iat 61 s in the past', 'iat', () => proof({ payload: { iat: iatNow - 61 } })],
    ['iat 61 s in the future', 'iat', () => proof({ payload: { iat: iatNow + 61 } })],
    ['no iat', 'iat', () => proof({ payload: { iat: undefined } })],
    ['no jti', 'jti', () => proof({ payload: { jti: undefined } })],
    ['an over-long jti', 'jti', () => proof({ payload: { jti: 'j'.repeat(257) } })],
  ])('refuses %s with ERR_DPOP_PROOF_INVALID, reason %s', async (_what, reason, make) => {
    const r = await rejection(verify(await make()));
    expect(r).toMatchObject({ code: 'ERR_DPOP_PROOF_INVALID', reason, status: 400 });
    expect(r.message).toMatch(/^DPoP proof refused: /);
  });

  it('refuses a jwk that carries private members, and says to treat the key as compromised', async () => {
    const pair = await generateKeyPair('ES256', { extractable: true });
    const privateJwk = await exportJWK(pair.privateKey);
    const r = await rejection(verify(await proof({ header: { jwk: privateJwk }, key: pair.privateKey as CryptoKey })));
    expect(r.reason).toBe('jwk');
    expect(r.message).toContain('private key members (d)');
    expect(r.message).toContain('compromised');
    expect(r.message).not.toContain(String(privateJwk.d));
  });

  it('accepts iat within ±60 s', async () => {
    await expect(verify(await proof({ payload: { iat: iatNow - 60 } }))).resolves.toBeTruthy();
    await expect(verify(await proof({ payload: { iat: iatNow + 60 } }))).resolves.toBeTruthy();
  });

  it('refuses the same proof twice (replay), remembering it until it would go stale', async () => {
    const seen = new Set<string>();
    let until: Date | undefined;
    const p = await proof();
    await verifyDpopProof(p, {
      method: 'POST',
      urls: [URL_],
      now: NOW,
      remember: async (jkt, jti, u) => {
        until = u;
        seen.add(`${jkt} ${jti}`);
        return true;
      },
    });
    expect(until && until.getTime() / 1000).toBeGreaterThanOrEqual(iatNow + 60);
    const r = await rejection(verify(p, seen));
    expect(r).toMatchObject({ code: 'ERR_DPOP_PROOF_INVALID', reason: 'replay' });
    expect(r.message).toContain('make a new proof for every request');
  });

  it('does not record proofs that fail another check, so garbage cannot fill the replay store', async () => {
    const seen = new Set<string>();
    await rejection(verify(await proof({ payload: { htm: 'GET' } }), seen));
    expect(seen.size).toBe(0);
  });
});
