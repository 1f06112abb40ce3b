import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TesseraError } from '@tessera/core';
import { afterAll, describe, expect, it } from 'vitest';
import { buildDiscoveryDocument } from './discovery.js';
import { readKeyFile, writeKeyFile } from './key-file.js';
import { exportPrivateJwk, generateSigningKey, importSigningKey, keyExpiry, keyState } from './keys.js';

const dir = mkdtempSync(join(tmpdir(), 'tessera-identity-keys-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function failure(p: Promise<unknown>): Promise<TesseraError> {
  return p.then(
    () => {
      throw new Error('expected a failure');
    },
    (e: TesseraError) => e,
  );
}

describe('key file', () => {
  it('round-trips private keys with mode 0600, and the imported key signs like the original', async () => {
    const key = await generateSigningKey('ES256', new Date('2026-11-28T00:00:00Z'), { extractable: true });
    const path = join(dir, 'nested', 'keys.json');
    await writeKeyFile(path, [await exportPrivateJwk(key)]);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const [jwk] = (await readKeyFile(path)) ?? [];
    const imported = await importSigningKey(jwk as never, key.createdAt);
    expect(imported).toMatchObject({ kid: key.kid, alg: 'ES256', publicJwk: key.publicJwk });
    expect(imported.publicJwk).not.toHaveProperty('d');
  });

  it('reads a missing file as no keys', async () => {
    expect(await readKeyFile(join(dir, 'absent.json'))).toBeUndefined();
  });

  it('refuses group- or world-accessible files', async () => {
    const path = join(dir, 'group.json');
    writeFileSync(path, '{"keys":[]}');
    chmodSync(path, 0o640);
    const e = await failure(readKeyFile(path));
    expect(e.code).toBe('ERR_KEY_FILE_INSECURE');
    expect(e.message).toContain(`its mode is 0640`);
  });

  it('refuses content that is not a private JWK Set, never quoting it', async () => {
    const cases: [string, string][] = [
      ['{"keys": [SECRET', 'is not valid JSON'],
      ['{"kty":"RSA"}', 'has no "keys" array'],
      ['{"keys":[{"kid":"k","alg":"HS256","kty":"oct","d":"x"}]}', '"alg" must be one of RS256, ES256'],
      ['{"keys":[{"kid":"k","alg":"ES256","kty":"RSA","d":"x"}]}', '"kty" must be EC for ES256'],
      ['{"keys":[{"kid":"k","alg":"RS256","kty":"RSA","n":"x","e":"AQAB"}]}', 'holds no private key'],
    ];
    for (const [i, [content, expected]] of cases.entries()) {
      const path = join(dir, `bad-${i}.json`);
      writeFileSync(path, content, { mode: 0o600 });
      const e = await failure(readKeyFile(path));
      expect(e.code).toBe('ERR_KEY_FILE_INVALID');
      expect(e.message).toContain(expected);
      expect(e.message).not.toContain('SECRET');
    }
  });
});

describe('key lifecycle', () => {
  const t = (iso: string) => Date.parse(iso);
  const times = { activatesAt: t('2026-11-28T12:10:00Z'), retiredAt: t('2026-12-28T12:10:00Z'), expiresAt: null, revokedAt: null };

  it('derives the state from the times alone', () => {
    expect(keyState(times, t('2026-11-28T12:00:00Z'))).toBe('pending');
    expect(keyState(times, t('2026-11-28T12:10:00Z'))).toBe('active');
    expect(keyState(times, t('2026-12-28T12:10:00Z'))).toBe('retired');
    expect(keyState({ ...times, expiresAt: t('2026-12-28T13:00:00Z') }, t('2026-12-28T13:00:00Z'))).toBe('expired');
    expect(keyState({ ...times, revokedAt: t('2026-12-01T00:00:00Z') }, t('2026-12-01T00:00:00Z'))).toBe('revoked');
  });

  it('expires a retired key at its last token exp plus the leeway, or at retirement plus the leeway', () => {
    expect(keyExpiry(1_000, 5_000, 300)).toBe(5_300);
    expect(keyExpiry(1_000, null, 300)).toBe(1_300);
    expect(keyExpiry(1_000, 500, 300)).toBe(1_300);
  });
});

describe('discovery document', () => {
  it('keeps the issuer verbatim and builds URLs without doubled slashes', () => {
    const doc = buildDiscoveryDocument({ issuer: 'https://oidc.example.com/tessera', claims: ['iss', 'sub', 'iss'] });
    expect(doc).toMatchObject({
      issuer: 'https://oidc.example.com/tessera',
      jwks_uri: 'https://oidc.example.com/tessera/.well-known/jwks.json',
      token_endpoint: 'https://oidc.example.com/tessera/api/identity/token',
      introspection_endpoint: 'https://oidc.example.com/tessera/api/identity/introspect',
      claims_supported: ['iss', 'sub'],
    });
  });

  it('leaves the endpoints out for a static copy', () => {
    const doc = buildDiscoveryDocument({ issuer: 'https://bucket.example.com', claims: [], apiUrl: null });
    expect(doc).not.toHaveProperty('token_endpoint');
    expect(doc).not.toHaveProperty('introspection_endpoint');
  });
});
