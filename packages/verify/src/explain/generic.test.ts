import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { detectTarget, parseTrustConfig } from './detect.js';
import { explainGeneric, parseGenericConfig } from './generic.js';
import { compareIssuer, issuerProblems } from './issuer.js';
import { describeSubjectDifference, wildcardReach } from './subject.js';
import { decodeToken } from './token.js';
import type { DecodedToken, ExplainResult } from './types.js';

const text = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');
const NOW = new Date('2026-11-28T02:00:00Z');
const T = NOW.getTime() / 1000;
const BASE = JSON.parse(text('token.json')) as DecodedToken;
const ISS = 'https://tessera.example.com';

function token(claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}): DecodedToken {
  return {
    header: { ...BASE.header, ...header },
    claims: { ...BASE.claims, aud: 'my-service', iat: T - 60, nbf: T - 90, exp: T + 240, ...claims },
  };
}
const rp = parseGenericConfig({ issuer: ISS, audience: 'my-service' });
const failed = (r: ExplainResult) => r.checks.filter((c) => !c.ok);

describe('explainGeneric', () => {
  it('accepts a token for this service', () => {
    const r = explainGeneric(token(), rp, { now: NOW });
    expect(r.verdict).toBe('accepted');
    expect(r.checks.map((c) => c.id)).toEqual(['algorithm', 'type', 'issuer', 'audience', 'expiry', 'not-before', 'issued-at']);
  });

  it('refuses alg none and algorithms outside the list', () => {
    expect(failed(explainGeneric(token({}, { alg: 'none' }), rp, { now: NOW }))[0]?.detail).toContain('unsigned');
    expect(explainGeneric(token({}, { alg: 'ES256' }), { ...rp, algorithms: ['RS256'] }, { now: NOW }).answer).toMatch(
      /^ERR_ALG_NOT_ALLOWED/,
    );
  });

  it('refuses another typ (application/ prefix ignored)', () => {
    expect(explainGeneric(token({}, { typ: 'application/jwt' }), rp, { now: NOW }).verdict).toBe('accepted');
    expect(explainGeneric(token({}, { typ: 'at+jwt' }), rp, { now: NOW }).answer).toMatch(/^ERR_TYP_MISMATCH/);
  });

  it('diagnoses issuer near misses', () => {
    const cases: [string, RegExp][] = [
      ['https://tessera.example.com/', /trailing slash/],
      ['http://tessera.example.com', /scheme differs: iss uses http, expected https/],
      ['https://tessera.example.com//x', /path differs|double slash/],
      ['https://Tessera.example.com', /host case/],
      ['https://tessera.examp1e.com', /look-alike host/],
      ['https://tessera.example.com:443', /port differs/],
      ['https://ci.example.org', /another host/],
      [' https://tessera.example.com', /whitespace/],
    ];
    for (const [iss, re] of cases) {
      const r = explainGeneric(token({ iss }), rp, { now: NOW });
      expect(failed(r)[0]?.id, iss).toBe('issuer');
      expect(failed(r)[0]?.detail, iss).toMatch(re);
      expect(r.answer, iss).toMatch(/^ERR_ISSUER_MISMATCH/);
    }
    expect(compareIssuer('https://a.example/x//y', 'https://a.example/x/y').diagnosis).toBe('double slash in the path');
  });

  it('refuses another audience with a suggestion', () => {
    const r = explainGeneric(token({ aud: ['my-servce'] }), rp, { now: NOW });
    expect(failed(r)[0]).toMatchObject({ id: 'audience', detail: expect.stringContaining('did you mean "my-service"?') });
  });

  it('applies the clock tolerance to exp, nbf and iat', () => {
    expect(explainGeneric(token({ exp: T - 20 }), rp, { now: NOW }).verdict).toBe('accepted');
    expect(explainGeneric(token({ exp: T - 40 }), rp, { now: NOW }).answer).toBe('ERR_TOKEN_EXPIRED: the token has expired');
    expect(explainGeneric(token({ nbf: T + 60 }), rp, { now: NOW }).answer).toMatch(/^ERR_TOKEN_NOT_YET_VALID/);
    expect(explainGeneric(token({ iat: T + 60 }), rp, { now: NOW }).answer).toMatch(/^ERR_TOKEN_NOT_YET_VALID.*iat/);
    expect(explainGeneric(token({ exp: T - 40 }), { ...rp, clockTolerance: 60 }, { now: NOW }).verdict).toBe('accepted');
  });
});

