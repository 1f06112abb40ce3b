import { describe, expect, it } from 'vitest';
import { identityFromClaims, safeReturnTo } from './oidc-login.js';
import { roleRules } from './principal.js';

describe('identityFromClaims', () => {
  const rules = roleRules([{ role: 'admin', when: 'claims.email == "root@example.com"' }]);

  it('lets role rules see an email only when the IdP vouches for it (email_verified: true)', () => {
    const verified = identityFromClaims('corp', { sub: 'u1', email: 'root@example.com', email_verified: true });
    expect(verified.claims.email).toBe('root@example.com');
    expect(rules(verified.claims)).toEqual([{ role: 'admin' }]);
    // Unverified or unsaid: whatever the person typed in their profile. Kept aside, never as claims.email.
    for (const claims of [
      { sub: 'u2', email: 'root@example.com', email_verified: false },
      { sub: 'u3', email: 'root@example.com' },
      { sub: 'u4', email: 'root@example.com', email_verified: 'true' },
    ]) {
      const identity = identityFromClaims('corp', claims);
      expect(identity.claims.email, claims.sub).toBeUndefined();
      expect(identity.claims.unverified_email).toBe('root@example.com');
      expect(rules(identity.claims), claims.sub).toEqual([]);
    }
  });

  it('keeps protocol claims out and labels a person by a verified or unsaid email, else their name', () => {
    const id = identityFromClaims('corp', { sub: 'u1', email: 'a@example.com', iss: 'x', aud: 'y', nonce: 'n', name: 'A' });
    expect(id).toMatchObject({ personId: 'corp:u1', label: 'a@example.com' });
    expect(id.claims).not.toHaveProperty('nonce');
    expect(identityFromClaims('corp', { sub: 'u1', email: 'a@example.com', email_verified: false, name: 'A' }).label).toBe('A');
  });
});

describe('safeReturnTo', () => {
  it('keeps a path of this server', () => {
    for (const p of ['/', '/runs', '/runs?state=FAILED#top', '/a/b%2F/c']) expect(safeReturnTo(p)).toBe(p);
  });

  it('turns anything a browser could read as another origin into /', () => {
    for (const p of [
      undefined,
      '',
      'https://evil.example/',
      'evil.example',
      '//evil.example',
      '/\\evil.example',
      '/\t/evil.example',
      '/\n/evil.example',
      '/\r/evil.example',
      '/\u0000/evil.example',
      '/\u007f/evil.example',
      '\t//evil.example',
    ]) {
      expect(safeReturnTo(p), JSON.stringify(p)).toBe('/');
    }
  });
});
