import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { DecodedToken, ExplainResult } from './types.js';
import { explainVault, parseVaultConfig, type VaultRelyingParty, type VaultRole, vaultGlob, vaultLeeway } from './vault.js';

const text = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');
const NOW = new Date('2026-11-28T02:00:00Z');
const T = NOW.getTime() / 1000;
const BASE = JSON.parse(text('token.json')) as DecodedToken;
const SUB = 'ws:default:deployment:nightly-etl:env:prod';

function token(claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}): DecodedToken {
  const all: Record<string, unknown> = { ...BASE.claims, aud: 'vault.internal', iat: T - 60, nbf: T - 90, exp: T + 240, ...claims };
  for (const k of Object.keys(all)) if (all[k] === undefined) delete all[k];
  return { header: { ...BASE.header, ...header }, claims: all };
}

function rp(role: Partial<VaultRole> & Record<string, unknown> = {}, config: Record<string, unknown> = {}): VaultRelyingParty {
  const base = parseVaultConfig(JSON.parse(text('vault-role.json')));
  const merged = { ...base.role, ...role };
  for (const k of Object.keys(merged))
    if ((merged as Record<string, unknown>)[k] === undefined) delete (merged as Record<string, unknown>)[k];
  return { ...base, role: merged, config: { ...base.config, ...config } };
}
const failed = (r: ExplainResult) => r.checks.filter((c) => !c.ok);

