import type { RunTokenClaims } from '@tessera/core';
import { base64url, decodeJwt, SignJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { checkIssuedToken } from './introspection.js';
import { buildJwks, generateSigningKey, type SigningKey } from './keys.js';
import { mintRunToken } from './mint.js';

const ISSUER = 'https://tessera.example.com';
const NOW = new Date('2026-11-28T12:00:00Z');

const claims: Omit<RunTokenClaims, 'iss' | 'sub' | 'aud' | 'exp' | 'iat' | 'nbf' | 'jti'> = {
  workspace: 'default',
  project: 'default',
  flow: 'etl',
  deployment: 'nightly-etl',
  deployment_id: '6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f',
  environment: 'prod',
  run_id: '0b7e4f1a-2c3d-4e5f-8a9b-0c1d2e3f4a5b',
  run_attempt: 1,
  work_pool: 'default',
  worker: 'w-1',
  trigger_kind: 'manual',
  triggered_by: 'person:local admin',
  tags: [],
  sub_template_version: 1,
};

let key: SigningKey;
let other: SigningKey;

beforeAll(async () => {
  key = await generateSigningKey('ES256', NOW);
  other = await generateSigningKey('ES256', NOW);
});

function mint(overrides: { key?: SigningKey; issuer?: string; now?: Date } = {}) {
  return mintRunToken({
    key: overrides.key ?? key,
    issuer: overrides.issuer ?? ISSUER,
    audience: 'vault',
    subject: 'ws:default:deployment:nightly-etl:env:prod',
    lifetimeSeconds: 300,
    claims,
    now: overrides.now ?? NOW,
  });
}

function check(token: string, now = NOW) {
  return checkIssuedToken(token, { issuer: ISSUER, jwks: buildJwks([key.publicJwk]), algorithms: ['RS256', 'ES256'], now });
}

describe('checkIssuedToken', () => {
  it('returns the claims of a token this issuer signed with a published key', async () => {
    const { token, jti } = await mint();
    const r = await check(token);
    expect(r).toMatchObject({ valid: true, claims: { jti, run_id: claims.run_id, aud: 'vault', iss: ISSUER } });
  });

  it.each([
    ['garbage', 'malformed', async () => 'not a token'],
    ['a token signed by a key the JWKS does not publish', 'unknown-kid', async () => (await mint({ key: other })).token],
    ['a token for another issuer', 'issuer', async () => (await mint({ issuer: 'https://evil.example.com' })).token],
    ['an expired token', 'expired', async () => (await mint({ now: new Date(NOW.getTime() - 301_000) })).token],
    ['a token whose nbf is ahead', 'not-yet-valid', async () => (await mint({ now: new Date(NOW.getTime() + 120_000) })).token],
  ])('says %s is not valid (%s)', async (_what, reason, make) => {
    expect(await check(await make())).toEqual({ valid: false, reason });
  });

  it('says a token with a tampered payload is not valid (signature)', async () => {
    const { token } = await mint();
    const [h, , s] = token.split('.');
    const payload = { ...decodeJwt(token), run_id: 'someone-else' };
    expect(await check(`${h}.${base64url.encode(JSON.stringify(payload))}.${s}`)).toEqual({ valid: false, reason: 'signature' });
  });

  it('says a token with alg none is not valid', async () => {
    const { token } = await mint();
    const payload = token.split('.')[1];
    const header = base64url.encode(JSON.stringify({ alg: 'none', typ: 'JWT', kid: key.kid }));
    expect((await check(`${header}.${payload}.`)).valid).toBe(false);
  });

  it('says a JWT without the run claims (another kind of token from the same key) is not valid', async () => {
    const bare = await new SignJWT({ sub: 'x', aud: 'vault', jti: 'j' })
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: key.kid })
      .setIssuer(ISSUER)
      .setIssuedAt(Math.floor(NOW.getTime() / 1000))
      .setExpirationTime(Math.floor(NOW.getTime() / 1000) + 60)
      .sign(key.privateKey);
    expect(await check(bare)).toEqual({ valid: false, reason: 'claims' });
  });
});
