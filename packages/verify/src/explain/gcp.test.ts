import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { explainGcp, type GcpRelyingParty, gcpDefaultAudiences, parseGcpConfig } from './gcp.js';
import type { DecodedToken, ExplainResult } from './types.js';

const text = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');
const NOW = new Date('2026-11-28T02:00:00Z');
const T = NOW.getTime() / 1000;
const BASE = JSON.parse(text('token.json')) as DecodedToken;
const NAME = 'projects/123456789/locations/global/workloadIdentityPools/tessera/providers/tessera';
const AUD = `https://iam.googleapis.com/${NAME}`;
const ID = '7d1c2a4e-0b1f-4c55-9a7e-3f1e2d4c5b6a';
const REJECTED = 'unauthorized_client: The given credential is rejected by the attribute condition.';

function token(claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}): DecodedToken {
  const all: Record<string, unknown> = { ...BASE.claims, aud: AUD, iat: T - 60, nbf: T - 90, exp: T + 240, ...claims };
  for (const k of Object.keys(all)) if (all[k] === undefined) delete all[k];
  return { header: { ...BASE.header, ...header }, claims: all };
}

const rp = (patch: Partial<GcpRelyingParty> = {}): GcpRelyingParty => ({
  ...parseGcpConfig(JSON.parse(text('gcp-provider.json'))),
  ...patch,
});
const failed = (r: ExplainResult) => r.checks.filter((c) => !c.ok);

