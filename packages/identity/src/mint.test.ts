import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { generateSigningKey } from './keys.js';
import { mintRunToken, signCompactJwt, uuidV7 } from './mint.js';

const ISSUER = 'https://tessera.example.com';

describe('mintRunToken', () => {
  for (const alg of ['RS256', 'ES256'] as const) {
    it(`signs ${alg} tokens that jose verifies against the public JWK, with the exact header and claims`, async () => {
      const key = await generateSigningKey(alg, new Date('2026-11-28T12:00:00Z'));
      const now = new Date();
      const minted = await mintRunToken({
        key,
        issuer: ISSUER,
        audience: 'sts.amazonaws.com',
        subject: 'workspace:default:deployment:etl:environment:prod',
        lifetimeSeconds: 300,
        now,
        claims: { workspace: 'default', run_id: 'r-1', tags: ['a', 'b'] } as never,
      });
      expect(decodeProtectedHeader(minted.token)).toEqual({ alg, typ: 'JWT', kid: key.kid });
      const jwks = createLocalJWKSet({ keys: [key.publicJwk] });
      const { payload } = await jwtVerify(minted.token, jwks, { issuer: ISSUER, audience: 'sts.amazonaws.com', algorithms: [alg] });
      const iat = Math.floor(now.getTime() / 1000);
      expect(payload).toEqual({
        workspace: 'default',
        run_id: 'r-1',
        tags: ['a', 'b'],
        iss: ISSUER,
        sub: 'workspace:default:deployment:etl:environment:prod',
        aud: 'sts.amazonaws.com',
        iat,
        nbf: iat - 30,
        exp: iat + 300,
        jti: minted.jti,
      });
      expect(minted.expiresAt.getTime()).toBe((iat + 300) * 1000);
    });
  }

  it('produces signatures another key does not verify (ES256 in IEEE P1363 form, 64 bytes)', async () => {
    const key = await generateSigningKey('ES256');
    const other = await generateSigningKey('ES256');
    const token = await signCompactJwt(key, { sub: 'x' });
    expect(Buffer.from(token.split('.')[2] as string, 'base64url')).toHaveLength(64);
    await expect(jwtVerify(token, createLocalJWKSet({ keys: [{ ...other.publicJwk, kid: key.kid }] }))).rejects.toMatchObject({
      code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED',
    });
  });

  it('sets the registered claims from its options, over any the claims carry, with no duplicate member', async () => {
    const key = await generateSigningKey('ES256');
    const minted = await mintRunToken({
      key,
      issuer: ISSUER,
      audience: 'vault',
      subject: 'right',
      lifetimeSeconds: 60,
      claims: { sub: 'wrong', iss: 'https://evil.example.com', run_id: 'r' } as never,
    });
    const json = Buffer.from(minted.token.split('.')[1] as string, 'base64url').toString();
    expect(json.match(/"sub":/g)).toHaveLength(1);
    expect(JSON.parse(json)).toMatchObject({ sub: 'right', iss: ISSUER, aud: 'vault', run_id: 'r' });
    const empty = await mintRunToken({ key, issuer: ISSUER, audience: 'vault', subject: 's', lifetimeSeconds: 60, claims: {} as never });
    expect(Object.keys(JSON.parse(Buffer.from(empty.token.split('.')[1] as string, 'base64url').toString()))).toEqual([
      'iss',
      'sub',
      'aud',
      'iat',
      'nbf',
      'exp',
      'jti',
    ]);
  });

  it('refuses an empty audience and a lifetime that is not a positive integer', async () => {
    const key = await generateSigningKey('ES256');
    const base = { key, issuer: ISSUER, subject: 's', claims: {} as never };
    await expect(mintRunToken({ ...base, audience: '', lifetimeSeconds: 60 })).rejects.toMatchObject({ code: 'ERR_AUDIENCE_REQUIRED' });
    await expect(mintRunToken({ ...base, audience: 'a', lifetimeSeconds: 1.5 })).rejects.toMatchObject({ code: 'ERR_VALIDATION' });
    await expect(mintRunToken({ ...base, audience: 'a', lifetimeSeconds: 0 })).rejects.toMatchObject({ code: 'ERR_VALIDATION' });
  });
});

describe('uuidV7', () => {
  it('has the RFC 9562 version and variant bits and carries the time in its first 48 bits', () => {
    const ms = Date.parse('2026-11-28T12:34:56.789Z');
    const id = uuidV7(ms);
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(Number.parseInt(id.replace(/-/g, '').slice(0, 12), 16)).toBe(ms);
  });

  it('is unique across many ids in the same millisecond, and sorts by time across milliseconds', () => {
    const ids = Array.from({ length: 50_000 }, () => uuidV7(1_800_000_000_000));
    expect(new Set(ids).size).toBe(ids.length);
    // 74 random bits: no two share their random part, and the bits are not constant.
    const randomParts = new Set(ids.map((id) => id.slice(15)));
    expect(randomParts.size).toBe(ids.length);
    const earlier = uuidV7(1_800_000_000_000);
    const later = uuidV7(1_800_000_000_001);
    expect(earlier < later).toBe(true);
  });
});