describe('decodeToken', () => {
  it('decodes without verifying, and names a malformed token', () => {
    const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    expect(decodeToken(`${enc({ alg: 'RS256' })}.${enc({ sub: 'x' })}.sig`)).toEqual({ header: { alg: 'RS256' }, claims: { sub: 'x' } });
    expect(() => decodeToken('a.b')).toThrow(/ERR_TOKEN_MALFORMED: not a compact JWT/);
    expect(() => decodeToken('a.b.c')).toThrow(/ERR_TOKEN_MALFORMED: cannot decode/);
  });
});

describe('configuration detection and subjects', () => {
  it('detects each target from its shape', () => {
    expect(detectTarget(JSON.parse(text('aws-trust.json')))).toBe('aws');
    expect(detectTarget(JSON.parse(text('gcp-provider.json')))).toBe('gcp');
    expect(detectTarget(JSON.parse(text('azure-credential.json')))).toBe('azure');
    expect(detectTarget(JSON.parse(text('vault-role.json')))).toBe('vault');
    expect(detectTarget({ issuer: ISS, audience: 'x' })).toBe('generic');
    expect(() => parseTrustConfig({ hello: 1 })).toThrow(/--target/);
  });

  it('names the part of a subject that differs', () => {
    const s = 'ws:default:deployment:etl:env:prod';
    expect(describeSubjectDifference(s, 'ws:default:deployment:etl:env:dev')).toBe('environment differs');
    expect(describeSubjectDifference(s, 'ws:acme:deployment:etl:env:dev')).toBe('workspace and environment differ');
    expect(describeSubjectDifference(s, s.toUpperCase())).toBe('case differs');
    // Other templates (identity.subTemplate): labels name the parts; a changed template is called out.
    expect(describeSubjectDifference('ws:default:deployment_id:a1:env:prod', 'ws:default:deployment_id:b2:env:prod')).toBe(
      'deployment id differs',
    );
    expect(describeSubjectDifference(s, 'ws:default:project:p:deployment:etl:env:prod')).toBe(
      "template differs: the token's sub has workspace, project, deployment, environment; expected workspace, deployment, environment",
    );
  });

  it('measures how far a wildcard reaches', () => {
    expect(wildcardReach('ws:default:deployment:etl:env:prod')).toBe('none');
    expect(wildcardReach('ws:default:deployment:etl:env:*')).toBe('environment');
    expect(wildcardReach('ws:default:deployment:*')).toBe('deployment');
    expect(wildcardReach('ws:default:deployment:etl-*:env:prod')).toBe('deployment');
    expect(wildcardReach('ws:*:deployment:etl:env:prod')).toBe('workspace');
    expect(wildcardReach('*')).toBe('workspace');
    expect(wildcardReach('repo:acme/*')).toBe('foreign');
    expect(wildcardReach('ws:default:deployment:et?:env:prod', '*')).toBe('none');
    expect(wildcardReach('ws:default:*')).toBe('deployment');
    expect(wildcardReach('ws:default:deployment_id:7d1c2a4e-0b1f-4c55-9a7e-3f1e2d4c5b6a:*')).toBe('environment');
    expect(wildcardReach('ws:default:project:*')).toBe('deployment');
  });

  it('lists what is wrong with an issuer on its own', () => {
    expect(issuerProblems('https://tessera.example.com').map((p) => p.kind)).toEqual([]);
    expect(issuerProblems('http://Tessera.example.com:8443//x/', { requireHttps: true, allowPort: false }).map((p) => p.kind)).toEqual([
      'trailing-slash',
      'double-slash',
      'host-case',
      'http',
      'port',
    ]);
  });
});