describe('explainGcp', () => {
  it('accepts a token of the pinned deployment: issuer, default audience, mapping, condition, binding', () => {
    const r = explainGcp(token(), rp(), { now: NOW });
    expect(r.verdict).toBe('accepted');
    expect(r.checks.map((c) => c.id)).toEqual([
      'issuer',
      'audience',
      'algorithm',
      'expiry',
      'not-before',
      'issued-at',
      'gcp.mapping',
      'gcp.mapping',
      'gcp.mapping',
      'gcp.condition',
      'gcp.binding',
    ]);
    expect(r.checks.find((c) => c.id === 'audience')?.message).toContain('default audience');
    expect(r.checks.find((c) => c.id === 'gcp.mapping')?.message).toBe(
      'attribute mapping google.subject = assertion.sub → "ws:default:deployment:nightly-etl:env:prod"',
    );
  });

  it('accepts both forms of the default audience and refuses another one', () => {
    expect(gcpDefaultAudiences(NAME)).toEqual([`//iam.googleapis.com/${NAME}`, AUD]);
    expect(explainGcp(token({ aud: `//iam.googleapis.com/${NAME}` }), rp(), { now: NOW }).verdict).toBe('accepted');
    const r = explainGcp(token({ aud: 'sts.amazonaws.com' }), rp(), { now: NOW });
    expect(failed(r)[0]?.id).toBe('audience');
    expect(r.answer).toContain('The audience in ID Token');
  });

  it('uses allowedAudiences when set', () => {
    const custom = rp({ allowedAudiences: ['gcp.tessera'] });
    expect(explainGcp(token({ aud: 'gcp.tessera' }), custom, { now: NOW }).verdict).toBe('accepted');
    expect(explainGcp(token(), custom, { now: NOW }).verdict).toBe('refused');
  });

  it('refuses another issuer with a diagnosis, and an http issuer-uri', () => {
    const r = explainGcp(token({ iss: 'https://tessera.example.com//' }), rp(), { now: NOW });
    expect(failed(r)[0]).toMatchObject({ id: 'issuer', detail: expect.stringContaining('trailing slash') });
    const http = explainGcp(token({ iss: 'http://tessera.example.com' }), rp({ issuerUri: 'http://tessera.example.com' }), { now: NOW });
    expect(http.answer).toBe("invalid_grant: Error connecting to the given credential's issuer.");
  });

  it('refuses an expired or not-yet-valid token and an unsupported algorithm', () => {
    expect(failed(explainGcp(token({ exp: T - 1 }), rp(), { now: NOW }))[0]?.id).toBe('expiry');
    expect(failed(explainGcp(token({ nbf: T + 120 }), rp(), { now: NOW }))[0]?.id).toBe('not-before');
    expect(failed(explainGcp(token({ iat: T + 120 }), rp(), { now: NOW }))[0]?.id).toBe('issued-at');
    expect(failed(explainGcp(token({}, { alg: 'none' }), rp(), { now: NOW }))[0]?.id).toBe('algorithm');
  });

  it('requires google.subject in the mapping', () => {
    const r = explainGcp(token(), rp({ attributeMapping: { 'attribute.sub': 'assertion.sub' } }), { now: NOW });
    expect(failed(r)[0]).toMatchObject({ id: 'gcp.mapping', message: expect.stringContaining('google.subject is not mapped') });
  });

  it('refuses a google.subject over 127 bytes with GCP’s answer', () => {
    const r = explainGcp(
      token(),
      rp({
        attributeMapping: {
          'google.subject': 'assertion.sub + ":" + assertion.run_id + ":" + assertion.jti + ":" + assertion.deployment_id',
        },
      }),
      { now: NOW },
    );
    expect(failed(r)[0]?.id).toBe('gcp.subject-length');
    expect(r.answer).toMatch(/^invalid_request: The size of mapped attribute google.subject exceeds the 127 bytes limit/);
  });

  it('refuses a mapping expression over 2,048 characters, and mapped attributes over 8 KB', () => {
    const long = `assertion.sub + "${'x'.repeat(2100)}"`;
    expect(
      failed(explainGcp(token(), rp({ attributeMapping: { 'google.subject': 'assertion.sub', 'attribute.long': long } }), { now: NOW }))[0]
        ?.message,
    ).toContain('over GCP’s 2048'.replace('’', "'"));
    const big: Record<string, string> = { 'google.subject': 'assertion.sub' };
    for (let i = 0; i < 5; i++) big[`attribute.a${i}`] = `assertion.sub + "${'y'.repeat(1900)}"`;
    expect(failed(explainGcp(token(), rp({ attributeMapping: big }), { now: NOW }))[0]?.message).toMatch(
      /bytes of mapped attributes, over GCP's 8192/,
    );
  });

  it('attribute condition: refuses another deployment with GCP’s answer and names what differs', () => {
    const r = explainGcp(
      token({ sub: 'ws:default:deployment:reports:env:prod', deployment_id: 'other' }),
      rp({ member: undefined } as Partial<GcpRelyingParty>),
      { now: NOW },
    );
    expect(failed(r)[0]).toMatchObject({
      id: 'gcp.condition',
      detail: 'token sub is "ws:default:deployment:reports:env:prod" (deployment differs)',
    });
    expect(r.answer).toBe(REJECTED);
  });

  it('attribute condition can read google.* and attribute.*', () => {
    const cond = rp({ attributeCondition: `google.subject.startsWith("ws:default:") && attribute.deployment_id == "${ID}"` });
    expect(explainGcp(token(), cond, { now: NOW }).verdict).toBe('accepted');
    expect(explainGcp(token({ deployment_id: 'x' }), cond, { now: NOW }).verdict).toBe('refused');
  });

  it('a condition that cannot be evaluated refuses; one using matches() is not simulated', () => {
    const broken = explainGcp(token(), rp({ attributeCondition: 'assertion.no_such_claim == "x"' }), { now: NOW });
    expect(failed(broken)[0]).toMatchObject({ id: 'gcp.condition', answer: REJECTED });
    const regex = explainGcp(token(), rp({ attributeCondition: 'assertion.sub.matches("^ws:default:.*$")' }), { now: NOW });
    expect(regex.verdict).toBe('indeterminate');
    expect(regex.checks.find((c) => c.id === 'gcp.condition')?.flag).toBe('unknown');
  });

  it('no attribute condition passes with a warning', () => {
    const r = explainGcp(token(), rp({ attributeCondition: undefined } as Partial<GcpRelyingParty>), { now: NOW });
    expect(r.checks.find((c) => c.id === 'gcp.condition')).toMatchObject({ ok: true, flag: 'warning' });
  });

  it('binding: principal://…/subject/SUB and principalSet://…/attribute.NAME/VALUE', () => {
    const pool = 'principal://iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/tessera';
    expect(explainGcp(token(), rp({ member: `${pool}/subject/ws:default:deployment:nightly-etl:env:prod` }), { now: NOW }).verdict).toBe(
      'accepted',
    );
    const wrong = explainGcp(token(), rp({ member: `${pool}/subject/ws:default:deployment:nightly-etl:env:dev` }), { now: NOW });
    expect(failed(wrong)[0]).toMatchObject({ id: 'gcp.binding', message: expect.stringContaining('(environment differs)') });
    expect(wrong.answer).toBe("Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).");
    const set = `principalSet://iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/tessera/attribute.environment/staging`;
    expect(explainGcp(token(), rp({ member: set }), { now: NOW }).verdict).toBe('refused');
    const otherPool = `principalSet://iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/other/attribute.environment/prod`;
    expect(failed(explainGcp(token(), rp({ member: otherPool }), { now: NOW }))[0]?.message).toContain('names pool');
  });

  it('a disabled provider refuses everything', () => {
    expect(explainGcp(token(), rp({ disabled: true }), { now: NOW }).answer).toMatch(/^invalid_target: /);
  });

  it('parses gcloud describe output and rejects a provider without oidc', () => {
    expect(rp().name).toBe(NAME);
    expect(() => parseGcpConfig({ name: NAME, aws: { accountId: '1' } })).toThrow(/oidc.issuerUri/);
  });
});
