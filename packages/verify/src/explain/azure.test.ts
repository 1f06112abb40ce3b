import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { type AzureCredential, explainAzure, parseAzureConfig } from './azure.js';
import type { DecodedToken, ExplainResult } from './types.js';

const text = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');
const NOW = new Date('2026-11-28T02:00:00Z');
const T = NOW.getTime() / 1000;
const BASE = JSON.parse(text('token.json')) as DecodedToken;
const SUB = 'ws:default:deployment:nightly-etl:env:prod';

function token(claims: Record<string, unknown> = {}): DecodedToken {
  const all: Record<string, unknown> = {
    ...BASE.claims,
    aud: 'api://AzureADTokenExchange',
    iat: T - 60,
    nbf: T - 90,
    exp: T + 240,
    ...claims,
  };
  return { header: { ...BASE.header }, claims: all };
}

const credential = (patch: Partial<AzureCredential> = {}) => ({
  credentials: [{ ...parseAzureConfig(JSON.parse(text('azure-credential.json'))).credentials[0], ...patch } as AzureCredential],
});
const failed = (r: ExplainResult) => r.checks.filter((c) => !c.ok);

describe('explainAzure', () => {
  it('accepts an exact match on issuer, subject and audience', () => {
    const r = explainAzure(token(), credential(), { now: NOW });
    expect(r.verdict).toBe('accepted');
    expect(r.checks.map((c) => c.id)).toEqual(['issuer', 'subject', 'audience', 'expiry', 'not-before']);
  });

  it('refuses an issuer with a doubled slash: AADSTS70021', () => {
    const r = explainAzure(token(), credential({ issuer: 'https://tessera.example.com//' }), { now: NOW });
    expect(failed(r)[0]).toMatchObject({ id: 'issuer', detail: expect.stringContaining('Entra compares the issuer exactly') });
    expect(r.answer).toBe(
      `AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: 'https://tessera.example.com'. Assertion Subject: '${SUB}'. Assertion Audience: 'api://AzureADTokenExchange'.`,
    );
  });

  it('refuses another subject: AADSTS700213, naming the part that differs', () => {
    const r = explainAzure(token({ sub: 'ws:default:deployment:nightly-etl:env:dev' }), credential(), { now: NOW });
    expect(failed(r)[0]?.message).toContain('(environment differs)');
    expect(r.answer).toMatch(
      /^AADSTS700213: No matching federated identity record found for presented assertion subject 'ws:default:deployment:nightly-etl:env:dev'\./,
    );
  });

  it('refuses a subject that differs only in case: AADSTS7002138', () => {
    const r = explainAzure(token(), credential({ subject: SUB.replace('nightly-etl', 'Nightly-ETL') }), { now: NOW });
    expect(failed(r)[0]?.message).toContain('(case differs)');
    expect(r.answer).toMatch(
      /^AADSTS7002138: .*The subject matches with case-insensitive comparison, but not with case-sensitive comparison\.$/,
    );
  });

  it('refuses a wildcard subject: matching is exact', () => {
    const r = explainAzure(token(), credential({ subject: 'ws:default:deployment:*' }), { now: NOW });
    expect(failed(r)[0]?.detail).toContain('wildcards are plain characters');
  });

  it('refuses another audience, with the near miss', () => {
    const r = explainAzure(token({ aud: 'api://AzureADTokenExchange' }), credential({ audiences: ['api://azureadtokenexchange'] }), {
      now: NOW,
    });
    expect(failed(r)[0]).toMatchObject({ id: 'audience', detail: expect.stringContaining('did you mean "api://azureadtokenexchange"?') });
    expect(r.answer).toBe(
      "AADSTS700212: No matching federated identity record found for presented assertion audience 'api://AzureADTokenExchange'.",
    );
  });

  it('refuses an expired or not-yet-valid token: AADSTS700024', () => {
    const r = explainAzure(token({ exp: T - 400 }), credential(), { now: NOW });
    expect(failed(r)[0]?.id).toBe('expiry');
    expect(r.answer).toBe('AADSTS700024: Client assertion is not within its valid time range.');
    expect(explainAzure(token({ exp: T - 200 }), credential(), { now: NOW }).verdict).toBe('accepted');
    const early = explainAzure(token({ nbf: T + 600 }), credential(), { now: NOW });
    expect(failed(early)[0]?.id).toBe('not-before');
    expect(early.answer).toBe('AADSTS700024: Client assertion is not within its valid time range.');
  });

  it('warns about several audiences on one credential', () => {
    const r = explainAzure(token(), credential({ audiences: ['api://AzureADTokenExchange', 'other'] }), { now: NOW });
    expect(r.verdict).toBe('accepted');
    expect(r.checks.find((c) => c.id === 'azure.audiences')).toMatchObject({ flag: 'warning' });
  });

  it('flags flexible claims matching: not available for self-hosted issuers', () => {
    const flexible = parseAzureConfig({
      name: 'flex',
      issuer: 'https://tessera.example.com',
      audiences: ['api://AzureADTokenExchange'],
      claimsMatchingExpression: { value: "claims['sub'] matches 'ws:default:deployment:nightly-etl:*'", languageVersion: 1 },
    });
    const r = explainAzure(token(), flexible, { now: NOW });
    expect(failed(r)[0]).toMatchObject({ id: 'azure.flexible', message: expect.stringContaining('not a self-hosted issuer') });
  });

  it('with several credentials, any match lets the token in; otherwise the closest is explained', () => {
    const list = parseAzureConfig([
      {
        name: 'staging',
        issuer: 'https://tessera.example.com',
        subject: 'ws:default:deployment:nightly-etl:env:staging',
        audiences: ['api://AzureADTokenExchange'],
      },
      JSON.parse(text('azure-credential.json')),
    ]);
    expect(explainAzure(token(), list, { now: NOW }).verdict).toBe('accepted');
    const r = explainAzure(token({ sub: 'ws:default:deployment:nightly-etl:env:dev' }), list, { now: NOW });
    expect(r.verdict).toBe('refused');
    expect(failed(r)[0]?.message).toMatch(/^credential "staging": subject/);
  });
});