describe('explainVault', () => {
  it('accepts a token of the bound deployment, in Vault’s order', () => {
    const r = explainVault(token(), rp(), { now: NOW });
    expect(r.verdict).toBe('accepted');
    expect(r.checks.map((c) => c.id)).toEqual([
      'vault.role-type',
      'vault.discovery',
      'algorithm',
      'issuer',
      'subject',
      'audience',
      'expiry',
      'vault.user-claim',
      'vault.bound-claims',
    ]);
  });

  it('refuses a role that is not role_type=jwt (Vault defaults to oidc)', () => {
    const r = explainVault(token(), rp({ role_type: undefined }), { now: NOW });
    expect(r.answer).toBe('role with oidc role_type is not allowed');
  });

  it('refuses an algorithm outside jwt_supported_algs', () => {
    const r = explainVault(token({}, { alg: 'ES256' }), rp(), { now: NOW });
    expect(r.answer).toBe('error validating token: invalid algorithm (alg) header parameter: token signed with unexpected algorithm');
  });

  it('bound_issuer: refuses http vs https', () => {
    const r = explainVault(token(), rp({}, { bound_issuer: 'http://tessera.example.com', oidc_discovery_url: undefined }), { now: NOW });
    expect(failed(r)[0]).toMatchObject({ id: 'issuer', detail: expect.stringContaining('scheme differs: iss uses https, expected http') });
    expect(r.answer).toBe('error validating token: invalid issuer (iss) claim');
  });

  it('oidc_discovery_url for another issuer: the signature cannot verify', () => {
    const r = explainVault(token(), rp({}, { oidc_discovery_url: 'https://tessera.example.com/' }), { now: NOW });
    expect(failed(r)[0]?.id).toBe('vault.discovery');
  });

  it('bound_subject: exact; refuses another deployment and treats * literally', () => {
    const r = explainVault(token({ sub: 'ws:default:deployment:reports:env:prod' }), rp(), { now: NOW });
    expect(failed(r)[0]?.message).toContain('(deployment differs)');
    expect(r.answer).toBe('error validating token: invalid subject (sub) claim');
    const star = explainVault(token(), rp({ bound_subject: 'ws:default:deployment:*' }), { now: NOW });
    expect(failed(star)[0]?.detail).toContain('plain character');
  });

  it('bound_audiences: any match passes, none refuses', () => {
    expect(explainVault(token(), rp({ bound_audiences: ['other', 'vault.internal'] }), { now: NOW }).verdict).toBe('accepted');
    const r = explainVault(token({ aud: 'vault.internl' }), rp(), { now: NOW });
    expect(failed(r)[0]).toMatchObject({ id: 'audience', detail: 'did you mean "vault.internal"?' });
    expect(r.answer).toBe('error validating token: invalid audience (aud) claim: audience claim does not match any expected audience');
  });

  it('a token with aud and a role without bound_audiences is refused (Vault ≥ 1.16.3)', () => {
    const r = explainVault(token(), rp({ bound_audiences: undefined }), { now: NOW });
    expect(r.answer).toBe('audience claim found in JWT but no audiences bound to the role');
  });

  it('clock_skew_leeway (60 s by default) applies to exp; expiration_leeway only fills a missing exp', () => {
    expect(explainVault(token({ exp: T - 50 }), rp(), { now: NOW }).verdict).toBe('accepted');
    const late = explainVault(token({ exp: T - 90 }), rp(), { now: NOW });
    expect(late.answer).toBe('error validating token: invalid expiration time (exp) claim: token is expired');
    expect(failed(late)[0]?.message).toContain('expiration_leeway only fills a missing exp');
    expect(explainVault(token({ exp: T - 90 }), rp({ clock_skew_leeway: '2m' }), { now: NOW }).verdict).toBe('accepted');
    expect(explainVault(token({ exp: T - 1 }), rp({ clock_skew_leeway: -1 }), { now: NOW }).verdict).toBe('refused');
    // No exp: latest of iat/nbf + expiration_leeway (150 s).
    expect(explainVault(token({ exp: undefined, iat: T - 100, nbf: T - 100 }), rp(), { now: NOW }).verdict).toBe('accepted');
    expect(explainVault(token({ exp: undefined, iat: T - 300, nbf: T - 300 }), rp(), { now: NOW }).verdict).toBe('refused');
  });

  it('refuses nbf and iat in the future beyond the skew, and a token with no time claims', () => {
    expect(explainVault(token({ nbf: T + 120 }), rp(), { now: NOW }).answer).toBe(
      'error validating token: invalid not before (nbf) claim: token not yet valid',
    );
    expect(explainVault(token({ iat: T + 120, nbf: T - 10 }), rp(), { now: NOW }).answer).toBe(
      'error validating token: invalid issued at (iat) claim: token issued in the future',
    );
    expect(explainVault(token({ iat: undefined, nbf: undefined, exp: undefined }), rp(), { now: NOW }).answer).toBe(
      'error validating token: no issued at (iat), not before (nbf), or expiration time (exp) claims in token',
    );
  });

  it('user_claim must exist in the token (and on the role)', () => {
    expect(explainVault(token(), rp({ user_claim: 'email' }), { now: NOW }).answer).toBe('claim "email" not found in token');
    expect(explainVault(token(), rp({ user_claim: undefined }), { now: NOW }).answer).toBe('a user claim must be defined on the role');
  });

  it('bound_claims: exact by default, list values are OR, missing claims refuse', () => {
    expect(explainVault(token(), rp({ bound_claims: { environment: ['staging', 'prod'] } }), { now: NOW }).verdict).toBe('accepted');
    const r = explainVault(token(), rp({ bound_claims: { environment: 'staging' } }), { now: NOW });
    expect(r.answer).toBe('error validating claims: claim "environment" does not match any associated bound claim values');
    expect(explainVault(token(), rp({ bound_claims: { team: 'data' } }), { now: NOW }).answer).toBe(
      'error validating claims: claim "team" is missing',
    );
    const literal = explainVault(token(), rp({ bound_subject: undefined, bound_claims: { sub: 'ws:default:*' } }), { now: NOW });
    expect(failed(literal)[0]?.detail).toContain('"*" is literal unless bound_claims_type=glob');
  });

  it('bound_claims_type=glob: * matches any run, ? is literal, JSON pointers reach nested claims', () => {
    const glob = rp({
      bound_subject: undefined,
      bound_claims_type: 'glob',
      bound_claims: { sub: 'ws:default:deployment:nightly-*:env:prod' },
    });
    expect(explainVault(token(), glob, { now: NOW }).verdict).toBe('accepted');
    expect(vaultGlob('ws:?', 'ws:a')).toBe(false);
    expect(vaultGlob('a*b*c', 'axxbyyc')).toBe(true);
    expect(vaultGlob('a*b*c', 'axxbyy')).toBe(false);
    const nested = rp({ bound_claims: { '/https:~1~1aws.amazon.com~1tags/principal_tags/team': 'data' } });
    expect(
      explainVault(token({ 'https://aws.amazon.com/tags': { principal_tags: { team: ['data'] } } }), nested, { now: NOW }).verdict,
    ).toBe('accepted');
  });

  it('groups_claim must exist; token_bound_cidrs cannot be simulated', () => {
    expect(explainVault(token(), rp({ groups_claim: 'groups' }), { now: NOW }).answer).toBe(
      'failed to fetch groups: "groups" claim not found in token',
    );
    expect(explainVault(token({ groups: ['data'] }), rp({ groups_claim: 'groups' }), { now: NOW }).verdict).toBe('accepted');
    const cidrs = explainVault(token(), rp({ token_bound_cidrs: ['10.0.0.0/8'] }), { now: NOW });
    expect(cidrs.verdict).toBe('indeterminate');
  });

  it('refuses a role with no bound constraint', () => {
    const r = explainVault(token(), rp({ bound_audiences: undefined, bound_subject: undefined, bound_claims: undefined }), { now: NOW });
    expect(r.answer).toBe('must have at least one bound constraint when creating/updating a role');
  });

  it('reads leeways as Vault does, and the output of vault read', () => {
    expect(vaultLeeway(undefined, 60)).toBe(60);
    expect(vaultLeeway(0, 150)).toBe(150);
    expect(vaultLeeway(-1, 150)).toBe(0);
    expect(vaultLeeway('5m', 60)).toBe(300);
    const read = parseVaultConfig({ data: { role_type: 'jwt', user_claim: 'sub', bound_subject: SUB, bound_audiences: 'a,b' } });
    expect(read.role.bound_audiences).toEqual(['a', 'b']);
  });
});
